"""Source step: the image's config and a read-only view of its filesystem.

The view is an overlay mount whose lower layers are the image's own overlay2
layer directories (``docker image inspect`` → GraphDriver.Data): no copy of a
multi-GB image is made, and writes of the traced workload land in a scratch
upper directory, so the source image is never modified.  When the engine does
not use overlay2 (or its directories are not reachable) the image is exported
through a throwaway container instead.  Everything created lives in one
scratch directory that :func:`open_source` removes on exit, error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neurodocker_nd.core import emulation, engine, scratchdir
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.minify import stale
from neurodocker_nd.minify.model import ImageConfig


class Source:
    """An opened source image: its config, a pristine read-only view and fresh writable views.

    `pristine` is what the closure reads and the new image is written from:
    whatever a workload writes lands in the upper directory of its own view and
    never leaks into the result or into another run.
    """

    def __init__(
        self,
        config: ImageConfig,
        lowers: list[str],
        scratch: Path,
        method: str,
        stack: contextlib.ExitStack,
        *,
        mount: bool = True,
    ) -> None:
        self.config = config
        self.scratch = scratch  # everything ndgen created for this run lives under here
        self.method = method  # "overlay" (image layers used in place) | "export" (a copy)
        self._lowers = lowers
        self._stack = stack
        self._can_mount = mount
        # Without overlay mounts the exported copy is the only view (runs write into it).
        self.pristine = self._mount("pristine", writable=False) if mount else Path(lowers[0])
        if not mount:  # the copy is every run's root: runc's state goes beside it, in scratch
            _own_runc_dirs(scratch, ".")

    def view(self, name: str) -> Path:
        """A fresh writable overlay of the image; unmounted when the source closes."""
        if not self._can_mount:
            return self.pristine
        return self._mount(name, writable=True)

    def _mount(self, name: str, *, writable: bool) -> Path:
        base = self.scratch / name
        merged = base / "rootfs"
        base.mkdir(mode=0o700, exist_ok=True)  # exists when an overlay was refused and export retries
        merged.mkdir(exist_ok=True)
        # The image's layer directories are only ever read-only lowers.  An empty
        # bottom layer: overlayfs wants two lowers when there is no upper.
        empty = self.scratch / "empty-layer"
        empty.mkdir(exist_ok=True)
        lowers, cwd = _short_lowers(self._lowers)
        options = ["lowerdir=" + ":".join([*lowers, str(empty)])]
        if writable:
            (base / "upper").mkdir()
            (base / "work").mkdir()
            options.append(f"upperdir={base / 'upper'},workdir={base / 'work'}")
            # A writable view is a sandbox's root.  runc bind-mounts the root it is given, and a
            # bind mount inherits nosuid: the image's setuid programs would then run without
            # privilege, unlike under `docker run` (measured).  So this mount keeps suid; other
            # users never reach it (0700 scratch in a 0700 base), and the host never runs what
            # it holds (host code reads the pristine view).  nodev still: inside the container
            # the device cgroup refuses an image's device nodes anyway.
            options.append("nodev")
            _own_runc_dirs(self.scratch, name)
        else:
            # The host-side view: what ndgen reads and writes the new image from.
            options.append("ro,nosuid,nodev")
        _mount_overlay(",".join(options), merged, cwd)
        self._stack.callback(_umount, merged)
        return merged


def inspect_image(client: Any, name: str) -> tuple[Any, ImageConfig]:
    image = engine.local_image(client, name)
    emulation.check_image(image.attrs, f"minifying {name}")  # an arm64 workload runs only under qemu's F handler
    return image, ImageConfig.from_inspect(name, image.attrs)


def _overlay_lowers(image_attrs: dict[str, Any]) -> list[str] | None:
    """The image's layer directories, topmost first, or None when overlay2 is not usable."""
    driver = image_attrs.get("GraphDriver") or {}
    if driver.get("Name") != "overlay2":
        return None
    data = driver.get("Data") or {}
    lowers = [data["UpperDir"]] if data.get("UpperDir") else []
    lowers += [d for d in (data.get("LowerDir") or "").split(":") if d]
    if not lowers or not all(os.path.isdir(d) for d in lowers):
        return None
    return lowers


def _short_lowers(lowers: list[str]) -> tuple[list[str], str | None]:
    """Docker's own trick for deep images: mount options fit in one page, so name each
    layer by its short link (overlay2/l/ID -> ../LAYER/diff) relative to the driver root."""
    if sum(len(d) + 1 for d in lowers) < 3000:
        return lowers, None
    root = os.path.dirname(os.path.dirname(lowers[0].rstrip("/")))
    short = []
    for lower in lowers:
        try:
            link = Path(lower).parent.joinpath("link").read_text().strip()
        except OSError:
            return lowers, None
        if not os.path.isdir(os.path.join(root, "l", link)):
            return lowers, None
        short.append(f"l/{link}")
    return short, root


def _mount_overlay(options: str, target: Path, cwd: str | None = None) -> None:
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
        capture_output=True,
        text=True,
        cwd=cwd,  # relative lowerdirs resolve against the mounting process's cwd
    )
    if proc.returncode != 0:
        raise _MountRefused(proc.stderr.strip() or "mount -t overlay failed")


class _MountRefused(Exception):
    """The kernel or our privileges refused an overlay mount."""


def _own_runc_dirs(scratch: Path, name: str) -> None:
    """Create the view's runc state root and bundle directory (:mod:`sandbox` puts them beside
    the rootfs) 0700, and record the view: the stale-run reaper runs runc only on state below
    views listed in that record, which ndgen alone writes."""
    base = scratch / name
    (base / stale.RUNC_STATE).mkdir(mode=0o700, exist_ok=True)
    (base / stale.OCI_BUNDLES).mkdir(mode=0o700, exist_ok=True)
    stale.record_view(scratch, name)


def _umount(path: Path) -> None:
    # Lazy unmount: a stray process still holding a file must not keep the scratch alive.
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _export(client: Any, config: ImageConfig, scratch: Path, stack: contextlib.ExitStack) -> Path:
    """Fallback: stream `docker export` of a never-started container into scratch.

    The copy holds the image's setuid files and device nodes, so it is written into a
    nosuid,nodev bind mount of itself when ndgen may mount (as root it may; without
    privileges tar can create neither, and the 0700 scratch keeps other users out).
    """
    rootfs = scratch / "exported"
    rootfs.mkdir(mode=0o700)
    if _nosuid_nodev_bind(rootfs):
        stack.callback(_umount, rootfs)
    container = client.containers.create(config.image_id, entrypoint=["/"], network_mode="none")
    try:
        reader = io.BufferedReader(_ChunkReader(container.export(chunk_size=1 << 20)), 1 << 20)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            tar.extractall(rootfs, numeric_owner=True, filter="fully_trusted")
    finally:
        container.remove(force=True)
    return rootfs


def _nosuid_nodev_bind(path: Path) -> bool:
    """Bind-mount `path` onto itself, then remount that bind nosuid,nodev; False when not permitted."""
    bound = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if bound.returncode != 0:
        return False
    flags = subprocess.run(["mount", "-o", "remount,bind,nosuid,nodev", str(path)], capture_output=True, text=True)
    if flags.returncode != 0:  # a bind without the flags would only pretend: undo it, say why
        _umount(path)
        raise NdgenError(f"cannot mount the exported copy {path} nosuid,nodev: {flags.stderr.strip()}")
    return True


class _ChunkReader(io.RawIOBase):
    """A raw stream over the SDK's iterator of export chunks (for streaming tarfile)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = chunk
        size = min(len(buffer), len(self._rest))
        buffer[:size], self._rest = self._rest[:size], self._rest[size:]
        return size


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so `with` blocks clean up on every exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def scratch_base() -> Path:
    """Where minify's scratch directories live (and the reaper looks): scratchdir's private base."""
    return scratchdir.base()


def make_scratch(prefix: str = "ndgen-minify-") -> Path:
    # 0700, and stays so: runc enters the view as root, and the image's USER then sees only
    # its own root.  No other local user may reach the image's files through it.
    scratch = scratchdir.make(prefix)
    stale.mark(scratch)  # a later run removes it should this one be killed
    return scratch


@contextlib.contextmanager
def open_source(client: Any, name: str, *, prefer_overlay: bool = True) -> Iterator[Source]:
    """Yield the opened source; scratch and mounts go away on exit, error or Ctrl-C."""
    image, config = inspect_image(client, name)
    with contextlib.ExitStack() as stack:
        scratch = make_scratch()
        stack.callback(scratchdir.remove, scratch)  # runs last: after the views' unmounts
        source = None
        lowers = _overlay_lowers(image.attrs) if prefer_overlay else None
        if lowers is not None:
            try:
                source = Source(config, lowers, scratch, "overlay", stack)
            except _MountRefused:
                source = None  # e.g. no CAP_SYS_ADMIN: fall back to a copy
        if source is None:
            try:
                exported = _export(client, config, scratch, stack)
            except OSError as exc:
                raise NdgenError(f"cannot export {name} into {scratch}: {exc.strerror or exc}") from exc
            try:
                source = Source(config, [str(exported)], scratch, "export", stack)
            except _MountRefused:
                source = Source(config, [str(exported)], scratch, "export-copy", stack, mount=False)
        yield source
