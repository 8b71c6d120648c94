"""`ndgen minify` with awkward inputs, on the real engine: tags that name the source in
another spelling, a config using every Dockerfile instruction with non-ASCII values,
a hanging command, and symlinks that point out of the image."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
import uuid
from pathlib import Path

import docker.errors
import pytest

from support import NDGEN, run_ndgen

pytestmark = pytest.mark.docker

REPO = f"ndgen-test-inputs-{os.getpid()}"
DOCKERFILE = """\
FROM {base}
RUN mkdir -p /opt/s /opt/data && echo image-data > /opt/data/file \\
 && ln -s /etc /opt/s/x && ln -s /proc/self/root /opt/procroot
ENV GREETING="café ☕"
LABEL org.example.note="café ☕"
HEALTHCHECK --interval=5s --timeout=2s CMD true
STOPSIGNAL SIGINT
SHELL ["/bin/sh", "-ec"]
ONBUILD RUN echo built
"""
CARRIED = ("Healthcheck", "StopSignal", "Shell", "OnBuild", "Env", "Cmd", "Entrypoint", "WorkingDir", "User")


@pytest.fixture(scope="module")
def source(docker_client, base_image):
    """The image, tagged `REPO:src` and `REPO` (= REPO:latest)."""
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(DOCKERFILE.format(base=base_image).encode("utf-8")),
        tag=f"{REPO}:src",
        network_mode="host",
        rm=True,
    )
    image.tag(REPO, "latest")
    yield image
    for ref in (f"{REPO}:src", f"{REPO}:latest"):
        docker_client.images.remove(ref, force=True)


@pytest.fixture
def new_tag(docker_client):
    tag = f"{REPO}:min-{uuid.uuid4().hex[:8]}"
    yield tag
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(tag, force=True)
    # A test minifying twice to one tag leaves the first image untagged (as `docker build -t`
    # would); images minified from this run's REPO are this run's own to remove.
    for image in docker_client.images.list(filters={"dangling": True, "label": "org.ndgen.minify.source-image"}):
        if image.labels["org.ndgen.minify.source-image"].startswith(f"{REPO}:"):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                docker_client.images.remove(image.id, force=True)


def _dangling_with_layers_of(client, tag: str) -> list[str]:
    """Untagged images holding exactly `tag`'s layers: left over by the write step."""
    layers = client.images.get(tag).attrs["RootFS"]["Layers"]
    return [i.id for i in client.images.list(filters={"dangling": True}) if i.attrs["RootFS"]["Layers"] == layers]


@pytest.mark.parametrize(
    "target",
    [f"{REPO}:src", f"docker.io/{REPO}:src", f"docker.io/library/{REPO}:src", REPO, f"{REPO}:latest"],
    # REPO holds the pid: IDs must not, so that every pytest-xdist worker collects the same tests.
    ids=["tag", "docker.io", "docker.io/library", "bare", "latest"],
)
def test_target_tag_naming_the_source_is_refused(docker_client, source, target):
    """By ID or name, however the target is spelled: the source's tags never move."""
    proc = run_ndgen("minify", source.id, "-t", target, "-c", "true")
    assert proc.returncode == 2 and proc.stderr.startswith("ndgen: error:"), proc.stderr
    assert "names the source image" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for ref in (f"{REPO}:src", f"{REPO}:latest"):
        assert docker_client.images.get(ref).id == source.id


def test_whole_config_and_utf8_values_are_carried(docker_client, source, new_tag):
    proc = run_ndgen("minify", f"{REPO}:src", "-t", new_tag, "-c", 'echo "$GREETING"')
    assert proc.returncode == 0, proc.stderr
    before, after = source.attrs["Config"], docker_client.images.get(new_tag).attrs["Config"]
    assert {k: after.get(k) for k in CARRIED} == {k: before.get(k) for k in CARRIED}
    assert after["Healthcheck"]["Test"] == ["CMD-SHELL", "true"] and after["StopSignal"] == "SIGINT"
    assert "GREETING=café ☕" in after["Env"] and after["Labels"]["org.example.note"] == "café ☕"
    out = docker_client.containers.run(new_tag, ["-c", 'echo "$GREETING"'], entrypoint=["/bin/sh"], remove=True,
                                       network_mode="none")  # fmt: skip
    assert out.decode("utf-8") == "café ☕\n"
    assert _dangling_with_layers_of(docker_client, new_tag) == []  # the import's own image is gone


def _processes_running(word: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and word.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("where", ["trace", "verify"])
def test_timeout_kills_the_command_and_names_it(docker_client, source, new_tag, tmp_path, where):
    """A hanging command: one line naming it, its processes gone, nothing left behind."""
    naps = f"{uuid.uuid4().int % 1000}.{os.getpid()}"  # a unique argv to find leftover processes by
    # In the minified image /opt/data/file is gone (a stat-only lookup), so only verify hangs.
    # (a busy loop: `sleep` is not in the minified image, the shell is)
    command = f"sleep {naps}" if where == "trace" else f"test -e /opt/data/file || while :; do :; done # {naps}"
    start = time.monotonic()
    proc = run_ndgen("minify", f"{REPO}:src", "-t", new_tag, "-c", command, "--timeout", "3", "--no-repair",
                     env={"NDGEN_SCRATCH": str(tmp_path)})  # fmt: skip
    assert time.monotonic() - start < 120
    assert proc.returncode == 2 and proc.stderr.startswith("ndgen: error:"), proc.stderr
    assert f"command {command!r} timed out after 3 s" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert ("minified image" in proc.stderr) == (where == "verify")
    assert _processes_running(naps) == []
    assert list(tmp_path.iterdir()) == []
    assert not docker_client.containers.list(all=True, filters={"ancestor": new_tag}) if where == "verify" else True
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(new_tag)


def _ls(client, image: str, path: str) -> str:
    # the shell's own globbing: `ls` is not in a minified image
    return client.containers.run(image, ["-c", f"echo {path}/* {path}/.[!.]*"], entrypoint=["/bin/sh"], remove=True,
                                 network_mode="none").decode()  # fmt: skip


def test_keep_globs_follow_symlinks_inside_the_image(docker_client, source, new_tag):
    """/opt/s/x -> /etc keeps the image's /etc; /opt/procroot -> /proc/self/root walks nothing."""
    proc = run_ndgen("minify", f"{REPO}:src", "-t", new_tag, "-c", "true", "--keep", "/opt/s/**", "--keep", "/opt/**")
    assert proc.returncode == 0, proc.stderr
    assert _ls(docker_client, new_tag, "/etc") == _ls(docker_client, f"{REPO}:src", "/etc")
    assert _ls(docker_client, new_tag, "/opt") == "/opt/data /opt/procroot /opt/s /opt/.[!.]*\n"


def test_passwd_linking_out_of_the_image_is_not_read_on_the_host(docker_client, source, new_tag, tmp_path):
    """USER ghost exists only in a host file the image's /etc/passwd points at: like
    `docker run`, minify finds no such user."""
    (tmp_path / "passwd").write_text("ghost:x:4242:4242::/home/ghost:/bin/sh\n")
    tag = f"{REPO}:passwd-{uuid.uuid4().hex[:6]}"
    name = f"{REPO}-ghost-{uuid.uuid4().hex[:6]}"
    dockerfile = f"FROM {REPO}:src\nRUN ln -sf {tmp_path}/passwd /etc/passwd\nUSER ghost\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="host", rm=True)
    try:
        proc = run_ndgen("minify", tag, "-t", new_tag, "-c", "id -u")
        assert proc.returncode == 2 and "no such user" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        # docker run agrees: the image has no such user.  A container that never started is not
        # removed by remove=True, so it is named and removed here.
        with pytest.raises(docker.errors.APIError, match="ghost"):
            docker_client.containers.run(tag, ["id"], name=name, remove=True, network_mode="none")
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True)
        docker_client.images.remove(tag, force=True)


def _wait_for(predicate, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_sigkill_leftovers_are_removed_by_the_next_run_and_live_runs_kept(docker_client, source, new_tag, tmp_path):
    """Killed mid-trace: its mounts, scratch and running workload stay until the next run,
    which removes them — but never those of a run that is still alive."""
    from neurodocker_nd.core.scratchdir import mounts_below

    naps = f"{uuid.uuid4().int % 1000 + 1000}.{os.getpid()}"
    env = {**os.environ, "NDGEN_SCRATCH": str(tmp_path)}
    victim = subprocess.Popen(
        [*NDGEN, "minify", f"{REPO}:src", "-t", new_tag, "-c", f"sleep {naps}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert _wait_for(lambda: _processes_running(f"sleep {naps}")), "the workload never started"
        live = run_ndgen("minify", f"{REPO}:src", "-t", new_tag, "-c", "true", env={"NDGEN_SCRATCH": str(tmp_path)})
        assert live.returncode == 0, live.stderr
        assert victim.poll() is None and _processes_running(f"sleep {naps}"), "a live run's sandbox was touched"
        victim.kill()  # SIGKILL: no cleanup runs
        victim.wait()
        assert mounts_below(tmp_path) and list(tmp_path.iterdir()) and _processes_running(f"sleep {naps}")
        again = run_ndgen("minify", f"{REPO}:src", "-t", new_tag, "-c", "true", env={"NDGEN_SCRATCH": str(tmp_path)})
        assert again.returncode == 0, again.stderr
        assert mounts_below(tmp_path) == [] and list(tmp_path.iterdir()) == []
        assert _wait_for(lambda: not _processes_running(f"sleep {naps}"), 20)
    finally:
        if victim.poll() is None:
            victim.kill()


def test_repair_rounds_leave_no_dangling_images(docker_client, source, new_tag):
    """A stat-only file (invisible to fanotify) is repaired in a second round; the first
    round's image does not stay behind untagged."""
    before = {image.id for image in docker_client.images.list(filters={"dangling": True})}
    proc = run_ndgen("minify", f"{REPO}:src", "-t", new_tag, "-c", "test -e /opt/data/file && echo yes")
    assert proc.returncode == 0, proc.stderr
    assert "/opt/data/file" in proc.stderr  # the summary's "verify repaired" line
    ours = f"ndgen minify {REPO}:src"
    leftovers = [
        image.id
        for image in docker_client.images.list(filters={"dangling": True})
        if image.id not in before and any(ours in (step.get("CreatedBy") or "") for step in image.history())
    ]
    assert leftovers == []


def test_report_lists_every_kept_path_with_its_reason_and_top_dir_sizes(docker_client, source, new_tag, tmp_path):
    import json

    from neurodocker_nd.minify.report import REASONS, reason_kind

    out = tmp_path / "report.json"
    proc = run_ndgen("minify", f"{REPO}:src", "-t", new_tag, "-c", "cat /opt/data/file", "--keep", "/opt/s",
                     "--report", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    kept, top = report["kept"], report["top_dirs"]
    assert len(kept) == report["entries_kept"] and {reason_kind(r) for r in kept.values()} <= set(REASONS)
    assert kept["/opt/data/file"] == "traced" and kept["/usr/bin/cat"] == "traced" and kept["/opt/s/x"] == "--keep"
    assert "elf-needed" in kept.values() and kept["/opt"] in ("parent", "traced")
    assert "/usr/lib" in top and "/opt/data" in top and sum(top.values()) == report["kept_file_bytes"]
    # bytes by reason: the same total split by why; /opt/s/x is a symlink, so --keep adds no bytes
    by_reason = report["reason_bytes"]
    assert sum(by_reason.values()) == report["kept_file_bytes"] and set(by_reason) <= set(kept.values())
    assert "--keep" not in by_reason and by_reason["traced"] > len("image-data\n")
