#!/usr/bin/env python3
"""Emulation benchmark (issue 20): the same recipe built, tested and minified for x86_64
natively and for aarch64 under qemu-user, on this x86_64 host.

Recipe: tests/recipes/ndarch (both architectures, one Debian package, jq), built with
`ndgen build RECIPE --arch A --no-cache --network host` (apt through $NDGEN_APT_PROXY when
set), its fulltest.yaml run with `ndgen test` (`--suite`, the deploy check included), then
`ndgen minify --tests fulltest.yaml --keep-packages`.  Every number is measured in this run;
the ratios are aarch64 over x86_64 (the emulation slowdown) and source over minified size.

Needs the bases debian:bookworm and arm64v8/debian:bookworm (`ndgen base debian:bookworm
[--arch arm64]`) and `ndgen setup-emulation`.  Images are tagged ndgen-bench-arch-PID-… and
removed at the end unless --keep-images.

Usage: python bench/arch.py [--keep-images]
Takes about five minutes; not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "tests" / "recipes" / "ndarch"
SUITE = RECIPE / "fulltest.yaml"
PREFIX = f"ndgen-bench-arch-{os.getpid()}"
NDGEN = (sys.executable, "-m", "neurodocker_nd.cli")


def timed(*args: str) -> float:
    """`ndgen ARGS`, which must succeed; its wall-clock seconds."""
    started = time.monotonic()
    proc = subprocess.run([*NDGEN, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"bench/arch.py: `ndgen {' '.join(args)}` failed: {proc.stderr.strip()[-500:]}")
    return time.monotonic() - started


def measure(client: docker.DockerClient, arch: str, made: list[str]) -> dict[str, float]:
    built, small = f"{PREFIX}:{arch}", f"{PREFIX}-min:{arch}"
    made += [built, small]
    build = timed("build", str(RECIPE), "--arch", arch, "-t", built, "--no-test", "--no-cache", "--network", "host")
    test = timed("test", built, "--suite", str(SUITE))
    minify = timed("minify", built, "-t", small, "--tests", str(SUITE), "--keep-packages")
    return {
        "build": build,
        "test": test,
        "minify": minify,
        "size": client.images.get(built).attrs["Size"],
        "min_size": client.images.get(small).attrs["Size"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-images", action="store_true")
    options = parser.parse_args()
    client = docker.from_env(timeout=600)
    made: list[str] = []
    try:
        results = {arch: measure(client, arch, made) for arch in ("x86_64", "aarch64")}
    finally:
        if not options.keep_images:
            for tag in made:
                try:
                    client.images.remove(tag)
                except docker.errors.ImageNotFound:
                    pass
    native, emulated = results["x86_64"], results["aarch64"]
    print(f"{'':8} {'x86_64':>10} {'aarch64':>10} {'ratio':>7}")
    for step in ("build", "test", "minify"):
        print(f"{step:8} {native[step]:9.1f}s {emulated[step]:9.1f}s {emulated[step] / native[step]:6.1f}x")
    for arch, r in results.items():
        before, after = r["size"] / 1e6, r["min_size"] / 1e6
        print(f"minify {arch}: {before:.1f} MB → {after:.1f} MB ({before / after:.1f}x smaller)")


if __name__ == "__main__":
    main()
