"""Where ndgen's data directories live, and how files of an untrusted tree are read.

A wheel carries `registry/`, `schemas/` and `minify/` under
`neurodocker_nd/_data/`; a checkout (editable install) has them beside the
package, at the repository root — recognised by its pyproject.toml naming this
project, so that an unrelated `site-packages/registry` directory next to an
installed package is never taken for ndgen's data.

A recipe directory is untrusted: `read_inside` / `copy_inside` are the one way
ndgen reads a file of it.  The path is walked one component at a time from a
directory descriptor with O_NOFOLLOW; a symlink is followed only by splicing
its target into the walk, so it may point anywhere *inside* the root (the
`inside()` rule of copy:/file:) but never out, not even through a race.  The
file must be regular (a FIFO would block, /dev/zero never end) and under a
size cap.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from pathlib import Path, PurePosixPath

import attrs

from neurodocker_nd.errors import NdgenError, UnsafePath

_PACKAGE = Path(__file__).resolve().parent.parent  # neurodocker_nd/ (this file is in core/)
_PROJECT = 'name = "neurodocker-nd"'


@functools.cache
def _checkout_root() -> Path | None:
    root = _PACKAGE.parent
    try:
        pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if _PROJECT in pyproject else None


def data_dir(name: str) -> Path:
    """Return the directory `name` (registry, schemas or minify)."""
    bundled = _PACKAGE / "_data" / name
    if bundled.is_dir():
        return bundled
    root = _checkout_root()
    if root is not None and (root / name).is_dir():
        return root / name
    raise NdgenError(f"ndgen's {name}/ data directory is missing from {_PACKAGE} (a broken install? reinstall ndgen)")


def registry_dir() -> Path:
    return data_dir("registry")


def schemas_dir() -> Path:
    return data_dir("schemas")


def profiles_dir() -> Path:
    return data_dir("minify")


def beside_python(tool: str) -> str | None:
    """A console script installed in this interpreter's environment (a venv not on PATH)."""
    cand = Path(sys.executable).parent / tool
    return str(cand) if cand.is_file() else None


# ---------------------------------------------------------------- containment checks
#
# Two questions, asked by every tree ndgen takes paths for (a recipe directory,
# a test suite's work directory, a build context).  The contained readers below
# answer the stronger one for reads; these two are for the names themselves.


def resolve_inside(root: Path, rel: str | os.PathLike[str]) -> Path | None:
    """`root/rel` resolved on the host (symlinks followed, `..` applied), or None when
    the result is not `root` itself or below it.

    Resolution means a link inside `root` pointing out of it counts as outside:
    an untrusted tree must never make ndgen name (and later stage) a host file
    such as /etc/shadow.  An absolute `rel` replaces `root` (pathlib's `/`), so
    it is inside only when it really lies below `root`.  This checks a name at
    one moment; a read that must not race a swapped link goes through
    `open_inside`.
    """
    real_root = root.resolve()
    resolved = (real_root / rel).resolve()
    return resolved if resolved.is_relative_to(real_root) else None


def is_relative_inside(value: str) -> bool:
    """True when `value`, read lexically as a POSIX path (nothing is resolved), names
    something strictly below whatever directory it is taken relative to: not empty,
    not absolute, no `..` component, and not `.` (that is the directory itself,
    which a caller emptying the path would wipe)."""
    pure = PurePosixPath(value)
    return bool(pure.parts) and not pure.is_absolute() and ".." not in pure.parts


# ---------------------------------------------------------------- contained reads

MAX_RECIPE_TEXT = 8 << 20  # build.yaml, README.md, an include: text a person wrote
MAX_CONTEXT_BYTES = 4 << 30  # everything `copy:`/`file:` stages from one recipe directory
_MAX_LINKS = 40  # symlinks followed in one walk (the kernel's ELOOP limit)
_CHUNK = 1 << 20
_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symlink"),
)


def kind(mode: int) -> str:
    """What a file of `mode` is, for a refusal ("… is a FIFO"): one wording for every tree."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _split(rel: str) -> list[str]:
    return [part for part in rel.split("/") if part not in ("", ".")]


def _walk(root_fd: int, rel: str, shown: str) -> int:
    """An O_PATH fd of what `rel` names beneath `root_fd`, never resolved outside it.

    `..` climbs back at most to the root; a symlink is read (never followed
    by the kernel) and its relative target spliced into the walk; an absolute
    target, or one climbing above the root, is refused — what openat2's
    RESOLVE_BENEATH does, which Python does not offer.
    """
    if rel.startswith("/"):
        raise UnsafePath(f"{shown}: an absolute path, outside the directory")
    todo = _split(rel)
    stack = [os.dup(root_fd)]
    links = 0
    try:
        while todo:
            part = todo.pop(0)
            if part == "..":
                if len(stack) == 1:
                    raise UnsafePath(f"{shown}: leads outside the directory")
                os.close(stack.pop())
                continue
            try:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except FileNotFoundError:
                raise UnsafePath(f"{shown}: no such file") from None
            except OSError as exc:
                raise UnsafePath(f"{shown}: cannot open: {exc.strerror}") from None
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafePath(f"{shown}: too many levels of symbolic links")
                target = os.readlink(part, dir_fd=stack[-1])
                if target.startswith("/"):
                    raise UnsafePath(f"{shown}: a symlink to {target}, outside the directory")
                todo[:0] = _split(target)
                continue
            if todo and not stat.S_ISDIR(mode):
                os.close(fd)
                raise UnsafePath(f"{shown}: {part} is not a directory")
            stack.append(fd)
        return stack.pop()
    finally:
        for d in stack:
            os.close(d)


def open_inside(
    root: Path, rel: str, *, shown: str | None = None, directory_ok: bool = False
) -> tuple[int, os.stat_result]:
    """A read-only, non-blocking fd of `root/rel` resolved without leaving `root`, and its
    fstat: a regular file (or, with `directory_ok`, a directory); UnsafePath otherwise."""
    shown = shown or rel
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafePath(f"{root}: cannot open the directory: {exc.strerror}") from None
    try:
        path_fd = _walk(root_fd, rel, shown)
    finally:
        os.close(root_fd)
    try:
        info = os.fstat(path_fd)
        if not (stat.S_ISREG(info.st_mode) or (directory_ok and stat.S_ISDIR(info.st_mode))):
            raise UnsafePath(f"{shown}: not a regular file ({kind(info.st_mode)})")
        # Reopen the very inode the walk checked (its /proc magic link), never a name a racer could swap.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if stat.S_ISDIR(info.st_mode) else 0)
        fd = os.open(f"/proc/self/fd/{path_fd}", flags)
    finally:
        os.close(path_fd)
    return fd, os.fstat(fd)


def _read_capped(fd: int, limit: int, shown: str) -> bytes:
    chunks, total = [], 0
    while chunk := os.read(fd, min(_CHUNK, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise UnsafePath(f"{shown}: larger than {limit} bytes")
    return b"".join(chunks)


def read_inside(root: Path, rel: str, *, limit: int = MAX_RECIPE_TEXT, shown: str | None = None) -> bytes:
    """The bytes of the regular file `root/rel` (symlinks followed only within `root`), at most `limit`."""
    shown = shown or rel
    fd, info = open_inside(root, rel, shown=shown)
    try:
        if info.st_size > limit:
            raise UnsafePath(f"{shown}: {info.st_size} bytes, larger than {limit}")
        return _read_capped(fd, limit, shown)
    finally:
        os.close(fd)


def read_text_inside(root: Path, rel: str, *, limit: int = MAX_RECIPE_TEXT, shown: str | None = None) -> str:
    """`read_inside` decoded as UTF-8 (one UnsafePath line when it is not)."""
    shown = shown or rel
    data = read_inside(root, rel, limit=limit, shown=shown)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafePath(f"{shown}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


@attrs.define
class Budget:
    """Bytes one copy job (a build context) may still copy, shared by all its files."""

    limit: int = MAX_CONTEXT_BYTES
    used: int = 0

    def take(self, n: int, shown: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise UnsafePath(f"{shown}: the recipe's files exceed {self.limit} bytes")


def copy_inside(
    root: Path, rel: str, dest: Path, *, within: Path, budget: Budget | None = None, shown: str | None = None
) -> None:
    """Copy `root/rel` (a regular file or a directory tree) to `dest`, reading nothing outside `root`
    and writing nothing outside `within` (a destination path is never followed out through a link).

    Inside a directory, symlinks are copied as symlinks (never read through:
    in the image they resolve against the image); regular files keep their
    permission bits; a FIFO, socket or device anywhere is refused.
    """
    shown = shown or rel
    fd, info = open_inside(root, rel, shown=shown, directory_ok=True)
    try:
        if stat.S_ISDIR(info.st_mode):
            _copy_tree(fd, dest, within.resolve(), budget or Budget(), shown)
        else:
            _copy_file(fd, info, dest, within.resolve(), budget or Budget(), shown)
    finally:
        os.close(fd)


def destination(dest: Path, within: Path, shown: str) -> Path:
    """Make `dest` safe to create: its directory exists and resolves inside `within`
    (an earlier copied link cannot redirect it), and a link at `dest` itself is removed."""
    _destination(dest, within.resolve(), shown)
    if dest.is_symlink():
        dest.unlink()
    elif dest.is_dir():
        raise UnsafePath(f"{shown}: {dest} is already a directory of the copy")
    return dest


def _destination(dest: Path, within: Path, shown: str) -> None:
    for _ in range(2):  # before mkdir (which would follow a link) and after it
        if not dest.parent.resolve().is_relative_to(within):
            raise UnsafePath(f"{shown}: its destination {dest} leads outside {within}")
        dest.parent.mkdir(parents=True, exist_ok=True)


def _copy_file(fd: int, info: os.stat_result, dest: Path, within: Path, budget: Budget, shown: str) -> None:
    _destination(dest, within, shown)
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UnsafePath(f"{shown}: cannot write {dest}: {exc.strerror}") from None
    try:
        while chunk := os.read(fd, _CHUNK):
            budget.take(len(chunk), shown)
            os.write(out, chunk)
        os.fchmod(out, stat.S_IMODE(info.st_mode) & 0o777)
    finally:
        os.close(out)


def _copy_tree(dir_fd: int, dest: Path, within: Path, budget: Budget, shown: str) -> None:
    _destination(dest / ".", within, shown)
    dest.mkdir(exist_ok=True)
    for entry in sorted(os.listdir(dir_fd)):
        sub = f"{shown}/{entry}"
        info = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            _destination(dest / entry, within, sub)
            _symlink(os.readlink(entry, dir_fd=dir_fd), dest / entry, sub)
            continue
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            raise UnsafePath(f"{sub}: not a regular file ({kind(info.st_mode)})")
        is_dir = stat.S_ISDIR(info.st_mode)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if is_dir else 0)
        try:
            fd = os.open(entry, flags, dir_fd=dir_fd)
        except OSError as exc:
            raise UnsafePath(f"{sub}: cannot open: {exc.strerror}") from None
        try:
            now = os.fstat(fd)
            if stat.S_IFMT(now.st_mode) != stat.S_IFMT(info.st_mode):
                raise UnsafePath(f"{sub}: changed while it was copied")
            if is_dir:
                _copy_tree(fd, dest / entry, within, budget, sub)
            else:
                _copy_file(fd, now, dest / entry, within, budget, sub)
        finally:
            os.close(fd)


def _symlink(target: str, link: Path, shown: str) -> None:
    """A link at `link`, replacing one an overlapping copy made (as a file is overwritten)."""
    if link.is_symlink():
        link.unlink()
    try:
        os.symlink(target, link)
    except OSError as exc:
        raise UnsafePath(f"{shown}: cannot copy the symlink to {link}: {exc.strerror}") from None
