"""Trace step (fast path): fanotify on the rootfs's filesystem while the workload runs.

One FAN_MARK_FILESYSTEM mark on the overlay mount reports every open and exec
(files and directories) on that superblock, whichever mount namespace the
sandboxed process sees it through; the kernel hands us an fd per event and we
map it to a path via /proc/self/fd.  Cost to the workload: one queued event per
open, read by a thread in parallel — no ptrace stops.

Blind spots (filled by :mod:`keep` rules, or seen by the ptrace tracer):
stat()/access()/readlink() without an open, symlinks on the way to a file, and
ENOENT lookups — so ``TraceRecord.missing`` is always empty here.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from neurodocker_nd.errors import TraceError
from neurodocker_nd.minify.model import CommandResult, ImageConfig, Mount, Tracer, TraceRecord, in_image_path
from neurodocker_nd.minify.sandbox import run_sandboxed, sandbox_command

# <linux/fanotify.h>
FAN_CLOEXEC = 0x01
FAN_NONBLOCK = 0x02
FAN_CLASS_NOTIF = 0x00
FAN_UNLIMITED_QUEUE = 0x10
FAN_REPORT_FD_ERROR = 0x2000  # Linux 6.13+: a failed event fd is reported, not silently dropped
FAN_MARK_ADD = 0x01
FAN_MARK_FILESYSTEM = 0x100
FAN_OPEN = 0x20
FAN_OPEN_EXEC = 0x1000
FAN_Q_OVERFLOW = 0x4000
FAN_ONDIR = 0x40000000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_NOFD = -1
_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_O_LARGEFILE = getattr(os, "O_LARGEFILE", 0o100000)
_READ_SIZE = 8192  # at most ~340 events, hence fds, per read


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_init.restype = ctypes.c_int
    libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
    libc.fanotify_mark.restype = ctypes.c_int
    return libc


def fanotify_available() -> str | None:
    """None when fanotify works here, else why not (for the fallback message)."""
    try:
        libc = _libc()
        fd = libc.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC, os.O_RDONLY)
    except (OSError, AttributeError) as exc:
        return f"fanotify unavailable: {exc}"
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.EPERM:
            return "fanotify needs root (CAP_SYS_ADMIN)"
        return f"fanotify unavailable: {os.strerror(err)}"
    os.close(fd)
    return None


class FanotifyUnavailable(TraceError):
    """fanotify cannot watch this rootfs (kernel, filesystem or privileges): use ptrace."""


class FanotifyIncomplete(TraceError):
    """Events were lost (queue overflow, no fd for an event): the record cannot be trusted."""


class _Watcher:
    """Owns the fanotify fd and a reader thread collecting in-image paths."""

    def __init__(self, rootfs: Path) -> None:
        self._root = str(rootfs)
        libc = _libc()
        flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE
        event_flags = os.O_RDONLY | _O_LARGEFILE | os.O_CLOEXEC
        self._fd = libc.fanotify_init(flags | FAN_REPORT_FD_ERROR, event_flags)
        if self._fd < 0 and ctypes.get_errno() == errno.EINVAL:  # an older kernel
            self._fd = libc.fanotify_init(flags, event_flags)
        if self._fd < 0:
            raise FanotifyUnavailable(f"fanotify_init failed: {os.strerror(ctypes.get_errno())}")
        mask = FAN_OPEN | FAN_OPEN_EXEC | FAN_ONDIR | FAN_EVENT_ON_CHILD
        if libc.fanotify_mark(self._fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, -1, self._root.encode()) < 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise FanotifyUnavailable(f"fanotify cannot mark {self._root}: {os.strerror(err)}")
        self.paths: set[str] = set()
        self.overflowed = False
        self.error: OSError | None = None
        self.fd_errors: dict[int, int] = {}  # errno -> events whose file the kernel could not open
        self._own_pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fanotify", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while not self._stop.is_set():
                if poller.poll(50):
                    self._drain()
            self._drain()  # events queued before the workload exited are all there now
        except OSError as exc:  # reported by close(): a trace with lost events is no trace
            self.error = exc

    def _drain(self) -> None:
        while True:
            try:
                # Each event in a read arrives with an open fd: a small buffer keeps
                # that burst far below the open-files limit.
                buf = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return
            if not buf:
                return
            self._parse(buf)

    def _parse(self, buf: bytes) -> None:
        offset = 0
        while offset + _METADATA.size <= len(buf):
            event_len, _vers, _res, _mlen, mask, fd, pid = _METADATA.unpack_from(buf, offset)
            offset += event_len or _METADATA.size
            if mask & FAN_Q_OVERFLOW:
                self.overflowed = True
            if fd == FAN_NOFD:
                continue
            if fd < 0:  # FAN_REPORT_FD_ERROR: -errno, e.g. EMFILE; this path is lost
                self.fd_errors[-fd] = self.fd_errors.get(-fd, 0) + 1
                continue
            try:
                if pid != self._own_pid:
                    self._add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
            finally:
                os.close(fd)

    def _add(self, host_path: str) -> None:
        # The fd's path is printed relative to our root; a mount seen through the
        # sandbox's namespace may print as the in-image path already.
        path = in_image_path(host_path, self._root)
        if path is None and host_path.startswith("/") and not host_path.startswith(self._root):
            path = host_path
        if path is not None and not path.endswith(" (deleted)"):
            self.paths.add(path)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        os.close(self._fd)


@attrs.define
class _Session:
    """A fanotify trace under way: the mark on the rootfs and the clock of its commands."""

    rootfs: Path
    config: ImageConfig
    mounts: Sequence[Mount]
    watcher: _Watcher
    start: float
    seconds: float = 0.0

    def run(self, command: str, timeout: float | None) -> CommandResult:
        return run_sandboxed(sandbox_command(self.rootfs, self.config, command, self.mounts), command, timeout=timeout)

    def record(self, results: tuple[CommandResult, ...], tracer: str) -> TraceRecord:
        """The record once the watcher is closed: refused when any event was lost."""
        watcher = self.watcher
        if watcher.overflowed:
            raise FanotifyIncomplete("fanotify queue overflowed: events were lost")
        if watcher.fd_errors:
            code, count = next(iter(watcher.fd_errors.items()))
            raise FanotifyIncomplete(f"fanotify lost {count} event(s): {os.strerror(code)}")
        if watcher.error is not None:
            raise FanotifyIncomplete(f"reading fanotify events failed: {watcher.error}")
        return TraceRecord(
            paths=frozenset(watcher.paths),
            missing=frozenset(),
            results=results,
            tracer=tracer,
            seconds=self.seconds,
        )


class FanotifyTracer(Tracer):
    """The fast tracer: opens and execs on the rootfs's superblock (see module doc)."""

    name = "fanotify"

    @contextlib.contextmanager
    def session(self, rootfs: Path, config: ImageConfig, mounts: Sequence[Mount]) -> Iterator[_Session]:
        session = _Session(rootfs, config, mounts, _Watcher(rootfs), time.perf_counter())
        try:
            yield session
        finally:
            session.seconds = time.perf_counter() - session.start
            session.watcher.close()
