"""Small CLI edges (issue 12, item 8): odd `validate` inputs, a render without --pkg."""

from __future__ import annotations

import os

import pytest

from support import run_ndgen


def _one_line(proc, *needles):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_binary_file(tmp_path):
    f = tmp_path / "template.yaml"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    _one_line(run_ndgen("validate", str(f), timeout=60), str(f), "not UTF-8 text (byte 0x89 at offset 0)")


def test_latin1_file(tmp_path):
    f = tmp_path / "meta.yaml"
    f.write_bytes("name: caf\u00e9\ndescription: d\n".encode("latin-1"))
    _one_line(run_ndgen("validate", str(f), timeout=60), str(f), "not UTF-8 text (byte 0xe9")


def test_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "template.yaml"
    os.mkfifo(fifo)
    _one_line(run_ndgen("validate", str(fifo), timeout=60), str(fifo), "not a regular file (a FIFO)")


def test_dev_null():
    _one_line(run_ndgen("validate", "/dev/null", timeout=60), "/dev/null: not a regular file (a character device)")


def test_schema_error_is_short(tmp_path):
    f = tmp_path / "template.yaml"
    f.write_text("name: huge\nurl: https://example.org\nbinaries: [" + ", ".join(["x" * 100] * 1000) + "]\n")
    line = _one_line(run_ndgen("validate", str(f), timeout=60), f"{f}:3: binaries:")
    assert len(line) < 600, len(line)
    assert "…" in line


@pytest.mark.parametrize("args", [("--os", "ubuntu"), ("--format", "singularity"), ("--os", "ubuntu", "-o", "OUT")])
def test_options_without_pkg_are_an_error_not_help(tmp_path, args):
    args = tuple(str(tmp_path / "x.Dockerfile") if a == "OUT" else a for a in args)
    proc = run_ndgen(*args, timeout=60)
    _one_line(proc, "--pkg")
    assert proc.stdout == "" and not (tmp_path / "x.Dockerfile").exists()


def test_bare_ndgen_prints_help():
    proc = run_ndgen(timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: ndgen")
