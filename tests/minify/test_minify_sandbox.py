"""The trace sandbox is at least as strict as `docker run` (and as loose, for setuid).

Every workload here runs for real in the sandbox on an overlay view of a real
image, and what it sees is compared with a real `docker run --network none` of
the same image; host values are read before and after each write attempt.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import attrs
import pytest

from neurodocker_nd.minify.fanotify import FanotifyTracer, fanotify_available
from neurodocker_nd.minify.model import HOSTNAME, SHELL
from neurodocker_nd.minify.ptrace import PtraceTracer
from neurodocker_nd.minify.sandbox import run_plain
from neurodocker_nd.minify.source import open_source
from support import build_image, container_output, remove_images

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the runc sandbox (and the host sysctls) need root"),
]

DOCKERFILE = """\
FROM {base}
RUN cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id \\
 && useradd -u 1234 -m alice
"""
# What a process can tell about its confinement: identical under docker run and the sandbox.
PROBE = (
    "id; suid-id -u; grep -E '^(CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; "
    "cat /etc/hosts; hostname; cat /etc/hostname; cat /sys/class/net/lo/operstate; "
    'awk \'$5 ~ "^/proc/|^/sys" {split($6, o, ","); print $5, o[1]}\' /proc/self/mountinfo | sort; '
    "wc -c < /proc/timer_list; wc -c < /proc/keys; ls -A /sys/firmware | wc -l; "
    "unshare -U true 2>&1; unshare -m true 2>&1; echo 5 > /proc/sys/kernel/printk_ratelimit"
)


@pytest.fixture(scope="module")
def image(docker_client, base_image):
    tag = build_image(docker_client, "ndgen-test-sandbox", DOCKERFILE.format(base=base_image))
    yield tag
    remove_images(docker_client, [tag])


@pytest.fixture
def source(docker_client, image):
    with open_source(docker_client, image) as opened:
        yield opened


def _docker_run(client, image: str, command: str, user: str = "") -> tuple[int, str, str]:
    return container_output(client, image, [SHELL, "-c", command], hostname=HOSTNAME, user=user or None)


@pytest.mark.parametrize("user", ["", "alice"])
def test_sandbox_sees_what_docker_run_sees(docker_client, image, source, user):
    """Capabilities, no_new_privs, seccomp, setuid, /etc/hosts, masked and read-only paths."""
    config = attrs.evolve(source.config, user=user)
    ours = run_plain(source.view(f"probe-{user or 'root'}"), config, PROBE)
    docker_code, docker_out, docker_err = _docker_run(docker_client, image, PROBE, user)
    assert (ours.exit_code, ours.stdout.decode().splitlines(), ours.stderr.decode().splitlines()) == (
        docker_code,
        docker_out.splitlines(),
        docker_err.splitlines(),
    )
    # and what that means, spelled out:
    assert "suid-id" not in docker_out and "\n0\n" in docker_out  # the setuid program ran as root
    assert "/proc/sys ro" in docker_out and "Seccomp:\t2" in docker_out and "NoNewPrivs:\t0" in docker_out


def test_io_uring_is_refused_as_by_docker_25(source):
    """io_uring_setup(1, NULL): EPERM from the filter (Docker >= 25 refuses io_uring too), where
    an unfiltered kernel reads the NULL params and says EFAULT (14) — as this host does."""
    probe = "perl -e 'print syscall(425, 1, 0) == -1 ? $!+0 : \"fd\"'"  # 425: io_uring_setup on x86-64
    if os.uname().machine != "x86_64":
        pytest.skip("syscall number 425 is x86-64's")
    host = subprocess.run(
        ["perl", "-e", "print syscall(425, 1, 0) == -1 ? $!+0 : 'fd'"], capture_output=True, text=True
    )
    assert host.stdout == "14", host  # the probe tells the filter from the kernel
    result = run_plain(source.view("io-uring"), source.config, probe)
    assert (result.exit_code, result.stdout) == (0, b"1")  # EPERM


def _host(path: str) -> str:
    return Path(path).read_text()


def test_host_proc_and_sys_cannot_be_changed(source):
    """Every Docker read-only /proc path refuses writes; the host's values stay."""
    view = source.view("host-writes")
    before = {p: _host(p) for p in ("/proc/sys/kernel/printk_ratelimit", "/proc/sys/kernel/core_pattern",
                                    "/proc/irq/default_smp_affinity")}  # fmt: skip
    changed = str(int(before["/proc/sys/kernel/printk_ratelimit"]) + 1)
    try:
        attempts = {
            # a harmless sysctl with a new value: the host must not see it
            "/proc/sys/kernel/printk_ratelimit": f"echo {changed} > /proc/sys/kernel/printk_ratelimit",
            # dangerous ones are written with their current value: only the refusal is checked
            "/proc/sys/kernel/core_pattern": (
                f"printf '%s' '{before['/proc/sys/kernel/core_pattern'].strip()}' > /proc/sys/kernel/core_pattern"
            ),
            "/proc/irq/default_smp_affinity": (
                f"echo {before['/proc/irq/default_smp_affinity'].strip()} > /proc/irq/default_smp_affinity"
            ),
            "/proc/sysrq-trigger": "test ! -e /proc/sysrq-trigger && exit 1; echo h > /proc/sysrq-trigger",
            "/proc/bus": "touch /proc/bus/ndgen-probe",
            "/sys": "echo 1 > /sys/kernel/mm/ksm/run",
            "/sys/firmware": "touch /sys/firmware/x",
        }  # fmt: skip
        for what, command in attempts.items():
            result = run_plain(view, source.config, command)
            assert result.exit_code != 0, f"{what}: the write succeeded"
        assert {p: _host(p) for p in before} == before
    finally:
        Path("/proc/sys/kernel/printk_ratelimit").write_text(before["/proc/sys/kernel/printk_ratelimit"])


def test_workload_cannot_reach_host_files(source, tmp_path):
    """A host-only file is invisible; files written at / land in the view, never on the host."""
    secret = tmp_path / f"secret-{uuid.uuid4().hex}"
    secret.write_text("host only")
    marker = f"/ndgen-escape-{uuid.uuid4().hex}"
    view = source.view("host-files")
    attempts = [
        f"cat {secret}",
        f"cat /proc/1/root{secret}",
        "mount -t proc proc /mnt && ls /mnt/1/root/",  # seccomp + no CAP_SYS_ADMIN
        f"mkdir /h && mount --bind / /h && cat /h{secret}",
        "cat /proc/kcore /sys/firmware/memmap/0/start",
    ]
    for command in attempts:
        result = run_plain(view, source.config, command)
        assert result.exit_code != 0 and b"host only" not in result.stdout, command
    assert run_plain(view, source.config, f"echo x > {marker} && echo x > /proc/1/root{marker}-2").ok
    assert not os.path.exists(marker) and not os.path.exists(marker + "-2")
    assert (view / marker.lstrip("/")).exists()


@pytest.mark.parametrize("tracer", ["fanotify", "ptrace"])
def test_traced_runs_are_sandboxed_and_traced(source, tracer):
    """Both tracers still see the workload through the seccomp-filtered sandbox."""
    if tracer == "fanotify" and fanotify_available() is not None:
        pytest.skip(fanotify_available())
    before = _host("/proc/sys/kernel/printk_ratelimit")
    changed = str(int(before) + 1)
    record = (FanotifyTracer() if tracer == "fanotify" else PtraceTracer()).trace(
        source.view(f"traced-{tracer}"),
        source.config,
        [f"cat /etc/os-release; echo {changed} > /proc/sys/kernel/printk_ratelimit"],
        [],
        stop_on_failure=False,
    )
    try:
        assert record.results[0].exit_code != 0 and b"Debian" in record.results[0].stdout
        assert _host("/proc/sys/kernel/printk_ratelimit") == before
        assert "/usr/lib/os-release" in record.paths
        assert not any(p.startswith(str(source.scratch)) for p in record.paths)  # runc's own files
    finally:
        Path("/proc/sys/kernel/printk_ratelimit").write_text(before)
