"""The suite's own rules (conftest.py), run in a child pytest on a throw-away test file.

A missing tool fails (never skips); a test needing a third-party host names it
(fails under CI=true, skips elsewhere); a failing `ndgen base` is reported with
its own error line, not as "no Docker engine".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import TESTS

HERE = TESTS
NOWHERE = "ndgen-no-such-host.invalid"  # .invalid never resolves (RFC 2606)


def _pytest(tmp_path: Path, body: str, **env: str) -> subprocess.CompletedProcess:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    shutil.copytree(HERE / "support", tmp_path / "support", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "test_child.py").write_text(body)
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "NDGEN_TEST_BASE")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "-W", "ignore::pytest.PytestUnknownMarkWarning", "test_child.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**environ, **env},
    )  # fmt: skip


def test_a_missing_tool_fails_never_skips(tmp_path):
    proc = _pytest(tmp_path, "from support import tool\n\ndef test_lint():\n    tool('ndgen-no-such-tool')\n")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed" in proc.stdout and "skipped" not in proc.stdout
    assert "ndgen-no-such-tool is not installed" in proc.stdout


NETWORK_TEST = f"import pytest\n\n@pytest.mark.network({NOWHERE!r})\ndef test_fetch():\n    pass\n"


def test_an_unreachable_host_fails_in_ci_naming_it(tmp_path):
    proc = _pytest(tmp_path, NETWORK_TEST, CI="true")
    assert proc.returncode == 1, proc.stdout
    assert f"ERROR test_child.py::test_fetch - Failed: needs {NOWHERE}, which does not answer" in proc.stdout


def test_an_unreachable_host_skips_with_its_name_elsewhere(tmp_path):
    proc = _pytest(tmp_path, NETWORK_TEST)
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped" in proc.stdout and f"needs {NOWHERE}, which does not answer" in proc.stdout


@pytest.mark.docker
def test_a_failing_ndgen_base_is_reported_with_its_error(tmp_path):
    body = "def test_uses_base(base_image):\n    pass\n"
    # A tag whose suite cannot be inferred: `ndgen base` refuses it before bootstrapping anything.
    proc = _pytest(tmp_path, body, NDGEN_TEST_BASE="ndgen-test-nosuite:whatever")
    assert proc.returncode == 1, proc.stdout
    assert "no Docker engine" not in proc.stdout
    assert "`ndgen base ndgen-test-nosuite:whatever` failed: ndgen: error: " in proc.stdout, proc.stdout


# Each child test file counts the builds ensure_reference_image makes (the fixture imports it at call time).
SHARED_IMAGE_TEST = """\
import os
import neurodocker_nd.minify.profile as profile

real = getattr(profile.ensure_reference_image, "__wrapped__", profile.ensure_reference_image)  # both files load


def counting(*args, **kwargs):
    built = real(*args, **kwargs)
    with open(os.environ["SHARED_LOG"], "a") as log:
        log.write(f"{os.environ['PYTEST_XDIST_WORKER']} {'built' if built else 'found'}\\n")
    return built


counting.__wrapped__ = real
profile.ensure_reference_image = counting


def test_asks_for_jq(profile_image, docker_client):
    _, tag = profile_image("jq")
    assert docker_client.containers.run(tag, ["jq", "--version"], network_mode="none", remove=True).startswith(b"jq-")
"""


def _jq_images(client) -> set[str]:
    return {t for image in client.images.list() for t in image.tags if t.startswith("ndgen-test-profile-jq-")}


@pytest.mark.docker
def test_an_image_two_workers_ask_for_is_built_once_and_removed_at_the_end(tmp_path, docker_client, base_image):
    for name in ("test_one.py", "test_two.py"):
        (tmp_path / name).write_text(SHARED_IMAGE_TEST)
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    shutil.copytree(HERE / "support", tmp_path / "support", ignore=shutil.ignore_patterns("__pycache__"))
    log = tmp_path / "shared.log"
    before = _jq_images(docker_client)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
         "-W", "ignore::pytest.PytestUnknownMarkWarning", "test_one.py", "test_two.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "SHARED_LOG": str(log)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    asks = sorted(log.read_text().splitlines())
    # One file per worker, so the lock (not the per-process cache) is what kept the second from building.
    assert len(asks) == 2 and len({ask.split()[0] for ask in asks}) == 2, asks
    assert sorted(ask.split()[1] for ask in asks) == ["built", "found"], asks
    ours = os.environ["NDGEN_TEST_SESSION"]  # this run's own jq image may come and go meanwhile
    assert {t for t in _jq_images(docker_client) - before if ours not in t} == set()  # the child removed its own
