#!/usr/bin/env python3
"""Render speed of ndgen vs neurodocker, measured in one run on this machine.

(a) cold single render: `ndgen --pkg ants --os ubuntu` vs
    `neurodocker generate docker --pkg-manager apt --base-image ubuntu:24.04 --ants version=2.6.2`
    (fresh processes; best and median of --runs).
(b) `ndgen matrix` per recipe (a fresh `ndgen matrix` process, startup and file
    writes included) vs neurodocker's in-process API (`Renderer.from_dict` +
    `str()`, import excluded) rendering the same recipes, and vs neurodocker's
    CLI called once per recipe (a sample of --cli-sample recipes).

Targets (issue 2): (a) ndgen ≤ 0.3 s and faster than neurodocker's CLI;
(b) ≥ 4x faster than in-process, ≥ 100x faster than the CLI loop.
Usage: python bench/render.py [--runs 7] [--cli-sample 10]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NDGEN = [sys.executable, "-m", "neurodocker_nd.cli"]


def _tool(name: str) -> list[str]:
    beside = Path(sys.executable).with_name(name)  # the same environment's script first
    return [str(beside) if beside.exists() else (shutil.which(name) or name)]


def timed_run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
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
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--cli-sample", type=int, default=10)
    opts = ap.parse_args()
    nd = _tool("neurodocker")

    # (a) cold single render
    ng, ndc = cold_pair(
        NDGEN + ["--pkg", "ants", "--os", "ubuntu"],
        nd + ["generate", "docker", "--pkg-manager", "apt", "--base-image", "ubuntu:24.04", "--ants", "version=2.6.2"],
        opts.runs,
    )
    # Floors: what any tool built on neurodocker.reproenv pays before doing anything.
    py, imp = cold_pair(
        [sys.executable, "-c", "pass"], [sys.executable, "-c", "import neurodocker.reproenv.renderers"], opts.runs
    )
    print(f"(a) cold single render, ants on ubuntu:24.04 (best / median of {opts.runs}, runs interleaved)")
    for label, samples in (
        ("ndgen", ng),
        ("neurodocker generate", ndc),
        ("floor: python -c pass", py),
        ("floor: import neurodocker.reproenv.renderers", imp),
    ):
        (wb, wm), (cb, cm) = _best_med(samples, 0), _best_med(samples, 1)
        print(f"    {label:<46} wall {wb:.3f} / {wm:.3f} s   cpu {cb:.3f} / {cm:.3f} s")
    ng_best, nd_best = _best_med(ng, 0)[0], _best_med(ndc, 0)[0]
    ng_cpu, nd_cpu = _best_med(ng, 1)[0], _best_med(ndc, 1)[0]
    print(f"    ratio neurodocker/ndgen: wall {nd_best / ng_best:.2f}x, cpu {nd_cpu / ng_cpu:.2f}x (best)")
    print(
        f"    target: ndgen <= 0.300 s wall: {'OK' if ng_best <= 0.3 else 'MISSED'} ({ng_best:.3f} s); "
        f"faster than neurodocker: {'OK' if ng_best < nd_best else 'MISSED'}"
    )
    print(
        f"    ndgen's own cost on top of importing neurodocker's renderer: "
        f"{(ng_cpu - _best_med(imp, 1)[0]) * 1000:.0f} ms cpu"
    )

    # (b) matrix
    with tempfile.TemporaryDirectory(prefix="ndgen-bench-") as tmp:
        out = Path(tmp) / "m"
        t0 = time.perf_counter()
        proc = subprocess.run(
            NDGEN + ["matrix", "--out", str(out)], check=True, capture_output=True, text=True, cwd=REPO
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
        ).stdout
    )
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
