#!/usr/bin/env python3
"""Render every recipe of a neurocontainers checkout with ndgen, against their builder.

Measured in one run on this machine:

* ndgen: ONE fresh process (`python bench/recipes.py --worker …`, imports
  included) renders every recipe in both formats (Docker and Singularity);
* reference: neurocontainers' builder as their CI runs it, one process per
  recipe (`python -m builder generate NAME --architecture ARCH`), Docker only.

Goal (issue 8): the whole set ≥ 20x faster.  Then, unless --no-compare, the
acceptance numbers: how many Dockerfiles are equivalent to the builder's,
instruction by instruction (neurodocker_nd.maintain.equivalence; deliberate
differences in docs/recipes.md), and how many Singularity files spython
parses; every recipe ndgen does not render is listed with its one error line.

Usage: python bench/recipes.py CHECKOUT [--ref-python PY] [--arch x86_64] [--limit N] [--show-diffs]
CHECKOUT is a neurocontainers checkout (recipes/, builder/); --ref-python is a
Python with the builder's requirements (default: this one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def children_cpu() -> float:
    """user+sys CPU seconds of finished child processes (less sensitive to machine load than wall time)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def recipe_dirs(checkout: Path, limit: int | None) -> list[Path]:
    dirs = sorted(p.parent for p in (checkout / "recipes").glob("*/build.yaml"))
    return dirs[:limit] if limit else dirs


# ---------------------------------------------------------------- ndgen (worker process)


def worker(checkout: Path, out: Path, arch: str, names: list[str]) -> None:
    """Render each recipe in both formats into out/NAME.{Dockerfile,def}; errors into out/errors.json."""
    sys.path.insert(0, str(REPO))
    from neurodocker_nd.errors import NdgenError
    from neurodocker_nd.render.recipe import load_recipe
    from neurodocker_nd.render.renderer import RecipeRenderer

    renderer = RecipeRenderer()
    errors: dict[str, str] = {}
    templates = [checkout / "builder" / "templates"]
    for name in names:
        try:
            plan = load_recipe(checkout / "recipes" / name, arch=arch, templates=templates, registry=renderer.registry)
            docker = renderer.render_plan(plan, "docker")
            singularity = renderer.render_plan(plan, "singularity")
        except NdgenError as exc:
            errors[name] = exc.message
            continue
        (out / f"{name}.Dockerfile").write_text(docker)
        (out / f"{name}.def").write_text(singularity)
    (out / "errors.json").write_text(json.dumps(errors, indent=1))


# ---------------------------------------------------------------- reference


def reference(checkout: Path, out: Path, arch: str, names: list[str], python: str) -> dict[str, str]:
    """Their builder, one process per recipe; returns {name: error line} for failures."""
    errors: dict[str, str] = {}
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for name in names:
        proc = subprocess.run(
            [python, "-m", "builder", "generate", name, "--architecture", arch, "--output-root", str(out)],
            cwd=checkout,
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            errors[name] = lines[-1] if lines else f"exit {proc.returncode}"
    return errors


def reference_dockerfile(out: Path, name: str, arch: str) -> str | None:
    d = out / (f"{name}_arm64" if arch == "aarch64" else name)  # their aarch64 identity
    found = sorted(d.glob("*.Dockerfile")) if d.is_dir() else []
    return found[0].read_text() if found else None


def spython_parses(path: Path) -> str | None:
    """None if spython parses the file into a recipe with a base image; else why not."""
    from spython.main.parse.parsers import SingularityParser

    try:
        recipes = SingularityParser(str(path)).recipe
    except Exception as exc:  # noqa: BLE001 - any parser failure is a result here
        return f"{type(exc).__name__}: {exc}"
    recipe = next(iter(recipes.values()), None)
    if recipe is None or not recipe.fromHeader:
        return "no base image"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", type=Path)
    ap.add_argument("--ref-python", default=sys.executable)
    ap.add_argument("--arch", default="x86_64", choices=["x86_64", "aarch64"])
    ap.add_argument("--limit", type=int)
    ap.add_argument("--no-compare", action="store_true")
    ap.add_argument("--show-diffs", action="store_true", help="one line per non-equivalent recipe")
    ap.add_argument("--worker", nargs=2, metavar=("OUT", "NAMES_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    checkout = args.checkout.resolve()
    if args.worker:
        worker(checkout, Path(args.worker[0]), args.arch, json.loads(Path(args.worker[1]).read_text()))
        return 0

    names = [d.name for d in recipe_dirs(checkout, args.limit)]
    with tempfile.TemporaryDirectory(prefix="ndgen-bench-recipes-") as tmp:
        ours_dir, ref_dir = Path(tmp) / "ours", Path(tmp) / "ref"
        ours_dir.mkdir()
        names_file = Path(tmp) / "names.json"
        names_file.write_text(json.dumps(names))
        # ndgen first, then the reference; each sees the same (warm) page cache.
        t0, c0 = time.perf_counter(), children_cpu()
        subprocess.run(
            [sys.executable, __file__, str(checkout), "--arch", args.arch, "--worker", str(ours_dir), str(names_file)],
            check=True,
        )
        t_ours, c_ours = time.perf_counter() - t0, children_cpu() - c0
        t0, c0 = time.perf_counter(), children_cpu()
        ref_errors = reference(checkout, ref_dir, args.arch, names, args.ref_python)
        t_ref, c_ref = time.perf_counter() - t0, children_cpu() - c0

        errors = json.loads((ours_dir / "errors.json").read_text())
        n = len(names)
        print(f"recipes: {n} ({args.arch})")
        print(
            f"ndgen, one process, docker + singularity:           wall {t_ours:7.2f} s  cpu {c_ours:7.2f} s"
            f"  ({1000 * t_ours / n:.1f} ms/recipe wall)"
        )
        print(
            f"neurocontainers builder, process per recipe, docker: wall {t_ref:7.2f} s  cpu {c_ref:7.2f} s"
            f"  ({1000 * t_ref / n:.1f} ms/recipe wall)"
        )
        print(f"speed-up (whole set): wall {t_ref / t_ours:.1f}x, cpu {c_ref / c_ours:.1f}x  (goal >= 20x)")
        if args.no_compare:
            return 0

        equivalent, diffs, parsed, parse_fail = 0, {}, 0, {}
        from neurodocker_nd.maintain.equivalence import first_difference

        for name in names:
            if name in errors:
                continue
            theirs = reference_dockerfile(ref_dir, name, args.arch)
            if theirs is None:
                diffs[name] = f"reference failed: {ref_errors.get(name, '?')}"
            else:
                d = first_difference((ours_dir / f"{name}.Dockerfile").read_text(), theirs)
                if d is None:
                    equivalent += 1
                else:
                    diffs[name] = d.line()
            why = spython_parses(ours_dir / f"{name}.def")
            if why is None:
                parsed += 1
            else:
                parse_fail[name] = why
        print(f"docker equivalent to the builder's: {equivalent}/{n} ({100 * equivalent / n:.1f}%)")
        rendered_by_ref = n - len(ref_errors)
        if rendered_by_ref != n:
            print(f"  of the {rendered_by_ref} recipes their builder renders: {equivalent}/{rendered_by_ref}")
        print(f"singularity parsed by spython: {parsed}/{n} ({100 * parsed / n:.1f}%)")
        print(f"not rendered by ndgen: {len(errors)}")
        for name, msg in sorted(errors.items()):
            ref = "reference fails too" if name in ref_errors else "reference renders it"
            print(f"  {name}: ndgen: error: {msg}  [{ref}]")
        if diffs:
            print(f"not equivalent: {len(diffs)}")
            for name, line in sorted(diffs.items()):
                print(f"  {name}: {line}" if args.show_diffs else f"  {name}")
        for name, why in sorted(parse_fail.items()):
            print(f"  spython: {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
