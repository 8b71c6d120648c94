"""The in-memory templates ndgen adds to plans, as plain neurodocker template data.

* `default_template`: neurodocker's `_default` (locales, /neurodocker/startup.sh)
  with its entrypoint snippet rewritten to double quotes (shellcheck SC2016);
  every front end starts a plan with it (recipes unless `add-default-template:
  false`);
* `system_template`: a registry entry's OS packages (`method=system`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Entry, Registry

ENTRYPOINT = "/neurodocker/startup.sh"
# The NeuroDebian mirror used when an entry asks for NeuroDebian (the main
# server; the `neurodebian` template calls mirrors "versions").
NEURODEBIAN_MIRROR = "usa-nh"

# neurodocker's `_default` template writes the entrypoint script with
# single-quoted `$` (shellcheck SC2016).  Same script, double quotes.  One line per
# snippet, as upstream's template has it, so each key can be found there verbatim.
ENTRYPOINT_FIX = {
    """echo 'export USER="${USER:=`whoami`}"' >> "$ND_ENTRYPOINT\"""": """echo "export USER=\\"\\${USER:=\\`whoami\\`}\\"" >> "$ND_ENTRYPOINT\"""",  # noqa: E501
    """echo 'if [ -n "$1" ]; then "$@"; else /usr/bin/env bash; fi' >> "$ND_ENTRYPOINT";""": """echo "if [ -n \\"\\$1\\" ]; then \\"\\$@\\"; else /usr/bin/env bash; fi" >> "$ND_ENTRYPOINT";""",  # noqa: E501
}


def fix_entrypoint_snippet(text: str, *, strict: bool = True) -> str:
    """Apply ENTRYPOINT_FIX; `strict` fails when upstream's snippet changed."""
    for old, new in ENTRYPOINT_FIX.items():
        if old not in text and strict:
            # Upstream changed the snippet: fail loudly rather than render SC2016.
            raise NdgenError(f"neurodocker's _default template changed; update ndgen's entrypoint fix ({old!r})")
        text = text.replace(old, new)
    return text


def default_template(registry: Registry) -> Mapping[str, Any]:
    upstream = registry.internal("_default")
    source = dict(upstream["source"])
    source["instructions"] = fix_entrypoint_snippet(source["instructions"])
    return {**upstream, "source": source}


def system_template(entry: Entry) -> dict[str, Any]:
    """An in-memory neurodocker template installing an entry's OS packages.

    The packages are the template's `dependencies`, so neurodocker's renderer
    writes its own apt/yum install command (`install_dependencies()`), the
    same one `Renderer.install()` writes — in a single, singly-indented RUN and
    logged once in the saved spec (`install()` is logged together with the
    `run()` it makes, so a replayed spec would install twice).  EPEL comes
    first on yum when the entry asks for it.
    """
    assert entry.meta is not None and entry.meta.system is not None
    system = entry.meta.system
    instructions = "{{ self.install_dependencies() }}"
    if system.epel:
        # Decided at render time, as upstream templates do: one template serves apt and yum.
        instructions = (
            "{% if self.pkg_manager == 'yum' %}{{ self.install(['epel-release']) }}\n{% endif %}" + instructions
        )
    deps = {pm: list(system.packages(pm)) for pm in ("apt", "yum") if system.packages(pm)}
    return {
        "name": entry.name,
        "url": entry.meta.homepage,
        "source": {"dependencies": deps, "instructions": instructions},
    }
