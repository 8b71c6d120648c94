"""What a killed `ndgen minify` leaves behind, found and removed by the next run.

A SIGKILL skips every cleanup: the scratch directory with its overlay mounts,
runc containers still running the workload, and temporary image tags stay.
Each run therefore marks what it creates with its owner — the PID plus the
process's start time (a PID alone is reused) — in an ``owner`` file in its
scratch directory and in its temporary tags (``ndgen-minify-tmp:PID-START-…``),
and each run starts by removing what belongs to owners that are gone.  A live
run's things are never touched.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from neurodocker_nd import scratchdir
from neurodocker_nd.minify import oci

OWNER_FILE = "owner"
TMP_REPO = "ndgen-minify-tmp"
_TAG = re.compile(rf"^{TMP_REPO}:(?P<pid>\d+)-(?P<start>\d+)-")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner() -> str:
    """This process, as "PID-STARTTIME"."""
    return f"{os.getpid()}-{_start_time(os.getpid()) or 0}"


def _alive(pid: int, start: int) -> bool:
    return _start_time(pid) == start


def _owner_alive(text: str) -> bool:
    pid, _, start = text.strip().partition("-")
    if not (pid.isdigit() and start.isdigit()):
        return True  # not ours to judge
    return _alive(int(pid), int(start))


def mark(scratch: Path) -> None:
    (scratch / OWNER_FILE).write_text(owner() + "\n")


def temporary_tag(suffix: str) -> str:
    return f"{TMP_REPO}:{owner()}-{suffix}"


def reap(client: Any, scratch_base: Path, prefix: str = "ndgen-minify-") -> list[str]:
    """Remove the leftovers of dead runs; returns what was removed (for a note)."""
    removed: list[str] = []
    try:
        candidates = sorted(scratch_base.glob(prefix + "*"))
    except OSError:
        candidates = []
    for scratch in candidates:
        try:
            marker = (scratch / OWNER_FILE).read_text()
        except OSError:
            continue  # no owner file: not a run of this kind, or still being created
        if _owner_alive(marker):
            continue
        _kill_containers(scratch)
        if scratchdir.remove(scratch):
            removed.append(str(scratch))
    for image in client.images.list(name=TMP_REPO):
        for tag in image.tags:
            match = _TAG.match(tag)
            if match and not _alive(int(match["pid"]), int(match["start"])):
                try:
                    client.images.remove(tag)
                    removed.append(tag)
                except Exception:  # in use or gone meanwhile: the next run tries again
                    pass
    return removed


def _kill_containers(scratch: Path) -> None:
    """Kill and delete every runc container whose state lives in `scratch` (a view's runc dir)."""
    runc = oci.runc_binary()
    if runc is None:
        return
    for state in scratch.glob("*/runc"):
        listing = subprocess.run([runc, "--root", str(state), "list", "-q"], capture_output=True, text=True)
        for cid in listing.stdout.split():
            subprocess.run(oci.kill_argv(state, cid), capture_output=True)
            subprocess.run(oci.delete_argv(state, cid), capture_output=True)
