"""The trace sandbox for root: an OCI bundle run by runc, the runtime `docker run` itself uses.

Why runc and not bubblewrap when ndgen runs as root (see docs/minify.md, "Sandbox"):
bubblewrap always sets ``PR_SET_NO_NEW_PRIVS`` and mounts the root ``nosuid``, so
setuid programs cannot behave as under Docker, and as real root it leaves
``/proc/sys`` writable (host sysctls, ``kernel.core_pattern``: host code
execution).  runc applies the same OCI settings Docker's engine generates:
this module writes them — Docker's default capabilities, masked and read-only
``/proc`` and ``/sys`` paths, a read-only sysfs, fresh /dev, devpts, shm and
mqueue, Docker's default seccomp filter (moby's own profile, read at run time:
see "seccomp" below) and AppArmor's docker-default where the host has it loaded,
the generated /etc/hosts, /etc/hostname and /etc/resolv.conf, and namespaces for
pid, ipc, uts, mount, network and cgroup.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurodocker_nd.errors import TraceError

# moby's default capability set (oci/caps/defaults.go) for containers.
DOCKER_CAPS = tuple(
    f"CAP_{name}"
    for name in (
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    )
)  # fmt: skip

# moby's oci.DefaultSpec: masked (an empty read-only tmpfs for a directory, /dev/null
# for a file) and read-only /proc and /sys paths.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Docker's /etc/hosts for --network none.
HOSTS = (
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
)
ETC_FILES = ("resolv.conf", "hostname", "hosts")
CONTAINER_PREFIX = "ndgen-"


def runc_binary() -> str | None:
    return shutil.which("runc")


# --------------------------------------------------------------------------- seccomp
#
# Docker's default seccomp profile: an allow-list (default action: errno EPERM) whose
# entries depend on the container's capabilities, the architecture and the kernel,
# with argument filters (personality only with the personas Docker lets through, clone
# without namespace flags; clone3 → ENOSYS so libc falls back to clone).  ndgen does
# not carry a copy: it reads moby's own profile at run time, the file moby generates
# from its Go source, as Debian ships it:
#   package golang-github-docker-docker-dev 20.10.24+dfsg1-1+deb12u1 (source docker.io,
#   the same version as Debian 12's dockerd), path
#   /usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json
# Installing that package pulls ~245 others (a Go toolchain, a systemd upgrade), so
# scripts/test.sh fetches its .deb with `apt-get download` (apt checks it against the
# signed archive) and extracts only that file to MOBY_SECCOMP_PATHS[1], with a SOURCE
# file naming package, version and path.  Without either file ndgen refuses to trace
# (one error line): there is no built-in fallback, because a list we wrote would be a
# claim of parity we could not keep.  The parity is with a dockerd of the profile's
# version (here 20.10, as the engine this project runs); another engine version's
# built-in profile may allow a few more, newer syscalls.
#
# The conversion is moby's (profiles/seccomp/seccomp_linux.go, read in that package):
# a rule applies unless an `excludes` condition holds (this arch, a capability of the
# bounding set, a kernel >= minKernel) and only if every `includes` condition holds;
# `archMap` picks this machine's architecture and its sub-architectures.  Capabilities
# are judged against the bounding set, as moby does (DOCKER_CAPS: no CAP_SYS_ADMIN,
# CAP_SYS_PTRACE, …, so mount, unshare, setns, bpf, keyctl, process_vm_*, kcmp,
# pidfd_getfd, personality(arbitrary) and every syscall the profile does not list,
# including ones newer than it, are refused; runc answers ENOSYS for numbers above the
# newest syscall the filter names, as under `docker run`).
#
# One deliberate difference: io_uring_* are taken out of the allow-list (so refused with
# EPERM), as Docker >= 25 does (moby#46762): its operations run past seccomp, and it has
# been a container-escape route; the 20.10 profile still allows them, so here the
# sandbox is the stricter of the two.
MOBY_SECCOMP_PATHS = (
    Path("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"),
    Path("/usr/local/share/ndgen/docker-seccomp/default.json"),
)
_PROFILE_MAX_BYTES = 1 << 20  # moby's is ~14 kB; a cap so a wrong file cannot exhaust memory
REFUSED_BEYOND_DOCKER = ("io_uring_setup", "io_uring_enter", "io_uring_register")
# os.uname().machine → (moby's native arch name, libseccomp's SCMP_ARCH_*), after moby's
# goToNative / nativeToSeccomp tables for the architectures ndgen runs on.
_ARCHES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
}


def _read_moby_profile() -> tuple[Path, dict[str, Any]]:
    """moby's default.json from the first of MOBY_SECCOMP_PATHS present, parsed and shape-checked."""
    for path in MOBY_SECCOMP_PATHS:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise TraceError(f"cannot read Docker's seccomp profile {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise TraceError(f"Docker's seccomp profile {path} is not a regular file")
            data = handle.read(_PROFILE_MAX_BYTES + 1)
        if len(data) > _PROFILE_MAX_BYTES:
            raise TraceError(f"Docker's seccomp profile {path} is larger than {_PROFILE_MAX_BYTES} bytes")
        try:
            profile = json.loads(data)
        except ValueError as exc:
            raise TraceError(f"Docker's seccomp profile {path} is not JSON: {exc}") from exc
        if not (
            isinstance(profile, dict)
            and isinstance(profile.get("defaultAction"), str)
            and isinstance(profile.get("syscalls"), list)
            and all(isinstance(rule, dict) for rule in profile["syscalls"])
        ):
            raise TraceError(f"{path} is not a moby seccomp profile (defaultAction, syscalls)")
        return path, profile
    raise TraceError(
        "the trace sandbox applies Docker's default seccomp profile and found none at "
        + " or ".join(str(p) for p in MOBY_SECCOMP_PATHS)
        + ": apt-get install golang-github-docker-docker-dev (or let scripts/test.sh extract it)"
    )


def _kernel() -> tuple[int, int]:
    """This kernel's (version, major revision), as moby compares minKernel ("6.1")."""
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _min_kernel(value: Any) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)\.(\d+)", str(value)) if value else None
    return (int(match[1]), int(match[2])) if match else None


def _applies(rule: dict[str, Any], arch: str | None, caps: frozenset[str], kernel: tuple[int, int]) -> bool:
    """moby's includes/excludes test for one rule."""
    excludes, includes = rule.get("excludes") or {}, rule.get("includes") or {}
    if arch in (excludes.get("arches") or ()):
        return False
    if any(cap in caps for cap in excludes.get("caps") or ()):
        return False
    if (low := _min_kernel(excludes.get("minKernel"))) and kernel >= low:
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if not all(cap in caps for cap in includes.get("caps") or ()):
        return False
    if (low := _min_kernel(includes.get("minKernel"))) and kernel < low:
        return False
    return True


def docker_seccomp(
    profile: dict[str, Any], caps: Sequence[str], machine: str, kernel: tuple[int, int]
) -> dict[str, Any]:
    """The OCI `linux.seccomp` section dockerd would give a container with bounding set `caps`."""
    arch, scmp_arch = _ARCHES.get(machine, (None, None))
    architectures: list[str] = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or ():
        if entry.get("architecture") == scmp_arch:
            architectures += [entry["architecture"], *(entry.get("subArchitectures") or ())]
            break
    held = frozenset(caps)
    rules: list[dict[str, Any]] = []
    for rule in profile["syscalls"]:
        if not _applies(rule, arch, held, kernel):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if rule.get("action") == "SCMP_ACT_ALLOW":
            names = [n for n in names if n not in REFUSED_BEYOND_DOCKER]
        if not names:
            continue
        converted: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            converted["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            converted["args"] = [dict(arg) for arg in rule["args"]]
        rules.append(converted)
    section: dict[str, Any] = {
        "defaultAction": profile["defaultAction"],
        "architectures": architectures,
        "syscalls": rules,
    }
    if profile.get("defaultErrnoRet") is not None:  # newer moby profiles name it (EPERM)
        section["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return section


def seccomp_profile(caps: Sequence[str] = DOCKER_CAPS) -> dict[str, Any]:
    """Docker's default seccomp filter for this machine, from moby's installed profile."""
    _, profile = _read_moby_profile()
    return docker_seccomp(profile, caps, os.uname().machine, _kernel())


# --------------------------------------------------------------------------- AppArmor

APPARMOR_ENABLED = Path("/sys/module/apparmor/parameters/enabled")
APPARMOR_PROFILES = Path("/sys/kernel/security/apparmor/profiles")
DOCKER_APPARMOR_PROFILE = "docker-default"


def apparmor_profile() -> str | None:
    """`docker-default` when AppArmor is enabled and dockerd has loaded that profile, else None.

    Docker confines every container with docker-default where AppArmor is enabled
    (dockerd generates and loads it on start).  ndgen cannot write that profile (it is
    generated from moby's Go template), so it uses it only when loaded; on a host with
    AppArmor enabled but no docker-default, the sandbox runs unconfined by AppArmor —
    one note on stderr says so.  Where AppArmor is off (as on this project's CI
    kernel, which has no apparmor module), `docker run` is not confined by it either.
    """
    try:
        enabled = APPARMOR_ENABLED.read_text().strip() == "Y"
    except OSError:
        return None
    if not enabled:
        return None
    try:
        loaded = APPARMOR_PROFILES.read_text()
    except OSError:
        loaded = ""
    if any(line.split(" (")[0] == DOCKER_APPARMOR_PROFILE for line in loaded.splitlines()):
        return DOCKER_APPARMOR_PROFILE
    sys.stderr.write(
        f"ndgen: note: AppArmor is enabled but profile {DOCKER_APPARMOR_PROFILE} is not loaded "
        "(dockerd loads it when it starts): the trace sandbox runs without AppArmor\n"
    )
    return None


def _mounts(bundle: Path, binds: Sequence[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    """Docker's default mounts, its generated /etc files, then the user's bind mounts."""
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        # the container's own cgroups, read-only (as Docker: its cgroup namespace only)
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]  # fmt: skip
    for name in ETC_FILES:
        mounts.append(
            {
                "destination": f"/etc/{name}",
                "type": "bind",
                "source": str(bundle / name),
                "options": ["rbind", "rprivate"],
            }
        )
    for host, target, read_only in binds:
        options = ["rbind", "rprivate", *(["ro"] if read_only else [])]
        mounts.append({"destination": target, "type": "bind", "source": host, "options": options})
    return mounts


def _lo_up_hook() -> list[dict[str, Any]]:
    """Docker's --network none still has a loopback that is up: bring it up in the new netns.

    A Python hook, not a shell: the ptrace tracer starts recording at the exec of the
    workload's /bin/sh, so nothing runc runs may exec a shell first.
    """
    nsenter, ip = shutil.which("nsenter"), shutil.which("ip")
    if not (nsenter and ip):
        return []
    script = (
        "import json, os, sys; pid = str(json.load(sys.stdin)['pid']); "
        f"os.execv({nsenter!r}, [{nsenter!r}, '-t', pid, '-n', {ip!r}, 'link', 'set', 'lo', 'up'])"
    )
    return [{"path": sys.executable, "args": ["python3", "-c", script]}]


def write_etc_files(directory: Path, hostname: str) -> None:
    """The /etc files Docker generates for a container, into a new `directory`."""
    directory.mkdir(parents=True)
    (directory / "hosts").write_text(HOSTS)
    (directory / "hostname").write_text(hostname + "\n")
    try:  # Docker copies the host's resolver configuration
        resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        resolv = ""
    (directory / "resolv.conf").write_text(resolv)


def write_bundle(
    bundle: Path,
    rootfs: Path,
    argv: Sequence[str],
    env: dict[str, str],
    *,
    cwd: str,
    uid: int,
    gid: int,
    extra_gids: Sequence[int],
    hostname: str,
    binds: Sequence[tuple[str, str, bool]],
) -> None:
    """Write an OCI bundle (config.json + the /etc files Docker generates) into `bundle`."""
    write_etc_files(bundle, hostname)
    root_caps = list(DOCKER_CAPS) if uid == 0 else []  # non-root: bounding set only, as Docker
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": uid, "gid": gid, "additionalGids": sorted(set(extra_gids))},
        "args": list(argv),
        "env": [f"{key}={value}" for key, value in env.items()],
        "cwd": cwd,
        "capabilities": {"bounding": list(DOCKER_CAPS), "effective": root_caps, "permitted": root_caps},
        "noNewPrivileges": False,  # setuid programs work, as under `docker run`
    }
    if (profile := apparmor_profile()) is not None:
        process["apparmorProfile"] = profile
    config = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": _mounts(bundle, binds),
        "hooks": {"createRuntime": _lo_up_hook()},
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp_profile(DOCKER_CAPS),  # moby judges caps by the bounding set
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        },
    }
    (bundle / "config.json").write_text(json.dumps(config))


def container_id() -> str:
    """Unique, and names the owning ndgen process: a later run can tell stale ones (dead PID)."""
    return f"{CONTAINER_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:10]}"


def run_argv(state: Path, bundle: Path, cid: str) -> tuple[str, ...]:
    runc = runc_binary() or "runc"
    return (runc, "--root", str(state), "run", "--bundle", str(bundle), cid)


def kill_argv(state: Path, cid: str) -> tuple[str, ...]:
    runc = runc_binary() or "runc"
    return (runc, "--root", str(state), "kill", "--all", cid, "KILL")


def delete_argv(state: Path, cid: str) -> tuple[str, ...]:
    runc = runc_binary() or "runc"
    return (runc, "--root", str(state), "delete", "--force", cid)
