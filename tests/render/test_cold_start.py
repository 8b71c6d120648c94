"""Cold start (issue 22): a plain render validates and registers only the templates it uses.

Run in a fresh interpreter: what a render imports and which templates it checks is
process state that an earlier test in this one would already have changed.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Every template dict checked against reproenv's template schema (neurodocker's own check,
# `jsonschema.validate` in reproenv/state.py), and what the render left behind.
_PROBE = """
import json, sys
import jsonschema

checked = []
_validate = jsonschema.validate

def spy(instance, schema, *args, **kwargs):
    if isinstance(instance, dict) and ("binaries" in instance or "source" in instance):
        checked.append(str(instance.get("name")))
    return _validate(instance, schema, *args, **kwargs)

jsonschema.validate = spy
from neurodocker_nd.cli import main

main(["--pkg", "ants", "--os", "ubuntu", "-o", "/dev/null"])
from neurodocker.reproenv.state import registered_templates

print(json.dumps({
    "checked": checked,
    "registered": sorted(registered_templates()),
    "modules": sorted(m for m in ("docker", "requests", "rich", "reprozip", "dockerfile_parse", "spython")
                      if m in sys.modules),
}))
"""


def _probe() -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_a_render_checks_only_the_templates_it_uses():
    seen = _probe()
    # neurodocker's `import neurodocker` would have checked and registered all of its 20
    # templates and `_default`; a render of ants needs ants and ndgen's `_default` only.
    assert seen["registered"] == []
    assert sorted(seen["checked"]) == ["_default", "ants"]  # once each: Template() per distinct template
    assert seen["modules"] == []  # nor the Docker SDK, HTTP or terminal libraries
