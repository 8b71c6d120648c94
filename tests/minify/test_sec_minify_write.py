"""Issue 17, findings 2 and 19: writing the minified image never lets the image steer the host.

Finding 2: the Singularity layout used to be written into a host copy of the image with
path operations that follow symlinks, so an image's `/.singularity.d -> /some/host/dir`
had ndgen write a 0755 runscript (the image's ENTRYPOINT) into that host directory; the
host copy also recreated the image's device nodes, setuid files and capabilities.
Finding 19: a sparse file was written out in full (1 GiB of holes → 1 GiB of disk).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from docker.errors import ImageNotFound

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.minify import write as image
from neurodocker_nd.minify.keep import KeepSet
from neurodocker_nd.minify.model import ImageConfig
from support import build_image, remove_images, run_ndgen

PREFIX = "ndgen-test-sec-write"
GIB = 1 << 30
_CAP = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # VFS_CAP_REVISION_2 | effective, cap_net_raw


def _keep(*paths: str) -> KeepSet:
    return KeepSet(paths=frozenset(paths), trees=frozenset(), traced=0, reasons={}, image_entries=0)


def _config() -> ImageConfig:
    return ImageConfig(image_id="", name="hostile:1", env=("A=b",), entrypoint=("/bin/echo", "pwned"))


def _listing(sqfs: Path) -> dict[str, str]:
    """in-image path → `unsquashfs -lln` line."""
    out = subprocess.run(["unsquashfs", "-lln", "-d", "", str(sqfs)], capture_output=True, text=True, check=True).stdout
    names = {}
    for line in out.splitlines():
        found = re.search(r" \d\d:\d\d (/.*?)(?: -> .*)?$", line)
        if found:
            names[found.group(1)] = line
    return names


def _sparse(path: Path, size: int = GIB) -> None:
    with open(path, "wb") as fh:
        fh.write(b"head")
        fh.seek(size // 2)
        fh.write(b"middle")
        fh.truncate(size)
    assert os.stat(path).st_blocks * 512 < 1 << 20, "this filesystem does not keep holes"


# -- finding 2: no host path the image shaped ----------------------------------------------------


def test_singularity_dir_symlink_is_refused_and_the_host_dir_untouched(tmp_path):
    host = tmp_path / "host-dir"  # stands for /etc/cron.hourly
    host.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / ".singularity.d").symlink_to(host)  # absolute, as in the image
    out = tmp_path / "out.sqfs"
    with pytest.raises(NdgenError) as err:
        image.write_squashfs(root, _keep("/", "/.singularity.d"), _config(), ["true"], out)
    assert "/.singularity.d is a symlink, not a directory" in str(err.value) and "\n" not in str(err.value)
    assert list(host.iterdir()) == [] and not out.exists()


def test_image_files_in_singularity_dir_never_redirect_host_writes(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    root = tmp_path / "root"
    (root / ".singularity.d").mkdir(parents=True)
    (root / ".singularity.d/runscript").symlink_to(victim)  # the image points its runscript at a host file
    (root / ".singularity.d/labels.json").symlink_to(victim)
    (root / ".singularity.d/own").write_text("the image's\n")
    (root / "etc").symlink_to(tmp_path)  # the mount files (/etc/hosts …) must not land in tmp_path
    out = tmp_path / "out.sqfs"
    keep = _keep("/", "/etc", "/.singularity.d", "/.singularity.d/labels.json", "/.singularity.d/runscript",
                 "/.singularity.d/own")  # fmt: skip
    image.write_squashfs(root, keep, _config(), ["true"], out)
    assert victim.read_text() == "host file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.sqfs", "root", "victim"]
    names = _listing(out)
    # ndgen's runscript (a regular 0755 file holding the ENTRYPOINT) replaced the image's link
    assert names["/.singularity.d/runscript"].startswith("-rwxr-xr-x")
    script = subprocess.run(
        ["unsquashfs", "-cat", str(out), "/.singularity.d/runscript"], capture_output=True, text=True
    )
    assert "exec '/bin/echo' 'pwned'" in script.stdout
    assert "/.singularity.d/own" in names and names["/etc"].startswith("l")  # the image's own entries stay


def test_squashfs_keeps_devices_setuid_and_capabilities_without_a_host_copy(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "dev").mkdir()
    os.mknod(root / "dev/kmsg", stat.S_IFCHR | 0o644, os.makedev(1, 11))
    shutil.copy("/usr/bin/true", root / "usr/bin/suid")
    os.chmod(root / "usr/bin/suid", 0o4755)
    os.link(root / "usr/bin/suid", root / "usr/bin/suid-link")
    shutil.copy("/usr/bin/true", root / "usr/bin/cap")
    os.setxattr(root / "usr/bin/cap", "security.capability", _CAP)
    out = tmp_path / "out.sqfs"
    keep = _keep("/", "/dev", "/dev/kmsg", "/usr", "/usr/bin", "/usr/bin/suid", "/usr/bin/suid-link", "/usr/bin/cap")
    image.write_squashfs(root, keep, _config(), ["true"], out)
    names = _listing(out)
    assert names["/dev/kmsg"].startswith("crw-r--r--") and "1, 11" in names["/dev/kmsg"]
    assert names["/usr/bin/suid"].startswith("-rwsr-xr-x")
    tree = tmp_path / "tree"
    subprocess.run(["unsquashfs", "-q", "-d", str(tree), str(out)], check=True, capture_output=True)
    assert os.getxattr(tree / "usr/bin/cap", "security.capability") == _CAP
    assert os.stat(tree / "usr/bin/suid").st_ino == os.stat(tree / "usr/bin/suid-link").st_ino


def test_host_copy_has_no_devices_setuid_or_capabilities(tmp_path):
    """unpack_tar (the tree a repair re-traces): nothing in it grants privilege on the host."""
    root = tmp_path / "root"
    (root / "opt").mkdir(parents=True)
    os.mknod(root / "opt/kmsg", stat.S_IFCHR | 0o644, os.makedev(1, 11))
    shutil.copy("/usr/bin/true", root / "opt/suid")
    os.chmod(root / "opt/suid", 0o6755)
    shutil.copy("/usr/bin/true", root / "opt/cap")
    os.setxattr(root / "opt/cap", "security.capability", _CAP)
    os.setxattr(root / "opt/cap", "user.note", b"kept")
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    archive = tmp_path / "layer.tar"
    with open(archive, "wb") as fh:
        image.write_tar(root, _keep("/opt", "/opt/kmsg", "/opt/suid", "/opt/cap", "/tmp"), fh)
    target = tmp_path / "tree"
    target.mkdir()
    image.unpack_tar(archive, target)
    assert not os.path.lexists(target / "opt/kmsg")
    assert stat.S_IMODE(os.stat(target / "opt/suid").st_mode) == 0o755
    assert "security.capability" not in os.listxattr(target / "opt/cap")
    assert os.getxattr(target / "opt/cap", "user.note") == b"kept"
    assert stat.S_IMODE(os.stat(target / "tmp").st_mode) == 0o1777  # the workload's /tmp stays writable


def test_host_copy_refuses_an_escaping_entry(tmp_path):
    archive = tmp_path / "evil.tar"
    outside = tmp_path / "outside"
    outside.mkdir()
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo("etc")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        tar.addfile(link)
        data = b"x"
        member = tarfile.TarInfo("etc/cron")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    target = tmp_path / "tree"
    target.mkdir()
    with pytest.raises(NdgenError, match="refusing to unpack"):
        image.unpack_tar(archive, target)
    assert list(outside.iterdir()) == []


# -- finding 19: holes stay holes ----------------------------------------------------------------


def test_sparse_file_stays_sparse_in_the_squashfs_and_costs_no_scratch(tmp_path):
    root = tmp_path / "root"
    (root / "opt").mkdir(parents=True)
    _sparse(root / "opt/big")
    small = tmp_path / "small"  # scratch and output on 64 MiB: a written-out hole cannot fit
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(small)], check=True)
    try:
        out = small / "out.sqfs"
        written = image.write_squashfs(root, _keep("/", "/opt", "/opt/big"), _config(), ["true"], out)
        assert written.size < 1 << 20
        assert " 1073741824 " in _listing(out)["/opt/big"]
        piece = subprocess.run(["unsquashfs", "-cat", str(out), "/opt/big"], capture_output=True, check=True).stdout
        assert len(piece) == GIB and piece[:4] == b"head" and piece[GIB // 2 : GIB // 2 + 6] == b"middle"
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_host_copy_of_a_sparse_file_stays_sparse(tmp_path):
    root = tmp_path / "root"
    (root / "opt").mkdir(parents=True)
    _sparse(root / "opt/big")
    archive = tmp_path / "layer.tar"
    with open(archive, "wb") as fh:
        image.write_tar(root, _keep("/opt", "/opt/big"), fh)
    assert archive.stat().st_size < 1 << 20
    target = tmp_path / "tree"
    target.mkdir()
    image.unpack_tar(archive, target)
    st = os.stat(target / "opt/big")
    assert st.st_size == GIB and st.st_blocks * 512 < 1 << 20
    with open(target / "opt/big", "rb") as fh:
        fh.seek(GIB // 2)
        assert fh.read(6) == b"middle"


# -- the same on the engine: `ndgen minify` end to end ------------------------------------------


@pytest.fixture(scope="module")
def host_dir():
    """A directory on the host that the hostile image's WORKDIR and /.singularity.d name."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-host-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _build(client, dockerfile: str, name: str) -> str:
    return build_image(client, f"{PREFIX}-{name}", dockerfile, network="none")


@pytest.fixture(scope="module")
def hostile_image(docker_client, base_image, host_dir):
    tag = _build(docker_client, f"FROM {base_image}\nRUN mkdir -p {host_dir} && ln -s {host_dir} /.singularity.d\n"
                 f'WORKDIR {host_dir}\nENTRYPOINT ["/bin/echo", "pwned"]\n', "layout")  # fmt: skip
    yield tag
    remove_images(docker_client, [tag])


@pytest.fixture(scope="module")
def special_image(docker_client, base_image):
    tag = _build(
        docker_client,
        f"FROM {base_image}\nRUN mknod /opt/kmsg c 1 11 && truncate -s 1G /opt/big"
        " && printf middle | dd of=/opt/big bs=1 seek=536870912 conv=notrunc status=none\n",
        "special",
    )
    yield tag
    remove_images(docker_client, [tag])


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("ndgen: error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


@pytest.mark.docker
@pytest.mark.parametrize("fmt", ["singularity", "both"])
def test_minify_never_writes_into_the_host_dir_the_image_names(
    docker_client, hostile_image, host_dir, new_tag, scratch, tmp_path, fmt
):
    out = tmp_path / "out.sqfs"
    proc = run_ndgen(
        "minify", hostile_image, "-t", new_tag, "-c", "true", "--format", fmt, "--squashfs", str(out), timeout=600
    )
    assert list(host_dir.iterdir()) == [], "minify wrote into the host directory the image's /.singularity.d names"
    assert "/.singularity.d is a symlink, not a directory" in _one_line_error(proc)
    assert not out.exists() and list(scratch.iterdir()) == []
    with pytest.raises(ImageNotFound):  # --format both: the refusal leaves NEW_TAG untouched
        docker_client.images.get(new_tag)


@pytest.mark.docker
def test_minify_creates_no_device_node_on_the_host(docker_client, special_image, new_tag, scratch, tmp_path):
    """strace watches ndgen's main thread (where the SquashFS is written) for any mknod of a device."""
    out = tmp_path / "out.sqfs"
    log = tmp_path / "mknod.log"
    proc = run_ndgen("minify", special_image, "-t", new_tag, "-c", "true", "--keep", "/opt/kmsg",
                     "--format", "singularity", "--no-verify", "--squashfs", str(out),
                     under=["strace", "-qq", "-e", "trace=mknod,mknodat", "-o", str(log)], timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    devices = [line for line in log.read_text().splitlines() if "S_IFCHR" in line or "S_IFBLK" in line]
    assert devices == [], devices
    assert _listing(out)["/opt/kmsg"].startswith("crw")


@pytest.mark.docker
def test_minify_refuses_to_write_holes_out_into_the_engine(docker_client, special_image, new_tag, scratch):
    proc = run_ndgen("minify", special_image, "-t", new_tag, "-c", "true", "--keep", "/opt/big", timeout=600)
    error = _one_line_error(proc)
    assert "/opt/big" in error and "zero-filled" in error and "--format singularity --no-verify" in error
    with pytest.raises(ImageNotFound):
        docker_client.images.get(new_tag)
    assert list(scratch.iterdir()) == []


@pytest.mark.docker
def test_minify_keeps_a_sparse_file_sparse_in_the_squashfs(
    docker_client, special_image, new_tag, tmp_path, monkeypatch
):
    small = tmp_path / "small"  # scratch on 128 MiB: writing the 1 GiB file out there fails
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m,mode=0700", "tmpfs", str(small)], check=True)
    try:
        monkeypatch.setenv("NDGEN_SCRATCH", str(small))
        out = tmp_path / "out.sqfs"
        proc = run_ndgen("minify", special_image, "-t", new_tag, "-c", "true", "--keep", "/opt/big",
                         "--format", "singularity", "--no-verify", "--squashfs", str(out), timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size < 8 << 20 and " 1073741824 " in _listing(out)["/opt/big"]
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_kept_paths_below_an_image_symlink_never_read_host_files(tmp_path):
    """An image link `/a -> <host dir>` with `/a/secret` in the keep-set: the host read
    `root + /a/secret`, following the link out of the image, and put a host file in the image."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host only\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").symlink_to(host)  # absolute: resolved on the host, it leaves the image
    out = io.BytesIO()
    image.write_tar(root, _keep("/", "/a", "/a/secret"), out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert "a/secret" not in names and names["a"].issym()
    assert b"host only" not in out.getvalue()
