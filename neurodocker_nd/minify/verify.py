"""Verify step: rerun every command in the new image and compare with the traced run.

Each command runs with ``docker run --network none`` as ``/bin/sh -c CMD``
with the same mounts as in the trace; a writable mount gets its own fresh copy
of the directory's initial content (as did the traced run), so output files
can be compared byte for byte afterwards.  On a mismatch, the failing commands
are re-traced with the ptrace tracer in the *minified* tree: paths it looked
up in vain (ENOENT) that exist in the source image are the likely culprits.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd.errors import EngineError, NdgenError
from neurodocker_nd.minify import imagefs
from neurodocker_nd.minify.keep import RUNTIME_DIRS
from neurodocker_nd.minify.model import (
    DEFAULT_TIMEOUT,
    HOSTNAME,
    OUTPUT_BYTES,
    SHELL,
    CommandResult,
    ImageConfig,
    Mount,
)
from neurodocker_nd.minify.sandbox import CommandTimeout


@attrs.frozen
class Mismatch:
    """The first difference between the traced run and the rerun in the new image."""

    command: str  # the first command whose result differs ("" when only files differ)
    what: str  # "exit code 0 → 127", "stderr", "output file /data/x"
    detail: str = ""  # first differing line, when there is one
    missing: tuple[str, ...] = ()  # likely missing paths (ENOENT in the minified tree)

    def message(self) -> str:
        where = f"command {self.command!r}" if self.command else "the outputs"
        text = f"verify failed: {where} differs in the minified image ({self.what})"
        if self.missing:
            text += f"; likely missing: {', '.join(self.missing[:5])}"
        elif self.detail:
            text += f": {self.detail}"
        return text


# -- writable mounts get fresh copies -------------------------------------------------------


@attrs.frozen
class MountSet:
    """The user's mounts plus a pristine snapshot of each writable one."""

    mounts: tuple[Mount, ...]
    snapshots: tuple[Path | None, ...]  # None for read-only mounts (shared, never written)

    @classmethod
    def snapshot(cls, mounts: Sequence[Mount], scratch: Path) -> MountSet:
        snaps: list[Path | None] = []
        for index, mount in enumerate(mounts):
            if mount.read_only:
                snaps.append(None)
                continue
            target = scratch / "mounts" / "initial" / str(index)
            _copy(mount.host, target)
            snaps.append(target)
        return cls(mounts=tuple(mounts), snapshots=tuple(snaps))

    def initial(self) -> tuple[Mount, ...]:
        """Mounts on the snapshots themselves: for setup, whose output every run then starts from."""
        return tuple(
            m if snap is None else m.with_host(snap) for m, snap in zip(self.mounts, self.snapshots, strict=True)
        )

    def fresh(self, scratch: Path, label: str) -> tuple[Mount, ...]:
        """Mounts for one run: writable ones point at a new copy of their initial content."""
        result = []
        for index, (mount, snap) in enumerate(zip(self.mounts, self.snapshots, strict=True)):
            if snap is None:
                result.append(mount)
                continue
            copy = scratch / "mounts" / label / str(index)
            _copy(snap, copy)
            result.append(mount.with_host(copy))
        return tuple(result)


# A mount's content is copied for every run (trace, untraced, each verify and repair):
# bounded, so that what setup or a workload wrote there cannot fill the disk.
MAX_COPY_BYTES = 64 << 30
MAX_COPY_ENTRIES = 1_000_000
_CHUNK = 1 << 20


@attrs.define
class _Budget:
    """What one copy may still write; exceeding it is one clear error."""

    source: Path
    max_bytes: int
    max_entries: int
    bytes: int = 0
    entries: int = 0

    def take(self, entries: int = 0, size: int = 0) -> None:
        self.entries += entries
        self.bytes += size
        if self.entries > self.max_entries:
            raise NdgenError(f"mount copy of {self.source}: more than {self.max_entries} entries")
        if self.bytes > self.max_bytes:
            raise NdgenError(f"mount copy of {self.source}: more than {self.max_bytes} bytes")


def _copy(source: Path, target: Path, max_bytes: int | None = None, max_entries: int | None = None) -> None:
    """Copy a mount's content: regular files, directories and symlinks, never following one.

    Setup runs the image's programs on the snapshots and every run writes into its
    copy, so the tree is hostile: a FIFO would block the copy, a device node such as
    ``/dev/zero`` would fill the disk.  Anything but those three kinds is an error
    naming it, as is a tree over `max_bytes` or `max_entries`.  Owners, modes and
    times are kept (the workload may run as the image's USER).
    """
    budget = _Budget(
        source,
        MAX_COPY_BYTES if max_bytes is None else max_bytes,
        MAX_COPY_ENTRIES if max_entries is None else max_entries,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    dirs: list[tuple[str, str]] = []  # (source, copy): their times are set last, after their content
    stack = [(str(source), str(target))]
    budget.take(entries=1)
    while stack:
        src, dst = stack.pop()
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(dst, 0o700)
            dirs.append((src, dst))
            with os.scandir(src) as entries:
                for entry in entries:  # counted as listed: a huge directory stops here
                    budget.take(entries=1)
                    stack.append((entry.path, os.path.join(dst, entry.name)))
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(src, dst, budget)
        else:
            kind = (
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device node"
            )
            raise NdgenError(
                f"mount copy of {source}: {os.path.relpath(src, source)} is {kind}; "
                "only regular files, directories and symlinks are copied"
            )
        _copy_stat(src, dst, st)
    for src, dst in reversed(dirs):  # children first: creating an entry changes its directory's mtime
        _copy_stat(src, dst, os.lstat(src))


def _copy_file(src: str, dst: str, budget: _Budget) -> None:
    """One regular file, bounded by the budget (it may grow while copied), never a swapped-in
    FIFO or device (no-follow, non-blocking, fstat-checked)."""
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd_in)
        if not stat.S_ISREG(st.st_mode):
            raise NdgenError(f"mount copy: {src} changed into a non-regular file while copied")
        if budget.bytes + st.st_size > budget.max_bytes:  # before writing any of it
            budget.take(size=st.st_size)
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := os.read(fd_in, _CHUNK):
                budget.take(size=len(chunk))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd_out, view) :]
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_stat(src: str, dst: str, st: os.stat_result) -> None:
    os.lchown(dst, st.st_uid, st.st_gid)
    shutil.copystat(src, dst, follow_symlinks=False)  # mode (after chown, which clears setuid), times, xattrs


# -- rerun in the new image ------------------------------------------------------------------


def run_in_image(
    client: Any, tag: str, command: str, mounts: Sequence[Mount], timeout: float | None = DEFAULT_TIMEOUT
) -> CommandResult:
    """`docker run --network none --entrypoint /bin/sh TAG -c CMD`, output captured exactly.

    After `timeout` seconds the container is killed and :class:`CommandTimeout` names the command.
    The image decides how much the command prints: the output is streamed (`engine.run_once`)
    and a stream longer than :data:`OUTPUT_BYTES` is refused, never held whole.
    """
    import docker.errors

    from neurodocker_nd.core import engine

    try:
        run = engine.run_once(
            client,
            tag,
            ["-c", command],
            entrypoint=[SHELL],
            timeout=timeout,
            mounts=tuple((m.host, m.target, m.read_only) for m in mounts),
            hostname=HOSTNAME,
            keep_bytes=OUTPUT_BYTES,
        )
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot run a container of {tag}: {exc.explanation or exc}") from exc
    if run.exit_code is None:
        raise CommandTimeout(
            f"command {command!r} timed out after {timeout:g} s (--timeout) in the minified image; "
            "its container was killed"
        )
    for name, size in (("stdout", run.stdout_bytes), ("stderr", run.stderr_bytes)):
        if size > OUTPUT_BYTES:
            raise NdgenError(
                f"verify: command {command!r} printed more than {OUTPUT_BYTES >> 20} MiB on {name} in the "
                "minified image; verify compares outputs byte for byte and holds at most that much: "
                "write it to a file on a -v mount, or skip the check with --no-verify"
            )
    return CommandResult(command, run.exit_code, run.stdout_head, run.stderr_head, run.seconds)


def rerun(
    client: Any, tag: str, commands: Sequence[str], mounts: Sequence[Mount], timeout: float | None = DEFAULT_TIMEOUT
) -> tuple[CommandResult, ...]:
    return tuple(run_in_image(client, tag, command, mounts, timeout) for command in commands)


# -- compare ---------------------------------------------------------------------------------


def _first_line_diff(traced: bytes, rerun: bytes) -> str:
    """The first line where the minified rerun departs from the traced run, said as such."""
    before, after = traced.splitlines(), rerun.splitlines()
    for index in range(max(len(before), len(after))):
        old = before[index] if index < len(before) else None
        new = after[index] if index < len(after) else None
        if old != new:
            if new is None:
                return f"line {index + 1} missing: {(old or b'').decode(errors='replace').strip()[:200]}"
            return new.decode(errors="replace").strip()[:200]
    return ""


def compare_results(traced: Sequence[CommandResult], rerun_: Sequence[CommandResult]) -> Mismatch | None:
    for before, after in zip(traced, rerun_, strict=True):  # the rerun is of the traced commands
        if before.exit_code != after.exit_code:
            detail = _first_line_diff(before.stderr, after.stderr) or _first_line_diff(before.stdout, after.stdout)
            return Mismatch(before.command, f"exit code {before.exit_code} → {after.exit_code}", detail)
        if before.stdout != after.stdout:
            return Mismatch(before.command, "stdout", _first_line_diff(before.stdout, after.stdout))
        if before.stderr != after.stderr:
            return Mismatch(before.command, "stderr", _first_line_diff(before.stderr, after.stderr))
    return None


def compare_outputs(traced: Sequence[Mount], rerun_: Sequence[Mount]) -> Mismatch | None:
    """Byte-compare the writable mounts' contents after both runs."""
    # Not strict: a --tests suite alone traces no command, on no mount (traced is empty then).
    for before, after in zip(traced, rerun_, strict=False):
        if before.read_only:
            continue
        diff = _tree_diff(before.host, after.host)
        if diff is not None:
            return Mismatch("", f"output file {os.path.join(before.target, diff)}")
    return None


def _tree_diff(left: Path, right: Path) -> str | None:
    """The first entry (relative path) whose kind or content differs, else None.

    Both trees are what workloads wrote: nothing is followed (a symlink compares as its
    target text, a FIFO or device by kind and number) and files are read no-follow and
    non-blocking, so an output can neither block the host nor make it read a host file.
    """
    if not left.is_dir() or not right.is_dir() or left.is_symlink() or right.is_symlink():
        return None if _same_entry(str(left), str(right)) else "."
    names: set[str] = set()
    for base in (left, right):
        for dirpath, dirs, files in os.walk(base):  # never descends through a symlink
            # Directories themselves are not outputs (a run's empty scratch dirs may differ);
            # a symlink to one is, listed among dirs by os.walk.
            links = [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]
            names |= {os.path.relpath(os.path.join(dirpath, n), base) for n in files + links}
    for name in sorted(names):
        if not _same_entry(os.path.join(left, name), os.path.join(right, name)):
            return name
    return None


def _same_entry(a: str, b: str) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if stat.S_ISDIR(sa.st_mode):
        return True
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if not stat.S_ISREG(sa.st_mode):
        return sa.st_rdev == sb.st_rdev
    if sa.st_size != sb.st_size:
        return False
    return _same_content(a, b)


def _same_content(a: str, b: str) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fa, fb = os.open(a, flags), None
    try:
        fb = os.open(b, flags)
        if not (stat.S_ISREG(os.fstat(fa).st_mode) and stat.S_ISREG(os.fstat(fb).st_mode)):
            return False  # swapped since the lstat
        while True:
            ca, cb = os.read(fa, _CHUNK), os.read(fb, _CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True
    finally:
        os.close(fa)
        if fb is not None:
            os.close(fb)


# -- diagnose --------------------------------------------------------------------------------


def likely_missing(
    minified_root: Path,
    pristine: Path,
    config: ImageConfig,
    commands: Sequence[str],
    mounts: Sequence[Mount],
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> tuple[str, ...]:
    """Re-trace `commands` with ptrace in the minified tree; ENOENTs present in the source."""
    from neurodocker_nd.minify.ptrace import PtraceTracer

    again = PtraceTracer().trace(minified_root, config, commands, mounts, stop_on_failure=False, timeout=timeout)
    return present_in_source(pristine, sorted(again.missing), tuple(m.target for m in mounts))


def present_in_source(pristine: Path, paths: Sequence[str], mount_targets: Sequence[str]) -> tuple[str, ...]:
    """The `paths` that exist in the source image, looked up inside it (never on the host),
    outside the runtime directories and mount points."""
    return tuple(
        path
        for path in paths
        if imagefs.lstat_in_root(str(pristine), path) is not None
        and not any(path == t or path.startswith(t + "/") for t in (*RUNTIME_DIRS, *mount_targets))
    )
