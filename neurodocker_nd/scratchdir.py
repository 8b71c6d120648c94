"""Scratch directories that are removed afterwards — but never across a mount.

Both steps that mount things below a scratch tree share this rule: `ndgen base`
(debootstrap mounts /proc and /sys in its target and can leave them behind on
failure) and `ndgen minify` (overlay views of the image). Deleting through a
still-attached mount would delete what it shows — the host's files, or the
image's layers — so leftover mounts are lazily unmounted first and the tree is
kept when that fails.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def mounts_below(root: Path) -> list[str]:
    """Mount points strictly below `root`, deepest first."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        points = [line.split()[4] for line in handle]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def remove(root: Path) -> bool:
    """Unmount (lazily) whatever is mounted below `root`, then delete it.

    Returns False, and deletes nothing, when some mount could not be detached.
    """
    for point in mounts_below(root):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if mounts_below(root):
        return False
    shutil.rmtree(root, ignore_errors=True)
    return True


@contextlib.contextmanager
def directory(prefix: str, parent: str | None = None) -> Iterator[Path]:
    """A fresh scratch directory, removed (see :func:`remove`) on exit, error or Ctrl-C."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield scratch
    finally:
        remove(scratch)
