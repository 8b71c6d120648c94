"""Symlink resolution inside an image's root filesystem, never out to the host.

Both the keep-set closure and the ptrace tracer must follow symlinks the way the
kernel would inside the container (an absolute target restarts at the image
root, not the host's `/`), so there is one walker, parameterised by how to lstat
and readlink an in-image path.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
from collections.abc import Callable, Iterator

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


def read_bytes(root: str, path: str, limit: int = -1) -> bytes | None:
    """The content of in-image file `path` (symlinks followed inside the image), else None."""
    resolved = resolve_in_root(root, path)
    if resolved is None:
        return None
    try:
        # O_NOFOLLOW: the resolved path is symlink-free; a link swapped in since is refused.
        fd = os.open(root + resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit)


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
            rel = dirpath[len(root + real):].lstrip("/")
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
