#!/usr/bin/env python3
"""`ndgen fleet run --jobs 2` against a sequential loop of `ndgen build` + `ndgen test`, in one run.

Three Debian-packaged recipes from tests/recipes (ndtool, ndgen-demo and ndcount, ndtool
renamed), x86_64, on this machine's engine, through the apt cache ($NDGEN_APT_PROXY) and
`--network host`, against a real registry (Debian's docker-registry on 127.0.0.1 with its
storage in a temp directory).  Each side gets its own copy of the recipes with a first
`environment:` directive of its own, so neither reuses the other's images or BuildKit layers:
both build from the base image (apt's downloads come from the cache for both).

Printed, all measured in this run:
- sequential loop (build + test per recipe) vs `fleet run --jobs 2` (which also pushes and
  promotes): the ratio;
- a rerun with nothing changed (every target skipped): its share of the first run (goal ≤ 5%);
- per target: build, test, push, promote seconds (the report's stage_seconds) and ndgen's
  overhead beyond the engine's build: the target's whole time minus its build and test stages.

Usage: python bench/fleet.py [--keep]   (as root, with the engine and the base image debian:bookworm)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "tests" / "recipes"
NDGEN = [sys.executable, "-m", "neurodocker_nd.cli"]


def copy_recipes(root: Path, marker: str) -> Path:
    root.mkdir(parents=True)
    for source, name in (("ndtool", "ndtool"), ("ndgen-demo", "ndgen-demo"), ("ndtool", "ndcount")):
        dest = root / name
        shutil.copytree(RECIPES / source, dest)
        for file in ("build.yaml", "fulltest.yaml"):
            text = (dest / file).read_text().replace(f"name: {source}\n", f"name: {name}\n")
            if file == "build.yaml":  # first directive: every layer after the base is this side's own
                text = text.replace(
                    "  directives:\n", f"  directives:\n    - environment:\n        BENCH: {marker}\n", 1
                )
            (dest / file).write_text(text)
    return root


def start_registry(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root.mkdir(parents=True)
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("docker-registry did not start")


def run(argv: list[str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Keep the images and the scratch directory.")
    args = parser.parse_args()
    net = ["--network", "host", "--apt-proxy", os.environ.get("NDGEN_APT_PROXY", "")]
    run_id = uuid.uuid4().hex[:8]
    scratch = Path(tempfile.mkdtemp(prefix="ndgen-bench-fleet-"))
    registry, address = start_registry(scratch / "registry")
    tags: list[str] = []
    try:
        seq_dir = copy_recipes(scratch / "sequential", f"seq-{run_id}")
        fleet_dir = copy_recipes(scratch / "fleet", f"fleet-{run_id}")
        # sequential: ndgen build (no tests) then ndgen test, one recipe after the other
        seq: dict[str, tuple[float, float]] = {}
        for recipe in sorted(seq_dir.iterdir()):
            tag = f"bench-fleet-seq-{run_id}-{recipe.name}:1"
            tags.append(tag)
            build = run([*NDGEN, "build", str(recipe), "-t", tag, "--no-test", *net])
            test = run([*NDGEN, "test", tag, "--suite", str(recipe / "fulltest.yaml")])
            seq[recipe.name] = (build, test)
        sequential = sum(b + t for b, t in seq.values())
        report = scratch / "report.json"
        prefix = f"bench-fleet-{run_id}"
        tags += [f"{prefix}-{n}:{v}-x86_64" for n, v in (("ndtool", "2.0"), ("ndcount", "2.0"), ("ndgen-demo", "1.0"))]
        fleet_argv = [*NDGEN, "fleet", "run", str(fleet_dir), "--registry", address, "--arch", "x86_64", *net]
        fleet_argv += ["--local-prefix", prefix, "--report", str(report)]
        first = run([*fleet_argv, "--jobs", "2"])
        targets = json.loads(report.read_text())["targets"]
        rerun = run([*fleet_argv, "--jobs", "2"])
        skipped = json.loads(report.read_text())["targets"]
        assert all(t["status"] == "skipped" for t in skipped), skipped
    finally:
        registry.terminate()
        registry.wait()
        if not args.keep:
            subprocess.run(["docker", "image", "rm", "-f", *tags], capture_output=True)
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"recipes: {', '.join(sorted(seq))} (x86_64, Debian-packaged, apt cache, --network host)")
    print("sequential build + test per recipe:")
    for name, (b, t) in sorted(seq.items()):
        print(f"  {name:12} build {b:6.1f} s  test {t:5.1f} s")
    print(f"  total {sequential:.1f} s")
    print(
        f"fleet run --jobs 2 (also pushes and promotes): {first:.1f} s"
        f"  ->  {sequential / first:.2f}x the sequential loop"
    )
    print(
        f"rerun, nothing changed (all {len(skipped)} skipped): {rerun:.2f} s"
        f" = {100 * rerun / first:.1f}% of the first run (goal <= 5%)"
    )
    print("per target in the fleet run (stage seconds; overhead = whole - build - test):")
    for t in targets:
        st = t["stage_seconds"]
        overhead = t["seconds"] - st.get("build", 0) - st.get("test", 0)
        stages = "  ".join(f"{k} {v:5.1f} s" for k, v in st.items())
        print(f"  {t['name']:12} {t['status']:9} whole {t['seconds']:6.1f} s  {stages}  overhead {overhead:4.1f} s")


if __name__ == "__main__":
    main()
