"""Symlink resolution inside an image's root filesystem, never out to the host, and
the one way the host reads an image's file.

Both the keep-set closure and the ptrace tracer must follow symlinks the way the
kernel would inside the container (an absolute target restarts at the image
root, not the host's `/`), so there is one walker, parameterised by how to lstat
and readlink an in-image path.

Every host-side read of an image file in the minify package goes through
:func:`open_regular` / :func:`read_bytes`: regular files only (a FIFO would block
ndgen forever, a device such as ``/dev/zero`` never ends), no link followed on
the way, and a size cap.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
import stat
from collections.abc import Callable, Iterator

from neurodocker_nd.core import paths
from neurodocker_nd.errors import NdgenError

MAX_SYMLINK_HOPS = 40  # the kernel's ELOOP limit


def resolve(
    path: str,
    lstat: Callable[[str], os.stat_result | None],
    readlink: Callable[[str], str],
    *,
    chain: set[str] | None = None,
    strict: bool = True,
) -> str | None:
    """Resolve in-image `path`; return the symlink-free in-image path.

    Every existing component and symlink hop is added to `chain` (when given):
    the closure keeps them so the path still resolves in the minified image.
    A missing component returns None when `strict`, else is taken literally
    (a tracer wants the path a process asked for even if it was absent).
    None is also returned on a symlink loop.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    current, hops = "/", 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = posixpath.dirname(current)
            continue
        candidate = posixpath.join(current, part)
        st = lstat(candidate)
        if st is None:
            if strict:
                return None
            current = candidate
            continue
        if chain is not None:
            chain.add(candidate)
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return None
            target = readlink(candidate)
            parts = [p for p in target.split("/") if p and p != "."] + parts
            if target.startswith("/"):
                current = "/"
            continue
        current = candidate
    return current


def rootfs_lstat(root: str) -> Callable[[str], os.stat_result | None]:
    """An lstat of in-image paths under host directory `root` (None when absent)."""

    def _lstat(path: str) -> os.stat_result | None:
        try:
            return os.lstat(root + path)
        except OSError:
            return None

    return _lstat


def _readlink(root: str) -> Callable[[str], str]:
    return lambda path: os.readlink(root + path)


def resolve_in_root(root: str, path: str, *, strict: bool = True) -> str | None:
    """`path` resolved inside the image under host directory `root` (see :func:`resolve`)."""
    return resolve(path, rootfs_lstat(root), _readlink(root), strict=strict)


def lstat_in_root(root: str, path: str) -> os.stat_result | None:
    """lstat of in-image `path`: its directories resolved inside the image, the last
    component taken as it is (so a dangling symlink exists, as with `lexists`)."""
    parent, name = posixpath.split(posixpath.normpath("/" + path.lstrip("/")))
    real_parent = resolve_in_root(root, parent)
    if real_parent is None:
        return None
    return rootfs_lstat(root)(posixpath.join(real_parent, name) if name else real_parent)


class ImageFileError(NdgenError):
    """An image file the host must read is not a regular file, or is larger than allowed."""


# How much of an image file the host reads at most, unless the caller asks for less.
DEFAULT_READ_LIMIT = 4 << 20


@contextlib.contextmanager
def open_regular(root: str, path: str) -> Iterator[tuple[int, os.stat_result] | None]:
    """A read-only fd on in-image regular file `path` and its fstat; None when it is absent.

    The one way the host opens an image's file (images are hostile): the path is
    resolved inside the image (:func:`resolve_in_root`), then walked from `root`
    one component at a time relative to its parent's fd, never following a link
    (a directory swapped for a symlink since is refused, not followed out of the
    image).  The file itself is first opened ``O_PATH``, which never blocks on a
    FIFO nor opens a device, and only once ``fstat`` shows a regular file is that
    same inode reopened for reading (``O_NONBLOCK``, through ``/proc/self/fd``).
    Anything but a regular file raises :class:`ImageFileError` naming it.
    """
    resolved = resolve_in_root(root, path)
    if resolved is None:
        yield None
        return
    names = [p for p in resolved.split("/") if p]
    # Errors name the file as asked for, and where the image's links led when elsewhere.
    shown = path if posixpath.normpath("/" + path.lstrip("/")) == resolved else f"{path} (-> {resolved})"
    fds: list[int] = []
    try:
        try:
            fds.append(os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            for name in names[:-1]:
                fds.append(os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds[-1]))
            if names:
                fds.append(os.open(names[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds[-1]))
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:  # ENOTDIR/ELOOP: the image changed under the walk
            raise ImageFileError(f"image file {shown}: {exc.strerror}") from None
        st = os.fstat(fds[-1])
        if not stat.S_ISREG(st.st_mode):
            raise ImageFileError(f"image file {shown} is {paths.kind(st.st_mode)}, not a regular file")
        try:
            fd = os.open(f"/proc/self/fd/{fds[-1]}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:  # EACCES without root
            raise ImageFileError(f"image file {shown}: {exc.strerror}") from None
        try:
            yield fd, st
        finally:
            os.close(fd)
    finally:
        for opened in fds:
            os.close(opened)


def read_bytes(root: str, path: str, limit: int = DEFAULT_READ_LIMIT, *, head: bool = False) -> bytes | None:
    """The content of in-image regular file `path` (see :func:`open_regular`), None when absent.

    At most `limit` bytes are read.  `head`: the first `limit` bytes are all the
    caller wants (a ``#!`` line, an ELF header); otherwise a larger file raises
    :class:`ImageFileError` instead of being silently cut.
    """
    with open_regular(root, path) as opened:
        if opened is None:
            return None
        fd, st = opened
        if not head and st.st_size > limit:
            raise ImageFileError(f"image file {path} is larger than {limit} bytes ({st.st_size})")
        chunks: list[bytes] = []
        left = limit if head else limit + 1  # one byte more tells a file that grew since fstat
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > limit:
        raise ImageFileError(f"image file {path} is larger than {limit} bytes")
    return data


def shebang(root: str, path: str) -> list[str]:
    """The words of in-image file `path`'s ``#!`` line (the kernel reads at most 256 bytes);
    [] when it has none, is absent, or is not a regular file (nothing to interpret)."""
    try:
        head = read_bytes(root, path, 256, head=True)
    except ImageFileError:
        return []
    if head is None or not head.startswith(b"#!"):
        return []
    return head[2:].split(b"\n", 1)[0].decode("utf-8", "surrogateescape").split()


def glob(root: str, pattern: str) -> list[str]:
    """In-image paths matching `pattern`, every directory looked up inside the image.

    fnmatch per component; `**` matches zero or more directories and never descends
    through a symlink (a link to `/proc/self/root` or `/etc` is a match, not a walk);
    names starting with '.' match only a pattern starting with '.', as with `glob`.
    Paths are returned as spelled by the pattern (not resolved).
    """
    lstat = rootfs_lstat(root)
    parts = [p for p in pattern.split("/") if p and p != "."]
    found: list[str] = []

    def real_dir(spelled: str) -> str | None:
        real = resolve_in_root(root, spelled)
        st = lstat(real) if real is not None else None
        return real if st is not None and stat.S_ISDIR(st.st_mode) else None

    def below(real: str) -> Iterator[tuple[str, bool]]:
        """(relative path, is a real directory) of everything below in-image dir `real`."""
        for dirpath, dirnames, filenames in os.walk(root + real):  # never follows symlinks
            rel = dirpath[len(root + real) :].lstrip("/")
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in dirnames:
                yield posixpath.join(rel, name), True
            for name in filenames:
                if not name.startswith("."):
                    yield posixpath.join(rel, name), False

    def walk(spelled: str, index: int) -> None:
        if index == len(parts):
            found.append(spelled)
            return
        part = parts[index]
        real = real_dir(spelled)
        if real is None:
            return
        if part == "**":
            if index == len(parts) - 1:
                found.append(spelled)
                found.extend(posixpath.join(spelled, rel) for rel, _ in below(real))
                return
            walk(spelled, index + 1)
            for rel, is_dir in below(real):
                if is_dir:
                    walk(posixpath.join(spelled, rel), index + 1)
            return
        if not has_magic(part):
            if lstat(posixpath.join(real, part)) is not None:
                walk(posixpath.join(spelled, part), index + 1)
            return
        try:
            names = sorted(os.listdir(root + real))
        except OSError:
            return
        for name in names:
            if (name.startswith(".") and not part.startswith(".")) or not fnmatch.fnmatchcase(name, part):
                continue
            walk(posixpath.join(spelled, name), index + 1)

    walk("/", 0)
    return sorted(set(found))


def has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")
