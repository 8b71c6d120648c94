"""Image step: write the keep-set as a one-layer image (and/or a SquashFS for Singularity).

The layer is a tar stream built with :mod:`tarfile` straight from the pristine
rootfs and piped into ``docker import`` through the Docker SDK — nothing is
staged on disk.  PAX format keeps what a layer needs: hard links (same inode →
LNKTYPE), setuid/setgid/sticky bits, owners, sub-second mtimes, and extended
attributes such as file capabilities (``SCHILY.xattr.*`` records, which the
engine applies when unpacking).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import attrs

from neurodocker_nd import __version__, engine, outfile
from neurodocker_nd.errors import EngineError, NdgenError
from neurodocker_nd.minify.keep import KeepSet
from neurodocker_nd.minify.source import ImageConfig

LABEL_PREFIX = "org.ndgen.minify"
# xattrs worth carrying: capabilities and user data; overlay/selinux internals are not ours.
_XATTR_PREFIXES = ("security.capability", "user.")
_CHUNK = 1 << 20


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


def write_tar(root: Path, keep: KeepSet, out: IO[bytes]) -> tuple[int, int]:
    """Stream the kept entries of `root` as a PAX tar into `out`; returns (entries, file bytes)."""
    entries = file_bytes = 0
    # Sorted: parents precede children, so the engine creates directories with their own modes.
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_CHUNK) as tar:
        for path in sorted(keep.paths):
            try:
                info = _tarinfo(tar, str(root), path)
            except FileNotFoundError:
                continue
            if info is None:
                continue
            entries += 1
            if info.isreg():
                file_bytes += info.size
                with open(str(root) + path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return entries, file_bytes


def unpack_tar(archive: Path, target: Path) -> None:
    """Unpack a tar written by :func:`write_tar` into `target`, extended attributes included.

    tarfile restores owners, modes and times but not xattrs: file capabilities would be
    lost on the way to a SquashFS (or the tree a repair re-traces).  They are set after
    everything is unpacked, since a chown clears `security.capability`.
    """
    with tarfile.open(archive) as tar:
        tar.extractall(target, numeric_owner=True, filter="fully_trusted")
        for member in tar.getmembers():
            for key, value in member.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    os.setxattr(
                        target / member.name,
                        key[len("SCHILY.xattr."):],
                        value.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False,
                    )


class _TarPipe:
    """Runs write_tar in a thread feeding an OS pipe; iterating yields the stream's chunks."""

    def __init__(self, root: Path, keep: KeepSet) -> None:
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._writer = os.fdopen(write_fd, "wb", buffering=_CHUNK)
        self.error: BaseException | None = None
        self.counts = (0, 0)
        self._thread = threading.Thread(target=self._run, args=(root, keep), daemon=True)
        self._thread.start()

    def _run(self, root: Path, keep: KeepSet) -> None:
        try:
            self.counts = write_tar(root, keep, self._writer)
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
    base: dict[str, Any] = json.loads(config.image_json) if config.image_json else {"architecture": "amd64", "os": "linux"}
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
    inner["Labels"] = {**(inner.get("Labels") or {}), **minified_labels(config, commands)}
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
    pipe = _TarPipe(root, keep)
    try:
        response = client.api.import_image_from_stream(pipe, repository=repository, tag=f"{version}-layer")
    except docker.errors.APIError as exc:
        pipe.finish()
        raise EngineError(f"docker import of {tag} failed: {exc.explanation or exc}") from exc
    except BaseException:
        pipe.finish()
        raise
    entries, file_bytes = pipe.finish()
    status = _last_status(response)
    if "error" in status:
        raise EngineError(f"docker import of {tag} failed: {status['error']}")
    try:
        layers = client.images.get(layer_ref).attrs["RootFS"]["Layers"]
        _load(client, image_config(config, commands, layers), tag)
    finally:
        remove_tag(client, layer_ref)
    image = client.images.get(tag)
    if previous is not None and previous.id != image.id:
        remove_tag(client, previous.id)
    return Written(tag=tag, image_id=image.id, size=int(image.attrs.get("Size") or 0), entries=entries, file_bytes=file_bytes)


def _load(client: Any, image_json: dict[str, Any], tag: str) -> None:
    """`docker load` an image whose layers the engine already has: config + manifest only."""
    import docker.errors

    config_bytes = json.dumps(image_json, ensure_ascii=False).encode()  # UTF-8 stays UTF-8
    name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": name, "RepoTags": [tag], "Layers": [f"layer{i}/layer.tar" for i, _ in enumerate(image_json["rootfs"]["diff_ids"])]}]
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
    return f'#!/bin/sh\nif [ $# -gt 0 ]; then\n    exec {with_args}\nfi\nexec {default}\n'


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


def _singularity_layout(tree: Path, config: ImageConfig, commands: list[str]) -> None:
    """/.singularity.d (env, runscript, actions, labels) and the runtime's mount points."""
    meta = tree / ".singularity.d"
    for sub in ("env", "actions", "libs"):
        (meta / sub).mkdir(parents=True)
    scripts = {
        meta / "env" / "90-environment.sh": singularity_env(config),
        meta / "runscript": singularity_runscript(config),
        **{meta / "actions" / name: f"#!/bin/sh\n{_SOURCE_ENV}{body}" for name, body in _ACTIONS.items()},
    }
    for path, text in scripts.items():
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755)
    labels = dict(config.labels)
    labels.update(minified_labels(config, commands))
    (meta / "labels.json").write_text(json.dumps(labels, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name in _MOUNT_POINTS:
        if not os.path.lexists(tree / name):
            (tree / name).mkdir(mode=0o755)
    for name in _MOUNT_FILES:
        if not os.path.lexists(tree / name) and (tree / name).parent.is_dir():
            (tree / name).touch()
    for name, target in (("singularity", ".singularity.d/runscript"), ("environment", ".singularity.d/env/90-environment.sh")):
        if not os.path.lexists(tree / name):
            (tree / name).symlink_to(target)


def write_squashfs(root: Path, keep: KeepSet, config: ImageConfig, commands: list[str], out: Path, scratch: Path) -> Written:
    """A SquashFS with the Singularity layout (/.singularity.d env, runscript, labels)."""
    if shutil.which("mksquashfs") is None:
        raise NdgenError("mksquashfs not found: apt-get install squashfs-tools")
    tree = scratch / "squashfs-tree"
    tree.mkdir()
    with open(scratch / "layer.tar", "wb") as fh:
        entries, file_bytes = write_tar(root, keep, fh)
    unpack_tar(scratch / "layer.tar", tree)
    (scratch / "layer.tar").unlink()
    _singularity_layout(tree, config, commands)
    # never a half-written image under the final name
    with outfile.replacing(out) as partial:
        proc = subprocess.run(
            ["mksquashfs", str(tree), str(partial), "-noappend", "-comp", "gzip", "-no-progress", "-quiet"],
            capture_output=True,
            text=True,
        )
        shutil.rmtree(tree, ignore_errors=True)
        if proc.returncode != 0:
            raise NdgenError(f"mksquashfs failed writing {out}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return Written(tag=None, image_id=None, size=out.stat().st_size, entries=entries, file_bytes=file_bytes, squashfs=out)
