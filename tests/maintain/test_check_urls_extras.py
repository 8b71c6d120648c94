"""`ndgen check-urls` needs no extra; only `--write` needs the `upstream` one (issue 22).

The extras are made unimportable in the ndgen process itself: a `sitecustomize`
put first on PYTHONPATH installs a meta-path finder that refuses their modules,
as in an install without them (tests/cli/test_install.py does it for real, from
PyPI; this runs offline against tests/support/localhttp.py's server).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import confirmed_versions, download_entry, run_ndgen
from support.localhttp import LocalHTTP

PAYLOAD = b"check-urls without extras\n"
# Every module an extra provides (neurodocker_nd/cli/extras.py EXTRAS), by top-level name.
BLOCKED = ("ghapi", "ruamel", "docker", "rich", "elftools", "debian")

BLOCKER = f"""
import sys

class _NoExtras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _NoExtras())
"""


@pytest.fixture
def without_extras(tmp_path) -> dict[str, str]:
    """The environment of a process in which no extra's module imports."""
    site = tmp_path / "noextras"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
    # The blocker works: without it this test could not fail.
    probe = subprocess.run(
        [sys.executable, "-c", "import ruamel.yaml"], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert probe.returncode == 1 and "blocked by the test" in probe.stderr, probe.stderr
    return env


@pytest.fixture
def registry(tmp_path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "tool.bin").write_bytes(PAYLOAD)
    with LocalHTTP(site) as server:
        entry = download_entry(tmp_path / "reg", {"1.0": server.url("tool.bin")}, confirmed_versions(["1.0"]))
        yield entry.parent


def test_check_and_fetch_need_no_extra(without_extras, registry):
    env = {**without_extras, "NDGEN_REGISTRY": str(registry)}
    proc = run_ndgen("check-urls", "dltest", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok   dltest 1.0  200") and proc.stderr == ""
    proc = run_ndgen("check-urls", "dltest", "--fetch", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"sha256:{hashlib.sha256(PAYLOAD).hexdigest()}" in proc.stdout


def test_write_names_the_extra_before_any_work(without_extras, registry):
    meta = registry / "dltest" / "meta.yaml"
    before = meta.read_text()
    proc = run_ndgen("check-urls", "dltest", "--write", env={**without_extras, "NDGEN_REGISTRY": str(registry)})
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "ndgen: error: ndgen check-urls --write needs the 'upstream' extra: pip install 'neurodocker-nd[upstream]'\n"
    )
    assert meta.read_text() == before
