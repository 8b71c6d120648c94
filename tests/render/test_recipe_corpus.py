"""neurocontainers' real recipes against their own builder (issue 8's acceptance).

Needs a neurocontainers checkout: NDGEN_NEUROCONTAINERS=/path/to/checkout (its
builder's requirements importable by NDGEN_NEUROCONTAINERS_PYTHON, default this
Python).  Skips without it.  The whole set with timings: bench/recipes.py.
A sample of recipes keeps this test short; NDGEN_CORPUS_ALL=1 checks them all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.maintain.equivalence import first_difference
from neurodocker_nd.render.recipe import load_recipe
from neurodocker_nd.render.renderer import RecipeRenderer

CHECKOUT = os.environ.get("NDGEN_NEUROCONTAINERS")
pytestmark = pytest.mark.skipif(not CHECKOUT, reason="set NDGEN_NEUROCONTAINERS to a neurocontainers checkout")


def _recipes() -> list[Path]:
    dirs = sorted(p.parent for p in Path(CHECKOUT or ".").glob("recipes/*/build.yaml"))
    return dirs if os.environ.get("NDGEN_CORPUS_ALL") == "1" else dirs[::8]


def test_equivalent_to_their_builder_and_spython_parses(tmp_path):
    from spython.main.parse.parsers import SingularityParser

    checkout = Path(CHECKOUT)  # type: ignore[arg-type]
    python = os.environ.get("NDGEN_NEUROCONTAINERS_PYTHON", sys.executable)
    renderer = RecipeRenderer()
    recipes = _recipes()
    assert recipes, f"no recipes/*/build.yaml under {checkout}"
    equivalent = parsed = 0
    problems = []
    for d in recipes:
        try:
            plan = load_recipe(d, templates=[checkout / "builder" / "templates"], registry=renderer.registry)
        except NdgenError as exc:
            assert "\n" not in exc.message
            problems.append(f"{d.name}: {exc.message}")
            continue
        ours = renderer.render_plan(plan, "docker")
        proc = subprocess.run(
            [python, "-m", "builder", "generate", d.name, "--architecture", "x86_64", "--output-root", str(tmp_path)],
            cwd=checkout,
            capture_output=True,
            text=True,
        )
        theirs = next((tmp_path / d.name).glob("*.Dockerfile"), None) if proc.returncode == 0 else None
        diff = first_difference(ours, theirs.read_text()) if theirs else "reference failed"
        if diff is None:
            equivalent += 1
        else:
            problems.append(f"{d.name}: {diff if isinstance(diff, str) else diff.line()}")
        path = tmp_path / f"{d.name}.def"
        path.write_text(renderer.render_plan(plan, "singularity"))
        (recipe,) = SingularityParser(str(path)).recipe.values()
        parsed += bool(recipe.fromHeader)
    n = len(recipes)
    assert equivalent >= 0.95 * n, f"{equivalent}/{n} equivalent: " + "; ".join(problems)
    assert parsed >= 0.95 * n
