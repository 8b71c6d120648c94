"""Scratch directories: private to ndgen's user, removed afterwards — but never across a mount.

Every scratch directory of ndgen (`minify`, `base`, `build`, `test`) is made by
:func:`make` inside the one base :func:`base` returns: a directory only ndgen's
effective uid can create entries in, verified on every use without following a
symlink.  A scratch tree in a world-writable directory could be planted,
swapped or entered by another local user (issue 17, findings 1 and 3): the
stale-run reaper acted as root on whatever it found there, and other users
reached the image's setuid programs and device nodes through minify's views.

Both steps that mount things below a scratch tree share the removal rule: `ndgen base`
(debootstrap mounts /proc and /sys in its target and can leave them behind on
failure) and `ndgen minify` (overlay views of the image). Deleting through a
still-attached mount would delete what it shows — the host's files, or the
image's layers — so leftover mounts are lazily unmounted first and the tree is
kept when that fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from neurodocker_nd.core import safefs
from neurodocker_nd.errors import NdgenError

ENV = "NDGEN_SCRATCH"  # a base of the user's choosing, used as is (not created below)
_GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO
_GROUP_OTHER_WRITE = stat.S_IWGRP | stat.S_IWOTH


def base(default_root: str | None = None) -> Path:
    """The directory every scratch directory is made in, created or verified now.

    ``$NDGEN_SCRATCH`` when set (it must exist: a real directory owned by this
    uid that no one else may write to, or reach: a tmpfs in a 0700 directory); else ``ndgen-<euid>`` in `default_root`
    (the system's temporary directory when None), created 0700 and refused on
    reuse unless it is still a real directory of ours with no group/other bits.
    Someone else's directory is refused, never "fixed": its owner could have
    planted entries, or can swap it back.
    """
    configured = os.environ.get(ENV)
    if configured:
        path = Path(os.path.abspath(configured))
        _check_ancestors(path, f"{ENV}={configured}")
        # Group/other write bits are harmless only where no one else can get there at all.
        writable = _GROUP_OTHER_WRITE if _shielded(path) else 0
        _check_directory(path, f"{ENV}={configured}", allowed=_GROUP_OTHER & ~_GROUP_OTHER_WRITE | writable)
        return path
    path = Path(os.path.abspath(default_root or tempfile.gettempdir())) / f"ndgen-{os.geteuid()}"
    _check_ancestors(path, f"scratch base {path}")
    try:
        os.mkdir(path, 0o700)  # atomic: either ours from birth, or checked below
    except FileExistsError:
        pass
    except OSError as exc:
        raise NdgenError(f"cannot create the scratch base {path}: {exc.strerror or exc}") from None
    _check_directory(path, f"scratch base {path}", allowed=0)
    return path


def make(prefix: str, default_root: str | None = None) -> Path:
    """A new 0700 scratch directory in :func:`base` (the caller removes it, see :func:`remove`)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base(default_root)))


def owned_directory_fd(name: str | os.PathLike[str], dir_fd: int | None = None, *, allowed: int = 0) -> int | None:
    """An O_NOFOLLOW descriptor of a real directory owned by this euid whose mode has no
    group/other bits beyond `allowed`, else None (a symlink, someone else's, too open, gone)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & _GROUP_OTHER & ~allowed:
        os.close(fd)
        return None
    return fd


def _check_directory(path: Path, what: str, *, allowed: int) -> None:
    """Refuse (one line) unless `path` is a real directory of ours, without group/other bits beyond `allowed`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NdgenError(f"{what}: not a directory (a symlink or a file): refused") from None
        raise NdgenError(f"{what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid != os.geteuid():
        raise NdgenError(f"{what}: owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): refused")
    if st.st_mode & _GROUP_OTHER & ~allowed:
        raise NdgenError(
            f"{what}: mode {stat.S_IMODE(st.st_mode):04o} lets other users in "
            f"(expected {0o700 | allowed:04o} at most): refused"
        )


def _shielded(path: Path) -> bool:
    """Whether a directory above `path` is ours and closed to group and other (no search bit)."""
    parent = Path(os.path.realpath(path.parent))
    for directory in (parent, *parent.parents):
        try:
            st = os.lstat(directory)
        except OSError:
            return False
        if st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IXGRP | stat.S_IXOTH):
            return True
    return False


def _check_ancestors(path: Path, what: str) -> None:
    """Every directory above `path` must be one no other user can rename `path` out of.

    Owned by root or by us, and not writable by group/other unless sticky (as /tmp):
    otherwise its owner could replace the verified base with a directory of theirs
    between our check and our use.
    """
    parent = Path(os.path.realpath(path.parent))
    for directory in (parent, *parent.parents):
        try:
            st = os.lstat(directory)
        except OSError as exc:
            raise NdgenError(f"{what}: {directory}: {exc.strerror or exc}") from None
        if st.st_uid not in (0, os.geteuid()):
            raise NdgenError(f"{what}: {directory} is owned by uid {st.st_uid}, who could swap it: refused")
        if st.st_mode & _GROUP_OTHER_WRITE and not st.st_mode & stat.S_ISVTX:
            raise NdgenError(f"{what}: {directory} is writable by other users (and not sticky): refused")


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
    # Not shutil.rmtree: the tree holds what images wrote (a test's work directory), and
    # rmtree recurses, so a tree deeper than Python's recursion limit ended in a traceback.
    try:
        with safefs.opened(safefs.open_trusted_dir(root.parent)) as parent:
            safefs.remove_at(parent, root.name, shown=root)
    except NdgenError:
        return False
    return True


@contextlib.contextmanager
def directory(prefix: str, default_root: str | None = None) -> Iterator[Path]:
    """A fresh scratch directory (:func:`make`), removed (see :func:`remove`) on exit, error or Ctrl-C."""
    scratch = make(prefix, default_root)
    try:
        yield scratch
    finally:
        remove(scratch)
