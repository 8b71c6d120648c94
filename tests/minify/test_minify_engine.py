"""Integration tests for `ndgen minify` on the real engine (marker: docker).

One small image FROM the Debian base carries every trap the minifier must get
right: python3 (a symlinked interpreter chain, lazy imports, ctypes dlopen,
CPython's stat-only prefix search), a file only ever stat()ed, a setuid file
with a hard link, and a file capability.  Every test checks that the source
image ID is unchanged and that no scratch directory is left behind.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from docker.errors import ImageNotFound

from support import NDGEN, build_image, remove_images, run_ndgen

pytestmark = pytest.mark.docker

PREFIX = "ndgen-test-minify"
# A capability set by hand (no libcap in the image): VFS_CAP_REVISION_2 | effective, cap_net_raw.
_CAP = "struct.pack('<5I', 0x02000001, 1 << 13, 0, 0, 0)"
DOCKERFILE = f"""\
FROM {{base}}
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /opt/app/pkg \\
 && echo 'def shout(s): return s.upper()' > /opt/app/pkg/lazy.py \\
 && touch /opt/app/pkg/__init__.py \\
 && printf '%s\\n' \\
      'import sys' \\
      'def main():' \\
      '    if len(sys.argv) > 1:' \\
      '        from pkg.lazy import shout' \\
      '        print(shout(sys.argv[1]))' \\
      'main()' > /opt/app/tool.py \\
 && echo flag > /etc/ndgen-flag \\
 && cp /usr/bin/true /opt/app/suid && chmod 4755 /opt/app/suid && ln /opt/app/suid /opt/app/suid-hardlink \\
 && cp /usr/bin/true /opt/app/cap \\
 && python3 -c "import os, struct; os.setxattr('/opt/app/cap', 'security.capability', {_CAP})" \\
 && python3 -m compileall -q /opt/app
ENV PYTHONPATH=/opt/app GREETING="hello $ world"
WORKDIR /opt/app
LABEL org.example.kept=yes
CMD ["python3", "/opt/app/tool.py"]
"""


@pytest.fixture(scope="module")
def app_image(docker_client, base_image):
    tag = f"{PREFIX}-app:{uuid.uuid4().hex[:8]}"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = DOCKERFILE.format(base=base_image).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="host", rm=True)
    yield tag
    remove_images(docker_client, [tag])


@pytest.fixture(scope="module")
def user_image(docker_client, app_image):
    """The app image with a non-root USER, as many published images have."""
    dockerfile = f"FROM {app_image}\nRUN useradd -m -u 1000 neuro\nUSER neuro\nWORKDIR /home/neuro\n"
    tag = build_image(docker_client, f"{PREFIX}-user", dockerfile)
    yield tag
    remove_images(docker_client, [tag])


def ndgen(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ndgen(*args, timeout=600)


def _image_id(client, name: str) -> str:
    return client.images.get(name).id


def _run(client, tag: str, command: str) -> bytes:
    return client.containers.run(tag, ["-c", command], entrypoint=["/bin/sh"], network_mode="none", remove=True)


def _work_tags(client, source: str, command: str) -> list[str]:
    """minify's temporary tags (ndgen-minify-tmp:*) left from minifying `source` with `command`."""
    return [
        tag
        for image in client.images.list(name="ndgen-minify-tmp")
        if image.labels.get("org.ndgen.minify.source-digest") == _image_id(client, source)
        and json.loads(image.labels.get("org.ndgen.minify.commands", "[]")) == [command]
        for tag in image.tags
    ]


def _assert_clean(scratch: Path, client, source: str, source_id: str) -> None:
    assert list(scratch.iterdir()) == [], f"scratch left behind: {list(scratch.iterdir())}"
    assert _image_id(client, source) == source_id, "the source image changed"


def _minify(client, source, tag, scratch, *args, ok=True):
    source_id = _image_id(client, source)
    proc = ndgen("minify", source, "-t", tag, *args)
    if ok:
        assert proc.returncode == 0, proc.stderr
    _assert_clean(scratch, client, source, source_id)
    return proc


def test_python_workload_symlinks_lazy_import_dlopen(docker_client, app_image, new_tag, scratch, tmp_path):
    report = tmp_path / "report.json"
    command = (
        "python3 /opt/app/tool.py && python3 /opt/app/tool.py loud"
        " && python3 -c \"import ctypes; print(ctypes.CDLL('libsqlite3.so.0').sqlite3_libversion_number() > 0)\""
    )
    _minify(docker_client, app_image, new_tag, scratch, "-c", command, "--report", str(report))
    data = json.loads(report.read_text())
    assert data["verified"] is True
    assert data["repaired"] == []  # trace + closure got it right the first time
    assert data["size_after"] * 5 < data["size_before"]
    # Rerun by hand through /bin/sh (dash via a symlink) and the /lib64 loader symlink chain.
    out = _run(docker_client, new_tag, command)
    assert out == b"LOUD\nTrue\n"
    members = _members(docker_client, new_tag)
    assert members["bin"].issym() and members["usr/bin/sh"].linkname == "dash"
    assert members["lib64"].issym() and members["usr/lib64/ld-linux-x86-64.so.2"].issym()
    # the lazily imported module's source sits beside its cache (CPython stats it to use the .pyc)
    assert "opt/app/pkg/lazy.py" in members and "opt/app/pkg/__pycache__" in members
    # The source's config came along, plus labels saying what was done.
    config = docker_client.images.get(new_tag).attrs["Config"]
    assert "GREETING=hello $ world" in config["Env"]
    assert config["WorkingDir"] == "/opt/app"
    assert config["Cmd"] == ["python3", "/opt/app/tool.py"]
    assert config["Labels"]["org.example.kept"] == "yes"
    assert json.loads(config["Labels"]["org.ndgen.minify.commands"]) == [command]
    assert config["Labels"]["org.ndgen.minify.source-digest"] == _image_id(docker_client, app_image)


def test_stat_only_file_is_repaired_by_verify(docker_client, app_image, new_tag, scratch, tmp_path):
    # fanotify never sees a stat(); verify's re-trace finds the ENOENT and adds the file.
    report = tmp_path / "report.json"
    command = "if test -e /etc/ndgen-flag; then echo present; else echo absent; fi"
    _minify(docker_client, app_image, new_tag, scratch, "-c", command, "--tracer", "fanotify", "--report", str(report))
    data = json.loads(report.read_text())
    assert data["repaired"] == ["/etc/ndgen-flag"]
    assert _run(docker_client, new_tag, command) == b"present\n"


def test_stat_only_file_seen_by_ptrace(docker_client, app_image, new_tag, scratch, tmp_path):
    report = tmp_path / "report.json"
    command = "test -e /etc/ndgen-flag && echo present"
    _minify(docker_client, app_image, new_tag, scratch, "-c", command, "--tracer", "ptrace", "--report", str(report))
    data = json.loads(report.read_text())
    assert data["tracer"] == "ptrace" and data["repaired"] == [] and data["verified"] is True


def test_verify_failure_names_missing_path_and_keeps_no_tag(docker_client, app_image, new_tag, scratch):
    command = "test -e /etc/ndgen-flag && echo present || echo absent"
    proc = _minify(docker_client, app_image, new_tag, scratch, "-c", command, "--no-repair", ok=False)
    assert proc.returncode != 0
    assert proc.stderr.startswith("ndgen: error: verify failed")
    assert "/etc/ndgen-flag" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(ImageNotFound):
        docker_client.images.get(new_tag)
    # Its temporary tag is gone (other runs on this engine may hold temporary tags of their own).
    assert not _work_tags(docker_client, app_image, command)


def test_failed_verify_leaves_an_existing_tag_alone(docker_client, base_image, app_image, new_tag, scratch):
    docker_client.images.get(base_image).tag(*new_tag.split(":"))
    command = "test -e /etc/ndgen-flag && echo present || echo absent"
    _minify(docker_client, app_image, new_tag, scratch, "-c", command, "--no-repair", ok=False)
    assert _image_id(docker_client, new_tag) == _image_id(docker_client, base_image)


def test_keep_failed_keeps_the_tag(docker_client, app_image, new_tag, scratch):
    command = "test -e /etc/ndgen-flag && echo present || echo absent"
    proc = _minify(docker_client, app_image, new_tag, scratch, "-c", command, "--no-repair", "--keep-failed", ok=False)
    assert proc.returncode != 0 and "--keep-failed" in proc.stderr
    assert _run(docker_client, new_tag, command) == b"absent\n"


def _members(client, tag: str) -> dict[str, tarfile.TarInfo]:
    """The new image's filesystem as the engine exports it (it has no ls/stat to ask)."""
    container = client.containers.create(tag, entrypoint=["/bin/sh"])
    try:
        stream = b"".join(container.export())
    finally:
        container.remove()
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_setuid_hardlink_capability_and_keep_glob(docker_client, app_image, new_tag, scratch):
    _minify(
        docker_client, app_image, new_tag, scratch,
        "-c", "/opt/app/suid && /opt/app/cap",
        "--keep", "/opt/app/suid-hard*",
    )  # fmt: skip
    members = _members(docker_client, new_tag)
    suid, link = members["opt/app/suid"], members["opt/app/suid-hardlink"]
    assert suid.mode & 0o7777 == 0o4755
    assert link.islnk() and link.linkname == "opt/app/suid"
    cap = members["opt/app/cap"].pax_headers.get("SCHILY.xattr.security.capability", "")
    assert cap.encode("utf-8", "surrogateescape") == struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)
    assert "opt/app/tool.py" not in members  # untraced files are gone


def test_writable_mount_outputs_compared_and_user_dir_untouched(docker_client, app_image, new_tag, scratch, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("abc\n")
    command = "python3 -c \"import sys; open('/data/out.txt','w').write(open('/data/in.txt').read().upper())\""
    _minify(docker_client, app_image, new_tag, scratch, "-c", command, "-v", f"{data}:/data")
    assert sorted(p.name for p in data.iterdir()) == ["in.txt"]
    first = _image_id(docker_client, new_tag)
    # Compared: an output file that differs between the traced run and the rerun fails verify,
    # though stdout, stderr and exit code are the same.
    differs = "python3 -c \"import os; open('/data/out.txt','wb').write(os.urandom(8))\""
    proc = _minify(
        docker_client, app_image, new_tag, scratch, "-c", differs, "-v", f"{data}:/data", "--no-repair", ok=False
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.startswith("ndgen: error: verify failed: the outputs differ") and "/data/out.txt" in proc.stderr
    ), proc.stderr
    assert sorted(p.name for p in data.iterdir()) == ["in.txt"]
    assert _image_id(docker_client, new_tag) == first  # the failed run did not retag


def test_failing_command_stops_the_trace_and_allow_fail_accepts(docker_client, app_image, new_tag, scratch):
    proc = _minify(
        docker_client, app_image, new_tag, scratch, "-c", "echo one", "-c", "exit 3", "-c", "echo three", ok=False
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "'exit 3' exited 3" in proc.stderr, proc.stderr
    with pytest.raises(ImageNotFound):
        docker_client.images.get(new_tag)
    _minify(docker_client, app_image, new_tag, scratch, "-c", "echo one", "-c", "exit 3", "--allow-fail")
    labels = docker_client.images.get(new_tag).labels
    assert json.loads(labels["org.ndgen.minify.commands"]) == ["echo one", "exit 3"]


def test_bad_inputs_one_line(docker_client, app_image, new_tag, scratch, tmp_path):
    source_id = _image_id(docker_client, app_image)
    cases = {
        "is not on this engine (ndgen never pulls)": (
            "minify",
            f"{PREFIX}-no-such-image:1",
            "-t",
            new_tag,
            "-c",
            "true",
        ),
        "does not exist": ("minify", app_image, "-t", new_tag, "-c", "true", "-v", f"{tmp_path}/nope:/x"),
        "names the source image": ("minify", app_image, "-t", app_image, "-c", "true"),
        "bad -v": ("minify", app_image, "-t", new_tag, "-c", "true", "-v", "/tmp:/x:rx"),
        "nothing to trace": ("minify", app_image, "-t", new_tag),
        "not a valid image name": ("minify", app_image, "-t", "Bad:Tag!", "-c", "true"),
        "unknown profile": ("minify", app_image, "-t", new_tag, "--profile", "no-such-profile"),
        "--keep /opt/typo: no such path": ("minify", app_image, "-t", new_tag, "-c", "true", "--keep", "/opt/typo"),
    }
    for expected, args in cases.items():
        proc = ndgen(*args)
        assert proc.returncode == 2, (expected, proc.stderr)
        assert proc.stderr.startswith("ndgen: error:") and expected in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    _assert_clean(scratch, docker_client, app_image, source_id)


def test_no_fanotify_falls_back_to_ptrace(docker_client, app_image, new_tag, scratch):
    # Without CAP_SYS_ADMIN there is no fanotify (and no overlay mount): ptrace on an export.
    source_id = _image_id(docker_client, app_image)
    proc = subprocess.run(
        ["capsh", "--drop=cap_sys_admin", "--", "-c",
         shlex.join([*NDGEN, "minify", app_image, "-t", new_tag, "-c", "python3 /opt/app/tool.py x"])],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "falling back to the ptrace tracer" in proc.stderr
    assert _run(docker_client, new_tag, "python3 /opt/app/tool.py x") == b"X\n"
    _assert_clean(scratch, docker_client, app_image, source_id)


def test_disk_full_is_one_line_and_leaves_nothing(docker_client, app_image, new_tag, tmp_path, monkeypatch):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        data = tmp_path / "data"
        data.mkdir()
        (data / "big").write_bytes(os.urandom(2 << 20))  # a writable mount is snapshotted into scratch
        monkeypatch.setenv("NDGEN_SCRATCH", str(small))
        source_id = _image_id(docker_client, app_image)
        proc = ndgen("minify", app_image, "-t", new_tag, "-c", "true", "-v", f"{data}:/data")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("ndgen: error: no space left on device"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        _assert_clean(small, docker_client, app_image, source_id)
    finally:
        subprocess.run(["umount", str(small)], check=False)
    with pytest.raises(ImageNotFound):
        docker_client.images.get(new_tag)


def test_singularity_squashfs_layout(docker_client, app_image, new_tag, scratch, tmp_path):
    out = tmp_path / "app.sqfs"
    _minify(
        docker_client, app_image, new_tag, scratch,
        "-c", "python3 /opt/app/tool.py x", "--format", "both", "--squashfs", str(out), "--keep", "/opt/app/cap",
    )  # fmt: skip
    listing = subprocess.run(["unsquashfs", "-l", "-d", "", str(out)], capture_output=True, text=True, check=True)
    names = set(listing.stdout.split())
    assert {"/.singularity.d/runscript", "/.singularity.d/env/90-environment.sh", "/usr/bin/python3"} <= names
    env = subprocess.run(
        ["unsquashfs", "-cat", str(out), "/.singularity.d/env/90-environment.sh"], capture_output=True, text=True
    ).stdout
    assert "export PYTHONPATH='/opt/app'" in env
    assert _run(docker_client, new_tag, "python3 /opt/app/tool.py x") == b"X\n"  # --format both: the image too
    # Run it the way apptainer does (the image's action scripts), in ndgen's own sandbox.
    from neurodocker_nd.minify.model import ImageConfig
    from neurodocker_nd.minify.sandbox import run_plain

    tree = tmp_path / "tree"
    subprocess.run(["unsquashfs", "-q", "-d", str(tree), str(out)], check=True, capture_output=True)
    # the file capability survives into the SquashFS (as `setcap cap_net_raw+ep` wrote it)
    assert os.getxattr(tree / "opt/app/cap", "security.capability") == struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)
    if shutil.which("getcap"):
        assert (
            "cap_net_raw=ep"
            in subprocess.run(["getcap", str(tree / "opt/app/cap")], capture_output=True, text=True).stdout
        )
    bare = ImageConfig(image_id="", name="sqfs")  # no Docker ENV: the image must bring its own
    run = run_plain(tree, bare, "/.singularity.d/actions/run python3 /opt/app/tool.py x")
    assert (run.exit_code, run.stdout) == (0, b"X\n"), run.stderr
    exec_ = run_plain(tree, bare, "/.singularity.d/actions/exec sh -c 'echo $PYTHONPATH $GREETING'")
    assert exec_.stdout == b"/opt/app hello $ world\n"


def test_non_root_user_runs_with_docker_permissions(docker_client, user_image, new_tag, monkeypatch):
    # Under a world-traversable directory (pytest's tmp_path is 0700): the image's USER runs
    # bwrap itself then, so permissions are Docker's; elsewhere it is mapped to root instead.
    base = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    base.chmod(0o755)
    scratch = base / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("NDGEN_SCRATCH", str(scratch))
    data = base / "data"
    data.mkdir()
    os.chown(data, 1000, 1000)
    # Writable where the user may write, refused where Docker would refuse it too.
    command = "id -u; echo $HOME; echo hi > /data/out.txt; touch /etc/nope 2>/dev/null || echo refused"
    report = base / "report.json"
    _minify(docker_client, user_image, new_tag, scratch, "-c", command, "-v", f"{data}:/data", "--report", str(report))
    # verify compared the traced run with `docker run` of the same command: same uid, $HOME,
    # written file and refusal, so the trace ran with Docker's permissions.
    assert json.loads(report.read_text())["verified"] is True
    docker_out = docker_client.containers.run(
        new_tag, ["-c", command], entrypoint=["/bin/sh"],
        volumes={str(data): {"bind": "/data", "mode": "rw"}}, network_mode="none", remove=True,
    )  # fmt: skip
    assert docker_out == b"1000\n/home/neuro\nrefused\n"
    shutil.rmtree(base)


def test_profile_file_setup_seeds_mounts_and_keep_rules(docker_client, app_image, new_tag, scratch, tmp_path):
    profile = tmp_path / "apptest.yaml"
    profile.write_text(
        "name: apptest\n"
        'description: "tool.py on setup-made input"\n'
        "mounts: [/data]\n"
        "setup:\n"
        "  - echo quiet > /data/in.txt\n"
        "commands:\n"
        "  - python3 /opt/app/tool.py $(cat /data/in.txt) > /data/out.txt\n"
        "keep: [/etc/ndgen-flag]\n"
    )
    report = tmp_path / "report.json"
    _minify(docker_client, app_image, new_tag, scratch, "--profile", str(profile), "--report", str(report))
    data = json.loads(report.read_text())
    assert data["verified"] is True and data["keep_reasons"]["profile"] >= 1
    assert [c["command"] for c in data["commands"]] == ["python3 /opt/app/tool.py $(cat /data/in.txt) > /data/out.txt"]
    assert "etc/ndgen-flag" in _members(docker_client, new_tag)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_nothing_behind(docker_client, app_image, new_tag, scratch, signum):
    source_id = _image_id(docker_client, app_image)
    proc = subprocess.Popen(
        [*NDGEN, "minify", app_image, "-t", new_tag, "-c", "sleep 60"],
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal delivers it: a run started in the background (`cmd &` in a script)
        # ignores SIGINT, and that would pass to ndgen (Python keeps an inherited SIG_IGN).
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 60
    while not list(scratch.glob("*/trace/rootfs")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the sandboxed `sleep` is running now
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip() in ("ndgen: aborted", "ndgen: interrupted")
    _assert_clean(scratch, docker_client, app_image, source_id)
    assert not [m for m in Path("/proc/mounts").read_text().splitlines() if str(scratch) in m]


def test_export_fallback_without_overlay2_layers(docker_client, app_image, scratch):
    # Engines with another storage driver: a streamed `docker export`, then the same views.
    from neurodocker_nd.minify.sandbox import run_plain
    from neurodocker_nd.minify.source import open_source

    with open_source(docker_client, app_image, prefer_overlay=False) as source:
        assert source.method == "export"
        view = source.view("run")
        result = run_plain(
            view, source.config, "python3 /opt/app/tool.py hi > /tmp/x && touch /written && cat /etc/ndgen-flag"
        )
        assert (result.exit_code, result.stdout) == (0, b"flag\n")
        assert not (source.pristine / "written").exists()  # runs never write into the pristine view
        assert (source.pristine / "opt/app/suid").stat().st_mode & 0o4000
    assert list(scratch.iterdir()) == []


def test_entrypoint_script_still_runs(docker_client, base_image, new_tag, scratch):
    # neurodocker's images start through `#!/usr/bin/env bash` scripts that no -c ever runs.
    tag = f"{PREFIX}-entry:{uuid.uuid4().hex[:8]}"
    dockerfile = (
        f"FROM {base_image}\n"
        "RUN mkdir /neurodocker && printf '#!/usr/bin/env bash\\nexport STARTED=yes\\nexec \"$@\"\\n'"
        " > /neurodocker/startup.sh && chmod +x /neurodocker/startup.sh\n"
        'ENTRYPOINT ["/neurodocker/startup.sh"]\nCMD ["bash", "-c", "echo $STARTED"]\n'
    )
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="host", rm=True)
    try:
        _minify(docker_client, tag, new_tag, scratch, "-c", "cat /etc/hostname >/dev/null || true")
        out = docker_client.containers.run(new_tag, network_mode="none", remove=True)
        assert out == b"yes\n"
    finally:
        remove_images(docker_client, [tag])


def test_fanotify_keeps_up_with_a_burst_of_opens_under_a_low_fd_limit(docker_client, base_image, scratch):
    # Every queued event carries an open fd: reading must not trip over the open-files limit.
    import resource

    from neurodocker_nd.minify.fanotify import FanotifyTracer
    from neurodocker_nd.minify.source import open_source

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        with open_source(docker_client, base_image) as source:
            listing = "find /usr/share -type f | sort | head -3000"
            record = FanotifyTracer().trace(
                source.view("burst"), source.config, [f"{listing} | xargs cat > /dev/null; {listing}"], []
            )
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    opened = set(record.results[0].stdout.decode().split())
    assert len(opened) == 3000 and opened <= record.paths
