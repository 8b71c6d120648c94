"""Regression: the reference workload (mrtrix3 DWI pipeline) minified end to end by `ndgen minify`.

The mrtrix3 profile's setup (python3 + nibabel writing the DWI) and its seven
MRtrix3 commands all run as `-c` commands, so Python stays in the result; the
minified image must reproduce the workload's output byte for byte under
`docker run --network none`, hold no file of the toolchain and headers that
came in as dependencies (nothing a workload that compiles nothing can use), and
leave the source image untouched. The size *ratio* depends on the base image
(minbase vs a registry's debian) and is a target of bench/minify.py, not a test.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import posixpath
import tarfile

import pytest

from neurodocker_nd.minify.source import _ChunkReader  # the SDK's export chunks as a stream
from support import REPO, run_ndgen

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _bench():
    """bench/minify.py, for its workload runner (one copy of that code, exercised here too)."""
    path = REPO / "bench" / "minify.py"
    spec = importlib.util.spec_from_file_location("ndgen_bench_minify", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


# Run in the source image: every regular file of a package in Debian's devel or
# libdevel section (compilers, headers, static libraries), as "package\tbytes\tpath".
# Symlinks are left out: minify rightly keeps a `libfoo.so` link to a kept library.
DEVEL_FILES = r"""
import os, subprocess
q = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Section}\n"], capture_output=True, text=True, check=True)
for pkg, section in (line.split("\t") for line in q.stdout.splitlines()):
    if section.rsplit("/", 1)[-1] not in ("devel", "libdevel"):
        continue
    for path in subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout.splitlines():
        if os.path.isfile(path) and not os.path.islink(path):
            print(pkg, os.path.getsize(path), os.path.realpath(path), sep="\t")
"""


def devel_files(docker_client, image: str) -> dict[str, tuple[str, int]]:
    """{path: (package, bytes)} of the devel/libdevel packages' regular files in `image`."""
    out = docker_client.containers.run(image, ["python3", "-c", DEVEL_FILES], network_mode="none", remove=True)
    rows = (line.split("\t") for line in out.decode().splitlines())
    return {path: (pkg, int(size)) for pkg, size, path in rows}


def regular_files(docker_client, image: str) -> set[str]:
    """The regular files of `image` as `docker export` shows them (absolute paths)."""
    container = docker_client.containers.create(image, ["/nonexistent"], network_disabled=True)
    try:
        stream = io.BufferedReader(_ChunkReader(container.export(chunk_size=1 << 20)), 1 << 20)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            return {posixpath.normpath("/" + m.name) for m in tar if m.isfile()}
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def reference(profile_image):
    """The mrtrix3 profile's reference image, shared with test_profiles_run (built once per run)."""
    return profile_image("mrtrix3")


@pytest.mark.parametrize("tracer", ["fanotify", "ptrace"])
def test_reference_workload_minifies_with_identical_output(reference, docker_client, tmp_path, tracer):
    profile, source_tag = reference
    commands = [*profile.setup, *profile.commands]
    source = docker_client.images.get(source_tag)
    source_id, before = source.id, source.attrs["Size"]
    unused = devel_files(docker_client, source_tag)
    unused_bytes = sum(size for _, size in unused.values())
    # The check below means something only if the source holds such packages.
    assert unused_bytes > 50_000_000, (
        f"{source_tag} has only {unused_bytes} bytes of devel packages: pick another unused package"
    )
    new_tag = f"ndgen-test-h6-reference-{tracer}-{os.getpid()}"
    data = tmp_path / "traced"
    data.mkdir()
    argv = ["minify", source_tag, "-t", new_tag, "--tracer", tracer]
    argv += ["-v", f"{data}:/data", "--report", str(tmp_path / "report.json")]
    for command in commands:
        argv += ["-c", command]
    try:
        proc = run_ndgen(*argv, timeout=170)
        assert proc.returncode == 0, proc.stderr
        after = docker_client.images.get(new_tag).attrs["Size"]
        # Nothing the workload cannot use is left: no compiler, header or static library.
        leftovers = sorted(set(unused) & regular_files(docker_client, new_tag))
        assert not leftovers, f"{len(leftovers)} devel files kept, e.g. {leftovers[:5]}"
        assert after <= before - unused_bytes, f"{before} -> {after}: not even the {unused_bytes} unused bytes went"
        report = json.loads((tmp_path / "report.json").read_text())
        assert (report["source_id"], report["size_before"], report["size_after"]) == (source_id, before, after)
        expected = bench.run_workload_in(docker_client, source_tag, tmp_path, "in-source", commands)
        assert expected[1], "the workload wrote no output files: nothing would be compared"
        assert bench.run_workload_in(docker_client, new_tag, tmp_path, "in-minified", commands) == expected
        source = docker_client.images.get(source_tag)
        assert (source.id, source.attrs["Size"]) == (source_id, before)  # the source is untouched
    finally:
        try:
            docker_client.images.remove(new_tag, force=True)
        except Exception:
            pass  # a failed run may have removed (or never written) the tag
