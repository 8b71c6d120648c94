"""Run step: one workload command in a bubblewrap sandbox on the image's rootfs.

The sandbox gives the process what ``docker run --network none`` would: the
image's ENV (plus HOME, PATH and HOSTNAME the way Docker fills them in), its
WORKDIR and USER, the user's bind mounts, /proc, /dev, a fresh /tmp, and no
network.  Both tracers wrap the same :class:`SandboxCommand`, so the traced
process is the same whichever tracer watches it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from neurodocker_nd.errors import NdgenError, TraceError
from neurodocker_nd.minify.record import CommandResult
from neurodocker_nd.minify.source import DEFAULT_PATH, ImageConfig

# moby's default capability set (oci/caps/defaults.go) for containers run as root.
DOCKER_CAPS = tuple(
    f"CAP_{name}"
    for name in (
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    )
)  # fmt: skip
HOSTNAME = "ndgen-minify"  # verify uses the same name, so `hostname` output compares equal
SHELL = "/bin/sh"


@attrs.frozen
class Mount:
    """A bind mount, as given with ``-v HOST:CTR[:ro]``."""

    host: Path
    target: str
    read_only: bool = False

    @classmethod
    def parse(cls, spec: str) -> Mount:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise NdgenError(f"bad -v {spec!r}: expected HOST:CONTAINER[:ro|rw]")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise NdgenError(f"bad -v {spec!r}: mode must be ro or rw, not {mode!r}")
        host = Path(parts[0]).expanduser()
        if not host.exists():
            raise NdgenError(f"-v {spec}: host path {host} does not exist")
        if not parts[1].startswith("/"):
            raise NdgenError(f"-v {spec}: container path {parts[1]!r} must be absolute")
        return cls(host=host.resolve(), target=os.path.normpath(parts[1]), read_only=mode == "ro")

    def with_host(self, host: Path) -> Mount:
        return attrs.evolve(self, host=host)

    def docker_spec(self) -> str:
        return f"{self.host}:{self.target}:{'ro' if self.read_only else 'rw'}"


@attrs.frozen
class SandboxCommand:
    """argv + environment to exec; a tracer may prefix argv with its own launcher."""

    argv: tuple[str, ...]
    env: dict[str, str]
    # Ids to run bwrap itself as: the image's USER when it can reach the rootfs and the
    # mounts (bwrap then makes an identity-mapped user namespace, and file permissions
    # act as in Docker); 0 otherwise.
    uid: int = 0
    gid: int = 0


@attrs.frozen
class UserIds:
    uid: int
    gid: int
    home: str


def _read_table(rootfs: Path, name: str) -> list[list[str]]:
    try:
        text = (rootfs / "etc" / name).read_text(errors="replace")
    except OSError:
        return []
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
    if group:
        groups = _read_table(rootfs, "group")
        match = next((g for g in groups if len(g) >= 3 and (g[0] == group or g[2] == group)), None)
        if match is not None:
            gid = int(match[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise NdgenError(f"image USER {user!r}: no such group in the image's /etc/group")
    return UserIds(uid=uid, gid=gid, home=home)


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


def sandbox_env(rootfs: Path, config: ImageConfig) -> dict[str, str]:
    """The environment `docker run` gives a container of this image."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": HOSTNAME}
    env["HOME"] = resolve_user(rootfs, config.user).home
    env.update(config.env_dict)  # the image's own ENV wins, as with Docker
    return env


def sandbox_command(
    rootfs: Path, config: ImageConfig, command: str, mounts: Sequence[Mount] = ()
) -> SandboxCommand:
    """Build the bwrap argv running ``/bin/sh -c COMMAND`` like ``docker run`` would."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise NdgenError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    ids = resolve_user(rootfs, config.user)
    argv = [
        bwrap,
        "--bind", str(rootfs), "/",
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--unshare-net", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
        "--hostname", HOSTNAME,
        "--die-with-parent",
    ]  # fmt: skip
    as_user = (ids.uid or ids.gid) and all(
        _reachable(p, ids.uid, ids.gid) for p in (rootfs, *(m.host for m in mounts))
    )
    if not as_user and (ids.uid or ids.gid or not has_cap_sys_admin()):
        # bwrap run by root switches ids only inside a user namespace mapping them to root
        # (so permissions are looser than Docker's); root without CAP_SYS_ADMIN also needs one.
        argv += ["--unshare-user", "--uid", str(ids.uid), "--gid", str(ids.gid)]
    if not as_user and ids.uid == 0:
        # Root in Docker is not all-powerful: only the engine's default capabilities.
        argv += ["--cap-drop", "ALL", *(arg for cap in DOCKER_CAPS for arg in ("--cap-add", cap))]
    for mount in mounts:
        if as_user:
            _make_mountpoint(rootfs, mount)
        argv += ["--ro-bind" if mount.read_only else "--bind", str(mount.host), mount.target]
    argv += ["--chdir", config.workdir or "/", "--", SHELL, "-c", command]
    uid, gid = (ids.uid, ids.gid) if as_user else (0, 0)
    return SandboxCommand(argv=tuple(argv), env=sandbox_env(rootfs, config), uid=uid, gid=gid)


def _make_mountpoint(rootfs: Path, mount: Mount) -> None:
    """Create a missing mount point in a writable view, as Docker does: bwrap running as the
    image's USER may not.  Only through real directories: a symlink could lead to the host."""
    current = Path(rootfs)
    parts = mount.target.strip("/").split("/")
    for index, part in enumerate(parts):
        current = current / part
        last = index == len(parts) - 1
        try:
            if current.is_symlink():
                return
            if not current.exists():
                if last and not mount.host.is_dir():
                    current.touch()
                else:
                    current.mkdir()
        except OSError:
            return  # a read-only view: bwrap reports it if it matters


def _reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether `uid:gid` may traverse every directory down to `path` (bwrap resolves it as them)."""
    current = Path(path).absolute()
    for directory in (current, *current.parents):
        try:
            st = os.stat(directory)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            continue
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def run_plain(
    rootfs: Path, config: ImageConfig, command: str, mounts: Sequence[Mount] = ()
) -> CommandResult:
    """Run one command untraced (timing baseline, and the runner every tracer wraps)."""
    return run_sandboxed(sandbox_command(rootfs, config, command, mounts), command)


def run_sandboxed(
    sandbox: SandboxCommand, command: str, prefix: Sequence[str] = ()
) -> CommandResult:
    """Exec `prefix + sandbox.argv`, capturing output; `command` is what the user wrote."""
    start = time.perf_counter()
    as_user = bool(sandbox.uid or sandbox.gid)
    proc = subprocess.run(
        [*prefix, *sandbox.argv],
        env=sandbox.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        user=sandbox.uid if as_user else None,
        group=sandbox.gid if as_user else None,
        extra_groups=[] if as_user else None,
    )
    if proc.returncode == 1 and proc.stderr.startswith(b"bwrap: "):
        # The sandbox itself failed (namespaces, mounts): not the user's command.
        line = proc.stderr.decode(errors="replace").splitlines()[0]
        raise TraceError(f"cannot start the sandbox for {command!r}: {line}")
    return CommandResult(
        command=command,
        exit_code=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
        seconds=time.perf_counter() - start,
    )
