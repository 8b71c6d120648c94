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
