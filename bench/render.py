#!/usr/bin/env python3
"""Render speed of ndgen vs neurodocker, measured in one run on this machine.

(a) cold single render: `ndgen --pkg ants==2.6.2 --os ubuntu` vs
    `neurodocker generate docker --pkg-manager apt --base-image ubuntu:24.04 --ants version=2.6.2`,
    the same job: `--os ubuntu` is ubuntu:24.04 with apt, and the version is pinned because
    ndgen's registry adds 2.6.3-2.6.5 (its default) to neurodocker 2.1.2's newest, 2.6.2; both
    recipes are checked for it before timing. Fresh processes, alternating, medians of --runs.
(b) `ndgen matrix` per recipe (a fresh `ndgen matrix` process, startup and file
    writes included) vs neurodocker's in-process API (`Renderer.from_dict` +
    `str()`, import excluded) rendering the same recipes, and vs neurodocker's
    CLI called once per recipe (a sample of --cli-sample recipes).

Targets: (a) (issue 22) ndgen ≥ 2.5x faster than neurodocker's CLI (median CPU and wall);
(b) (issue 2) ≥ 4x faster than in-process, ≥ 100x faster than the CLI loop.
It prints numbers and ratios; it asserts nothing.

Every child gets the same bytecode treatment: PYTHONDONTWRITEBYTECODE is dropped and
PYTHONPYCACHEPREFIX points at a scratch directory, so the warm-up run compiles both tools
once (as `pip install` does) and nothing is written into the checkout or site-packages.
Usage: python bench/render.py [--runs 15] [--cli-sample 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The children's environment (main() sets PYTHONPYCACHEPREFIX): the checkout first on the path.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CHILD_ENV["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


def _tool(name: str) -> list[str]:
    beside = Path(sys.executable).with_name(name)  # the same environment's script first
    return [str(beside) if beside.exists() else (shutil.which(name) or name)]


def _ndgen() -> list[str]:
    """What users type, `ndgen` (this environment's console script, importing the checkout
    first through CHILD_ENV's PYTHONPATH), as neurodocker is timed by its own script;
    `python -m neurodocker_nd.cli` where this environment has no script."""
    beside = Path(sys.executable).with_name("ndgen")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "neurodocker_nd.cli"]


NDGEN = _ndgen()


def timed_run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=CHILD_ENV)
    return time.perf_counter() - t0


def timed_cpu(cmd: list[str]) -> tuple[float, float]:
    """(wall, user+sys CPU) seconds of one fresh process; CPU time varies less with machine load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed_run(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cold_pair(a: list[str], b: list[str], runs: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Alternate a and b so both see the same machine load; one warm-up each
    (page cache and .pyc files: "cold" means a new process, not a cold disk)."""
    timed_run(a)
    timed_run(b)
    ta, tb = [], []
    for _ in range(runs):
        ta.append(timed_cpu(a))
        tb.append(timed_cpu(b))
    return ta, tb


def _best_med(samples: list[tuple[float, float]], i: int) -> tuple[float, float]:
    values = [s[i] for s in samples]
    return min(values), statistics.median(values)


def _output(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO, env=CHILD_ENV).stdout


def same_job(ndgen: list[str], neurodocker: list[str]) -> None:
    """Both commands render ants 2.6.2 on ubuntu:24.04 with apt, or the comparison is void."""
    ours, theirs = _output(ndgen), _output(neurodocker)
    for text, who in ((ours, "ndgen"), (theirs, "neurodocker")):
        if "FROM ubuntu:24.04" not in text or "ants-2.6.2" not in text or "apt-get install" not in text:
            sys.exit(f"bench: {who}'s recipe is not ants 2.6.2 on ubuntu:24.04 with apt")


def neurodocker_dict(item) -> dict:
    """The neurodocker renderer dict for one matrix recipe (same template and arguments)."""
    from neurodocker_nd.render.pkg import resolve

    spec = resolve([_pkg_text(item)], item.os_name)
    (pkg,) = spec.packages
    instr = [{"name": "from_", "kwds": {"base_image": spec.target.base_image}}, {"name": "_default", "kwds": {}}]
    if pkg.method == "system":
        sysm = pkg.entry.meta.system
        instr.append({"name": "install", "kwds": {"pkgs": list(sysm.packages(spec.target.pkg_manager))}})
    else:
        instr.append({"name": pkg.name, "kwds": {"method": pkg.method, **dict(pkg.kwds)}})
    instr.append({"name": "entrypoint", "kwds": {"args": ["/neurodocker/startup.sh"]}})
    return {"pkg_manager": spec.target.pkg_manager, "instructions": instr}


def _pkg_text(item) -> str:
    return f"{item.name},method={item.method}"


def neurodocker_cli_args(item, template_path: str) -> list[str]:
    d = neurodocker_dict(item)
    args = [
        "generate",
        "--template-path",
        template_path,
        item.fmt,
        "--pkg-manager",
        d["pkg_manager"],
        "--base-image",
        d["instructions"][0]["kwds"]["base_image"],
    ]
    step = d["instructions"][2]
    if step["name"] == "install":
        args += ["--install", *step["kwds"]["pkgs"]]
    else:
        args += [f"--{step['name']}", *(f"{k}={v}" for k, v in step["kwds"].items())]
    return args + ["--yes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--cli-sample", type=int, default=10)
    opts = ap.parse_args()
    nd = _tool("neurodocker")
    with tempfile.TemporaryDirectory(prefix="ndgen-bench-pyc-") as pyc:
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = pyc
        cold(opts, nd)
        matrix(opts, nd)


def cold(opts: argparse.Namespace, nd: list[str]) -> None:
    """(a) a cold single render, ndgen against neurodocker's CLI."""
    ndgen_cmd = NDGEN + ["--pkg", "ants==2.6.2", "--os", "ubuntu"]
    nd_cmd = nd + [
        "generate",
        "docker",
        "--pkg-manager",
        "apt",
        "--base-image",
        "ubuntu:24.04",
        "--ants",
        "version=2.6.2",
    ]
    same_job(ndgen_cmd, nd_cmd)
    ng, ndc = cold_pair(ndgen_cmd, nd_cmd, opts.runs)
    # Floors: a bare interpreter, and neurodocker's import (which registers all its templates).
    py, imp = cold_pair([sys.executable, "-c", "pass"], [sys.executable, "-c", "import neurodocker"], opts.runs)
    print(f"(a) cold single render, ants 2.6.2 on ubuntu:24.04 (best / median of {opts.runs}, runs interleaved)")
    for label, samples in (
        ("ndgen", ng),
        ("neurodocker generate", ndc),
        ("floor: python -c pass", py),
        ("floor: import neurodocker (registers all)", imp),
    ):
        (wb, wm), (cb, cm) = _best_med(samples, 0), _best_med(samples, 1)
        print(f"    {label:<46} wall {wb:.3f} / {wm:.3f} s   cpu {cb:.3f} / {cm:.3f} s")
    (_, ng_wall), (_, nd_wall) = _best_med(ng, 0), _best_med(ndc, 0)
    (_, ng_cpu), (_, nd_cpu) = _best_med(ng, 1), _best_med(ndc, 1)
    r_wall, r_cpu = nd_wall / ng_wall, nd_cpu / ng_cpu
    print(f"    ratio neurodocker/ndgen (medians): wall {r_wall:.2f}x, cpu {r_cpu:.2f}x")
    print(f"    target >= 2.5x: wall {'OK' if r_wall >= 2.5 else 'MISSED'}, cpu {'OK' if r_cpu >= 2.5 else 'MISSED'}")
    print(f"    ndgen's cpu above a bare interpreter: {(ng_cpu - _best_med(py, 1)[1]) * 1000:.0f} ms (median)")


def matrix(opts: argparse.Namespace, nd: list[str]) -> None:
    """(b) the matrix per recipe, against neurodocker in-process and its CLI per recipe."""
    with tempfile.TemporaryDirectory(prefix="ndgen-bench-") as tmp:
        out = Path(tmp) / "m"
        t0 = time.perf_counter()
        proc = subprocess.run(
            NDGEN + ["matrix", "--out", str(out)], check=True, capture_output=True, text=True, cwd=REPO, env=CHILD_ENV
        )
        t_matrix = time.perf_counter() - t0
        n = int(proc.stdout.split()[0])
        assert n == len(list(out.iterdir())), "matrix count does not match the files written"
    per_ndgen = t_matrix / n

    sys.path.insert(0, str(REPO))
    from neurodocker_nd.maintain.matrix import render_matrix
    from neurodocker_nd.registry.entries import Registry
    from neurodocker_nd.render.target import PRESETS

    registry = Registry()
    items, _ = render_matrix(registry, PRESETS, ("docker", "singularity"))
    dicts = [(it, neurodocker_dict(it)) for it in items]

    t_import = float(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import time; t = time.perf_counter(); import neurodocker; print(time.perf_counter() - t)",
            ],
            check=True,
            capture_output=True,
            text=True,
            env=CHILD_ENV,
        ).stdout
    )
    from neurodocker_nd.core import reproenv

    # The baseline is neurodocker as its users import it: every template registered.
    reproenv.import_all()
    from neurodocker.reproenv import DockerRenderer, SingularityRenderer, register_template

    # ndgen's registry templates, registered the neurodocker way for the baseline only.
    for entry in registry.entries():
        if entry.source != "upstream" and entry.template is not None:
            register_template(entry.template_path)
    t0 = time.perf_counter()
    for it, d in dicts:
        cls = DockerRenderer if it.fmt == "docker" else SingularityRenderer
        str(cls.from_dict(d))
    per_inproc = (time.perf_counter() - t0) / len(dicts)

    step = max(1, len(items) // opts.cli_sample)
    sample = items[::step][: opts.cli_sample]
    with tempfile.TemporaryDirectory(prefix="ndgen-bench-tpl-") as tpl:
        # neurodocker's CLI sees ndgen's registry templates through --template-path.
        for entry in registry.entries():
            if entry.source != "upstream" and entry.template is not None:
                shutil.copy(entry.template_path, Path(tpl) / f"{entry.name}.yaml")
        cli_times = [timed_run(nd + neurodocker_cli_args(it, tpl)) for it in sample]
    per_cli = statistics.mean(cli_times)

    print(f"(b) matrix: {n} recipes ({len(PRESETS)} OS presets x 2 formats)")
    print(f"    ndgen matrix (fresh process, files written) {t_matrix:.2f} s = {per_ndgen * 1000:.2f} ms/recipe")
    print(
        f"    neurodocker in-process from_dict+str        {per_inproc * 1000:.2f} ms/recipe"
        f" (its import, {t_import:.2f} s in a fresh process, excluded)"
    )
    print(f"    neurodocker CLI, one process per recipe     {per_cli * 1000:.0f} ms/recipe (mean of {len(cli_times)})")
    r_in, r_cli = per_inproc / per_ndgen, per_cli / per_ndgen
    print(f"    ratio in-process/ndgen: {r_in:.1f}x (target >= 4x: {'OK' if r_in >= 4 else 'MISSED'})")
    print(f"    ratio CLI/ndgen:        {r_cli:.0f}x (target >= 100x: {'OK' if r_cli >= 100 else 'MISSED'})")


if __name__ == "__main__":
    main()
