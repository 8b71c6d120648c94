"""The trace sandbox for root: an OCI bundle run by runc, the runtime `docker run` itself uses.

Why runc and not bubblewrap when ndgen runs as root (see docs/minify.md, "Sandbox"):
bubblewrap always sets ``PR_SET_NO_NEW_PRIVS`` and mounts the root ``nosuid``, so
setuid programs cannot behave as under Docker, and as real root it leaves
``/proc/sys`` writable (host sysctls, ``kernel.core_pattern``: host code
execution).  runc applies the same OCI settings Docker's engine generates:
this module writes them — Docker's default capabilities, masked and read-only
``/proc`` and ``/sys`` paths, a read-only sysfs, fresh /dev, devpts, shm and
mqueue, a seccomp filter, the generated /etc/hosts, /etc/hostname and
/etc/resolv.conf, and namespaces for pid, ipc, uts, mount, network and cgroup.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

# Docker's default seccomp profile is an allow-list of ~350 syscalls with
# capability-dependent extras.  Without CAP_SYS_ADMIN & co. (never granted here) it
# refuses exactly the syscalls its documentation lists as "blocked by the default
# profile"; this deny-list is that list (default action: allow).  Names unknown to
# an architecture are skipped by runc.  ptrace, process_vm_* and kcmp stay allowed
# as in Docker >= 19.03 on kernels >= 4.8.  io_uring_* as Docker >= 25 (moby#46762):
# its operations run past seccomp, and it has been a container-escape route; Debian's
# docker.io 20.10 still allows it, so here the sandbox is the stricter of the two.
SECCOMP_DENIED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "get_kernel_syms", "get_mempolicy", "init_module", "io_uring_enter", "io_uring_register",
    "io_uring_setup", "ioperm", "iopl", "kexec_file_load",
    "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "mount_setattr", "move_mount",
    "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree",
    "perf_event_open", "pivot_root", "query_module", "quotactl", "quotactl_fd", "reboot",
    "request_key", "set_mempolicy", "setns", "settimeofday", "stime", "swapoff", "swapon",
    "syslog", "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd",
    "ustat", "vhangup", "vm86", "vm86old",
)  # fmt: skip
# clone() creating namespaces is refused, plain fork/thread clones pass (Docker's rule).
_CLONE_NS_FLAGS = (
    0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
)  # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET  # fmt: skip
# Docker's /etc/hosts for --network none.
HOSTS = (
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
)
ETC_FILES = ("resolv.conf", "hostname", "hosts")
EPERM, ENOSYS = 1, 38
CONTAINER_PREFIX = "ndgen-"


def runc_binary() -> str | None:
    return shutil.which("runc")


def seccomp_profile() -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"names": list(SECCOMP_DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        # glibc falls back to clone() on ENOSYS, whose flags the rule below can inspect.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    for flag in _CLONE_NS_FLAGS:
        rules.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        # The same rules for 32-bit and x32 syscalls: a deny-list must cover every ABI.
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        if os.uname().machine == "x86_64"
        else [],
        "syscalls": rules,
    }


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
            {"destination": f"/etc/{name}", "type": "bind", "source": str(bundle / name), "options": ["rbind", "rprivate"]}
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
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": sorted(set(extra_gids))},
            "args": list(argv),
            "env": [f"{key}={value}" for key, value in env.items()],
            "cwd": cwd,
            "capabilities": {"bounding": list(DOCKER_CAPS), "effective": root_caps, "permitted": root_caps},
            "noNewPrivileges": False,  # setuid programs work, as under `docker run`
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": _mounts(bundle, binds),
        "hooks": {"createRuntime": _lo_up_hook()},
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp_profile(),
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
