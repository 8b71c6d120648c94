"""Sandbox step: one workload command in a sandbox on the image's rootfs.

The sandbox gives the process what ``docker run --network none`` would: the
image's ENV (plus HOME, PATH and HOSTNAME the way Docker fills them in), its
WORKDIR and USER, the user's bind mounts, and Docker's isolation — as root the
same runtime (runc) with the same defaults (:mod:`oci`), unprivileged a
bubblewrap user namespace.  Both tracers wrap the same :class:`SandboxCommand`, so the traced
process is the same whichever tracer watches it.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from neurodocker_nd.errors import NdgenError, TraceError
from neurodocker_nd.minify import imagefs, oci
from neurodocker_nd.minify.model import (
    DEFAULT_PATH,
    DEFAULT_TIMEOUT,
    HOSTNAME,
    OUTPUT_BYTES,
    SHELL,
    CommandResult,
    ImageConfig,
    Mount,
    UserIds,
)

RUNC_STATE = "runc"  # runc's --root beside each view (see pipeline cleanup)


@attrs.frozen
class SandboxCommand:
    """argv + environment to exec; a tracer may prefix argv with its own launcher."""

    argv: tuple[str, ...]
    env: dict[str, str]
    kill: tuple[str, ...] = ()  # argv that kills the whole sandbox (runc kill --all)
    cleanup: tuple[str, ...] = ()  # argv that removes what a killed sandbox leaves (runc delete)


_TABLE_LIMIT = 16 << 20  # bytes of /etc/passwd or /etc/group: ~200,000 accounts


def _read_table(rootfs: Path, name: str) -> list[list[str]]:
    # Read inside the image: an /etc/passwd linking to an absolute path names the image's
    # file of that name, never the host's; a FIFO or device there is an error, not a hang.
    data = imagefs.read_bytes(str(rootfs), f"/etc/{name}", _TABLE_LIMIT)
    if data is None:
        return []
    text = data.decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: Path, user: str) -> UserIds:
    """Resolve Docker's USER ("name", "uid", "name:group", "uid:gid") against the image's files."""
    name, _, group = (user or "0").partition(":")
    passwd = _read_table(rootfs, "passwd")
    entry = next((e for e in passwd if len(e) >= 7 and (e[0] == name or e[2] == name)), None)
    if entry is not None:
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5] or "/"
    elif name.isdigit():
        uid, gid, home = int(name), int(name) if not group else 0, "/"
    else:
        raise NdgenError(f"image USER {user!r}: no such user in the image's /etc/passwd")
    groups = _read_table(rootfs, "group")
    if group:
        match = next((g for g in groups if len(g) >= 3 and (g[0] == group or g[2] == group)), None)
        if match is not None:
            gid = int(match[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise NdgenError(f"image USER {user!r}: no such group in the image's /etc/group")
    member_of = tuple(
        int(g[2]) for g in groups if len(g) >= 4 and g[2].isdigit() and entry and entry[0] in g[3].split(",")
    )
    return UserIds(uid=uid, gid=gid, home=home, groups=member_of)


def sandbox_env(rootfs: Path, config: ImageConfig) -> dict[str, str]:
    """The environment `docker run` gives a container of this image."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": HOSTNAME}
    env["HOME"] = resolve_user(rootfs, config.user).home
    env.update(config.env_dict)  # the image's own ENV wins, as with Docker
    return env


def sandbox_command(
    rootfs: Path, config: ImageConfig, command: str, mounts: Sequence[Mount] = (), inner: Sequence[str] = ()
) -> SandboxCommand:
    """The argv running ``/bin/sh -c COMMAND`` on `rootfs` like ``docker run --network none``.

    `inner` is an argv prefix run *inside* the sandbox before the shell (the ptrace
    tracer's strace, so that runc or bwrap themselves are never traced).

    As root: an OCI bundle run by runc with Docker's defaults (:mod:`oci`).  Bubblewrap
    as root cannot be as strict (writable /proc/sys) nor as loose (no setuid: it always
    sets no_new_privs); without root (or without CAP_SYS_ADMIN, which runc needs),
    bubblewrap in a user namespace with Docker's read-only and masked paths and
    capabilities: it holds no host capability to leak.
    """
    ids = resolve_user(rootfs, config.user)
    env = sandbox_env(rootfs, config)
    argv = (*inner, SHELL, "-c", command)
    if os.geteuid() == 0 and has_cap_sys_admin():
        return _runc_command(rootfs, config, argv, mounts, ids, env)
    return _bwrap_command(rootfs, config, argv, mounts, ids, env)


def _runc_command(
    rootfs: Path, config: ImageConfig, argv: Sequence[str], mounts: Sequence[Mount], ids: UserIds, env: dict[str, str]
) -> SandboxCommand:
    if oci.runc_binary() is None:
        # Never fall back to a laxer sandbox as root.
        raise NdgenError("the trace sandbox needs runc (Docker's runtime): apt-get install runc")
    cid = oci.container_id()
    # Bundles and runc's state live beside the view, inside the run's scratch directory:
    # removed with it, and found by the next run if this one is killed.
    state = rootfs.parent / RUNC_STATE
    bundle = rootfs.parent / "oci" / cid
    oci.write_bundle(
        bundle,
        rootfs,
        argv,
        env,
        cwd=config.workdir or "/",
        uid=ids.uid,
        gid=ids.gid,
        extra_gids=ids.groups,
        hostname=HOSTNAME,
        binds=[(str(m.host), m.target, m.read_only) for m in mounts],
    )
    return SandboxCommand(
        argv=oci.run_argv(state, bundle, cid),
        env={"PATH": DEFAULT_PATH},
        kill=oci.kill_argv(state, cid),
        cleanup=oci.delete_argv(state, cid),
    )


def _bwrap_command(
    rootfs: Path,
    config: ImageConfig,
    process: Sequence[str],
    mounts: Sequence[Mount],
    ids: UserIds,
    env: dict[str, str],
) -> SandboxCommand:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise NdgenError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    etc = rootfs.parent / "oci" / oci.container_id()
    oci.write_etc_files(etc, HOSTNAME)
    argv = [
        bwrap,
        "--bind", str(rootfs), "/",
        "--proc", "/proc",
        "--dev", "/dev",
        "--ro-bind", "/sys", "/sys",
        "--unshare-all", "--unshare-user",
        "--uid", str(ids.uid), "--gid", str(ids.gid),
        "--hostname", HOSTNAME,
        "--die-with-parent",
        "--cap-drop", "ALL",
    ]  # fmt: skip
    if ids.uid == 0:
        argv += [arg for cap in oci.DOCKER_CAPS for arg in ("--cap-add", cap)]
    # Docker's read-only and masked paths (the binds' sources are the host's own /proc files).
    for path in oci.READONLY_PATHS:
        argv += ["--ro-bind-try", path, path]
    for path in oci.MASKED_PATHS:
        if os.path.isdir(path):
            argv += ["--tmpfs", path, "--remount-ro", path]
        elif os.path.exists(path):
            argv += ["--dev-bind", "/dev/null", path]  # as Docker: a readable, empty file
    for name in oci.ETC_FILES:
        argv += ["--bind", str(etc / name), f"/etc/{name}"]
    for mount in mounts:
        argv += ["--ro-bind" if mount.read_only else "--bind", str(mount.host), mount.target]
    argv += ["--chdir", config.workdir or "/", "--", *process]
    return SandboxCommand(argv=tuple(argv), env=env)


def has_cap_sys_admin() -> bool:
    """Whether this process may mount and create namespaces directly (CAP_SYS_ADMIN = bit 21)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return os.geteuid() == 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 21))
    return False


def run_plain(
    rootfs: Path,
    config: ImageConfig,
    command: str,
    mounts: Sequence[Mount] = (),
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CommandResult:
    """Run one command untraced (timing baseline, and the runner every tracer wraps)."""
    return run_sandboxed(sandbox_command(rootfs, config, command, mounts), command, timeout=timeout)


class CommandTimeout(TraceError):
    """A workload command ran longer than --timeout; its sandbox was killed."""


def run_sandboxed(
    sandbox: SandboxCommand,
    command: str,
    prefix: Sequence[str] = (),
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CommandResult:
    """Exec `prefix + sandbox.argv`, capturing output; `command` is what the user wrote.

    After `timeout` seconds the whole sandbox is killed (every process of it, then the
    tracer and launcher) and :class:`CommandTimeout` names the command.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*prefix, *sandbox.argv],
        env=sandbox.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # one process group to kill: tracer, launcher, sandbox
    )
    try:
        stdout, stderr = _bounded_output(proc, timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(sandbox, proc)
        raise CommandTimeout(
            f"command {command!r} timed out after {timeout:g} s (--timeout); its sandbox was killed"
        ) from None
    except _TooMuchOutput as exc:
        _kill_tree(sandbox, proc)
        raise TraceError(
            f"command {command!r} printed more than {OUTPUT_BYTES >> 20} MiB on {exc.stream}; verify compares "
            "outputs byte for byte and holds at most that much: write it to a file on a -v mount"
        ) from None
    except BaseException:  # Ctrl-C, SIGTERM: no sandbox may outlive ndgen
        _kill_tree(sandbox, proc)
        raise
    if proc.returncode == 1 and stderr.startswith(b"bwrap: "):
        # The sandbox itself failed (namespaces, mounts): not the user's command.
        line = stderr.decode(errors="replace").splitlines()[0]
        raise TraceError(f"cannot start the sandbox for {command!r}: {line}")
    if sandbox.cleanup and proc.returncode != 0:
        failure = _runc_failure(stderr)
        if failure:
            raise TraceError(f"cannot start the sandbox for {command!r}: {failure}")
    return CommandResult(
        command=command,
        exit_code=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        seconds=time.perf_counter() - start,
    )


class _TooMuchOutput(Exception):
    def __init__(self, stream: str) -> None:
        self.stream = stream


def _bounded_output(proc: subprocess.Popen[bytes], timeout: float | None) -> tuple[bytes, bytes]:
    """stdout and stderr of `proc`, each at most OUTPUT_BYTES (the image's program decides how
    much it prints: communicate() held all of it). Raises _TooMuchOutput past that, and
    subprocess.TimeoutExpired after `timeout` seconds."""
    assert proc.stdout is not None and proc.stderr is not None
    end = None if timeout is None else time.monotonic() + timeout
    streams = {proc.stdout.fileno(): ("stdout", bytearray()), proc.stderr.fileno(): ("stderr", bytearray())}
    with selectors.DefaultSelector() as sel:
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout or 0)
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                name, buf = streams[key.fd]
                buf += chunk
                if len(buf) > OUTPUT_BYTES:
                    raise _TooMuchOutput(name)
    try:
        proc.wait(timeout=None if end is None else max(0.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise subprocess.TimeoutExpired(proc.args, timeout or 0) from None
    out, err = (bytes(buf) for _, buf in streams.values())
    return out, err


def _runc_failure(stderr: bytes) -> str:
    """runc's own failure (before the workload ran): its last logrus error line, else ""."""
    for line in reversed(stderr.decode(errors="replace").splitlines()[-3:]):
        if line.startswith("time=") and "level=error" in line:
            return line.split("msg=", 1)[-1].strip('"')[:300]
    return ""


def _kill_tree(sandbox: SandboxCommand, proc: subprocess.Popen[bytes]) -> None:
    if sandbox.kill:
        subprocess.run(sandbox.kill, capture_output=True)  # every process of the container
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
    if sandbox.cleanup:
        subprocess.run(sandbox.cleanup, capture_output=True)
