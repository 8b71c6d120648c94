"""Host file operations inside a directory that untrusted code has written to.

A reused work directory is bind-mounted into the image under test: anything in
it may be a symlink, FIFO or device the image planted, and a path check
(`resolve()`, `is_symlink()`) only tells what the path *was*. So every
operation here starts from a directory file descriptor the caller trusts and
walks one component at a time with ``O_NOFOLLOW | O_DIRECTORY`` relative to
the previous descriptor: a symlink anywhere below the trusted directory is
refused (never followed), and the kernel, not a string comparison, keeps the
walk inside. Removal never follows a link either and needs no recursion, so
neither a symlink nor a very deep tree can steer or crash it.

The trusted directory itself is opened normally: it is the user's path (it may
sit below their own symlinks), only what lies *inside* it is untrusted.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePath

from neurodocker_nd.errors import NdgenError, UnsafePath

# Directory descriptors one removal holds open at most; a deeper directory is moved up to the
# top of the tree being removed (a rename within one file system) and emptied from there.
_MAX_DEPTH = 32
# Entries one removal may delete: every one is a real file on the host, so the bound only stops
# a pathological tree from keeping ndgen busy for hours.
MAX_ENTRIES = 5_000_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    """Close `fd` when the block ends."""
    try:
        yield fd
    finally:
        os.close(fd)


def open_trusted_dir(path: Path) -> int:
    """A descriptor for the caller's own directory `path` (symlinks in the user's path are theirs)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise NdgenError(f"cannot open directory {path}: {exc.strerror}") from None


def open_dir_at(dir_fd: int, name: str, *, create: bool = False, shown: PurePath | str = "") -> int:
    """The directory `name` in `dir_fd`, never through a symlink; made (0777 - umask) when `create`."""
    shown = shown or name
    if name in ("", ".", "..") or "/" in name:
        raise UnsafePath(f"{shown}: not a single path component")
    if create:
        try:
            os.mkdir(name, 0o777, dir_fd=dir_fd)
        except FileExistsError:
            pass  # whatever is there is checked by the no-follow open below
        except OSError as exc:
            raise NdgenError(f"cannot create directory {shown}: {exc.strerror}") from None
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # Linux says ENOTDIR for a link with O_DIRECTORY
            raise UnsafePath(f"{shown} is {_kind(dir_fd, name)}") from None
        raise NdgenError(f"cannot open directory {shown}: {exc.strerror}") from None


def _kind(dir_fd: int, name: str) -> str:
    """What a refused entry is, for the message (it was refused either way)."""
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    return "a symbolic link (not followed)" if is_link else "not a directory"


def open_dir(dir_fd: int, relative: PurePath, *, create: bool = False, shown: PurePath | None = None) -> int:
    """Walk `relative` (no `..`, not absolute) from `dir_fd` one no-follow component at a time.

    Returns a new descriptor (`dir_fd` itself is never closed); `shown` + the
    components name the culprit in an error.
    """
    if relative.is_absolute() or ".." in relative.parts:
        raise UnsafePath(f"{relative}: must be a relative path without '..'")
    fd = os.dup(dir_fd)
    where = PurePath(shown) if shown is not None else PurePath()
    for part in relative.parts:
        where = where / part
        try:
            child = open_dir_at(fd, part, create=create, shown=where)
        finally:
            os.close(fd)
        fd = child
    return fd


def remove_at(dir_fd: int, name: str, *, shown: PurePath | str = "", max_entries: int = MAX_ENTRIES) -> None:
    """Remove entry `name` of `dir_fd` — file, symlink (the link, never its target) or whole tree.

    Missing is fine. Iterative with at most `_MAX_DEPTH` descriptors open, so a
    deep tree neither exhausts the stack nor the descriptor table.
    """
    shown = shown or name
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise NdgenError(f"cannot remove {shown}: {exc.strerror}") from None
    try:
        if stat.S_ISDIR(st.st_mode):
            with opened(open_dir_at(dir_fd, name, shown=shown)) as top:
                _empty(top, max_entries, shown)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise NdgenError(f"cannot remove {shown}: {exc.strerror}") from None


def _empty(top: int, max_entries: int, shown: PurePath | str) -> None:
    """Delete everything below directory `top` without following any symlink."""
    budget = itertools.count(1)
    spare = (f".ndgen-rm-{n}" for n in itertools.count())
    stack: list[tuple[int, str]] = [(top, "")]  # (descriptor, its name in the entry below it)
    try:
        while stack:
            fd = stack[-1][0]
            child = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if next(budget) > max_entries:
                        raise NdgenError(f"cannot remove {shown}: more than {max_entries} entries (remove it yourself)")
                    if not entry.is_dir(follow_symlinks=False):
                        os.unlink(entry.name, dir_fd=fd)
                    elif len(stack) < _MAX_DEPTH:
                        child = (open_dir_at(fd, entry.name, shown=shown), entry.name)
                        break
                    else:  # too deep to hold another descriptor: move it up to the top, empty it later
                        os.rename(entry.name, _free_name(top, spare), src_dir_fd=fd, dst_dir_fd=top)
            if child is not None:
                stack.append(child)
                continue
            # `fd` is empty now (a rescan starts over: entries removed during a scan are gone).
            done, name = stack.pop()
            if stack:
                os.close(done)
                os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _ in stack[1:]:
            os.close(fd)


def _free_name(dir_fd: int, names: Iterator[str]) -> str:
    for name in names:
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return name
    raise AssertionError("unreachable: the name generator is endless")


def create_file_at(dir_fd: int, name: str, mode: int = 0o644, *, shown: PurePath | str = "") -> int:
    """A new, empty regular file `name` in `dir_fd` for writing; whatever was there is removed first.

    ``O_EXCL | O_NOFOLLOW``: the file is the one just made, never a link's target.
    """
    shown = shown or name
    remove_at(dir_fd, name, shown=shown)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        raise NdgenError(f"cannot write {shown}: {exc.strerror}") from None
    os.fchmod(fd, mode)  # the mode asked for, not reduced by the umask (scripts must stay executable)
    return fd


def open_own_file(dir_fd: int, name: str) -> int | None:
    """`name` in `dir_fd` for reading if it is a file ndgen wrote: regular, this euid's, not
    group/other writable, reached without following a symlink; else None (the caller closes)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        return None
    return fd


def open_regular_at(dir_fd: int, name: str, *, shown: PurePath | str = "") -> int:
    """`name` in `dir_fd` for reading: never through a symlink, only a regular file.

    ``O_NONBLOCK`` so that a FIFO cannot block the open itself; it is refused by the fstat.
    """
    shown = shown or name
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{shown} is a symbolic link (not followed)") from None
        raise NdgenError(f"cannot read {shown}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{shown} is not a regular file")
    os.set_blocking(fd, True)
    return fd
