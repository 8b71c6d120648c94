"""`ndgen sif IMAGE -o FILE.sif`: a SIF file from an image on the engine, without Apptainer.

The root filesystem is never exported nor extracted on the host: minify's source step mounts the
image's own overlay2 layer directories read-only (the kernel resolves whiteouts and opaque
directories; hard links, symlinks, device nodes, xattrs and security.capability come through as
they are), and mksquashfs reads that mount.  mksquashfs never follows a symlink and only stats
device nodes and FIFOs, so nothing outside the image is read through the image's names.  The
`/.singularity.d` tree is added by pseudo-file definitions, so nothing is written into the view.
mksquashfs writes the squashfs straight into the output's temp file at the partition's offset;
the SIF header, descriptors, deffile and labels objects are then written in front of it.

Determinism: with SOURCE_DATE_EPOCH set, every timestamp ndgen sets (SIF header and
descriptors, the squashfs creation time, the added files) is that value, the files keep the
image's own mtimes, mksquashfs is reproducible by default (also when parallel), and the header's
UUID is a name-based UUID (uuid5) of the SHA-256 of everything after the header and descriptors:
the same image gives the same bytes.  (apptainer writes the nil UUID in that case.)
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd.core import engine, outfile
from neurodocker_nd.deliver import sifformat, singularityd
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.minify import source

COMPRESSORS = ("gzip", "zstd", "xz", "lz4")
DEFAULT_COMPRESSOR = "zstd"
# -Xcompression-level ranges (mksquashfs -Xhelp); xz and lz4 have no level.
LEVELS = {"gzip": range(1, 10), "zstd": range(1, 23)}
# mksquashfs's own defaults, zstd 15 and gzip 9, buy little for much time.  debian:bookworm's 127 MB
# layer on this machine: zstd 15 46.5 s / 43.7 MB, zstd 8 3.8 s / 46.6 MB; gzip 9 16.9 s of CPU /
# 47.7 MB, gzip 6 (zlib's default) 5.7 s / 47.9 MB.
DEFAULT_LEVEL = {"zstd": 8, "gzip": 6}
# Bounds on the one loop over the image's files, mksquashfs's: the files' apparent sizes must add
# up to at most --max-size (a sparse file counts whole: mksquashfs reads its holes, so a hostile
# image's 100 TB of nothing would otherwise take hours), counted first over at most MAX_ENTRIES
# names; and mksquashfs is stopped after MKSQUASHFS_TIMEOUT_S whatever happens.
DEFAULT_MAX_GIB = 256
MAX_ENTRIES = 20_000_000
MKSQUASHFS_TIMEOUT_S = 3 * 3600
# The aliases `uname -m` prints, for --arch; the image's own value is a Go name already.
ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386", "armv7l": "arm"}


@attrs.frozen
class SifResult:
    path: Path
    image: str
    image_id: str
    arch: str
    size: int
    seconds: float
    method: str  # how the root filesystem was read: "overlay" | "export" (minify.source)

    def summary(self) -> str:
        return (
            f"wrote {self.path} ({self.size / 1e6:.1f} MB, {self.arch}) from {self.image} "
            f"({self.image_id[:19]}) in {self.seconds:.1f} s"
        )


def write_sif(
    image: str,
    output: Path,
    *,
    arch: str | None = None,
    compressor: str = DEFAULT_COMPRESSOR,
    level: int | None = None,
    processors: int | None = None,
    max_gib: int = DEFAULT_MAX_GIB,
) -> SifResult:
    """Write `image`'s SIF to `output`, whole or not at all."""
    started = time.monotonic()
    compression = compression_args(compressor, level)
    when = _epoch()  # bad options and environment fail before any engine work
    client = engine.connect()
    image_obj, config = source.inspect_image(client, image)
    image_arch = image_architecture(image_obj.attrs, arch)
    meta = singularityd.build(config, image_arch)
    with source.interrupts_as_exceptions(), source.open_source(client, image) as src:
        _check_size(src.pristine, image, max_gib)
        with outfile.replacing(output) as tmp:
            small = [(sifformat.DATA_DEFFILE, meta.deffile), (sifformat.DATA_LABELS, meta.labels)]
            _, start = sifformat.layout(small, 0, image_arch)
            pseudo = _pseudo_definitions(meta, src.scratch, src.pristine, when)
            _mksquashfs(src.pristine, tmp, start, pseudo, when, compression, processors)
            _prefix(tmp, small, start, image_arch, when)
            size = tmp.stat().st_size
        method = src.method
    return SifResult(output, image, config.image_id, image_arch, size, time.monotonic() - started, method)


def image_architecture(attrs_: dict[str, Any], wanted: str | None) -> str:
    """The image's architecture as a SIF knows it; `wanted` (--arch) must agree with it."""
    have = str(attrs_.get("Architecture") or "")
    if have not in sifformat.ARCH_CODES:
        raise NdgenError(f"image architecture {have or '(none)'!r} has no SIF code (pkg/sif arch.go)")
    if wanted is not None:
        want = ARCH_ALIASES.get(wanted, wanted)
        if want != have:
            raise NdgenError(f"--arch {wanted} does not match the image, which is {have}")
    return have


def compression_args(compressor: str, level: int | None) -> list[str]:
    """mksquashfs's -comp (and level) arguments; a level the compressor does not take is an error."""
    if compressor not in COMPRESSORS:
        raise NdgenError(f"unknown compressor {compressor!r}: choose one of {', '.join(COMPRESSORS)}")
    levels = LEVELS.get(compressor)
    if level is not None and levels is None:
        raise NdgenError(f"--level: the {compressor} compressor has no level (gzip and zstd do)")
    if level is not None and levels is not None and level not in levels:
        raise NdgenError(f"--level {level}: {compressor} takes {levels.start}..{levels.stop - 1}")
    level = level if level is not None else DEFAULT_LEVEL.get(compressor)
    return ["-comp", compressor] + (["-Xcompression-level", str(level)] if level is not None else [])


def _epoch() -> int:
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None:
        return int(time.time())
    if not raw.isdigit() or int(raw) >= 1 << 32:  # squashfs times are unsigned 32-bit
        raise NdgenError(f"SOURCE_DATE_EPOCH={raw!r} is not a number of seconds below 2^32")
    return int(raw)


def _pseudo_definitions(meta: singularityd.SingularityD, scratch: Path, root: Path, when: int) -> Path:
    """mksquashfs -pf lines for /.singularity.d, and the root symlinks, mount points and empty
    /etc files the image lacks.

    The files' content comes from copies in ndgen's 0700 scratch (pseudo `F` runs a command)."""
    content = scratch / "singularity.d"
    content.mkdir(mode=0o700)
    lines = [f"{d} D {when} 755 0 0" for d in meta.directories]
    empty = content / "empty"
    empty.touch(mode=0o600)
    for index, item in enumerate(meta.files):
        copy = content / str(index)
        copy.write_bytes(item.content)
        lines.append(f"{item.path} F {when} {item.mode:o} 0 0 cat {shlex.quote(str(copy))}")
    for name, target in singularityd.ROOT_SYMLINKS.items():
        if _absent(root, name, set()):
            lines.append(f"{name} S {when} 777 0 0 {target}")
    added: set[str] = set()
    for name in singularityd.ROOT_DIRECTORIES:
        if _absent(root, name, added):
            added.add(name)
            lines.append(f"{name} D {when} 755 0 0")
    for name in singularityd.ROOT_FILES:
        if _absent(root, name, added):
            lines.append(f"{name} F {when} 644 0 0 cat {shlex.quote(str(empty))}")
    pseudo = scratch / "pseudo"
    pseudo.write_text("\n".join(lines) + "\n")
    return pseudo


def _check_size(root: Path, image: str, max_gib: int) -> None:
    """The image's regular files (each hard-linked one once) add up to at most `max_gib` GiB.

    Walked by names below real directories only (no symlink followed; the tree is the image's
    read-only view), at most MAX_ENTRIES of them."""
    limit, total, entries, stack = max_gib << 30, 0, 0, [str(root)]
    seen: set[tuple[int, int]] = set()
    while stack:
        with os.scandir(stack.pop()) as listing:
            for entry in listing:
                entries += 1
                if entries > MAX_ENTRIES:
                    raise NdgenError(f"{image} holds more than {MAX_ENTRIES} files; not converted")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
                    if total > limit:
                        raise NdgenError(
                            f"{image}: its files add up to more than --max-size {max_gib} GiB "
                            f"(a sparse file counts whole: mksquashfs reads it); raise --max-size to convert it"
                        )


def _absent(root: Path, name: str, added: set[str]) -> bool:
    """`name` (a fixed path at most two deep) is not in the image, and its parent is a real
    directory there or one added here.  The parent is lstat'ed first, so no symlink of the image
    is followed (an image's `var -> /` gets no `var/tmp`, and the host's /tmp is never looked at)."""
    parent, _, _ = name.rpartition("/")
    if parent and parent not in added:
        try:
            if not stat.S_ISDIR(os.lstat(root / parent).st_mode):
                return False
        except FileNotFoundError:
            return False
    return not os.path.lexists(root / name)


def _mksquashfs(
    root: Path, target: Path, offset: int, pseudo: Path, when: int, compression: list[str], processors: int | None
) -> None:
    argv = ["mksquashfs", str(root), str(target), "-noappend", "-offset", str(offset), *compression]
    argv += ["-mkfs-time", str(when), "-pf", str(pseudo), "-xattrs"]
    argv += ["-no-progress", "-quiet", "-no-recovery"]
    if processors:
        argv += ["-processors", str(processors)]
    if os.path.lexists(root / ".singularity.d"):
        argv += ["-e", ".singularity.d"]  # the image's own is replaced (-e must come last)
    # squashfs-tools 4.5 sets every file's time to $SOURCE_DATE_EPOCH: the image's mtimes are kept.
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=MKSQUASHFS_TIMEOUT_S)
    except FileNotFoundError:
        raise NdgenError("mksquashfs not found: install squashfs-tools (apt-get install squashfs-tools)") from None
    except subprocess.TimeoutExpired:
        raise NdgenError(f"mksquashfs ran longer than {MKSQUASHFS_TIMEOUT_S} s; stopped") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
        raise NdgenError(f"mksquashfs failed: {last}")


def _prefix(path: Path, small: list[tuple[int, bytes]], start: int, arch: str, when: int) -> None:
    """Write header, descriptors and the small objects in front of the squashfs at `start`."""
    size = path.stat().st_size
    objects, placed = sifformat.layout(small, size - start, arch)
    assert placed == start  # the small objects did not change since mksquashfs was placed
    data = b"".join(blob for _, blob in small)
    digest = hashlib.sha256(data)
    with open(path, "r+b") as handle:
        handle.seek(start)
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
        ident = uuid.uuid5(uuid.NAMESPACE_URL, f"sha256:{digest.hexdigest()}").bytes
        head = sifformat.header_and_descriptors(objects, arch, ident, when)
        handle.seek(0)
        handle.write(head + data)
