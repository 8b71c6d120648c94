"""Output files written whole or not at all.

Every file ndgen writes for a user (recipes, logs' recipes, reports, SquashFS
images) appears under its final name only when complete: it is written to a
temp file in the same directory and renamed into place. A target that exists
but is not a regular file (/dev/null, /dev/stdout, a FIFO) is written in place:
renaming over it would replace a device node with a plain file — as root, the
whole machine's /dev/null.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from neurodocker_nd.errors import NdgenError


def _is_special(path: Path) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode) and not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, mkdir: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` if the block succeeds.

    On any error the temp file is removed and an existing `path` is untouched.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if mkdir:
        directory.mkdir(parents=True, exist_ok=True)
    if not directory.is_dir():
        raise NdgenError(f"cannot write {path}: directory {directory} does not exist")
    if path.is_dir():
        raise NdgenError(f"cannot write {path}: it is a directory")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise NdgenError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, *, mkdir: bool = False) -> None:
    """Write `text` (UTF-8, LF newlines) to `path` whole or not at all."""
    if _is_special(Path(path)):
        try:
            with open(path, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
        except OSError as exc:
            raise NdgenError(f"cannot write {path}: {exc.strerror or exc}") from None
        return
    with replacing(path, mkdir=mkdir) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
