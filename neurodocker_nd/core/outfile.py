"""Output files written like shell redirection, but whole or not at all.

`-o FILE` behaves like `> FILE`: a symlink is followed (its target is
written), an existing file keeps its permissions (a 0600 file stays 0600), a
new file gets 0666 minus the umask, a file the user may not write is refused
(`Permission denied`, as the shell says), and every failure is one line, exit 2.
Unlike `>`, the new content appears only when complete: it is written to a
temp file in the target's directory and renamed over the (resolved) target.

A target that exists but is not a regular file (/dev/null, /dev/stdout, a
FIFO) is written in place: renaming over it would replace a device node with
a plain file — as root, the whole machine's /dev/null. So is a writable file
in a directory where no temp file can be made (the shell can write it too).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from neurodocker_nd.errors import NdgenError


def umask() -> int:
    """The process umask (read by setting it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fail(path: os.PathLike | str, exc: OSError | str) -> NdgenError:
    why = exc if isinstance(exc, str) else (exc.strerror or str(exc))
    return NdgenError(f"cannot write {path}: {why}")


def _target(path: Path) -> tuple[Path, os.stat_result | None]:
    """The file `> path` would write (symlinks followed) and its stat, if it exists."""
    real = Path(os.path.realpath(path))
    try:
        return real, os.stat(real)
    except FileNotFoundError:
        return real, None
    except OSError as exc:  # e.g. EACCES on a directory on the way
        raise _fail(path, exc) from None


def _may_write(path: Path, mode: int = os.W_OK) -> bool:
    # The effective ids decide what open() may do (root may write a 0444 file, as in the shell).
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _is_special(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, mkdir: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path`'s target; rename it over the target if the block succeeds.

    On any error the temp file is removed and an existing target is untouched.
    """
    shown = Path(path)
    if mkdir:
        try:
            shown.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fail(path, exc) from None
    real, st = _target(shown)
    directory = real.parent
    if not directory.is_dir():
        raise _fail(path, f"directory {shown.parent} does not exist")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise _fail(path, "it is a directory")
    if st is not None and not _may_write(real):
        raise _fail(path, "Permission denied")  # what `> FILE` says for a read-only file
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".partial", dir=directory)
    except OSError as exc:
        raise _fail(path, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
                os.chown(tmp, st.st_uid, st.st_gid)  # root writing a user's file: it stays theirs
        else:
            os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, real)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _fail(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_in_place(path: str | os.PathLike, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
    except OSError as exc:
        raise _fail(path, exc) from None


def write_text(path: str | os.PathLike, text: str, *, mkdir: bool = False) -> None:
    """Write `text` (UTF-8, LF newlines) to `path` like `> path`, whole or not at all."""
    if _is_special(Path(path)):
        _write_in_place(path, text)
        return
    real, st = _target(Path(path))
    if (
        st is not None
        and stat.S_ISREG(st.st_mode)
        and _may_write(real)
        and not _may_write(real.parent, os.W_OK | os.X_OK)
    ):
        _write_in_place(real, text)  # writable file, unwritable directory: the shell writes it too
        return
    with replacing(path, mkdir=mkdir) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)


@contextlib.contextmanager
def new_directory(path: str | os.PathLike, *, merge: bool = False, replace: bool = False) -> Iterator[Path]:
    """Yield a staging directory whose content appears at `path` only if the block succeeds.

    By default `path` must not exist, or be an empty directory: the stage is
    made beside it and renamed to it (a build context). With `merge`, an
    existing directory keeps what the block does not write: the stage is made
    inside it and each staged entry is renamed over its namesake (a matrix) —
    a rename allocates no data, so ENOSPC cannot strike after the first entry
    is replaced. With `replace`, an existing directory (a link to one: its
    target) is replaced whole (an export): it is renamed aside only once the
    stage is complete, the stage is renamed in, and the old one is put back if
    that fails. On any error the stage is removed and `path` is as it was.
    """
    import shutil

    if merge and replace:
        raise ValueError("new_directory: merge and replace exclude each other")
    out = Path(os.path.realpath(path)) if replace else Path(path)
    into = merge and out.is_dir()
    if replace and out.exists() and not out.is_dir():
        raise _fail(path, "exists and is not a directory")
    if not (into or replace) and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise _fail(path, "exists and is not an empty directory")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out if into else parent))
    except OSError as exc:
        raise _fail(path, exc) from None
    try:
        yield stage
        if into:
            for entry in sorted(os.listdir(stage)):
                os.replace(stage / entry, out / entry)
            stage.rmdir()
        else:
            stage.chmod(0o777 & ~umask())  # mkdtemp made it 0700; a new directory honours the umask
            if replace:
                _swap_in(stage, out)
            else:
                if out.exists():
                    out.rmdir()
                os.rename(stage, out)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise _fail(path, exc) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _swap_in(stage: Path, out: Path) -> None:
    """Rename the complete `stage` to `out`, replacing a directory there.

    A rename cannot replace a non-empty directory, so the old one moves aside
    first (a rename in the same directory: nothing is deleted until the new
    one is in place) and comes back if the second rename fails.
    """
    import shutil

    if not out.exists():
        os.rename(stage, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    try:
        os.rename(out, aside / "old")
        try:
            os.rename(stage, out)
        except OSError:
            os.rename(aside / "old", out)
            raise
    finally:
        # The new directory is in place (or the old one is back): what is left aside is only garbage.
        shutil.rmtree(aside, ignore_errors=True)
