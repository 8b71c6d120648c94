"""Verify step: rerun every command in the new image and compare with the traced run.

Each command runs with ``docker run --network none`` as ``/bin/sh -c CMD``
with the same mounts as in the trace; a writable mount gets its own fresh copy
of the directory's initial content (as did the traced run), so output files
can be compared byte for byte afterwards.  On a mismatch, the failing commands
are re-traced with the ptrace tracer in the *minified* tree: paths it looked
up in vain (ENOENT) that exist in the source image are the likely culprits.
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd.errors import EngineError
from neurodocker_nd.minify import imagefs
from neurodocker_nd.minify.keep import RUNTIME_DIRS
from neurodocker_nd.minify.record import CommandResult
from neurodocker_nd.minify.run import DEFAULT_TIMEOUT, HOSTNAME, SHELL, CommandTimeout, Mount
from neurodocker_nd.minify.source import ImageConfig


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
        return tuple(m if snap is None else m.with_host(snap) for m, snap in zip(self.mounts, self.snapshots))

    def fresh(self, scratch: Path, label: str) -> tuple[Mount, ...]:
        """Mounts for one run: writable ones point at a new copy of their initial content."""
        result = []
        for index, (mount, snap) in enumerate(zip(self.mounts, self.snapshots)):
            if snap is None:
                result.append(mount)
                continue
            copy = scratch / "mounts" / label / str(index)
            _copy(snap, copy)
            result.append(mount.with_host(copy))
        return tuple(result)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        try:
            shutil.copytree(source, target, symlinks=True)
        except shutil.Error as exc:  # one OSError per file, as text: keep the first, as an OSError
            src, dst, why = exc.args[0][0]
            code = errno.ENOSPC if f"[Errno {errno.ENOSPC}]" in why else errno.EIO
            raise OSError(code, os.strerror(code), dst) from exc
    else:
        shutil.copy2(source, target)
    # The workload may run as the image's USER: owners and modes as in the user's directory.
    for src, dst in _pairs(source, target):
        st = os.lstat(src)
        os.lchown(dst, st.st_uid, st.st_gid)
    shutil.copystat(source, target, follow_symlinks=False)


def _pairs(source: Path, target: Path) -> list[tuple[str, str]]:
    pairs = [(str(source), str(target))]
    if source.is_dir() and not source.is_symlink():
        for dirpath, dirnames, filenames in os.walk(source):
            rel = os.path.relpath(dirpath, source)
            pairs += [(os.path.join(dirpath, n), os.path.join(target, rel, n)) for n in dirnames + filenames]
    return pairs


# -- rerun in the new image ------------------------------------------------------------------


def run_in_image(
    client: Any, tag: str, command: str, mounts: Sequence[Mount], timeout: float | None = DEFAULT_TIMEOUT
) -> CommandResult:
    """`docker run --network none --entrypoint /bin/sh TAG -c CMD`, output captured exactly.

    After `timeout` seconds the container is killed and :class:`CommandTimeout` names the command.
    """
    import docker.errors

    volumes = {str(m.host): {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts}
    start = time.perf_counter()
    try:
        container = client.containers.create(
            tag,
            command=["-c", command],
            entrypoint=[SHELL],
            network_mode="none",
            hostname=HOSTNAME,
            volumes=volumes,
            stdin_open=False,
            tty=False,
        )
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot create a container of {tag}: {exc.explanation or exc}") from exc
    try:
        # Attach before start: the raw multiplexed stream keeps bytes exact (log drivers do not).
        stream = client.api.attach(container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True)
        try:
            container.start()
        except docker.errors.APIError as exc:
            # e.g. the entrypoint shell is missing: Docker's own exit code for that is 127.
            return CommandResult(command, 127, b"", str(exc.explanation or exc).encode(), time.perf_counter() - start)
        fired = threading.Event()
        timer = threading.Timer(timeout, _kill, (container, fired)) if timeout else None
        if timer is not None:
            timer.start()
        out, err = bytearray(), bytearray()
        try:
            for stdout, stderr in stream:
                out += stdout or b""
                err += stderr or b""
            exit_code = int(container.wait().get("StatusCode", -1))
        finally:
            if timer is not None:
                timer.cancel()
        if fired.is_set():
            raise CommandTimeout(
                f"command {command!r} timed out after {timeout:g} s (--timeout) in the minified image; "
                "its container was killed"
            )
    finally:
        container.remove(force=True)
    return CommandResult(command, exit_code, bytes(out), bytes(err), time.perf_counter() - start)


def rerun(
    client: Any, tag: str, commands: Sequence[str], mounts: Sequence[Mount], timeout: float | None = DEFAULT_TIMEOUT
) -> tuple[CommandResult, ...]:
    return tuple(run_in_image(client, tag, command, mounts, timeout) for command in commands)


def _kill(container: Any, fired: threading.Event) -> None:
    import docker.errors

    fired.set()
    try:
        container.kill()
    except docker.errors.APIError:
        pass  # it ended meanwhile


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
    for before, after in zip(traced, rerun_):
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
    for before, after in zip(traced, rerun_):
        if before.read_only:
            continue
        diff = _tree_diff(before.host, after.host)
        if diff is not None:
            return Mismatch("", f"output file {os.path.join(before.target, diff)}")
    return None


def _tree_diff(left: Path, right: Path) -> str | None:
    if left.is_file() or right.is_file():
        return None if filecmp.cmp(left, right, shallow=False) else "."
    names = set()
    for base in (left, right):
        for dirpath, _dirs, files in os.walk(base):
            names |= {os.path.relpath(os.path.join(dirpath, f), base) for f in files}
    for name in sorted(names):
        a, b = left / name, right / name
        if not (a.is_file() and b.is_file()) or not filecmp.cmp(a, b, shallow=False):
            return name
    return None


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
