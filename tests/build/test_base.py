"""`ndgen base`: suite inference, host checks, mount-safe scratch space, real debootstrap + import."""

from __future__ import annotations

import functools
import http.server
import lzma
import os
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from neurodocker_nd.build import base_image as base
from neurodocker_nd.core import scratchdir
from neurodocker_nd.errors import NdgenError
from support import remove_images, run_ndgen, unique_tag

DEBIAN_TAG = unique_tag("ndgen-test-base-h3", "bookworm")
UBUNTU_TAG = unique_tag("ndgen-test-base-h3-ubuntu", "24.04")
UBUNTU_ARCHIVE = "archive.ubuntu.com"


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The process failed with exactly one `ndgen: error:` line naming every needle."""
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- planning (pure)


@pytest.mark.parametrize(
    ("image", "distro", "suite"),
    [
        ("debian:bookworm", "debian", "bookworm"),
        ("debian:bookworm-slim", "debian", "bookworm"),
        ("debian:12", "debian", "bookworm"),
        ("debian:12.7", "debian", "bookworm"),
        ("debian:11", "debian", "bullseye"),
        ("ubuntu:22.04", "ubuntu", "jammy"),
        ("ubuntu:24.04", "ubuntu", "noble"),
        ("ubuntu:noble", "ubuntu", "noble"),
        ("site/base:jammy", "ubuntu", "jammy"),  # the suite names the distribution
        ("site/base:24.04", "ubuntu", "noble"),
    ],
)
def test_suite_and_distro_come_from_the_tag(image, distro, suite):
    spec = base.plan_base(image)
    assert (spec.distro, spec.suite) == (distro, suite)
    assert spec.mirror == base.DEFAULT_MIRRORS[distro]
    assert spec.ref == (image if ":" in image else image + ":latest")


def test_an_ubuntu_mirror_makes_an_ubuntu_base_and_suite_overrides_the_tag():
    spec = base.plan_base("site/base:v1", mirror="http://mirror.example/ubuntu/", suite="jammy")
    assert (spec.distro, spec.suite, spec.mirror) == ("ubuntu", "jammy", "http://mirror.example/ubuntu")


def test_latest_is_the_newest_released_suite():
    spec = base.plan_base("debian")
    assert spec.ref == "debian:latest"
    released = [r for r in base._distro_info("debian") if base._released(r)]
    assert spec.suite == released[-1]["series"]


@pytest.mark.parametrize("image", ["debian:nonsense", "debian:99"])
def test_an_unknown_tag_asks_for_suite(image):
    with pytest.raises(NdgenError, match="pass --suite"):
        base.plan_base(image)


def test_debootstrap_command_is_minbase_and_verifies_ubuntu_with_its_keyring(tmp_path):
    debian = base.debootstrap_argv(base.plan_base("debian:bookworm"), tmp_path)
    assert debian == [
        "debootstrap",
        "--variant=minbase",
        "--components=main",
        "bookworm",
        str(tmp_path),
        base.DEFAULT_MIRRORS["debian"],
    ]
    ubuntu = base.debootstrap_argv(base.plan_base("ubuntu:24.04"), tmp_path)
    assert f"--keyring={base.UBUNTU_KEYRING}" in ubuntu
    script = base.debootstrap_script(base.plan_base("ubuntu:24.04"))
    # Old debootstraps (bookworm's) lack `noble`: every Ubuntu since gutsy shares one script.
    assert (script is None and (base.DEBOOTSTRAP_SCRIPTS / "noble").exists()) or script.name == "gutsy"


# --------------------------------------------------------------------------- host checks (CLI)


def test_not_root_is_one_clear_line():
    # A user namespace without a uid map: the same process, seen as uid 65534.
    proc = run_ndgen("base", "ndgen-test-base-h3-never:bookworm", under=["unshare", "--user"])
    one_line_error(proc, "must run as root")


@pytest.mark.skipif(os.geteuid() != 0, reason="the check after the root check needs root")
def test_missing_debootstrap_is_one_clear_line(ndgen_cli, tmp_path):
    proc = ndgen_cli("base", "ndgen-test-base-h3-never:bookworm", env={"PATH": str(tmp_path)})
    one_line_error(proc, "debootstrap is not installed")


@pytest.mark.skipif(os.geteuid() != 0, reason="the check after the root check needs root")
def test_missing_archive_keyring_names_it(tmp_path):
    spec = base.plan_base("ubuntu:22.04", keyring=tmp_path / "absent.gpg")
    with pytest.raises(NdgenError, match=r"archive keyring .*absent\.gpg not found.*--keyring"):
        base.check_host(spec)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_scratch_cleanup_never_deletes_through_a_mount(tmp_path):
    # debootstrap can leave /proc or a /dev bind mount inside its target when it
    # fails; removing the scratch tree must not delete what such a mount shows.
    outside = tmp_path / "host-dev"
    outside.mkdir()
    (outside / "sentinel").write_text("keep me")
    with scratchdir.directory("ndgen-base-", "/var/tmp") as scratch:
        point = scratch / "rootfs" / "dev"
        point.mkdir(parents=True)
        subprocess.run(["mount", "--bind", str(outside), str(point)], check=True)
        assert (point / "sentinel").exists()
    assert (outside / "sentinel").read_text() == "keep me"
    assert not scratch.exists()
    assert not scratchdir.mounts_below(scratch.parent / scratch.name)


# --------------------------------------------------------------------------- real engine


@pytest.fixture
def cleanup_tags(docker_client):
    tags: list[str] = []
    yield tags
    remove_images(docker_client, tags)


@pytest.fixture
def own_scratch(monkeypatch):
    """A scratch parent of this test's own under /var/tmp (as `ndgen base` uses by default)."""
    import tempfile

    parent = Path(tempfile.mkdtemp(prefix="ndgen-test-base-scratch-", dir="/var/tmp"))
    monkeypatch.setenv("NDGEN_SCRATCH", str(parent))
    yield parent
    parent.rmdir()  # fails when ndgen left its rootfs behind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.docker
def test_unreachable_mirror_is_one_clear_line(ndgen_cli, docker_client):
    port = _free_port()  # nothing listens there
    proc = ndgen_cli("base", "ndgen-test-base-h3-never:bookworm", "--mirror", f"http://127.0.0.1:{port}/debian")
    one_line_error(proc, "unreachable", f"127.0.0.1:{port}")


@pytest.mark.docker
def test_a_mirror_without_the_suite_is_one_clear_line(ndgen_cli, docker_client, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = ndgen_cli(
            "base", "ndgen-test-base-h3-never:bookworm", "--mirror", f"http://127.0.0.1:{server.server_port}/debian"
        )
    finally:
        server.shutdown()
    one_line_error(proc, "has no suite 'bookworm'", "HTTP 404")


def _run(docker_client, image: str, command: str) -> str:
    return docker_client.containers.run(image, ["sh", "-c", command], network_mode="none", remove=True).decode()


@pytest.mark.docker
@pytest.mark.slow
def test_debian_base_is_a_noop_when_tagged_and_rebuilt_with_force(
    ndgen_cli, docker_client, base_image, cleanup_tags, own_scratch
):
    cleanup_tags.append(DEBIAN_TAG)
    # An existing tag (here: another name for the shared base image) is left alone…
    existing = docker_client.images.get(base_image)
    existing.tag(*DEBIAN_TAG.split(":"))
    again = ndgen_cli("base", DEBIAN_TAG)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    assert docker_client.images.get(DEBIAN_TAG).id == existing.id

    # …and --force bootstraps a fresh one: one debootstrap for both behaviours.
    forced = ndgen_cli("base", DEBIAN_TAG, "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"built {DEBIAN_TAG}" in forced.stdout and "log: " in forced.stdout
    image = docker_client.images.get(DEBIAN_TAG)
    assert image.id != existing.id
    assert docker_client.images.get(base_image).id == existing.id  # other tags untouched
    config = image.attrs["Config"]
    assert config["Env"] == [f"PATH={base.OFFICIAL_PATH}"]
    assert config["Cmd"] == ["bash"]
    assert image.attrs["Size"] < 200 * 1024 * 1024
    facts = _run(
        docker_client,
        DEBIAN_TAG,
        ". /etc/os-release; echo $VERSION_CODENAME; /usr/sbin/policy-rc.d; echo rc=$?; "
        "ls /var/lib/apt/lists | wc -l; dpkg-query -W | wc -l; dpkg-query -W systemd 2>/dev/null | wc -l",
    )
    codename, rc, lists, packages, systemd = facts.strip().splitlines()
    assert codename == "bookworm"
    assert rc == "rc=101"  # no daemons start during image builds
    assert lists.strip() == "0"
    assert int(packages) < 120 and systemd.strip() == "0"  # minbase: essentials + apt (88 on bookworm)
    assert list(own_scratch.iterdir()) == [], "scratch rootfs left behind"


def _ubuntu_keyring(tmp_path: Path, mirror: str, suite: str) -> Path:
    """The ubuntu-keyring package from the Ubuntu archive itself (Debian 12 does not ship it)."""
    with urllib.request.urlopen(f"{mirror}/dists/{suite}/main/binary-amd64/Packages.xz", timeout=60) as resp:
        index = lzma.decompress(resp.read()).decode()
    stanza = next(s for s in index.split("\n\n") if s.startswith("Package: ubuntu-keyring\n"))
    filename = next(line.split(": ", 1)[1] for line in stanza.splitlines() if line.startswith("Filename: "))
    deb = tmp_path / "ubuntu-keyring.deb"
    with urllib.request.urlopen(f"{mirror}/{filename}", timeout=60) as resp:
        deb.write_bytes(resp.read())
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "x")], check=True)
    return tmp_path / "x" / "usr/share/keyrings/ubuntu-archive-keyring.gpg"


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.network(UBUNTU_ARCHIVE)  # the keyring and the bootstrap come from Ubuntu's archive
def test_ubuntu_base_from_an_ubuntu_mirror(ndgen_cli, docker_client, cleanup_tags, tmp_path, own_scratch):
    cleanup_tags.append(UBUNTU_TAG)
    mirror = base.DEFAULT_MIRRORS["ubuntu"]
    keyring = base.UBUNTU_KEYRING if base.UBUNTU_KEYRING.is_file() else _ubuntu_keyring(tmp_path, mirror, "noble")
    proc = ndgen_cli("base", UBUNTU_TAG, "--mirror", mirror, "--keyring", str(keyring), "--force")
    assert proc.returncode == 0, proc.stderr
    config = docker_client.images.get(UBUNTU_TAG).attrs["Config"]
    assert config["Cmd"] == ["/bin/bash"] and config["Env"] == [f"PATH={base.OFFICIAL_PATH}"]
    assert config["Labels"]["org.ndgen.base.suite"] == "noble"
    assert _run(docker_client, UBUNTU_TAG, ". /etc/os-release; echo $ID $VERSION_ID").split() == ["ubuntu", "24.04"]
