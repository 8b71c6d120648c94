"""Regression: the reference workload (mrtrix3 DWI pipeline) minified end to end by `ndgen minify`.

The mrtrix3 profile's setup (python3 + nibabel writing the DWI) and its seven
MRtrix3 commands all run as `-c` commands, so Python stays in the result; the
minified image must be >= 15x smaller, reproduce the workload's output byte for
byte under `docker run --network none`, and leave the source image untouched.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neurodocker_nd.minify.profile import ensure_reference_image, load_profile

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TAG = "ndgen-test-profile-mrtrix3"  # the mrtrix3 profile's reference image (shared with test_profiles_run)


def _bench():
    """bench/minify.py, for its workload runner (one copy of that code, exercised here too)."""
    path = Path(__file__).resolve().parent.parent / "bench" / "minify.py"
    spec = importlib.util.spec_from_file_location("ndgen_bench_minify", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture(scope="module")
def reference(docker_client):
    profile = load_profile("mrtrix3")
    built = ensure_reference_image(docker_client, TAG, profile.apt)
    yield profile
    if built and os.environ.get("NDGEN_KEEP_TEST_IMAGES") != "1":
        docker_client.images.remove(TAG, force=True)


@pytest.mark.parametrize("tracer", ["fanotify", "ptrace"])
def test_reference_workload_minifies_15x_with_identical_output(reference, docker_client, tmp_path, tracer):
    commands = [*reference.setup, *reference.commands]
    source_id = docker_client.images.get(TAG).id
    new_tag = f"ndgen-test-h6-reference-{tracer}-{os.getpid()}"
    data = tmp_path / "traced"
    data.mkdir()
    argv = [sys.executable, "-m", "neurodocker_nd.cli", "minify", TAG, "-t", new_tag, "--tracer", tracer]
    argv += ["-v", f"{data}:/data", "--report", str(tmp_path / "report.json")]
    for command in commands:
        argv += ["-c", command]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=170)
        assert proc.returncode == 0, proc.stderr
        before = docker_client.images.get(TAG).attrs["Size"]
        after = docker_client.images.get(new_tag).attrs["Size"]
        assert before / after >= 15, f"{before} -> {after} is only {before / after:.1f}x"
        assert json.loads((tmp_path / "report.json").read_text())  # the report was written
        expected = bench.run_workload_in(docker_client, TAG, tmp_path, "in-source", commands)
        assert bench.run_workload_in(docker_client, new_tag, tmp_path, "in-minified", commands) == expected
        assert docker_client.images.get(TAG).id == source_id
    finally:
        try:
            docker_client.images.remove(new_tag, force=True)
        except Exception:
            pass  # a failed run may have removed (or never written) the tag
