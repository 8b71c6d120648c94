#!/usr/bin/env python3
"""`ndgen sif` against neurocontainers' converter (builder/docker-save-to-simg.go), same image, one run.

Both start from the same image on the engine and end with a SIF file:

* reference: `docker save IMAGE | docker-save-to-simg - OUT.sif` (their documented pipe; the
  converter is compiled here, offline, with the Go toolchain on PATH — Debian 12's golang-go
  1.19 does: it uses the standard library only);
* ndgen: `ndgen sif IMAGE -o OUT.sif` as a fresh process, default options (zstd), and again with
  `--comp gzip` (the reference's compressor, zlib), for the size at equal compression.

Printed: wall time and SIF size of each, and the ratios.  Goal (issue 21): ndgen at least 2x faster
end to end, and no larger.  Each SIF's partition is checked with `unsquashfs -s` (a valid squashfs).

Usage: python bench/sif.py NEUROCONTAINERS [--image IMAGE] [--rounds N]
NEUROCONTAINERS is a checkout (builder/docker-save-to-simg.go) or a bare git directory (its HEAD is
read); nothing of it is copied into this repository.  Without --image, a bench image of a few
hundred MB is built from debian:bookworm (Debian's python3-scipy and its dependencies) through
$NDGEN_APT_PROXY when set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONVERTER = "builder/docker-save-to-simg.go"
BASE = "debian:bookworm"
BENCH_IMAGE = "ndgen-bench-sif:scipy"
PACKAGES = ("python3-scipy",)


def converter_source(checkout: Path) -> bytes:
    if (checkout / CONVERTER).is_file():
        return (checkout / CONVERTER).read_bytes()
    # a bare git directory (e.g. a fetched snapshot)
    return subprocess.run(
        ["git", "--git-dir", str(checkout), "show", f"HEAD:{CONVERTER}"], check=True, capture_output=True
    ).stdout


def build_converter(checkout: Path, work: Path) -> Path:
    """Compile the converter offline: a module of one file, standard library only."""
    src = work / "go"
    src.mkdir()
    (src / "main.go").write_bytes(converter_source(checkout))
    (src / "go.mod").write_text("module dockersavetosimg\n\ngo 1.19\n")
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GOCACHE": str(work / "gocache"),
        "GOPATH": str(work / "gopath"),
    }
    binary = work / "docker-save-to-simg"
    subprocess.run(["go", "build", "-trimpath", "-o", str(binary), "."], cwd=src, env=env, check=True)
    return binary


def ensure_image(image: str | None) -> str:
    if image:
        return image
    if subprocess.run(["docker", "image", "inspect", BENCH_IMAGE], capture_output=True).returncode == 0:
        return BENCH_IMAGE
    proxy = os.environ.get("NDGEN_APT_PROXY", "")
    args = ["--build-arg", f"http_proxy={proxy}"] if proxy else []
    dockerfile = (
        f"FROM {BASE}\nRUN apt-get update && apt-get install -y --no-install-recommends {' '.join(PACKAGES)}"
        " && rm -rf /var/lib/apt/lists/*\n"
    )
    print(f"bench: building {BENCH_IMAGE} ({', '.join(PACKAGES)} on {BASE})", flush=True)
    subprocess.run(
        ["docker", "build", "--network", "host", *args, "-t", BENCH_IMAGE, "-"], input=dockerfile.encode(), check=True
    )
    return BENCH_IMAGE


def timed(argv: list[str], **kw: object) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - start


def run_reference(binary: Path, image: str, out: Path) -> float:
    script = f"set -o pipefail; docker save {image} | {binary} - {out}"
    return timed(["bash", "-c", script], stdout=subprocess.DEVNULL)


def run_ndgen(image: str, out: Path, *options: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return timed([sys.executable, "-m", "neurodocker_nd.cli", "sif", image, "-o", str(out), *options], env=env)


def partition_offset(path: Path) -> int:
    """The primary partition's offset, read as pkg/sif lays it out (header, then descriptors)."""
    with open(path, "rb") as handle:
        head = handle.read(128)
        _, _, _, total, doff, _, _, _ = struct.unpack_from("<8q", head, 64)  # created … data size
        handle.seek(doff)
        table = handle.read(total * 585)
    for index in range(total):
        dtype, used, *_rest = struct.unpack_from("<i?IIIq", table, index * 585)
        if used and dtype == 0x4004:
            return struct.unpack_from("<q", table, index * 585 + 17)[0]
    raise SystemExit(f"{path}: no partition descriptor")


def check_squashfs(path: Path) -> str:
    proc = subprocess.run(
        ["unsquashfs", "-s", "-o", str(partition_offset(path)), str(path)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{path}: not a valid squashfs partition: {proc.stderr.strip()}")
    comp = next((line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("Compression ")), "?")
    return comp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("neurocontainers", type=Path, help="checkout or bare git dir of neurodesk/neurocontainers")
    parser.add_argument("--image", help=f"image to convert (default: {BENCH_IMAGE}, built when missing)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each (median printed)")
    args = parser.parse_args(argv)
    image = ensure_image(args.image)
    size = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", image], capture_output=True, text=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="ndgen-bench-sif-") as tmp:
        work = Path(tmp)
        binary = build_converter(args.neurocontainers, work)
        ref_out, nd_out, gz_out = work / "reference.sif", work / "ndgen.sif", work / "ndgen-gzip.sif"
        ref_times, nd_times, gz_times = [], [], []
        for _ in range(args.rounds):  # alternate, so load on the machine hits each alike
            ref_out.unlink(missing_ok=True)
            ref_times.append(run_reference(binary, image, ref_out))
            nd_times.append(run_ndgen(image, nd_out))
            gz_times.append(run_ndgen(image, gz_out, "--comp", "gzip"))
        ref_t, nd_t, gz_t = (statistics.median(t) for t in (ref_times, nd_times, gz_times))
        ref_size, nd_size, gz_size = (p.stat().st_size for p in (ref_out, nd_out, gz_out))
        ref_comp, nd_comp, gz_comp = (check_squashfs(p) for p in (ref_out, nd_out, gz_out))
    print(f"\nimage {image}: {int(size) / 1e6:.0f} MB on the engine; median of {args.rounds} round(s)")
    print(f"  {'':34} {'wall s':>8} {'SIF MB':>8}  squashfs")
    print(f"  {'docker save | docker-save-to-simg':34} {ref_t:8.1f} {ref_size / 1e6:8.1f}  {ref_comp}")
    print(f"  {'ndgen sif':34} {nd_t:8.1f} {nd_size / 1e6:8.1f}  {nd_comp}")
    print(f"  {'ndgen sif --comp gzip':34} {gz_t:8.1f} {gz_size / 1e6:8.1f}  {gz_comp}")
    speed, ratio = ref_t / nd_t, nd_size / ref_size
    print(f"  ndgen: {speed:.2f}x faster (goal >= 2x: {'met' if speed >= 2 else 'NOT met'}), size x{ratio:.3f}")
    print(f"  (goal no larger: {'met' if ratio <= 1 else 'NOT met'})")


if __name__ == "__main__":
    main()
