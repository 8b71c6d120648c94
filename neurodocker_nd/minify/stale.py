"""What a killed `ndgen minify` leaves behind, found and removed by the next run.

A SIGKILL skips every cleanup: the scratch directory with its overlay mounts,
runc containers still running the workload, and temporary image tags stay.
Each run therefore marks what it creates with its owner — the PID plus the
process's start time (a PID alone is reused) — in an ``owner`` file in its
scratch directory and in its temporary tags (``ndgen-minify-tmp:PID-START-…``),
and each run starts by removing what belongs to owners that are gone.  A live
run's things are never touched.

The reaper runs as root and runc acts on whatever a state directory says (its
cgroups get SIGKILLed, its poststop hooks run): it must only ever see what ndgen
wrote.  So it looks only in scratchdir's private base, only at directories this
uid created 0700 (checked on a no-follow descriptor), and runs runc only on the
views its ``runc-views`` record lists — a file ndgen alone writes — never on a
state directory found by a glob (a workload's writable mount lives in the same
scratch directory).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neurodocker_nd.core import safefs, scratchdir
from neurodocker_nd.minify import oci

OWNER_FILE = "owner"
VIEWS_FILE = "runc-views"  # one view name a line: its runc root and bundles are ndgen's
TMP_REPO = "ndgen-minify-tmp"
_TAG = re.compile(rf"^{TMP_REPO}:(?P<pid>\d+)-(?P<start>\d+)-")
_OWNER = re.compile(r"^(?P<pid>\d{1,10})-(?P<start>\d{1,20})\n?$")
# A single path component; "." is the scratch directory itself (the export-copy source,
# whose one view is the copy: its runc root sits beside it).
_VIEW = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,99}|\.)$")
# Bounds for one pass (the base is private, but a loop still ends): entries looked at,
# bytes of a record read, views and containers acted on.
MAX_SCRATCH_DIRS = 256
MAX_RECORD_BYTES = 64 << 10
MAX_VIEWS = 512
MAX_CONTAINERS = 64
RUNC_SECONDS = 30
# Beside each view's rootfs, as sandbox.py creates them (source.py pre-creates both 0700).
RUNC_STATE = "runc"
OCI_BUNDLES = "oci"


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat_ = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat_.rsplit(")", 1)[1].split()[19])


def owner() -> str:
    """This process, as "PID-STARTTIME"."""
    return f"{os.getpid()}-{_start_time(os.getpid()) or 0}"


def _alive(pid: int, start: int) -> bool:
    return _start_time(pid) == start


def _write_new(path: Path, text: str, *, append: bool = False) -> None:
    """Write a root-only record file without following a link planted at its name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def mark(scratch: Path) -> None:
    _write_new(scratch / OWNER_FILE, owner() + "\n")


def record_view(scratch: Path, name: str) -> None:
    """Record that ndgen made the view `name` (and its runc root) in `scratch`."""
    if not _VIEW.match(name):
        raise ValueError(f"view name {name!r} is not a single path component")
    _write_new(scratch / VIEWS_FILE, name + "\n", append=True)


def temporary_tag(suffix: str) -> str:
    return f"{TMP_REPO}:{owner()}-{suffix}"


def reap(client: Any, scratch_base: Path, prefix: str = "ndgen-minify-") -> list[str]:
    """Remove the leftovers of dead runs; returns what was removed (for a note)."""
    removed: list[str] = []
    for scratch, fd, dead_pid in _dead_scratch_dirs(scratch_base, prefix):
        try:
            _kill_containers(scratch, fd, dead_pid)
        finally:
            os.close(fd)
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


def _dead_scratch_dirs(scratch_base: Path, prefix: str) -> Iterator[tuple[Path, int, int]]:
    """(path, no-follow fd, owner PID) of each scratch directory this uid made whose owner is gone.

    A directory that is a symlink, not ours, not 0700, or without a well-formed
    owner record is not ours to judge: left alone.
    """
    # scratchdir.base() has verified its mode (a configured base may be 0755, or a 1777
    # tmpfs below a 0700 directory); what counts below is each entry's own owner and mode.
    base_fd = scratchdir.owned_directory_fd(scratch_base, allowed=0o077)
    if base_fd is None:
        return
    try:
        names = sorted(n for n in _listdir(base_fd, MAX_SCRATCH_DIRS) if n.startswith(prefix))
    finally:
        os.close(base_fd)
    for name in names:
        fd = scratchdir.owned_directory_fd(scratch_base / name)
        if fd is None:
            continue
        match = _OWNER.match(_read_record(fd, OWNER_FILE, 64) or "")
        if match is None or _alive(int(match["pid"]), int(match["start"])):
            os.close(fd)
            continue
        yield scratch_base / name, fd, int(match["pid"])


def _listdir(fd: int, limit: int) -> list[str]:
    names: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            names.append(entry.name)
            if len(names) >= limit:
                break
    return names


def _read_record(dir_fd: int, name: str, limit: int) -> str | None:
    """A small regular file ndgen wrote (ours, not group/other writable), else None."""
    fd = safefs.open_own_file(dir_fd, name)
    if fd is None:
        return None
    with safefs.opened(fd):
        return os.read(fd, limit).decode("ascii", errors="replace")


def _kill_containers(scratch: Path, scratch_fd: int, dead_pid: int) -> None:
    """Kill and delete the dead run's runc containers — only those whose state root is a
    recorded view's and whose bundle ndgen wrote (its id names the dead PID)."""
    runc = oci.runc_binary()
    if runc is None:
        return
    views = (_read_record(scratch_fd, VIEWS_FILE, MAX_RECORD_BYTES) or "").splitlines()
    ids = re.compile(rf"^{re.escape(oci.CONTAINER_PREFIX)}{dead_pid}-[0-9a-f]{{10}}$")
    acted = 0
    for view in dict.fromkeys(v for v in views[:MAX_VIEWS] if _VIEW.match(v)):
        for cid in _recorded_containers(scratch_fd, view, ids):
            state = scratch / view / RUNC_STATE
            for argv in (oci.kill_argv(state, cid), oci.delete_argv(state, cid)):
                try:
                    subprocess.run(argv, capture_output=True, timeout=RUNC_SECONDS)
                except subprocess.TimeoutExpired:
                    pass  # the next run tries again
            acted += 1
            if acted >= MAX_CONTAINERS:
                return


def _recorded_containers(scratch_fd: int, view: str, ids: re.Pattern[str]) -> list[str]:
    """Container ids with both an ndgen-written bundle and a runc state directory in `view`."""
    view_fd = scratchdir.owned_directory_fd(view, scratch_fd)
    if view_fd is None:
        return []
    try:
        found = []
        bundles = scratchdir.owned_directory_fd(OCI_BUNDLES, view_fd)
        states = scratchdir.owned_directory_fd(RUNC_STATE, view_fd)
        try:
            if bundles is None or states is None:
                return []
            for cid in _listdir(bundles, MAX_CONTAINERS):
                if not ids.match(cid):
                    continue
                # runc makes a container's state directory 0711
                state = scratchdir.owned_directory_fd(cid, states, allowed=0o011)
                if state is not None:
                    found.append(cid)
                    os.close(state)
        finally:
            for fd in (bundles, states):
                if fd is not None:
                    os.close(fd)
        return found
    finally:
        os.close(view_fd)
