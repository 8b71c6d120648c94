"""neurocontainers' recipe format (`recipes/<name>/build.yaml`) → an immutable Plan.

The format is read unchanged (see docs/recipes.md): metadata keys, `build:`
(kind, base-image, pkg-manager, add-default-template, add-tzdata,
fix-locale-def) and every directive, with `condition:` and Jinja
(`context.version`, `arch`, `get_file()`, `parallel_jobs`, variables) evaluated
here, while parsing, in jinja2's ImmutableSandboxedEnvironment — the renderer
only sees plain steps.  What a recipe means follows neurocontainers' own
builder, so the Dockerfile is equivalent to theirs instruction by instruction
(the deliberate differences are listed in docs/recipes.md).

Errors name the file and line of the directive: `build.yaml:42: …`.

Modules: `loader` (the phases of build.yaml and one handler per directive),
`jinja` (the recipe's Jinja context and its evaluation), `templates` (the
templates a `template:` directive names, from --templates or the registry).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from neurodocker_nd.core.arch import ARCHES
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render import steps as st
from neurodocker_nd.render.recipe.jinja import RecipeError
from neurodocker_nd.render.recipe.loader import Loader

__all__ = ["ARCHES", "RecipeError", "find_recipe", "load_recipe"]


def find_recipe(path: str | Path) -> Path:
    """A recipe directory or its build.yaml → the build.yaml path."""
    p = Path(path)
    if p.is_dir():
        p = p / "build.yaml"
    if not os.path.lexists(p):  # what is there (a link, a FIFO) is for the contained reader to judge
        raise RecipeError(f"{path}: no recipe here (expected a directory with build.yaml, or the file)")
    return p


def load_recipe(
    path: str | Path,
    *,
    arch: str = "x86_64",
    options: Mapping[str, str] | None = None,
    templates: Sequence[str | Path] = (),
    registry: Registry | None = None,
    parallel_jobs: int | None = None,
) -> st.Plan:
    """Read a recipe (directory or build.yaml) into a Plan. Raises RecipeError (one line)."""
    return Loader(find_recipe(path), arch, dict(options or {}), templates, registry, parallel_jobs).load()
