"""Issue 22: as the program, a successful `ndgen` ends without the interpreter's teardown (~30 ms of
a cold render) yet still does what an exit owes: atexit handlers, flushed output, live threads.

Each case runs in its own interpreter: how a process ends cannot be watched from inside it.
"""

from __future__ import annotations

import subprocess
import sys

ARGS = ["--pkg", "ants==2.6.2", "--os", "ubuntu"]

# A module global whose finaliser only the interpreter's teardown runs, an atexit handler,
# and (with "thread") a non-daemon thread still working when the render ends.
_PROBE = """
import atexit, sys, threading, time

class Witness:
    def __del__(self):
        sys.stderr.write("teardown ran\\n")

witness = Witness()
atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
if "thread" in sys.argv[1:]:
    def late():
        time.sleep(0.5)
        sys.stderr.write("thread finished\\n")
    threading.Thread(target=late).start()
from neurodocker_nd.cli import main

if "as-program" in sys.argv[1:]:
    sys.argv = ["ndgen", *ARGS]
    main()
else:
    main(ARGS)
sys.stderr.write("main returned\\n")
""".replace("ARGS", repr(ARGS))


def _run(*modes: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PROBE, *modes], capture_output=True, text=True, timeout=120)


def _rendered() -> str:
    """The Dockerfile as `main(argv)` prints it, the process ending as usual."""
    proc = _run()
    assert proc.returncode == 0 and "ants-2.6.2" in proc.stdout, proc.stderr
    return proc.stdout


def test_the_program_skips_teardown_but_runs_atexit_handlers():
    proc = _run("as-program")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _rendered()  # every byte flushed
    assert "atexit ran" in proc.stderr
    assert "teardown ran" not in proc.stderr and "main returned" not in proc.stderr


def test_called_from_python_main_returns_and_the_interpreter_ends_as_usual():
    # The control for the witness above: an ordinary exit does run it.
    proc = _run()
    assert proc.returncode == 0, proc.stderr
    assert "ants-2.6.2" in proc.stdout
    for line in ("main returned", "atexit ran", "teardown ran"):
        assert line in proc.stderr


def test_a_live_thread_gets_an_ordinary_exit_which_waits_for_it():
    proc = _run("as-program", "thread")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _rendered()
    assert "thread finished" in proc.stderr and "atexit ran" in proc.stderr
