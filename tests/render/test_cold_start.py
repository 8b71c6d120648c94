"""Cold start (issue 22): a plain render validates and registers only the templates it uses,
and imports jsonschema only when one of them has not passed its check before.

Run in a fresh interpreter: what a render imports and which templates it checks is
process state that an earlier test in this one would already have changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# With `spy`: every template checked against reproenv's template schema, by neurodocker
# (`jsonschema.validate` in reproenv/state.py) or by ndgen's registry. Then what the render
# left behind.
_PROBE = """
import json, sys

checked = []
if sys.argv[1] == "spy":
    import jsonschema

    _validate = jsonschema.validate

    def spy(instance, schema, *args, **kwargs):
        if isinstance(instance, dict) and ("binaries" in instance or "source" in instance):
            checked.append(str(instance.get("name")))
        return _validate(instance, schema, *args, **kwargs)

    jsonschema.validate = spy
    from neurodocker_nd.registry import entries  # ndgen's own check of registry templates

    _check = entries.check_schema

    def check_spy(data, path, validator, what, *args, **kwargs):
        if what == "neurodocker template":
            checked.append(str(data.get("name")))
        return _check(data, path, validator, what, *args, **kwargs)

    entries.check_schema = check_spy
from neurodocker_nd.cli import main

main(["--pkg", "ants", "--os", "ubuntu", "-o", "/dev/null"])
from neurodocker.reproenv.state import registered_templates

print(json.dumps({
    "checked": checked,
    "registered": sorted(registered_templates()),
    "jsonschema": "jsonschema.validators" in sys.modules,
    "modules": sorted(m for m in ("docker", "requests", "rich", "reprozip", "dockerfile_parse", "spython",
                                  "neurodocker_nd.maintain.lint") if m in sys.modules),
}))
"""


def _probe(mode: str, cache) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout)


def test_a_render_checks_only_the_templates_it_uses(tmp_path):
    seen = _probe("spy", tmp_path)
    # neurodocker's `import neurodocker` would have checked and registered all of its 20
    # templates and `_default`; a render of ants needs ants and ndgen's `_default` only.
    assert seen["registered"] == []
    assert sorted(seen["checked"]) == ["_default", "ants"]  # once each (registry/ants, then Template() of _default)
    assert seen["modules"] == []  # nor the Docker SDK, HTTP or terminal libraries, nor the registry's lint rules


def test_templates_that_passed_before_are_not_checked_again(tmp_path):
    first = _probe("plain", tmp_path)
    assert first["jsonschema"] is True and first["registered"] == []
    again = _probe("plain", tmp_path)
    assert again["jsonschema"] is False and again["registered"] == [] and again["modules"] == []
    assert _probe("spy", tmp_path)["checked"] == []
