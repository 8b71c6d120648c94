"""Write step: write the keep-set as a one-layer image (and/or a SquashFS for Singularity).

The layer is a tar stream built with :mod:`tarfile` straight from the pristine
rootfs and piped into ``docker import`` through the Docker SDK — nothing is
staged on disk.  PAX format keeps what a layer needs: hard links (same inode →
LNKTYPE), setuid/setgid/sticky bits, owners, sub-second mtimes, and extended
attributes such as file capabilities (``SCHILY.xattr.*`` records, which the
engine applies when unpacking).

The SquashFS is the same kind of stream piped into ``sqfstar`` (squashfs-tools
4.5+), with the Singularity metadata appended as tar entries made here: the
image is never unpacked on the host, so no path the image shaped (a symlinked
``/.singularity.d``, ``/etc``) decides where the host writes, and its device
nodes, setuid files and capabilities exist only inside the SquashFS.

Sparse and zero-filled files (measured on Docker 20.10, overlay2): the engine stores
every layer file densely — a build's commit and an import alike, a PAX sparse entry
included — so a "sparse" file in an image already costs its full size there, and a
minified copy costs it again.  So: the SquashFS stream carries files with real holes as
GNU PAX 1.0 sparse entries (only data regions are read) and sqfstar stores zero blocks
sparse, with no host copy; the Docker layer stays dense (the engine's tar-split record
re-reads the unpacked dense file to rebuild the layer for `docker save`/push, which a
sparse entry's bytes would not match), and :class:`ZeroBudget` refuses it, naming the
file, once the kept files' all-zero 1 MiB blocks pass :data:`SPARSE_HOLE_LIMIT`.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import io
import json
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs

from neurodocker_nd import __version__
from neurodocker_nd.build.docker_build import HASH_LABEL
from neurodocker_nd.core import engine, outfile, paths
from neurodocker_nd.errors import EngineError, NdgenError
from neurodocker_nd.minify import imagefs
from neurodocker_nd.minify.keep import KeepSet
from neurodocker_nd.minify.model import ImageConfig

LABEL_PREFIX = "org.ndgen.minify"
# xattrs worth carrying: capabilities and user data; overlay/selinux internals are not ours.
_XATTR_PREFIXES = ("security.capability", "user.")
_CHUNK = 1 << 20
# All-zero 1 MiB blocks (holes read as zeros) the engine may be asked to store, summed over
# the kept files: alignment padding in binaries stays far below (runs under 1 MiB rarely fill
# an aligned block); a 1 TiB sparse file would otherwise fill the engine's disk.
SPARSE_HOLE_LIMIT = 512 << 20
# A longer data map is read whole instead (bounded by the file's size like any dense file).
_SPARSE_MAX_EXTENTS = 1 << 16


@attrs.frozen
class Written:
    """What the write step produced."""

    tag: str | None
    image_id: str | None
    size: int  # bytes per the engine (docker) or of the SquashFS file
    entries: int
    file_bytes: int  # sum of kept regular files (hard links counted once)
    squashfs: Path | None = None


def _tarinfo(tar: tarfile.TarFile, root: str, path: str) -> tarfile.TarInfo | None:
    info = tar.gettarinfo(root + path, arcname=path.lstrip("/"))
    if info is None:  # a socket: tar has no type for it, and a container recreates its own
        return None
    try:
        names = os.listxattr(root + path, follow_symlinks=False)
    except OSError:
        names = []
    xattrs = {
        # tarfile writes non-UTF-8 PAX values as-is (hdrcharset=BINARY) via surrogateescape.
        f"SCHILY.xattr.{name}": os.getxattr(root + path, name, follow_symlinks=False).decode("utf-8", "surrogateescape")
        for name in names
        if name.startswith(_XATTR_PREFIXES)
    }
    if xattrs:
        info.pax_headers = {**info.pax_headers, **xattrs}
    return info


def _tar_stream(out: IO[bytes]) -> tarfile.TarFile:
    # copybufsize: files are read in 1 MiB pieces (ZeroBudget counts whole zero MiBs).
    # (typeshed's tarfile.open overloads lack copybufsize, which open passes on to TarFile)
    return tarfile.open(  # type: ignore[call-overload]
        fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_CHUNK, copybufsize=_CHUNK
    )


def _open_regular(path: str, info: tarfile.TarInfo) -> tuple[int, os.stat_result]:
    """The kept file `path`, opened for reading: never through a final symlink, and only
    while it is still the regular file of `info` (a FIFO swapped in would block the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != info.size:
        os.close(fd)
        raise NdgenError(f"{path} changed while the image was written (no longer the regular file it was)")
    return fd, st


def _data_extents(fd: int, size: int) -> list[tuple[int, int]] | None:
    """(offset, length) of each data region (SEEK_DATA/SEEK_HOLE); None when the filesystem
    cannot tell or the map would be very long: the file is then written whole."""
    extents: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here to the end
                break
            return None
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end <= start or len(extents) == _SPARSE_MAX_EXTENTS:
            return None
        extents.append((start, end - start))
        offset = end
    return extents


class _SparseBody:
    """The payload of a GNU PAX 1.0 sparse entry: the map, then each data region read in place."""

    def __init__(self, fd: int, extents: list[tuple[int, int]], size: int) -> None:
        if not extents or sum(extents[-1]) != size:
            extents = [*extents, (size, 0)]  # the map must reach the end (sqfstar, GNU tar)
        text = f"{len(extents)}\n" + "".join(f"{offset}\n{length}\n" for offset, length in extents)
        self._map = text.encode() + b"\0" * (-len(text) % tarfile.BLOCKSIZE)
        self._fd = fd
        self._extents = extents
        self._index = 0  # the extent being read …
        self._done = 0  # … and how much of it was
        self.size = len(self._map) + sum(length for _, length in extents)

    def read(self, n: int) -> bytes:
        # tarfile's copyfileobj expects exactly n bytes from every read but the last.
        out = bytearray(self._map[:n])
        self._map = self._map[len(out) :]
        while len(out) < n and self._index < len(self._extents):
            offset, length = self._extents[self._index]
            if self._done == length:
                self._index, self._done = self._index + 1, 0
                continue
            chunk = os.pread(self._fd, min(n - len(out), length - self._done), offset + self._done)
            if not chunk:
                raise NdgenError("a kept sparse file shrank while the image was written")
            out += chunk
            self._done += len(chunk)
        return bytes(out)


def _add_file(
    tar: tarfile.TarFile, info: tarfile.TarInfo, root: str, path: str, sparse: bool, zeros: ZeroBudget | None
) -> None:
    fd, st = _open_regular(root + path, info)
    try:
        extents = _data_extents(fd, info.size) if sparse and st.st_blocks * 512 < st.st_size else None
        if extents is None or sum(n for _, n in extents) == info.size:
            with os.fdopen(os.dup(fd), "rb") as fh:
                tar.addfile(info, zeros.reader(fh, path) if zeros else fh)  # type: ignore[arg-type]
            return
        body = _SparseBody(fd, extents, info.size)
        # GNU tar's layout: the entry is named …/GNUSparseFile.0/NAME; readers take the real
        # name and size from these records.
        sparse_info = copy.copy(info)  # TarInfo.replace cannot set size or PAX records
        sparse_info.name = posixpath.join(
            posixpath.dirname(info.name), "GNUSparseFile.0", posixpath.basename(info.name)
        )
        sparse_info.size = body.size
        sparse_info.pax_headers = {
            **info.pax_headers,
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": info.name,
            "GNU.sparse.realsize": str(info.size),
        }
        tar.addfile(sparse_info, body)  # type: ignore[arg-type]  # read() is all tarfile needs
    finally:
        os.close(fd)


def _add_kept(
    tar: tarfile.TarFile,
    root: Path,
    keep: KeepSet,
    *,
    sparse: bool = False,
    skip: Callable[[str], bool] | None = None,
    zeros: ZeroBudget | None = None,
) -> Iterator[tuple[str, tarfile.TarInfo]]:
    """Add the kept entries of `root` (those `skip` does not name) to `tar`, sorted: parents
    precede children, so the engine creates directories with their own modes.  Yields
    (in-image path, entry)."""
    real_dirs: dict[str, bool] = {}
    for path in sorted(keep.paths):
        if skip is not None and skip(path):
            continue
        if not _under_real_dirs(str(root), path, real_dirs):
            continue  # a parent is an image symlink: the host would follow it (out of the image)
        try:
            info = _tarinfo(tar, str(root), path)
        except FileNotFoundError:
            continue
        if info is None:
            continue
        if info.isreg():
            _add_file(tar, info, str(root), path, sparse, zeros)
        else:
            tar.addfile(info)
        yield path, info


def _under_real_dirs(root: str, path: str, known: dict[str, bool]) -> bool:
    """Whether every directory above in-image `path` is a real directory of the image.

    The host reads a kept entry as `root + path`, which follows any symlink on the way; an
    image link `/a -> /etc` with `/a/passwd` kept would read the *host's* /etc/passwd. The
    link itself is kept as a link; what lies behind it is kept under its real path.
    """
    parent = posixpath.dirname(path)
    if parent not in known:
        known[parent] = imagefs.resolve_in_root(root, parent) == parent
    return known[parent]


def write_tar(
    root: Path, keep: KeepSet, out: IO[bytes], *, sparse: bool = True, zeros: ZeroBudget | None = None
) -> tuple[int, int]:
    """Stream the kept entries of `root` as a PAX tar into `out`; returns (entries, file bytes).

    `sparse`: files with holes as GNU PAX 1.0 sparse entries, which tarfile unpacks sparse
    (the host copy a repair re-traces); the Docker layer is written dense, its zero blocks
    counted by `zeros` (module docstring).
    """
    entries = file_bytes = 0
    with _tar_stream(out) as tar:
        for _, info in _add_kept(tar, root, keep, sparse=sparse, zeros=zeros):
            entries += 1
            file_bytes += info.size if info.isreg() else 0
    return entries, file_bytes


class ZeroBudget:
    """Counts the all-zero 1 MiB reads of the kept files (holes read as zeros) and refuses
    past `limit`: the Docker engine stores every one of them in full."""

    def __init__(self, image: str, limit: int = SPARSE_HOLE_LIMIT) -> None:
        self.image = image
        self.limit = limit
        self.total = 0
        self._zeros = bytes(_CHUNK)

    def reader(self, fh: IO[bytes], path: str) -> _Counted:
        return _Counted(fh, path, self)

    def add(self, path: str, data: bytes) -> None:
        if len(data) == _CHUNK and data == self._zeros:
            self.total += _CHUNK
            if self.total > self.limit:
                raise NdgenError(
                    f"{path} in {self.image} is sparse or zero-filled: the Docker engine would store the kept "
                    f"files' zero blocks in full (over {_size(self.limit)}); a SquashFS keeps them sparse: "
                    "--format singularity --no-verify"
                )


class _Counted:
    def __init__(self, fh: IO[bytes], path: str, budget: ZeroBudget) -> None:
        self._fh, self._path, self._budget = fh, path, budget

    def read(self, n: int) -> bytes:
        data = self._fh.read(n)
        self._budget.add(self._path, data)
        return data


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def unpack_tar(archive: Path, target: Path) -> None:
    """Unpack a tar written by :func:`write_tar` into `target` for a host-side re-trace.

    The host copy holds nothing that grants privilege, whoever can reach it: no device
    nodes (never created on the host; the keep-set already has them, so a repair never
    asks for them), no setuid/setgid bits on files and no file capabilities (a re-trace
    runs under ptrace, where neither takes effect anyway).  Every name and hard-link target
    must stay inside `target` after the symlinks unpacked before it.  `user.*` xattrs are set
    after everything is unpacked (tarfile restores owners, modes and times, not xattrs).
    """
    unpacked: list[tarfile.TarInfo] = []

    def host_copy(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        if member.ischr() or member.isblk():
            return None
        if member.islnk():
            _inside(member, os.path.join(dest, member.linkname), dest)
        checked = tarfile.tar_filter(member, dest)  # names: no absolute path, no escape via a link
        mode = member.mode if member.isdir() else member.mode & ~(stat.S_ISUID | stat.S_ISGID)
        checked = checked.replace(mode=mode, deep=False)  # tar_filter's go-w would break /tmp
        unpacked.append(checked)
        return checked

    with tarfile.open(archive) as tar:
        try:
            tar.extractall(target, numeric_owner=True, filter=host_copy)
        except tarfile.FilterError as exc:
            raise NdgenError(f"refusing to unpack the minified tree into {target}: {exc}") from exc
    for member in unpacked:
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr.user."):
                os.setxattr(
                    target / member.name,
                    key[len("SCHILY.xattr.") :],
                    value.encode("utf-8", "surrogateescape"),
                    follow_symlinks=False,
                )


def _inside(member: tarfile.TarInfo, path: str, dest: str) -> None:
    real, base = os.path.realpath(path), os.path.realpath(dest)
    if os.path.commonpath([real, base]) != base:
        raise tarfile.OutsideDestinationError(member, real)


class _TarPipe:
    """Runs write_tar in a thread feeding an OS pipe; iterating yields the stream's chunks."""

    def __init__(self, root: Path, keep: KeepSet, zeros: ZeroBudget) -> None:
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._writer = os.fdopen(write_fd, "wb", buffering=_CHUNK)
        self.error: BaseException | None = None
        self.counts = (0, 0)
        self._thread = threading.Thread(target=self._run, args=(root, keep, zeros), daemon=True)
        self._thread.start()

    def _run(self, root: Path, keep: KeepSet, zeros: ZeroBudget) -> None:
        try:
            self.counts = write_tar(root, keep, self._writer, sparse=False, zeros=zeros)  # the engine's layer: dense
        except BaseException as exc:  # re-raised in the caller's thread by finish()
            self.error = exc
        finally:
            try:
                self._writer.close()
            except OSError as exc:  # broken pipe: the engine stopped reading; it says why
                self.error = self.error or exc

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._reader.read(_CHUNK):
            yield chunk

    def finish(self) -> tuple[int, int]:
        self._reader.close()
        self._thread.join()
        if self.error is not None and not isinstance(self.error, BrokenPipeError):
            raise self.error
        return self.counts


def image_config(config: ImageConfig, commands: list[str], diff_ids: list[str]) -> dict[str, Any]:
    """The new image's config: the source's whole (every field, values as they are) on new layers.

    Written as an image config and loaded, not as `docker import --change` instructions:
    those cannot express SHELL (and, on 20.10, HEALTHCHECK or STOPSIGNAL) and re-parse
    values as Dockerfile text.
    """
    base: dict[str, Any] = (
        json.loads(config.image_json) if config.image_json else {"architecture": "amd64", "os": "linux"}
    )
    inner = dict(base.get("config") or {})
    if not config.image_json:  # a config made by hand (tests): its few fields
        inner.update(
            Env=list(config.env),
            Entrypoint=list(config.entrypoint) if config.entrypoint else None,
            Cmd=list(config.cmd) if config.cmd else None,
            WorkingDir=config.workdir,
            User=config.user,
            ExposedPorts={port: {} for port in config.exposed_ports} or None,
            Volumes={volume: {} for volume in config.volumes} or None,
            Labels=dict(config.labels),
        )
    # Not the build's recipe-hash: `ndgen build` reuses an image carrying it as that build,
    # and would tag this minified one as a fresh build of the recipe.
    labels = {k: v for k, v in (inner.get("Labels") or {}).items() if k != HASH_LABEL}
    inner["Labels"] = {**labels, **minified_labels(config, commands)}
    inner.pop("Image", None)  # the parent image of a build step: there is none
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        **base,
        "created": created,
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": f"ndgen minify {config.name}", "comment": "minified"}],
    }


def minified_labels(config: ImageConfig, commands: list[str]) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}.tool": f"ndgen {__version__}",
        f"{LABEL_PREFIX}.source-image": config.name,
        f"{LABEL_PREFIX}.source-digest": config.digest,
        f"{LABEL_PREFIX}.commands": json.dumps(commands),
    }


def write_docker(client: Any, root: Path, keep: KeepSet, config: ImageConfig, tag: str, commands: list[str]) -> Written:
    """The keep-set as a one-layer image tagged `tag`, with the source's whole config.

    The layer is streamed into `docker import` (under a temporary name); the image is
    then `docker load`ed from just its config and manifest — the engine reuses the
    imported layer it already has — and the import's own image is removed, as is
    the image `tag` named before (a repair round's): no dangling images are left.
    """
    import docker.errors

    repository, version = engine.split_ref(tag)
    layer_ref = f"{repository}:{version}-layer"
    previous = engine.find_image(client, tag)
    pipe = _TarPipe(root, keep, ZeroBudget(config.name))
    try:
        response = client.api.import_image_from_stream(pipe, repository=repository, tag=f"{version}-layer")
    except docker.errors.APIError as exc:
        pipe.finish()  # the stream's own error (a refusal) explains the engine's first
        raise EngineError(f"docker import of {tag} failed: {exc.explanation or exc}") from exc
    except BaseException:
        pipe.finish()
        raise
    try:
        # A failed stream (finish raises) may still have been imported, truncated: untag it too.
        entries, file_bytes = pipe.finish()
        status = _last_status(response)
        if "error" in status:
            raise EngineError(f"docker import of {tag} failed: {status['error']}")
        layers = client.images.get(layer_ref).attrs["RootFS"]["Layers"]
        _load(client, image_config(config, commands, layers), tag)
    finally:
        remove_tag(client, layer_ref)
    image = client.images.get(tag)
    if previous is not None and previous.id != image.id:
        remove_tag(client, previous.id)
    return Written(
        tag=tag, image_id=image.id, size=int(image.attrs.get("Size") or 0), entries=entries, file_bytes=file_bytes
    )


def _load(client: Any, image_json: dict[str, Any], tag: str) -> None:
    """`docker load` an image whose layers the engine already has: config + manifest only."""
    import docker.errors

    config_bytes = json.dumps(image_json, ensure_ascii=False).encode()  # UTF-8 stays UTF-8
    name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [
        {
            "Config": name,
            "RepoTags": [tag],
            "Layers": [f"layer{i}/layer.tar" for i, _ in enumerate(image_json["rootfs"]["diff_ids"])],
        }
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for member, data in ((name, config_bytes), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    try:
        for chunk in client.api.load_image(buffer.getvalue()):
            if isinstance(chunk, dict) and chunk.get("error"):
                raise EngineError(f"docker load of {tag} failed: {chunk['error']}")
    except docker.errors.APIError as exc:
        raise EngineError(f"docker load of {tag} failed: {exc.explanation or exc}") from exc


def _last_status(response: Any) -> dict[str, Any]:
    text = response if isinstance(response, str) else response.decode() if isinstance(response, bytes) else ""
    last: dict[str, Any] = {}
    for line in text.splitlines():
        try:
            last = json.loads(line)
        except ValueError:
            continue
        if "error" in last:
            return last
    return last


def remove_tag(client: Any, tag: str) -> None:
    """Untag (and drop, when nothing else references it) an image this run created."""
    import docker.errors

    try:
        client.images.remove(tag, noprune=False)
    except docker.errors.APIError:
        pass


# -- Singularity ------------------------------------------------------------------------------


def singularity_env(config: ImageConfig) -> str:
    lines = ["#!/bin/sh", "# written by ndgen minify from the source image's ENV"]
    for item in config.env:
        key, _, value = item.partition("=")
        lines.append(f"export {key}={_sh_quote(value)}")
    return "\n".join(lines) + "\n"


def singularity_runscript(config: ImageConfig) -> str:
    """`singularity run` semantics of `docker run`: arguments replace CMD, ENTRYPOINT stays."""
    entrypoint = " ".join(_sh_quote(a) for a in config.entrypoint or ())
    cmd = " ".join(_sh_quote(a) for a in config.cmd or ())
    default = f"{entrypoint} {cmd}".strip() or "/bin/sh"
    with_args = f'{entrypoint} "$@"' if entrypoint else '"$@"'
    return f"#!/bin/sh\nif [ $# -gt 0 ]; then\n    exec {with_args}\nfi\nexec {default}\n"


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


# Apptainer/Singularity run these from the image: each sources the environment first.
_SOURCE_ENV = 'for script in /.singularity.d/env/*.sh; do\n    if [ -f "$script" ]; then . "$script"; fi\ndone\n'
_ACTIONS = {
    "exec": 'exec "$@"\n',
    "run": 'exec /.singularity.d/runscript "$@"\n',
    "shell": 'exec /bin/sh "$@"\n',
    "test": 'if [ -x /.singularity.d/test ]; then exec /.singularity.d/test "$@"; fi\necho "no test defined" >&2\n',
    "start": 'if [ -x /.singularity.d/startscript ]; then exec /.singularity.d/startscript "$@"; fi\n',
}
# Where the runtime binds host files and directories: they must exist in a read-only image.
_MOUNT_POINTS = ("proc", "sys", "dev", "tmp", "home", "root", "mnt", "srv", "opt")
_MOUNT_FILES = ("etc/hosts", "etc/resolv.conf", "etc/localtime")


_META = "/.singularity.d"
_META_DIRS = (_META, f"{_META}/env", f"{_META}/actions", f"{_META}/libs")


def check_singularity_layout(root: Path, image: str) -> None:
    """Refuse an image whose /.singularity.d (or its env, actions, libs) is not a real directory:
    the runtime's files go there, and a link would make them land wherever it points.
    write_squashfs checks it; a caller may check it first, before any other output exists."""
    for name in _META_DIRS:
        try:
            st = os.lstat(str(root) + name)  # its parents were checked to be directories
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise NdgenError(
                f"{image}: {name} is {paths.kind(st.st_mode)}, not a directory: it must hold the "
                "Singularity runtime files, so no SquashFS is written"
            )


def _meta_files(config: ImageConfig, commands: list[str]) -> dict[str, tuple[bytes, int]]:
    """/.singularity.d's files (env, runscript, actions, labels): in-image path → (content, mode)."""
    scripts = {
        f"{_META}/env/90-environment.sh": singularity_env(config),
        f"{_META}/runscript": singularity_runscript(config),
        **{f"{_META}/actions/{name}": f"#!/bin/sh\n{_SOURCE_ENV}{body}" for name, body in _ACTIONS.items()},
    }
    files = {path: (text.encode(), 0o755) for path, text in scripts.items()}
    labels = {**dict(config.labels), **minified_labels(config, commands)}
    files[f"{_META}/labels.json"] = ((json.dumps(labels, indent=2, ensure_ascii=False) + "\n").encode(), 0o644)
    return files


def _entry(path: str, kind: bytes, mode: int, now: int, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type, info.mode, info.mtime, info.linkname = kind, mode, now, linkname
    info.uname = info.gname = "root"
    return info


def _layout_entries(
    written: dict[str, tarfile.TarInfo], files: dict[str, tuple[bytes, int]]
) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    """Tar entries for the Singularity layout: /.singularity.d and the runtime's mount points
    (only where the kept image has no entry of that name), made here, never read from a path."""
    now = int(time.time())
    for name in _META_DIRS:
        yield _entry(name, tarfile.DIRTYPE, 0o755, now), b""
    for name, (data, mode) in files.items():
        info = _entry(name, tarfile.REGTYPE, mode, now)
        info.size = len(data)
        yield info, data
    for name in _MOUNT_POINTS:
        if f"/{name}" not in written:
            yield _entry(name, tarfile.DIRTYPE, 0o755, now), b""
    for name in _MOUNT_FILES:
        parent = written.get("/" + posixpath.dirname(name))
        if f"/{name}" not in written and parent is not None and parent.isdir():
            yield _entry(name, tarfile.REGTYPE, 0o644, now), b""
    for name, target in (
        ("singularity", ".singularity.d/runscript"),
        ("environment", ".singularity.d/env/90-environment.sh"),
    ):
        if f"/{name}" not in written:
            yield _entry(name, tarfile.SYMTYPE, 0o777, now, target), b""


def _squashfs_tar(
    out: IO[bytes], root: Path, keep: KeepSet, config: ImageConfig, commands: list[str]
) -> tuple[int, int]:
    """The kept entries (holes kept as sparse entries), then the layout's: (entries, file bytes)."""
    files = _meta_files(config, commands)
    generated = {*_META_DIRS, *files}

    def skip(path: str) -> bool:
        # "/" comes from sqfstar's -root-* options; the image's own copies of the generated
        # names (and anything below a generated file) give way to the generated ones.
        return path == "/" or path in generated or any(path.startswith(f + "/") for f in files)

    written: dict[str, tarfile.TarInfo] = {}
    file_bytes = 0
    with _tar_stream(out) as tar:
        for path, info in _add_kept(tar, root, keep, sparse=True, skip=skip):
            written[path] = info
            file_bytes += info.size if info.isreg() else 0
        for info, data in _layout_entries(written, files):
            tar.addfile(info, io.BytesIO(data))
    return len(written), file_bytes


def write_squashfs(root: Path, keep: KeepSet, config: ImageConfig, commands: list[str], out: Path) -> Written:
    """A SquashFS with the Singularity layout (/.singularity.d env, runscript, labels).

    The keep-set's tar is piped into sqfstar with the layout appended as entries made here:
    nothing is unpacked on the host, so the image never shapes a host path; owners, modes,
    setuid bits, xattrs, device nodes and holes go straight into the SquashFS.
    """
    if shutil.which("sqfstar") is None:
        raise NdgenError("sqfstar not found (squashfs-tools 4.5 or newer): apt-get install squashfs-tools")
    check_singularity_layout(root, config.name)
    top = os.lstat(root)
    # never a half-written image under the final name
    with outfile.replacing(out) as partial, tempfile.TemporaryFile() as log:
        command = [
            "sqfstar", "-force", "-comp", "gzip", "-no-progress", "-quiet",
            "-root-mode", f"{stat.S_IMODE(top.st_mode):o}", "-root-uid", str(top.st_uid), "-root-gid", str(top.st_gid),
            str(partial),
        ]  # fmt: skip
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=log)
        assert proc.stdin is not None
        broken = False
        try:
            entries, file_bytes = _squashfs_tar(proc.stdin, root, keep, config, commands)
            proc.stdin.close()
        except BrokenPipeError:  # sqfstar stopped reading: its log says why
            broken, entries, file_bytes = True, 0, 0
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        if proc.wait() != 0 or broken:
            log.seek(0)
            last = log.read().decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise NdgenError(f"sqfstar failed writing {out}: {last[0]}")
    return Written(
        tag=None, image_id=None, size=out.stat().st_size, entries=entries, file_bytes=file_bytes, squashfs=out
    )
