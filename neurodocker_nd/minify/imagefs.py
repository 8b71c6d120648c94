"""Symlink resolution inside an image's root filesystem, never out to the host.

Both the keep-set closure and the ptrace tracer must follow symlinks the way the
kernel would inside the container (an absolute target restarts at the image
root, not the host's `/`), so there is one walker, parameterised by how to lstat
and readlink an in-image path.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable

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
