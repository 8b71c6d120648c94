"""Issue 17, findings 9-11 end to end: `ndgen minify` on small hostile images built FROM
the local Debian base (never pulled), through the real engine and the real sandbox.

Each run is a child process with a deadline, a memory cap and a file-size cap: code that
blocks on a FIFO, reads a device node forever or copies one onto the disk is killed and
the test FAILS; fixed code finishes with one clear line (or a minified image).
"""

from __future__ import annotations

import io
import os
import resource
import signal
import subprocess
import time

import pytest

from support import NDGEN, remove_images, unique_tag

pytestmark = pytest.mark.docker

DEADLINE = 240.0  # seconds for one minify of a one-layer image (a few seconds when handled)


def build(client, base: str, body: str) -> str:
    tag = unique_tag("ndgen-test-sec-hostile", str(abs(hash(body)) % 10**8))
    client.images.build(
        fileobj=io.BytesIO(f"FROM {base}\n{body}\n".encode()), tag=tag, network_mode="none", rm=True, forcerm=True
    )
    return tag


def minify(*args: str) -> subprocess.CompletedProcess[str]:
    """`ndgen minify ARGS` with a deadline (SIGTERM: ndgen cleans up, then SIGKILL)."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # /dev/zero read into memory
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 << 20, 512 << 20))  # /dev/zero copied to disk

    proc = subprocess.Popen(
        [*NDGEN, "minify", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=limits, start_new_session=True,
    )  # fmt: skip
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        pytest.fail(f"ndgen minify {' '.join(args)} still running after {DEADLINE:g} s")
    assert "Traceback" not in err, err[-2000:]
    assert time.monotonic() - start < DEADLINE
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def images(docker_client):
    made: list[str] = []
    yield made
    remove_images(docker_client, made)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("RUN rm /etc/passwd && mkfifo /etc/passwd", "image file /etc/passwd is a FIFO, not a regular file"),
        ("RUN rm /etc/group && mkfifo /etc/group", "image file /etc/group is a FIFO, not a regular file"),
        (
            "RUN rm /etc/ld.so.conf && mknod /etc/ld.so.conf c 1 5",  # the host's /dev/zero, in the image
            "image file /etc/ld.so.conf is a character device, not a regular file",
        ),
        (
            # The base image (debootstrap, docker import) holds device nodes in /dev: the link
            # resolves inside the image, to its own character device.
            "RUN rm /etc/ld.so.conf && ln -s /dev/zero /etc/ld.so.conf",
            "image file /etc/ld.so.conf (-> /dev/zero) is a character device, not a regular file",
        ),
        (
            "RUN mkfifo /etc/ld.so.conf.d/zz.conf",
            "image file /etc/ld.so.conf.d/zz.conf is a FIFO, not a regular file",
        ),
    ],
    ids=["passwd-fifo", "group-fifo", "ld.so.conf-zero-device", "ld.so.conf-link-to-dev-zero", "ld.so.conf.d-fifo"],
)
def test_an_image_file_that_is_not_a_file_is_one_error(docker_client, base_image, images, body, message):
    src = build(docker_client, base_image, body)
    images += [src, src + "-min"]
    proc = minify(src, "-t", src + "-min", "-c", "true", "--no-verify")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"ndgen: error: {message}"


@pytest.mark.parametrize(
    "body",
    [
        'RUN mkfifo /opt/entry\nENTRYPOINT ["/opt/entry"]',
        'RUN mknod /opt/entry c 1 5\nENTRYPOINT ["/opt/entry"]',
        # A FIFO and a device named like libraries the closure looks for.
        "RUN mkfifo /usr/local/lib/libc.so.6 && mknod /usr/local/lib/libselinux.so.1 c 1 5"
        " && echo /usr/local/lib > /etc/ld.so.conf.d/0local.conf",
    ],
    ids=["entrypoint-fifo", "entrypoint-zero-device", "library-candidates"],
)
def test_hostile_entries_the_closure_only_looks_at_are_kept_as_they_are(docker_client, base_image, images, body):
    src = build(docker_client, base_image, body)
    images += [src, src + "-min"]
    proc = minify(src, "-t", src + "-min", "-c", "cat /etc/debian_version", "--tracer", "ptrace")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert docker_client.images.get(src + "-min")


SCRIPT = "printf '#!/bin/sh\\necho from script\\n' > /usr/local/bin/s && chmod 755 /usr/local/bin/s"


def test_ptrace_reads_interpreters_in_the_pristine_image_not_the_trace_view(docker_client, base_image, images):
    """finding 10: the workload execs a script and leaves a FIFO in its place in the writable
    trace view; the interpreter is read from the pristine image, the FIFO never opened."""
    src = build(docker_client, base_image, f"RUN {SCRIPT}")
    images += [src, src + "-min"]
    command = "s && rm /usr/local/bin/s && mkfifo /usr/local/bin/s"
    proc = minify(src, "-t", src + "-min", "-c", command, "--tracer", "ptrace")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = docker_client.containers.run(src + "-min", ["s"], entrypoint=[], network_mode="none", remove=True)
    assert out == b"from script\n"


def test_ptrace_never_reads_a_script_through_a_mount(docker_client, base_image, images, tmp_path):
    """finding 10: an exec'ed script under a -v mount is not opened on the host side (here the
    run's copy, where the workload left a FIFO); the minify finishes and verifies."""
    src = build(docker_client, base_image, "RUN true")
    images += [src, src + "-min"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "run").write_text("#!/bin/sh\necho from mount\n")
    (data / "run").chmod(0o755)
    command = "/data/run && rm /data/run && mkfifo /data/run"
    proc = minify(src, "-t", src + "-min", "-c", command, "-v", f"{data}:/data", "--tracer", "ptrace")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_profile_setup_leaving_a_device_node_in_a_mount_is_one_error(docker_client, base_image, images, tmp_path):
    """finding 11: setup runs the image's mknod on the mount snapshot; the trace's fresh copy
    must refuse the device, not copy /dev/zero onto the disk."""
    src = build(docker_client, base_image, "RUN true")
    images += [src, src + "-min"]
    profile = tmp_path / "devnode.yaml"
    profile.write_text(
        "name: devnode\n"
        "description: setup leaves a character device in the scratch mount\n"
        "mounts: [/scratch]\n"
        "setup: ['mknod /scratch/zero c 1 5 && echo input > /scratch/in.txt']\n"
        "commands: ['cat /scratch/in.txt']\n"
    )
    proc = minify(src, "-t", src + "-min", "--profile", str(profile), "--no-verify")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ndgen: error: mount copy of ") and last.endswith(
        ": zero is a device node; only regular files, directories and symlinks are copied"
    ), last
