#!/usr/bin/env python3
"""Reference benchmark: `ndgen minify` against neurodocker 2.1.2's `neurodocker minify`.

Image: debian:bookworm + Debian `mrtrix3 python3-nibabel python3-numpy dcm2niix`
(built once as ndgen-bench-mrtrix3 and reused).  Workload: the mrtrix3 profile's
setup (python3 + nibabel write a seeded 64x64x32x7 DWI with bvecs/bvals) followed
by its seven MRtrix3 commands — all traced, so Python stays in the result.

Everything printed is measured in this run: tracer overhead (untraced vs
fanotify vs ptrace, each round on a fresh overlay view), end-to-end
`ndgen minify` time and size for both tracers, and neurodocker's minify with
reprozip staged from host wheels into /tmp/reprozip-miniconda (the path its
_trace.sh reuses, so it never downloads Miniforge), followed by
`docker export | docker import` by hand.  Each minified image reruns the
workload with `docker run --network none`; outputs must be byte-identical.

`--keep-packages` (every OS package owning a traced file kept whole) is
measured the same way and its ratio printed.  The base image
debian:bookworm is made with `ndgen base` when missing.

Usage: python bench/minify.py [--rounds N] [--keep-images] [--skip-neurodocker]
Takes a few minutes; not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from neurodocker_nd.core import engine
from neurodocker_nd.core.paths import beside_python
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.minify.fanotify import FanotifyTracer
from neurodocker_nd.minify.model import Mount
from neurodocker_nd.minify.profile import REFERENCE_LABEL, ensure_reference_image, load_profile
from neurodocker_nd.minify.ptrace import PtraceTracer
from neurodocker_nd.minify.sandbox import run_plain
from neurodocker_nd.minify.source import open_source

TAG = "ndgen-bench-mrtrix3"
BASE = os.environ.get("NDGEN_BENCH_BASE", "debian:bookworm")  # the reference image builds FROM it
APT = ("mrtrix3", "python3-nibabel", "python3-numpy", "dcm2niix")
PREFIX = f"ndgen-bench-{os.getpid()}"
CACHE = Path(os.environ.get("NDGEN_BENCH_CACHE", "/tmp/ndgen-bench-cache"))
# Targets from the minify issue.
TARGET_RATIO, TARGET_OVERHEAD, TARGET_E2E = 15.0, 1.3, 60.0


def workload() -> list[str]:
    profile = load_profile("mrtrix3")
    return [*profile.setup, *profile.commands]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def fresh_dir(base: Path, name: str) -> Path:
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ------------------------------------------------------------------ tracer overhead


def time_tracers(client, scratch: Path, commands: Sequence[str], rounds: int) -> dict[str, list[float]]:
    """Wall time of the whole workload per mode, each round on a fresh view and data dir."""
    times: dict[str, list[float]] = {"untraced": [], "fanotify": [], "ptrace": []}
    with open_source(client, TAG) as src:
        for r in range(rounds):
            for mode in times:
                rootfs = src.view(f"{mode}-{r}")
                mounts = [Mount(host=fresh_dir(scratch, f"{mode}-{r}"), target="/data")]
                times[mode].append(_run_mode(mode, rootfs, src.config, commands, mounts))
    return times


def _run_mode(mode: str, rootfs: Path, config, commands: Sequence[str], mounts: list[Mount]) -> float:
    if mode == "untraced":
        results = [run_plain(rootfs, config, c, mounts) for c in commands]
        _check(mode, results)
        return sum(r.seconds for r in results)
    tracer = FanotifyTracer() if mode == "fanotify" else PtraceTracer()
    record = tracer.trace(rootfs, config, commands, mounts)
    _check(mode, record.results)
    return record.seconds


def _check(mode: str, results) -> None:
    failed = next((r for r in results if r.exit_code != 0), None)
    if failed is not None:
        raise SystemExit(f"bench: {mode}: {failed.command!r} exited {failed.exit_code}: {failed.stderr[-300:]!r}")


# ------------------------------------------------------------------ images and outputs


def _reference_current(client) -> bool:
    import docker.errors

    try:
        return client.images.get(TAG).labels.get(REFERENCE_LABEL) == " ".join(APT)
    except docker.errors.ImageNotFound:
        return False


def ensure_base(client) -> None:
    """debian:bookworm, made by `ndgen base` (debootstrap) when missing; one line if that fails."""
    import docker.errors

    try:
        client.images.get(BASE)
        return
    except docker.errors.ImageNotFound:
        pass
    print(f"bench: {BASE} missing: making it with `ndgen base {BASE}` (debootstrap, a few minutes)", flush=True)
    proc = subprocess.run([sys.executable, "-m", "neurodocker_nd.cli", "base", BASE], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench: base image {BASE} is missing and `ndgen base {BASE}` failed: {last}")


def image_size(client, tag: str) -> int:
    return int(client.images.get(tag).attrs["Size"])


def run_workload_in(
    client, image: str, scratch: Path, name: str, commands: Sequence[str]
) -> tuple[bytes, dict[str, str]]:
    """`docker run --network none` the workload in `image`; its stdout and output files."""
    data = fresh_dir(scratch, name)
    script = scratch / "work.sh"
    script.write_text("set -e\n" + "\n".join(commands) + "\n")
    out = client.containers.run(
        image,
        ["/bin/sh", "/bench/work.sh"],
        network_mode="none",
        volumes={str(data): {"bind": "/data", "mode": "rw"}, str(script): {"bind": "/bench/work.sh", "mode": "ro"}},
        remove=True,
        stdout=True,
        stderr=False,
    )
    return out, tree_digest(data)


def ndgen_minify(tag: str, scratch: Path, commands: Sequence[str], tracer: str, *extra: str) -> tuple[float, dict]:
    report = scratch / f"report-{tag}.json"
    # This interpreter's ndgen (the checkout under test), whether or not `ndgen` is on PATH.
    argv = [sys.executable, "-m", "neurodocker_nd.cli", "minify", TAG, "-t", tag, "--tracer", tracer,
            "--report", str(report), *extra]  # fmt: skip
    if commands:
        argv += ["-v", f"{fresh_dir(scratch, tag)}:/data"]
    for command in commands:
        argv += ["-c", command]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: ndgen minify ({tracer}) failed: {proc.stderr.strip()[-500:]}")
    return seconds, json.loads(report.read_text())


def print_ceiling(before: int, report: dict) -> None:
    """What the files the workload itself opened weigh: no minifier that keeps the output
    identical can go below them, so source/traced bounds the ratio of this run."""
    by_reason = report.get("reason_bytes") or {}
    traced = by_reason.get("traced")
    if not traced:
        return
    added = ", ".join(f"{r} {mb(b)}" for r, b in by_reason.items() if r != "traced")
    print(f"            opened by the workload: {mb(traced)} -> ceiling {before / traced:.1f}x; rules add: {added}")


# ------------------------------------------------------------------ neurodocker baseline


def neurodocker_cli() -> str:
    """This interpreter's `neurodocker` (the venv's, on PATH or not), else PATH's; one line if none."""
    found = beside_python("neurodocker") or shutil.which("neurodocker")
    if found is None:
        raise SystemExit("bench: neurodocker is not installed beside this Python nor on PATH "
                         "(pip install '.[test]'), or pass --skip-neurodocker")  # fmt: skip
    return found


def reprozip_stage() -> Path:
    """A /tmp/reprozip-miniconda tree: reprozip + deps from PyPI wheels, run by the image's python3."""
    stage = CACHE / "reprozip-miniconda"
    if (stage / "bin" / "reprozip").exists():
        return stage
    wheels = CACHE / "wheels"
    _pip(
        "download", "reprozip==1.3.2", "--only-binary=:all:", "--python-version", "3.11",
        "--implementation", "cp", "--platform", "manylinux2014_x86_64", "-d", str(wheels),
    )  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="stage-", dir=CACHE))
    _pip("install", "--no-index", "--find-links", str(wheels), "--target", str(tmp / "lib"), "reprozip==1.3.2")
    (tmp / "bin").mkdir()
    # neurodocker calls bin/reprozip and bin/python; both run the image's own Python 3.11.
    for name, tail in (("python", '"$@"'), ("reprozip", '-c "from reprozip.main import main; main()" "$@"')):
        wrapper = tmp / "bin" / name
        wrapper.write_text(f"#!/bin/sh\nPYTHONPATH=/tmp/reprozip-miniconda/lib exec /usr/bin/python3 {tail}\n")
        wrapper.chmod(0o755)
    tmp.rename(stage)
    return stage


def _pip(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: pip {args[0]} failed: {proc.stderr.strip()[-500:]}")


def neurodocker_minify(client, scratch: Path, commands: Sequence[str], tag: str) -> dict:
    neurodocker = neurodocker_cli()  # before staging reprozip or starting a container
    stage = reprozip_stage()
    data = fresh_dir(scratch, "neurodocker")
    script = scratch / "work.sh"
    script.write_text("set -e\n" + "\n".join(commands) + "\n")
    name = f"{PREFIX}-nd"
    # --network host: _trace.sh apt-get installs bzip2 and curl when they are missing.
    container = client.containers.run(
        TAG,
        ["sleep", "infinity"],
        name=name,
        detach=True,
        network_mode="host",
        volumes={str(data): {"bind": "/data", "mode": "rw"}, str(script): {"bind": "/bench/work.sh", "mode": "ro"}},
    )
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(stage, arcname="reprozip-miniconda")
        container.put_archive("/tmp", buffer.getvalue())
        start = time.perf_counter()
        proc = subprocess.run(
            [neurodocker, "minify", "--container", name, "--dir", "/usr/lib", "--dir", "/usr/share", "--yes",
             "sh /bench/work.sh"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        minify_seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench: neurodocker minify failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
        start = time.perf_counter()
        subprocess.run(f"docker export {name} | docker import - {tag} >/dev/null", shell=True, check=True)
        export_seconds = time.perf_counter() - start
        container.reload()
        trace_log = proc.stdout
    finally:
        container.remove(force=True)
    return {
        "minify_seconds": minify_seconds,
        "export_import_seconds": export_seconds,
        "installed_deps": "installing bzip2 curl" in trace_log,
    }


# ------------------------------------------------------------------ report


def mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def verdict(ok: bool) -> str:
    return "OK " if ok else "MISS"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the tracer timing (median is printed)")
    parser.add_argument("--keep-images", action="store_true", help="keep the minified images")
    parser.add_argument("--skip-neurodocker", action="store_true")
    args = parser.parse_args(argv)

    client = engine.connect()
    t0 = time.perf_counter()
    if not _reference_current(client):
        ensure_base(client)  # only the reference image's build needs it
    try:
        built = ensure_reference_image(client, TAG, APT, BASE)
    except NdgenError as exc:
        raise SystemExit(f"bench: {exc}") from None
    print(f"image {TAG}: {'built' if built else 'reused'} ({time.perf_counter() - t0:.0f} s); apt: {' '.join(APT)}")
    commands = workload()
    before = image_size(client, TAG)
    scratch = Path(tempfile.mkdtemp(prefix="ndgen-bench-"))
    made: list[str] = []
    try:
        reference_out = run_workload_in(client, TAG, scratch, "reference", commands)

        times = time_tracers(client, scratch, commands, args.rounds)
        base = statistics.median(times["untraced"])
        print(f"\n== tracer overhead (median of {args.rounds}; workload of {len(commands)} commands)")
        print(f"  untraced  {base:6.2f} s")
        overhead = {}
        for mode in ("fanotify", "ptrace"):
            med = statistics.median(times[mode])
            overhead[mode] = med / base
            print(
                f"  {mode:9} {med:6.2f} s  {overhead[mode]:.2f}x  target <= {TARGET_OVERHEAD}x  "
                f"{verdict(overhead[mode] <= TARGET_OVERHEAD)}"
            )

        print("\n== ndgen minify (end to end, verify on)")
        for tracer in ("fanotify", "ptrace"):
            tag = f"{PREFIX}-ndgen-{tracer}"
            seconds, report = ndgen_minify(tag, scratch, commands, tracer)
            made.append(tag)
            after = image_size(client, tag)
            identical = run_workload_in(client, tag, scratch, f"check-{tracer}", commands) == reference_out
            ratio = before / after
            print(
                f"  {tracer:9} {mb(before)} -> {mb(after)}  {ratio:5.1f}x  {seconds:5.1f} s  "
                f"output identical: {identical}   "
                f"[ratio {verdict(ratio >= TARGET_RATIO and identical)} e2e {verdict(seconds <= TARGET_E2E)}]"
            )
            steps = report.get("steps") or report.get("timings")
            if steps:
                print(f"            steps: {json.dumps(steps)}")
            print_ceiling(before, report)

        # --keep-packages: every Debian package owning a traced file, whole (docs excluded), so
        # other programs and inputs of mrtrix3, numpy, nibabel keep working.  Its price in size:
        tag = f"{PREFIX}-ndgen-packages"
        seconds, report = ndgen_minify(tag, scratch, commands, "fanotify", "--keep-packages")
        made.append(tag)
        after = image_size(client, tag)
        identical = run_workload_in(client, tag, scratch, "check-packages", commands) == reference_out
        kept = report.get("packages") or []
        print(
            f"  --keep-packages: {mb(before)} -> {mb(after)}  {before / after:5.1f}x  {seconds:5.1f} s  "
            f"output identical: {identical}  ({len(kept)} packages whole: "
            + ", ".join(f"{p['name']} {mb(p['bytes'])}" for p in kept[:4])
            + ")"
        )

        # The profile's way: setup (python3 + nibabel) makes the data untraced, so Python goes.
        tag = f"{PREFIX}-ndgen-profile"
        seconds, report = ndgen_minify(tag, scratch, (), "fanotify", "--profile", "mrtrix3")
        made.append(tag)
        after = image_size(client, tag)
        print(
            f"  --profile mrtrix3 (setup untraced): {mb(before)} -> {mb(after)}  {before / after:5.1f}x  "
            f"{seconds:5.1f} s  "
            f"verified by ndgen: {report.get('verified')}"
        )

        if not args.skip_neurodocker:
            print("\n== neurodocker 2.1.2 minify --dir /usr/lib --dir /usr/share (reprozip staged), then export|import")
            tag = f"{PREFIX}-neurodocker"
            nd = neurodocker_minify(client, scratch, commands, tag)
            made.append(tag)
            after = image_size(client, tag)
            identical = run_workload_in(client, tag, scratch, "check-neurodocker", commands) == reference_out
            total = nd["minify_seconds"] + nd["export_import_seconds"]
            print(
                f"  {mb(before)} -> {mb(after)}  {before / after:5.2f}x  trace+delete {nd['minify_seconds']:.1f} s"
                f" + export|import {nd['export_import_seconds']:.1f} s = {total:.1f} s  output identical: {identical}"
                f"{'  (its script apt-installed bzip2+curl first)' if nd['installed_deps'] else ''}"
            )
        print(
            f"\ntargets: >= {TARGET_RATIO:g}x smaller with identical output, tracer <= {TARGET_OVERHEAD}x, "
            f"end-to-end <= {TARGET_E2E:g} s"
        )
    finally:
        if not args.keep_images:
            for tag in made:
                try:
                    client.images.remove(tag, force=True)
                except Exception as exc:  # cleanup must not hide the result
                    print(f"bench: could not remove {tag}: {exc}", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
