"""Issue 17, findings 1 and 3: scratch is private to ndgen's uid, the stale-run reaper acts only
on what ndgen wrote, and the image's setuid files and device nodes are out of other users' reach.

Real processes throughout: another local user is `nobody` via setpriv, the reaper runs the
real runc, views are real overlay mounts of a real image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import attrs
import pytest

from neurodocker_nd.core import scratchdir
from neurodocker_nd.errors import NdgenError
from support import build_image, remove_images

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="another uid, runc and mounts need root")

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
DOCKERFILE = """\
FROM {base}
RUN cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id \\
 && useradd -u 1234 -m alice && mknod -m 666 /opt/null c 1 3
"""


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, *argv], capture_output=True, text=True, timeout=60)


@pytest.fixture
def shared_tmp():
    """A /tmp stand-in: world-writable and sticky, below /var/tmp (which `nobody` can traverse)."""
    path = Path(tempfile.mkdtemp(prefix="ndgen-test-sec-", dir="/var/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


def _mount_options(path: Path) -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if fields[4] == str(path):
                return set(fields[5].split(","))
    raise AssertionError(f"{path} is not a mount point")


# --------------------------------------------------------------------------- finding 1: the base


def test_scratch_base_is_0700_ours_and_nobody_cannot_create_into_it(shared_tmp, monkeypatch):
    from neurodocker_nd.core import scratchdir

    monkeypatch.delenv("NDGEN_SCRATCH", raising=False)
    base = scratchdir.base(str(shared_tmp))
    assert base == shared_tmp / f"ndgen-{os.geteuid()}"
    st = base.lstat()
    assert (st.st_uid, oct(st.st_mode & 0o7777)) == (0, "0o700")
    assert as_nobody("mkdir", str(base / "ndgen-minify-planted")).returncode != 0
    scratch = scratchdir.make("ndgen-minify-", str(shared_tmp))
    assert scratch.parent == base and oct(scratch.stat().st_mode & 0o7777) == "0o700"
    assert scratchdir.base(str(shared_tmp)) == base  # reused as is


@pytest.mark.parametrize("planted", ["nobody's directory", "symlink to our own 0700 dir", "our dir, 0755"])
def test_a_planted_base_is_refused_not_fixed(shared_tmp, monkeypatch, planted):
    from neurodocker_nd.core import scratchdir

    monkeypatch.delenv("NDGEN_SCRATCH", raising=False)
    path = shared_tmp / f"ndgen-{os.geteuid()}"
    if planted == "nobody's directory":
        assert as_nobody("mkdir", "-m", "0700", str(path)).returncode == 0
        expected = "owned by uid 65534"
    elif planted == "symlink to our own 0700 dir":
        ours = Path(tempfile.mkdtemp(dir=shared_tmp))  # would pass every check itself
        assert as_nobody("ln", "-s", str(ours), str(path)).returncode == 0
        expected = "not a directory"
    else:
        path.mkdir(mode=0o755)
        path.chmod(0o755)
        expected = "mode 0755 lets other users in"
    before = os.lstat(path)
    with pytest.raises(NdgenError, match=expected):
        scratchdir.base(str(shared_tmp))
    after = os.lstat(path)
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)  # left as found
    if not path.is_symlink():
        assert list(path.iterdir()) == []


@pytest.mark.docker
def test_minify_refuses_a_scratch_base_of_another_user(base_image, shared_tmp):
    """One line, exit 2, before any scratch or container is made (old code minified into it)."""
    from support import run_ndgen

    planted = shared_tmp / "scratch"
    assert as_nobody("mkdir", "-m", "0755", str(planted)).returncode == 0
    tag = f"ndgen-test-sec:{uuid.uuid4().hex[:8]}"
    try:
        proc = run_ndgen("minify", base_image, "-t", tag, "-c", "true", env={"NDGEN_SCRATCH": str(planted)})
    finally:  # the old code minified into the planted directory and wrote the tag
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"ndgen: error: NDGEN_SCRATCH={planted}: owned by uid 65534"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert list(planted.iterdir()) == []


# --------------------------------------------------------------------------- finding 1: the reaper


def _dead_pid() -> int:
    pid = 999_999
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


def _hostile_state(cid: str, pid: int, marker: Path) -> str:
    """A runc state whose poststop hook records who ran it: `runc delete --force` runs it."""
    return json.dumps(
        {
            "id": cid,
            "init_process_pid": pid,
            "init_process_start": 1,
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "rootfs": "/nonexistent",
                "cgroups": {"path": f"/ndgen-test-{cid}", "cpu_shares": 0},
                "hooks": {"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"id -u > {marker}"]}]},
            },
            "rootless": False,
            "cgroup_paths": {},
            "namespace_paths": {},
            "external_descriptors": [],
        }
    )


def _plant_runc_state(directory: Path, cid: str, pid: int, marker: Path) -> None:
    """As nobody: `directory`/runc/CID/state.json and `directory`/oci/CID (the layout a view has)."""
    script = f"mkdir -p {directory}/runc/{cid} {directory}/oci/{cid} && cat > {directory}/runc/{cid}/state.json"
    planted = subprocess.run(
        [*NOBODY, "sh", "-c", script], input=_hostile_state(cid, pid, marker), capture_output=True, text=True
    )
    assert planted.returncode == 0, planted.stderr


@pytest.fixture
def private_base(monkeypatch):
    path = Path(tempfile.mkdtemp(prefix="ndgen-test-sec-base-", dir="/var/tmp"))
    monkeypatch.setenv("NDGEN_SCRATCH", str(path))
    yield path
    shutil.rmtree(path)


@pytest.mark.docker
def test_reaper_ignores_a_scratch_dir_it_did_not_create(docker_client, private_base, shared_tmp):
    """Planted by nobody (dead owner, a view record, a runc state with a poststop hook): the old
    reaper ran `runc delete --force` on it and the hook ran as root.  Now it is not even opened."""
    from neurodocker_nd.minify import stale

    pid = _dead_pid()
    cid = f"ndgen-{pid}-{'ab' * 5}"
    marker = shared_tmp / "hook-ran"
    evil = shared_tmp / "ndgen-minify-planted"
    assert as_nobody("mkdir", "-m", "0700", str(evil), str(evil / "trace")).returncode == 0
    for name, text in (("owner", f"{pid}-1\n"), ("runc-views", "trace\n")):
        assert subprocess.run([*NOBODY, "sh", "-c", f"cat > {evil}/{name}"], input=text, text=True).returncode == 0
    _plant_runc_state(evil / "trace", cid, pid, marker)
    # It got into the scan directory (old code: /tmp, where anyone creates it).
    os.rename(evil, private_base / evil.name)
    removed = stale.reap(docker_client, private_base)
    assert not marker.exists(), f"runc ran the planted hook as uid {marker.read_text().strip()}"
    assert str(private_base / evil.name) not in removed
    assert (private_base / evil.name / "trace" / "runc" / cid / "state.json").exists()  # untouched


@pytest.mark.docker
def test_reaper_runs_runc_only_on_views_it_recorded(docker_client, private_base, shared_tmp):
    """A dead run of ours whose workload-writable directory (a suite work dir is bind-mounted
    into the sandbox) holds a planted runc state: the scratch goes, runc never sees that state."""
    from neurodocker_nd.minify import source, stale

    pid = _dead_pid()
    cid = f"ndgen-{pid}-{'cd' * 5}"
    marker = shared_tmp / "hook-ran"
    scratch = source.make_scratch()
    assert scratch.parent == private_base
    (scratch / "owner").write_text(f"{pid}-1\n")  # its owner is gone
    # The image's USER (here nobody) writes its work dir through a bind mount: staged outside
    # (nobody cannot traverse the 0700 scratch) and moved to where the bind mount's source is.
    staged = shared_tmp / "work"
    assert as_nobody("mkdir", str(staged)).returncode == 0
    _plant_runc_state(staged, cid, pid, marker)
    os.rename(staged, scratch / "suite-trace")
    removed = stale.reap(docker_client, private_base)
    assert not marker.exists(), f"runc ran the planted hook as uid {marker.read_text().strip()}"
    assert removed == [str(scratch)] and not scratch.exists()


# --------------------------------------------------------------------------- finding 3: the views


@pytest.fixture(scope="module")
def suid_image(docker_client, base_image):
    tag = build_image(docker_client, "ndgen-test-sec-suid", DOCKERFILE.format(base=base_image))
    yield tag
    remove_images(docker_client, [tag])


def _nobody_reaches(path: Path) -> list[str]:
    """What `nobody` achieves through `path`: a listing, the setuid program, the device node."""
    reached = []
    if as_nobody("ls", str(path)).returncode == 0:
        reached.append("listed the view")
    # through nobody's shell: setpriv's own exec of a path is not nobody's path lookup
    suid = as_nobody("sh", "-c", f"{path}/usr/local/bin/suid-id -u")
    if suid.returncode == 0:
        reached.append(f"ran the setuid program as euid {suid.stdout.strip()}")
    if as_nobody("sh", "-c", f"echo x > {path}/opt/null").returncode == 0:
        reached.append("wrote through the device node")
    return reached


@pytest.fixture
def open_base(monkeypatch):
    """A base other users may traverse (0755, as a configured NDGEN_SCRATCH may be; /tmp was):
    only the scratch directory's own mode keeps them out."""
    path = Path(tempfile.mkdtemp(prefix="ndgen-test-sec-open-", dir="/var/tmp"))
    path.chmod(0o755)
    monkeypatch.setenv("NDGEN_SCRATCH", str(path))
    yield path
    shutil.rmtree(path)


@pytest.mark.docker
@pytest.mark.parametrize("prefer_overlay", [True, False], ids=["overlay", "export"])
def test_views_are_private_and_host_views_nosuid_nodev(docker_client, suid_image, open_base, prefer_overlay):
    from neurodocker_nd.minify.sandbox import run_plain
    from neurodocker_nd.minify.source import open_source

    with open_source(docker_client, suid_image, prefer_overlay=prefer_overlay) as src:
        assert src.method == ("overlay" if prefer_overlay else "export")
        assert oct(src.scratch.stat().st_mode & 0o7777) == "0o700"
        assert {"ro", "nosuid", "nodev"} <= _mount_options(src.pristine)
        if not prefer_overlay:  # the copy itself, below the overlays
            assert {"nosuid", "nodev"} <= _mount_options(src.scratch / "exported")
        view = src.view("probe")
        assert "nodev" in _mount_options(view)
        for path in (src.pristine, view):
            assert _nobody_reaches(path) == []
        # nodev: even root on the host cannot use the image's device node through the host view
        with pytest.raises(PermissionError):
            (src.pristine / "opt/null").open("wb").close()
        # ... while inside the sandbox setuid behaves as under `docker run`
        alice = attrs.evolve(src.config, user="alice")
        ours = run_plain(view, alice, "id -u; suid-id -u")
        docker_out = docker_client.containers.run(
            suid_image, ["-c", "id -u; suid-id -u"], entrypoint=["/bin/sh"], user="alice",
            network_mode="none", remove=True,
        )  # fmt: skip
        assert ours.stdout == docker_out == b"1234\n0\n", ours.stderr
    assert list(open_base.iterdir()) == []


def test_remove_deletes_a_tree_deeper_than_the_recursion_limit(tmp_path):
    """What an image wrote into a scratch work directory may be arbitrarily deep: shutil.rmtree
    recursed and ended in RecursionError (a traceback), leaving the tree behind."""
    root = tmp_path / "scratch"
    root.mkdir(mode=0o700)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(sys.getrecursionlimit() + 500):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.symlink("/etc", "link", dir_fd=fd)  # a link at the bottom is removed, never followed
    finally:
        os.close(fd)
    assert scratchdir.remove(root) is True
    assert not root.exists() and Path("/etc/passwd").is_file()
