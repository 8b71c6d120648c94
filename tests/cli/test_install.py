"""`pip install .` in a fresh virtualenv: the renderer alone, extras named when missing (issue 12, item 1).

A real install from PyPI (pip's wheel cache makes repeats fast) into a venv
without --system-site-packages, so nothing of the test environment leaks in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

pytestmark = pytest.mark.slow

# Distributions that must not come with a plain `pip install .`.
NOT_CORE = ("docker", "reprozip", "ghapi", "pyelftools", "python-debian", "ruamel.yaml", "rich")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    pip = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=root.parent,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    return root


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "ndgen"), *args], capture_output=True, text=True, timeout=300, cwd=venv.parent
    )


def test_core_install_has_no_engine_tracer_or_github_client(venv):
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines() if "==" in line}
    assert "neurodocker-nd" in installed and "neurodocker" in installed
    assert not installed & {d.replace("_", "-") for d in NOT_CORE}, sorted(installed)


def test_render_works_without_extras(venv):
    proc = _run(venv, "--pkg", "ants", "--os", "ubuntu")
    assert proc.returncode == 0, proc.stderr
    assert "\nFROM ubuntu:24.04\n" in proc.stdout
    # Bundled data of the wheel (registry, schemas): validate and an ndgen-only entry.
    assert _run(venv, "validate").returncode == 0
    assert _run(venv, "--pkg", "niimath", "--os", "debian:bookworm").returncode == 0


@pytest.mark.parametrize(
    "args, what, extra",
    [
        (("build", "--pkg", "jq,method=system", "--os", "debian:bookworm", "-t", "x:1"), "build", "build"),
        (("base", "debian:bookworm"), "base", "build"),
        (("minify", "a:1", "-t", "b:1"), "minify", "minify"),
        (("upstream", "export"), "upstream", "upstream"),
        # check-urls itself needs no extra (tests/maintain/test_check_urls_extras.py); --write does.
        (("check-urls", "--write", "jq"), "check-urls --write", "upstream"),
    ],
)
def test_missing_extra_is_one_line(venv, args, what, extra):
    proc = _run(venv, *args)
    assert proc.returncode == 2
    assert (
        proc.stderr == f"ndgen: error: ndgen {what} needs the '{extra}' extra: pip install 'neurodocker-nd[{extra}]'\n"
    )


def test_help_works_without_extras(venv):
    proc = _run(venv, "build", "--help")
    assert proc.returncode == 0 and "Usage: ndgen build" in proc.stdout
