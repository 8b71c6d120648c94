"""The ptrace (strace) tracer on the real base image, through the real bwrap sandbox."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from neurodocker_nd.errors import TraceError
from neurodocker_nd.minify.model import Mount
from neurodocker_nd.minify.ptrace import PtraceTracer, parse_strace, shebang_interpreters
from neurodocker_nd.minify.sandbox import sandbox_command

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def source(docker_client, base_image):
    from neurodocker_nd.minify.source import open_source

    with open_source(docker_client, base_image) as src:
        yield src


@pytest.fixture()
def rootfs(source, request) -> Path:
    # A view name is one plain path component (stale.record_view): parametrized ids carry [ ].
    return source.view("ptrace-" + re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name))


def trace(source, rootfs, commands, mounts=(), **kw):
    return PtraceTracer().trace(rootfs, source.config, commands, mounts, **kw)


def test_record_holds_opens_execs_and_results(source, rootfs):
    rec = trace(source, rootfs, ["cat /etc/debian_version", "ls /usr/share/doc >/dev/null"])
    assert rec.tracer == "ptrace"
    assert [r.exit_code for r in rec.results] == [0, 0]
    assert rec.results[0].stdout.strip() == (rootfs / "etc/debian_version").read_bytes().strip()
    assert {"/etc/debian_version", "/usr/bin/cat", "/usr/bin/ls", "/usr/share/doc", "/bin/sh"} <= rec.paths
    assert rec.seconds == pytest.approx(sum(r.seconds for r in rec.results))


def test_stat_only_lookup_and_enoent_are_seen(source, rootfs):
    # `command -v` stats each PATH entry and opens nothing: invisible to fanotify.
    rec = trace(source, rootfs, ["command -v ls && test -e /etc/hostname-h6-absent || true"])
    assert "/usr/bin/ls" in rec.paths
    assert {"/usr/local/bin/ls", "/etc/hostname-h6-absent"} <= rec.missing
    assert not rec.missing & rec.paths


def test_readlink_and_symlinked_components(source, rootfs):
    # /bin is a symlink on bookworm (usrmerge): the name used is reported, not only the target.
    rec = trace(source, rootfs, ["readlink /bin >/dev/null; /bin/true"])
    assert {"/bin", "/bin/true"} <= rec.paths
    # The kernel follows the exec'ed path's symlinks unseen: the record adds the target.
    assert "/usr/bin/true" in rec.paths


def test_relative_paths_resolve_against_the_cwd_in_the_image(source, rootfs):
    rec = trace(source, rootfs, ["cd /usr/share && cat ./doc/../common-licenses/GPL-3 >/dev/null"])
    assert "/usr/share/common-licenses/GPL-3" in rec.paths
    assert not any("common-licenses" in p and not p.startswith("/usr/share/") for p in rec.paths)


def test_bwrap_setup_paths_stay_out(source, rootfs):
    rec = trace(source, rootfs, ["true"])
    # bwrap reads host files and works under /newroot and /oldroot before pivot_root.
    assert not any(p.startswith(("/newroot", "/oldroot")) for p in rec.paths)
    assert "/proc/sys/kernel/overflowuid" not in rec.paths
    assert str(rootfs) not in " ".join(rec.paths)


def test_strace_runs_inside_the_sandbox_and_outside_the_image_tree(source, rootfs):
    """strace is the workload's parent inside the sandbox (runc is never traced), from /dev."""
    from neurodocker_nd.minify.sandbox import run_plain

    listing = "ls -a / /etc"
    rec = trace(source, rootfs, ["tr '\\0' ' ' < /proc/$PPID/cmdline", listing])
    assert rec.results[0].stdout.startswith(b"/dev/.ndgen-strace/ld.so --library-path /dev/.ndgen-strace/lib ")
    assert b"/dev/.ndgen-strace/strace -f --seccomp-bpf" in rec.results[0].stdout
    # The bundle and logs live on the sandbox's /dev tmpfs: / and /etc list as without a tracer.
    assert rec.results[1].stdout == run_plain(rootfs, source.config, listing).stdout
    assert not any(p.startswith("/dev/.ndgen") for p in rec.paths | rec.missing)
    assert not (rootfs / "dev/.ndgen-strace").exists()


@pytest.mark.parametrize("swap", ["symlink", "fifo"])
def test_a_workload_swapping_its_log_cannot_make_the_host_read_or_block(source, rootfs, tmp_path, swap):
    """The logs directory is writable inside the sandbox: a log replaced by a symlink to a host
    file (made to look like a log) or by a FIFO is refused, never followed nor waited on."""
    secret = tmp_path / "host-only"
    secret.write_text('1 execve("/bin/true", ["true"], 0x0 /* 0 vars */) = 0\n')
    log = "/dev/.ndgen-strace-log/0.log"
    replace = f"ln -s {secret} {log}" if swap == "symlink" else f"mkfifo {log}"
    with pytest.raises(TraceError, match="replaced its trace log"):
        trace(source, rootfs, [f"rm {log} && {replace}"], timeout=60)


def test_script_under_a_mount_is_traced_but_never_read_on_the_host(source, rootfs, tmp_path):
    """Issue 17, finding 10: the host reads `#!` lines only in the pristine image, never through
    a mount (the workload may have replaced the script with a FIFO or a link); the interpreter
    of a script under a mount is left to fanotify and to verify's repair loop."""
    script = tmp_path / "hello"
    script.write_text("#!/bin/dash\necho hello from script\n")
    script.chmod(0o755)
    rec = trace(source, rootfs, ["/data/hello"], [Mount(host=tmp_path, target="/data", read_only=True)])
    assert rec.results[0].stdout == b"hello from script\n"
    assert "/data/hello" in rec.paths and "/data/hello" in rec.executed
    assert "/bin/dash" not in rec.paths


def test_failing_command_stops_the_trace(source, rootfs):
    rec = trace(source, rootfs, ["echo one", "exit 3", "echo never"])
    assert [r.exit_code for r in rec.results] == [0, 3]
    assert rec.failed is not None and rec.failed.command == "exit 3"
    rec = trace(source, rootfs, ["exit 3", "echo still"], stop_on_failure=False)
    assert [r.exit_code for r in rec.results] == [3, 0]


def test_no_strace_is_one_clear_error(source, rootfs, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TraceError, match="strace"):
        trace(source, rootfs, ["true"])


def test_parser_reads_real_interleaved_strace_output(source, rootfs, tmp_path):
    """Two processes racing produce <unfinished ...>/<... resumed> pairs: both halves join."""
    log = tmp_path / "log"
    from neurodocker_nd.minify.ptrace import STRACE_FLAGS, strace_binary

    sandbox = sandbox_command(rootfs, source.config, "for i in 1 2 3 4; do cat /etc/os-release & done; wait")
    subprocess.run(
        [strace_binary(), *STRACE_FLAGS, "-o", str(log), "--", *sandbox.argv],
        env=sandbox.env,
        capture_output=True,
        check=True,
    )
    calls = list(parse_strace(log.read_text().splitlines()))
    opened = [c for c in calls if c.name == "openat" and c.retpath == "/usr/lib/os-release"]
    assert len(opened) >= 4
    assert all(c.ok and c.args[1] == '"' + "".join(f"\\x{b:02x}" for b in b"/etc/os-release") + '"' for c in opened)


def test_shebang_interpreters_follow_image_symlinks_not_host(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "opt").mkdir()
    (root / "usr/bin/tool").write_text("#!/opt/py\nprint()\n")
    # An absolute symlink must resolve inside the image, never on the host.
    (root / "opt/py").write_text("#!/usr/bin/real-interp\n")
    (root / "bin").symlink_to("/usr/bin")
    assert shebang_interpreters(root, ["/bin/tool"]) == {"/opt/py", "/usr/bin/real-interp"}


def test_non_root_user_is_traced_through_a_user_namespace(docker_client, base_image, tmp_path):
    """USER nobody makes bwrap unshare a user namespace: strace must still follow it."""
    import io

    from neurodocker_nd.minify.source import open_source

    tag = f"ndgen-test-h6-ptrace-user-{os.getpid()}"
    docker_client.images.build(
        fileobj=io.BytesIO(f"FROM {base_image}\nUSER nobody\nWORKDIR /tmp\n".encode()),
        tag=tag,
        network_mode="host",
        rm=True,
    )
    try:
        with open_source(docker_client, tag) as src:
            rec = PtraceTracer().trace(
                src.view("user"), src.config, ["id -u && cat /etc/debian_version >/dev/null && ls"], ()
            )
    finally:
        docker_client.images.remove(tag, force=True)
    assert rec.results[0].exit_code == 0, rec.results[0].stderr
    assert rec.results[0].stdout.split(b"\n")[0] == b"65534"
    assert {"/usr/bin/id", "/etc/debian_version", "/tmp"} <= rec.paths
