"""`ndgen matrix` on a full disk leaves nothing partial (issue 12, item 8)."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from support import run_ndgen


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs: a few recipes fit, a matrix does not (real ENOSPC)."""
    mnt = tmp_path / f"tiny-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


ARGS = ("--pkg", "ants", "--pkg", "fsl", "--pkg", "miniconda")


def test_full_disk_new_out_leaves_nothing(tiny_fs):
    out = tiny_fs / "recipes"
    proc = run_ndgen("matrix", "--out", str(out), *ARGS, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == f"ndgen: error: cannot write {out}: No space left on device"
    assert list(tiny_fs.iterdir()) == []


def test_full_disk_existing_out_is_untouched(tiny_fs):
    out = tiny_fs / "recipes"
    out.mkdir()
    (out / "ants.ubuntu-24.04.Dockerfile").write_text("previous run\n")
    proc = run_ndgen("matrix", "--out", str(out), *ARGS, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert [p.name for p in out.iterdir()] == ["ants.ubuntu-24.04.Dockerfile"]
    assert (out / "ants.ubuntu-24.04.Dockerfile").read_text() == "previous run\n"


def test_matrix_fits_when_there_is_room(tmp_path):
    out = tmp_path / "new" / "recipes"
    proc = run_ndgen("matrix", "--out", str(out), "--pkg", "jq", "--os", "debian:bookworm", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.iterdir())) == 4 and (out / "jq.debian-bookworm.def").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["recipes"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)
