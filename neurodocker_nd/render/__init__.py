"""Front ends → one immutable Plan → Dockerfile / Singularity text.  Never imports docker.

Front ends: `--pkg` (pkg), neurodocker's directive flags (flags), neurocontainers'
build.yaml (recipe).  Each produces a frozen `steps.Plan`; `renderer` turns it into text
on neurodocker's reproenv, rendering registry templates in `template_sandbox`.

The public API is re-exported lazily, so `import neurodocker_nd.render.steps` does not
load neurodocker's renderer:

    from neurodocker_nd.render import load_recipe, render, write_context
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "render": "neurodocker_nd.render.renderer",
    "render_recipe": "neurodocker_nd.render.renderer",
    "RecipeRenderer": "neurodocker_nd.render.renderer",
    "HADOLINT_IGNORE": "neurodocker_nd.render.renderer",
    "load_recipe": "neurodocker_nd.render.recipe",
    "find_recipe": "neurodocker_nd.render.recipe",
    "write_context": "neurodocker_nd.render.context",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    # PEP 562: the documented names resolve on first use, keeping cold imports cheap.
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
