"""Option paths that worked by hand but nothing kept working (issue 13, item 7).

Each runs `ndgen` as users do (a subprocess) and checks the behaviour itself:
output files into a missing directory, an empty token file, `ndgen build
--no-test/--no-cache/--test-timeout`, `ndgen minify --no-verify` and
`--format singularity` alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from support import (
    META,  # the fixture registry entry's meta.yaml
    remove_images,
    run_ndgen,
    unique_tag,
)


def _one_line(proc: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- no engine needed


def test_output_into_a_missing_directory_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "missing" / "ants.Dockerfile"
    proc = run_ndgen("--pkg", "ants", "--os", "ubuntu", "-o", str(out), timeout=120)
    _one_line(proc, str(out), f"directory {out.parent} does not exist")
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []  # not created either


def test_minify_report_into_a_missing_directory_is_refused_before_any_work(tmp_path):
    """Same rule as -o: one line, exit 2, nothing written, and before the engine is asked."""
    report = tmp_path / "missing" / "report.json"
    proc = run_ndgen(
        "minify", "ndgen-test-never-looked-up:1", "-t", "ndgen-test-never-written:1", "-c", "true",
        "--report", str(report), env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}, timeout=120,
    )  # fmt: skip
    _one_line(proc, f"--report {report}", f"directory {report.parent} does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ["", "\n  \n"], ids=["empty", "blank"])
def test_upstream_pr_with_an_empty_token_file_is_one_line(tmp_path, content):
    token = tmp_path / "token"
    token.write_text(content)
    # GITHUB_TOKEN is set: a named file that is empty must not silently fall back to it.
    proc = run_ndgen(
        "upstream", "pr", "--apply", "--upstream-repo", "o/up", "--fork", "me/up", "--token-file", str(token),
        "--patches", str(tmp_path), "--api-url", "http://127.0.0.1:9",
        env={"GITHUB_TOKEN": "ghp_from_the_environment"}, timeout=120,
    )  # fmt: skip
    _one_line(proc, f"--token-file {token}: empty")
    assert proc.stdout == ""


# --------------------------------------------------------------------------- on the engine


@pytest.fixture(scope="module")
def hang_registry(tmp_path_factory):
    name = unique_tag("h7-hang")  # its test container's label is this run's alone
    root = tmp_path_factory.mktemp("h7-registry")
    (root / name).mkdir()
    (root / name / "meta.yaml").write_text(META.format(name=name, test="sleep 300", apt="gzip"))
    return root, name


@pytest.mark.docker
def test_build_test_timeout_no_test_and_no_cache(docker_client, base_image, hang_registry, tmp_path):
    root, name = hang_registry
    tag = unique_tag("ndgen-test-build-hang", "1")
    env = {"NDGEN_REGISTRY": str(root)}
    args = ("build", "--pkg", name, "--base-image", base_image, "--pkg-manager", "apt", "-t", tag, "--network", "host")
    try:
        # --test-timeout: the hung test fails after 3 s, its container is gone.
        started = time.monotonic()
        hung = run_ndgen(*args, "--test-timeout", "3", "--log", str(tmp_path / "hung.log"), env=env, timeout=900)
        elapsed = time.monotonic() - started
        line = _one_line(hung, "1 of 1 tests failed", f"{name} (timed out after ", code=1)  # built, test failed
        waited = int(re.search(rf"{name} \(timed out after (\d+) s", line).group(1))
        assert 3 <= waited < 60 and elapsed < 300  # killed at the timeout, not waited out
        assert "FAIL" in hung.stdout, hung.stdout
        assert not docker_client.containers.list(all=True, filters={"label": f"org.ndgen.test={name}"})
        first = docker_client.images.get(tag).id

        # --no-test: the same build, no test run (so no hang), exit 0, reused by recipe hash.
        quick = run_ndgen(*args, "--no-test", env=env, timeout=900)
        assert quick.returncode == 0, quick.stderr
        assert "reused" in quick.stdout and "│" not in quick.stdout  # no test table
        assert docker_client.images.get(tag).id == first

        # --no-cache: built again from scratch (new layers, a new image), not reused.
        log = tmp_path / "fresh.log"
        fresh = run_ndgen(*args, "--no-test", "--no-cache", "--log", str(log), env=env, timeout=900)
        assert fresh.returncode == 0, fresh.stderr
        assert "reused" not in fresh.stdout and "built in" in fresh.stdout
        assert "Step 1/" in log.read_text() and "Using cache" not in log.read_text()
        assert docker_client.images.get(tag).id != first
    finally:
        # `first` lost its tag to the --no-cache build (as with `docker build -t`): ours to remove.
        remove_images(docker_client, [tag, *([first] if "first" in locals() else [])])


@pytest.fixture
def minify_scratch(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setenv("NDGEN_SCRATCH", str(path))
    return path


@pytest.mark.docker
def test_minify_no_verify_skips_the_rerun(docker_client, base_image, minify_scratch, tmp_path):
    """A workload whose output changes on every run: verify would fail it, --no-verify does not rerun it."""
    tag = unique_tag("ndgen-test-noverify", "1")
    report = tmp_path / "report.json"
    command = "date +%s%N"
    try:
        checked = run_ndgen("minify", base_image, "-t", tag, "-c", command, timeout=600)
        _one_line(checked, "verify failed", "stdout")  # the rerun is compared when verifying
        proc = run_ndgen(
            "minify", base_image, "-t", tag, "-c", command, "--no-verify", "--report", str(report), timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        data = json.loads(report.read_text())
        assert data["verified"] is None and "verify" not in data["steps"]
        out = docker_client.containers.run(
            tag, ["-c", command], entrypoint=["/bin/sh"], network_mode="none", remove=True
        )
        assert out.strip().isdigit()  # the unverified image still runs the workload
        assert list(minify_scratch.iterdir()) == []
    finally:
        remove_images(docker_client, [tag])


@pytest.mark.docker
def test_minify_singularity_alone_writes_only_the_squashfs(docker_client, base_image, minify_scratch, tmp_path):
    tag = unique_tag("ndgen-test-sifonly", "1")
    out = tmp_path / "only.sqfs"
    report = tmp_path / "report.json"
    command = "cat /etc/debian_version"
    try:
        proc = run_ndgen(
            "minify", base_image, "-t", tag, "-c", command, "--format", "singularity", "--squashfs", str(out),
            "--report", str(report), timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        data = json.loads(report.read_text())
        assert data["tag"] is None and data["verified"] is True and data["squashfs"] == str(out)
        names = set(
            subprocess.run(
                ["unsquashfs", "-l", "-d", "", str(out)], capture_output=True, text=True, check=True
            ).stdout.split()
        )
        assert {"/.singularity.d/runscript", "/usr/bin/cat", "/etc/debian_version"} <= names
        assert "/usr/bin/apt" not in names  # minified, not a copy
        assert not docker_client.images.list(name=tag.split(":")[0])  # no Docker image for this format
        leftovers = [
            i
            for i in docker_client.images.list(name="ndgen-minify-tmp")
            if json.loads(i.labels.get("org.ndgen.minify.commands", "[]")) == [command]
            and i.labels.get("org.ndgen.minify.source-digest") == docker_client.images.get(base_image).id
        ]
        assert not leftovers  # verify's temporary image is gone
        assert list(minify_scratch.iterdir()) == []
    finally:
        remove_images(docker_client, [tag])
