"""`ndgen sif` on the real engine: a SIF read back by a parser written here from apptainer/sif's
pkg/sif (sif.go, descriptor.go, arch.go; not ndgen's constants), its partition unpacked with
`unsquashfs`, imported into Docker and run; the outputs must match the image's own `docker run`."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from support import RECIPE_HEAD, container_output, one_error_line, remove_images, run_ndgen

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = "i21s-test-sif"
EPOCH = "1700000000"
# A file capability written by hand: VFS_CAP_REVISION_2 | effective, cap_net_raw (bit 13).
CAP = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)
DOCKERFILE = """\
FROM {base}
ADD payload.tar /
RUN mkdir -p /opt/tool/bin /opt/old && echo gone > /opt/gone.txt && echo old > /opt/old/old.txt \\
 && mkdir -p /.singularity.d && echo planted > /.singularity.d/planted
RUN rm /opt/gone.txt && rm -rf /opt/old && mkdir /opt/old && echo new > /opt/old/new.txt \\
 && printf '#!/bin/sh\\necho "toolcmd greeting=[$TOOL_GREETING] args=[$*] argc=$#"\\n' > /opt/tool/bin/toolcmd \\
 && chmod 755 /opt/tool/bin/toolcmd \\
 && ln /opt/tool/bin/toolcmd /opt/tool/bin/toolcmd-hard && ln -s toolcmd /opt/tool/bin/toolcmd-sym \\
 && ln -s /etc/shadow /opt/tool/outside && ln -s ../../../../../../root /opt/tool/up \\
 && mknod /opt/tool/null c 1 3 && cp /bin/true /opt/tool/suid && chmod 4755 /opt/tool/suid
ENV PATH=/opt/tool/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    TOOL_GREETING="hello $ `world` \\"q\\"" DEPLOY_PATH=/opt/tool/bin DEPLOY_BINS=toolcmd:toolcmd-sym \\
    DEPLOY_ENV_TOOLDATA=BASEPATH/opt/tool/data
LABEL org.example.kept=yes
ENTRYPOINT ["toolcmd", "--from-entrypoint"]
CMD ["default arg"]
"""


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes, **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def _context(base: str) -> io.BytesIO:
    """A build context whose payload.tar carries the capability as a PAX xattr: `ADD` applies it
    (no setcap or python in the image needed)."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w", format=tarfile.PAX_FORMAT) as tar:
        headers = {"SCHILY.xattr.security.capability": CAP.decode("latin-1")}
        _tar_add(tar, "opt/capped", b"#!/bin/sh\necho capped\n", mode=0o755, pax_headers=headers)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        _tar_add(tar, "Dockerfile", DOCKERFILE.format(base=base).encode())
        _tar_add(tar, "payload.tar", payload.getvalue())
    context.seek(0)
    return context


@pytest.fixture(scope="module")
def sif_image(docker_client, base_image):
    tag = f"{PREFIX}-img:{uuid.uuid4().hex[:8]}"
    docker_client.images.build(fileobj=_context(base_image), custom_context=True, tag=tag, network_mode="none")
    yield tag
    remove_images(docker_client, [tag])


@pytest.fixture(scope="module")
def sif_file(sif_image, tmp_path_factory):
    out = tmp_path_factory.mktemp("sif") / "img.sif"
    proc = run_ndgen("sif", sif_image, "-o", str(out), env={"SOURCE_DATE_EPOCH": EPOCH})
    assert proc.returncode == 0, proc.stderr
    return out


# ---- an independent reader of the SIF layout (pkg/sif: Go's encoding/binary, little-endian, packed)


def parse_sif(path: Path) -> dict:
    data = path.read_bytes()
    (launch, magic, version, arch, ident, created, modified, free, total, doff, dsize, data_off, data_size) = (
        struct.unpack_from("<32s10s3s3s16sqqqqqqqq", data, 0)
    )
    descriptors = []
    entry = struct.calcsize("<i?IIIqqqqqqq128s384s")
    assert dsize == total * entry
    for index in range(total):
        fields = struct.unpack_from("<i?IIIqqqqqqq128s384s", data, doff + index * entry)
        if not fields[1]:  # Used
            continue
        dtype, _, oid, group, link, offset, size, padded, ctime, mtime, _, _, name, extra = fields
        descriptors.append(
            {
                "type": dtype,
                "id": oid,
                "group": group,
                "link": link,
                "offset": offset,
                "size": size,
                "padded": padded,
                "ctime": ctime,
                "mtime": mtime,
                "name": name.rstrip(b"\0"),
                "extra": extra,
                "data": data[offset : offset + size],
            }
        )
    return {
        "launch": launch.rstrip(b"\0"),
        "magic": magic,
        "version": version,
        "arch": arch,
        "uuid": ident,
        "created": created,
        "modified": modified,
        "free": free,
        "total": total,
        "data_offset": data_off,
        "data_size": data_size,
        "descriptors": descriptors,
        "file_size": len(data),
    }


def test_sif_layout_follows_the_spec(sif_file, sif_image, docker_client):
    sif = parse_sif(sif_file)
    assert sif["magic"] == b"SIF_MAGIC\0" and sif["version"] == b"01\0"
    assert sif["launch"] == b"#!/usr/bin/env run-singularity\n"
    go_arch = docker_client.images.get(sif_image).attrs["Architecture"]
    code = {"amd64": b"02\0", "arm64": b"04\0"}[go_arch]  # arch.go: hdrArchAMD64, hdrArchARM64
    assert sif["arch"] == code
    assert sif["created"] == sif["modified"] == int(EPOCH)
    types = [d["type"] for d in sif["descriptors"]]
    assert types == [0x4001, 0x4003, 0x4004]  # Deffile, Labels, Partition
    assert [d["id"] for d in sif["descriptors"]] == [1, 2, 3]
    assert sif["free"] == sif["total"] - 3
    deffile, labels, part = sif["descriptors"]
    assert deffile["data"] == f"bootstrap: docker-daemon\nfrom: {sif_image}\n".encode()
    assert json.loads(labels["data"])["org.example.kept"] == "yes"
    fstype, parttype, arch = struct.unpack_from("<ii3s", part["extra"])
    assert (fstype, parttype, arch) == (1, 2, code)  # FsSquash, PartPrimSys
    assert part["offset"] % 4096 == 0 and part["data"][:4] == b"hsqs"  # squashfs superblock magic
    assert part["offset"] + part["size"] == sif["file_size"]
    assert sif["data_offset"] + sif["data_size"] == sif["file_size"]
    assert all(d["ctime"] == int(EPOCH) and d["group"] == 0xF0000001 for d in sif["descriptors"])


@pytest.fixture(scope="module")
def unpacked(sif_file, tmp_path_factory):
    part = parse_sif(sif_file)["descriptors"][2]
    root = tmp_path_factory.mktemp("root") / "rootfs"
    proc = subprocess.run(
        ["unsquashfs", "-no-progress", "-o", str(part["offset"]), "-d", str(root), str(sif_file)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return root


def test_layers_are_flattened_with_links_xattrs_and_devices(unpacked):
    opt = unpacked / "opt"
    assert not (opt / "gone.txt").exists()  # whiteout
    assert sorted(os.listdir(opt / "old")) == ["new.txt"]  # opaque directory
    tool = opt / "tool" / "bin"
    assert os.stat(tool / "toolcmd").st_ino == os.stat(tool / "toolcmd-hard").st_ino  # hard link kept
    assert os.readlink(tool / "toolcmd-sym") == "toolcmd"
    assert os.readlink(opt / "tool" / "outside") == "/etc/shadow"  # stored, never followed on the host
    assert os.getxattr(opt / "capped", "security.capability") == CAP
    st = os.lstat(opt / "tool" / "null")
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert os.stat(opt / "tool" / "suid").st_mode & 0o7777 == 0o4755  # the view is nosuid, the SIF keeps it
    # the image's planted /.singularity.d is replaced by ndgen's
    assert not (unpacked / ".singularity.d" / "planted").exists()
    assert os.readlink(unpacked / "singularity") == ".singularity.d/runscript"
    env = (unpacked / ".singularity.d" / "env" / "10-docker2singularity.sh").read_text()
    assert 'export DEPLOY_PATH="${DEPLOY_PATH:-"/opt/tool/bin"}"' in env
    assert 'export DEPLOY_BINS="${DEPLOY_BINS:-"toolcmd:toolcmd-sym"}"' in env
    assert 'export DEPLOY_ENV_TOOLDATA="${DEPLOY_ENV_TOOLDATA:-"BASEPATH/opt/tool/data"}"' in env


@pytest.fixture(scope="module")
def imported(unpacked, docker_client):
    """The unpacked root as an image without any config: only /.singularity.d gives it its ENV."""
    tag = f"{PREFIX}-imported:{uuid.uuid4().hex[:8]}"
    pipe = f"set -o pipefail; tar -C {unpacked} --numeric-owner -cf - . | docker import - {tag}"
    proc = subprocess.run(["bash", "-c", pipe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    yield tag
    remove_images(docker_client, [tag])


@pytest.mark.parametrize(
    "argv",
    [
        ["toolcmd", "a b", "c"],
        ["toolcmd-sym"],
        ["sh", "-c", 'echo "$DEPLOY_PATH|$DEPLOY_BINS|$DEPLOY_ENV_TOOLDATA|$PATH"'],
    ],
    ids=["command", "symlink", "env"],
)
def test_commands_after_sourcing_env_match_the_image(argv, sif_image, imported, docker_client):
    code, want, _ = container_output(docker_client, sif_image, argv, entrypoint=[])
    wrapped = ["sh", "-c", 'for f in /.singularity.d/env/*.sh; do . "$f"; done; exec "$@"', "sh", *argv]
    got_code, got, err = container_output(docker_client, imported, wrapped, entrypoint=[])
    assert (got_code, got) == (code, want), err
    assert "hello $ `world`" in container_output(docker_client, sif_image, ["toolcmd"], entrypoint=[])[1]


@pytest.mark.parametrize("args", [[], ["one arg", "two"]], ids=["cmd-default", "args"])
def test_runscript_runs_entrypoint_and_cmd(args, sif_image, imported, docker_client):
    _, want, _ = container_output(docker_client, sif_image, args)
    code, got, err = container_output(docker_client, imported, ["/.singularity.d/actions/run", *args])
    assert (code, got) == (0, want), err
    assert "--from-entrypoint" in got


def test_same_image_and_epoch_give_the_same_bytes(sif_file, sif_image, tmp_path):
    again = tmp_path / "again.sif"
    proc = run_ndgen("sif", sif_image, "-o", str(again), env={"SOURCE_DATE_EPOCH": EPOCH})
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == sif_file.read_bytes()


def test_bad_inputs_one_line_nothing_written(sif_image, tmp_path):
    out = str(tmp_path / "x.sif")
    cases = [
        ([f"{PREFIX}-no-such-image:1", "-o", out], {}, "is not on this engine (ndgen never pulls)"),
        ([sif_image, "-o", out, "--arch", "s390x"], {}, "does not match the image"),
        ([sif_image, "-o", out, "--comp", "xz", "--level", "3"], {}, "has no level"),
        ([sif_image, "-o", str(tmp_path / "missing" / "x.sif")], {}, "does not exist"),
        ([sif_image, "-o", "/proc/x.sif"], {}, "cannot write /proc/x.sif"),  # no temp file can go there
        ([sif_image, "-o", out], {"SOURCE_DATE_EPOCH": "yesterday"}, "SOURCE_DATE_EPOCH='yesterday'"),
    ]
    for argv, env, needle in cases:
        one_error_line(run_ndgen("sif", *argv, env=env), needle)
    assert os.listdir(tmp_path) == []


def test_build_format_sif_writes_the_built_image(tmp_path, docker_client, base_image):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    directives = "    - run:\n        - echo built-by-ndgen > /etc/ndgen-sif-marker\n"
    (recipe / "build.yaml").write_text(RECIPE_HEAD + directives)
    name = f"{PREFIX}-build-{uuid.uuid4().hex[:8]}"
    try:
        proc = run_ndgen("build", str(recipe), "-t", f"{name}:1", "--format", "sif", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        sif = tmp_path / f"{name}_1.sif"  # apptainer pull's NAME_TAG.sif
        deffile, _, part = parse_sif(sif)["descriptors"]
        assert deffile["data"] == f"bootstrap: docker-daemon\nfrom: {name}:1\n".encode()
        cat = ["unsquashfs", "-o", str(part["offset"]), "-cat", str(sif), "etc/ndgen-sif-marker"]
        assert subprocess.run(cat, capture_output=True, text=True).stdout == "built-by-ndgen\n"
    finally:
        remove_images(docker_client, [f"{name}:1"])
    # -o names the SIF file: without --format sif it would be ignored, so it is refused
    proc = run_ndgen("build", str(recipe), "-t", f"{name}:2", "-o", str(tmp_path / "x.sif"))
    one_error_line(proc, "needs --format sif")


def test_an_image_without_mount_points_gets_apptainers(docker_client, tmp_path):
    """A FROM-scratch (or minified) image has no /proc, /dev, /etc/hosts … for the runtime to bind
    onto: the SIF gets apptainer's makeDirs/makeFiles set, where the image has no such name. Its
    own /etc/hosts stays, and its `var -> /` symlink is neither followed nor given a var/tmp."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        _tar_add(tar, "hello", b"#!/bin/sh\necho hello\n", mode=0o755)
        _tar_add(tar, "etc/hosts", b"127.0.0.1 kept\n", mode=0o644)
        _tar_add(tar, "var", b"", type=tarfile.SYMTYPE, linkname="/")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        _tar_add(tar, "Dockerfile", b"FROM scratch\nADD payload.tar /\n")
        _tar_add(tar, "payload.tar", payload.getvalue())
    context.seek(0)
    tag = f"{PREFIX}-scratch:{uuid.uuid4().hex[:8]}"
    docker_client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="none")
    try:
        sif = tmp_path / "scratch.sif"
        proc = run_ndgen("sif", tag, "-o", str(sif), env={"SOURCE_DATE_EPOCH": EPOCH})
        assert proc.returncode == 0, proc.stderr
    finally:
        remove_images(docker_client, [tag])
    part = parse_sif(sif)["descriptors"][2]
    root = tmp_path / "root"
    unsquash = ["unsquashfs", "-no-progress", "-o", str(part["offset"]), "-d", str(root), str(sif)]
    assert subprocess.run(unsquash, capture_output=True, text=True).returncode == 0
    for name in ("dev", "proc", "sys", "tmp", "root", "home", "etc"):
        st = os.lstat(root / name)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755, name
    assert (root / "etc" / "hosts").read_bytes() == b"127.0.0.1 kept\n"
    resolv = os.lstat(root / "etc" / "resolv.conf")
    assert stat.S_ISREG(resolv.st_mode) and resolv.st_size == 0 and stat.S_IMODE(resolv.st_mode) == 0o644
    assert os.readlink(root / "var") == "/"
    assert os.access(root / ".singularity.d" / "actions" / "start", os.X_OK)
    assert os.access(root / ".singularity.d" / "startscript", os.X_OK)


def test_an_image_over_max_size_is_refused_before_mksquashfs(docker_client, base_image, tmp_path):
    """A sparse file counts whole (mksquashfs reads its holes): a hostile image's 100 TB of nothing
    would take hours. 1.1 GB of holes against --max-size 1: one line, nothing written, at once."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        _tar_add(tar, "Dockerfile", f"FROM {base_image}\nRUN truncate -s 1100M /holes\n".encode())
    context.seek(0)
    tag = f"{PREFIX}-sparse:{uuid.uuid4().hex[:8]}"
    docker_client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="none")
    try:
        out = tmp_path / "x.sif"
        one_error_line(run_ndgen("sif", tag, "-o", str(out), "--max-size", "1"), "more than --max-size 1 GiB")
        assert os.listdir(tmp_path) == []
        # Control: with room for it the same image converts (its holes squash to little).
        proc = run_ndgen("sif", tag, "-o", str(out), "--max-size", "2")
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size < 200 << 20
    finally:
        remove_images(docker_client, [tag])
