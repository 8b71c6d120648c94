"""Issue 17, finding 17: the trace sandbox's seccomp filter is Docker's default allow-list.

The filter was a deny-list: syscalls `docker run` refuses (process_vm_readv, kcmp,
pidfd_getfd, process_madvise, pkey_*, personality with arbitrary personas) and every
syscall newer than the list (statmount, listmount, lsm_*, mseal, open_tree_attr)
were allowed.  Now the sandbox applies moby's own profile (minify/oci.py), and the
engine is the reference: the same probe runs in the runc sandbox and under a real
`docker run --network none` of the same image, and both must answer alike.

The probe is perl's syscall() (perl-base is Essential in Debian, so the
debootstrapped base has it); x86-64 syscall numbers.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from neurodocker_nd.errors import TraceError
from neurodocker_nd.minify import oci
from neurodocker_nd.minify.model import SHELL
from neurodocker_nd.minify.sandbox import run_plain
from neurodocker_nd.minify.source import open_source
from support import container_output

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the runc sandbox is for root"),
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe's syscall numbers are x86-64's"),
]

# name => (number, args); the arguments are harmless if a call were let through.
CALLS = {
    "process_vm_readv": "310, $$, 0, 0, 0, 0, 0",
    "process_vm_writev": "311, $$, 0, 0, 0, 0, 0",
    "kcmp": "312, $$, $$, 0, 0, 0",
    "pidfd_getfd": "438, -1, 0, 0",
    "process_madvise": "440, -1, 0, 0, 0, 0",
    "pkey_alloc": "330, 0, 0",
    "pkey_mprotect": "329, 0, 0, 0, -1",
    "personality_addr_no_randomize": "135, 0x0040000",  # turns ASLR off: Docker allows only a few personas
    "personality_query": "135, 0xffffffff",  # allowed by Docker
    "statmount": "457, 0, 0, 0, 0",
    "listmount": "458, 0, 0, 0, 0",
    "lsm_get_self_attr": "459, 0, 0, 0, 0",
    "lsm_list_modules": "461, 0, 0, 0",
    "mseal": "462, 0, 0, 0",
    "open_tree_attr": "467, -1, 0, 0, 0, 0",
    "unknown_999": "999",
    "getpid": "39",
}
PROBE = (
    "perl -e '"
    + "".join(
        f'$!=0; $r=syscall({args}); print "{name} ", ($r == -1 ? "errno=".($!+0) : "ok"), "\\n"; '
        for name, args in CALLS.items()
    )
    + "'"
)
REFUSED_EPERM = ("process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
                 "pkey_alloc", "pkey_mprotect", "personality_addr_no_randomize")  # fmt: skip
NEWER_THAN_PROFILE = ("statmount", "listmount", "lsm_get_self_attr", "lsm_list_modules", "mseal", "open_tree_attr")


@pytest.fixture
def source(docker_client, base_image):
    with open_source(docker_client, base_image) as opened:
        yield opened


def test_sandbox_refuses_the_syscalls_docker_run_refuses(docker_client, base_image, source):
    ours = run_plain(source.view("seccomp-probe"), source.config, PROBE)
    docker = container_output(docker_client, base_image, [SHELL, "-c", PROBE])
    assert (ours.exit_code, ours.stdout.decode(), ours.stderr.decode()) == docker
    # and what that means, spelled out:
    seen = dict(line.split(" ", 1) for line in docker[1].splitlines())
    assert all(seen[name] == "errno=1" for name in REFUSED_EPERM), seen  # EPERM
    assert all(seen[name] == "errno=38" for name in NEWER_THAN_PROFILE), seen  # ENOSYS (runc: newer than the filter)
    assert seen["personality_query"] == seen["getpid"] == "ok"


def test_filter_is_moby_profile_converted_for_this_container():
    section = oci.seccomp_profile()
    assert section["defaultAction"] == "SCMP_ACT_ERRNO"  # unknown syscalls: EPERM (runc's default errno)
    assert section["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = {n for rule in section["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    # capability-gated entries (CAP_SYS_ADMIN, CAP_SYS_PTRACE, …) are not granted; CAP_SYS_CHROOT is
    assert not allowed & {"mount", "unshare", "setns", "bpf", "keyctl", "kcmp", "process_vm_readv", "pidfd_getfd"}
    assert {"chroot", "ptrace", "read", "personality", "clone"} <= allowed
    assert not allowed & set(oci.REFUSED_BEYOND_DOCKER)  # io_uring: stricter than the 20.10 profile
    personas = sorted(r["args"][0]["value"] for r in section["syscalls"] if r["names"] == ["personality"])
    assert personas == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in section["syscalls"]


def test_includes_and_excludes_follow_moby():
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_X"]}},
            {"names": ["b"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_X", "CAP_Y"]}},
            {"names": ["c"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_X"]}},
            {"names": ["d"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
            {"names": ["e"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
            {"names": ["f"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["g"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "6.20"}},
            {"name": "h", "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"minKernel": "6.20"}},
            {"names": ["io_uring_setup", "i"], "action": "SCMP_ACT_ALLOW"},
        ],
    }  # fmt: skip
    section = oci.docker_seccomp(profile, ["CAP_X"], "x86_64", (6, 18))
    assert section["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert [r["names"] for r in section["syscalls"]] == [["a"], ["f"], ["h"], ["i"]]
    assert section["syscalls"][2] == {"names": ["h"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    arm = oci.docker_seccomp(profile, [], "aarch64", (4, 4))
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert [r["names"] for r in arm["syscalls"]] == [["c"], ["d"], ["e"], ["h"], ["i"]]


def test_without_docker_profile_tracing_is_refused_in_one_line(monkeypatch, tmp_path, source):
    missing = (tmp_path / "a.json", tmp_path / "b.json")
    monkeypatch.setattr(oci, "MOBY_SECCOMP_PATHS", missing)
    with pytest.raises(TraceError) as caught:
        run_plain(source.view("no-profile"), source.config, "true")
    assert str(caught.value).startswith("the trace sandbox applies Docker's default seccomp profile and found none at ")
    assert "golang-github-docker-docker-dev" in str(caught.value)
    # a FIFO, a symlink or a huge file there is refused at once (never read, never followed)
    os.mkfifo(missing[0])
    with pytest.raises(TraceError, match="is not a regular file"):
        oci.seccomp_profile()
    missing[0].unlink()
    missing[0].symlink_to("/etc/hostname")  # a real regular file behind the link
    with pytest.raises(TraceError, match="cannot read Docker's seccomp profile"):
        oci.seccomp_profile()
    missing[0].unlink()
    missing[0].write_bytes(b" " * (2 << 20))
    with pytest.raises(TraceError, match="larger than"):
        oci.seccomp_profile()
    missing[0].write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    with pytest.raises(TraceError, match="is not a moby seccomp profile"):
        oci.seccomp_profile()
    assert stat.S_ISREG(missing[0].stat().st_mode)


def test_apparmor_docker_default_where_loaded(tmp_path):
    """docker-default confines the sandbox where AppArmor has it loaded; elsewhere neither is confined."""
    profile = oci.apparmor_profile()
    try:
        loaded = oci.APPARMOR_PROFILES.read_text()
        enabled = oci.APPARMOR_ENABLED.read_text().strip() == "Y"
    except OSError:
        loaded, enabled = "", False
    expected = "docker-default" if enabled and "docker-default (" in loaded else None
    assert profile == expected
    bundle = tmp_path / "bundle"
    oci.write_bundle(
        bundle, tmp_path / "rootfs", ["true"], {}, cwd="/", uid=0, gid=0, extra_gids=(), hostname="h", binds=()
    )
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"].get("apparmorProfile") == expected
