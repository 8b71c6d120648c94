"""`ndgen … | head -1`: a reader that stops early ends ndgen quietly (exit 141, no word).

Real pipes, real subprocesses: click catches EPIPE itself and exits 1, and an
unflushed buffer raises at interpreter shutdown, so only a real process shows it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest

from support import NDGEN


def _run_into_pipe(args: list[str], read_first_line: bool) -> subprocess.CompletedProcess:
    """Run `ndgen ARGS` with stdout into a one-page pipe; read a line (or nothing), then close it."""
    r, w = os.pipe()
    # One page: a long output (`list --json` is ~19 kB) blocks ndgen mid-write,
    # so the reader closing is certain to hit ndgen while it writes.
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    if not read_first_line:
        os.close(r)  # the reader is gone before ndgen writes a byte
    proc = subprocess.Popen([*NDGEN, *args], stdout=w, stderr=subprocess.PIPE, text=True)
    os.close(w)
    if read_first_line:
        got = b""
        while b"\n" not in got:
            chunk = os.read(r, 1)
            assert chunk, "ndgen wrote nothing"
            got += chunk
        os.close(r)  # `head -1` exits here
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)


@pytest.mark.parametrize("args", [["list", "--json"], ["list"], ["--pkg", "ants", "--pkg", "afni", "--os", "ubuntu"]])
@pytest.mark.parametrize("read_first_line", [True, False], ids=["head-1", "reader-gone"])
def test_closed_pipe_ends_quietly(args, read_first_line):
    proc = _run_into_pipe(args, read_first_line)
    assert proc.stderr == "", proc.stderr
    if read_first_line:
        # The reader leaving mid-write makes that write short; CPython then drops
        # the rest of it without an error, so ndgen may end 0 (click's handler: 1).
        assert proc.returncode in (0, 141)
    else:
        assert proc.returncode == 141


def test_head_1_in_a_shell():
    """The command exactly as the issue typed it (pipefail shows ndgen's own status)."""
    cmd = " ".join(NDGEN) + " list --json | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.stdout == "[\n"
    assert proc.stderr == ""
    assert proc.returncode in (0, 141)


def test_broken_pipe_elsewhere_is_not_silenced():
    """A BrokenPipeError that is not stdout's reader leaving stays an error (one line, exit 70)."""
    code = (
        "import sys, click\n"
        "from neurodocker_nd import cli as c\n"
        "@click.command('boom')\n"
        "def boom():\n"
        "    raise BrokenPipeError(32, 'Broken pipe (a subprocess)')\n"
        "c._SUBCOMMANDS['boom'] = '__main__:boom'\n"
        "c.main(['boom'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 70, proc.stderr
    assert proc.stderr.startswith("ndgen: internal error: BrokenPipeError") and proc.stderr.count("\n") == 1
