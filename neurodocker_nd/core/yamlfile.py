"""YAML data files checked by JSON Schema: registry entries and minify profiles.

Errors name the file, the line (from yaml's node marks) and the YAML path, in
one line, so `ndgen validate` and the minify profile loader report alike.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from neurodocker_nd.core import paths
from neurodocker_nd.errors import NdgenError

try:  # libyaml is several times faster; fall back for pure-Python builds.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


class DataFileError(NdgenError):
    """A YAML data file is unreadable, malformed or violates its schema."""


def _yaml_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _compose(path: Path, text: str | None):
    """The node tree of `text` (or of the file, read safely): for line numbers only.

    A file that changed since it was parsed may no longer be YAML; the error
    being reported matters more than its line, so that is line 1, not a traceback.
    """
    try:
        return yaml.compose(read_text(path) if text is None else text, Loader=_Loader)
    except yaml.YAMLError:
        return None


def line_of(path: Path, parts: list[Any], text: str | None = None) -> int:
    """1-based line of the entry at JSON path `parts` in a YAML file.

    Uses yaml's node marks; for a mapping entry it is the key's line, where a
    reader looks for "binaries: 'instructions' is a required property".  The
    text is parsed again only on this error path, so valid files parse once.
    Pass the `text` that was parsed: the file is then not read again (it may
    have changed, or have been read through a contained reader).
    """
    node = _compose(path, text)
    if node is None:
        return 1
    for i, p in enumerate(parts):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if str(k.value) == str(p)), None)
            if match is None:
                break
            if i == len(parts) - 1:
                return match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            node = node.value[p]
        else:
            break
    return node.start_mark.line + 1


def item_lines(path: Path, key: str, text: str | None = None) -> list[int]:
    """1-based line of each item of the top-level list `key`, from one compose pass.

    For files with thousands of items, where calling `line_of` per item would
    parse the file once per item.
    """
    root = _compose(path, text)
    node = next((v for k, v in root.value if k.value == key), None) if isinstance(root, yaml.MappingNode) else None
    return [item.start_mark.line + 1 for item in node.value] if isinstance(node, yaml.SequenceNode) else []


# Largest YAML data file read (registry entries, profiles, suites are KBs): a
# bigger one is refused before it is read, and a file that grows while it is
# read stops at the cap.
MAX_YAML_BYTES = 8 << 20
_CHUNK = 1 << 20


def read_text(path: Path, *, limit: int = MAX_YAML_BYTES) -> str:
    """A regular file's UTF-8 text, at most `limit` bytes; anything else is one DataFileError line.

    Opened non-blocking and checked with fstat before reading: a FIFO would
    block a plain open() until a writer comes, /dev/zero would never end.
    The path itself is followed (a user names it); files of an untrusted tree
    go through paths.read_text_inside instead.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataFileError(f"{path}: not a regular file ({paths.kind(info.st_mode)})")
        if info.st_size > limit:
            raise DataFileError(f"{path}: {info.st_size} bytes, larger than {limit}")
        data = _read_capped(fd, limit, path)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); YAML files must be UTF-8"
        ) from None


def _read_capped(fd: int, limit: int, path: Path) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        except OSError as exc:
            raise DataFileError(f"{path}: cannot read: {exc.strerror}") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise DataFileError(f"{path}: larger than {limit} bytes")


def parse_yaml(text: str, path: Path | str) -> Any:
    """YAML text read from `path` (by read_text or a contained reader); malformed YAML: one file:line DataFileError."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DataFileError(f"{path}{where}: malformed YAML: {problem}") from None


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; malformed YAML becomes one DataFileError line."""
    return parse_yaml(read_text(path), path)


def schema_validator(schema_path: Path):
    import jsonschema  # neurodocker already imports it; kept local for `list` speed

    with schema_path.open() as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def check_schema(data: Any, path: Path, validator, what: str, text: str | None = None) -> None:
    """Raise DataFileError naming file:line, YAML path and the first (best) violation.

    `text`: what `data` was parsed from, for the line number (else the file is read again)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return
    parts = list(error.absolute_path)
    raise DataFileError(f"{path}:{line_of(path, parts, text)}: {_yaml_path(parts)}: {_short(error)} ({what} schema)")


def _short(error) -> str:
    """The violation without a 100 KB repr of the offending value: one readable line."""
    message = error.message
    instance = repr(error.instance)
    if len(instance) > MAX_VALUE and instance in message:
        message = message.replace(instance, f"{instance[: MAX_VALUE - 20]}…{instance[-12:]}")
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


# Longest value repr and message an error line shows.
MAX_VALUE = 80
MAX_MESSAGE = 300
