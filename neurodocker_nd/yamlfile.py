"""YAML data files checked by JSON Schema: registry entries and minify profiles.

Errors name the file, the line (from yaml's node marks) and the YAML path, in
one line, so `ndgen validate` and the minify profile loader report alike.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Iterable

import yaml

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


def line_of(path: Path, parts: list[Any]) -> int:
    """1-based line of the entry at JSON path `parts` in a YAML file.

    Uses yaml's node marks; for a mapping entry it is the key's line, where a
    reader looks for "binaries: 'instructions' is a required property".  The
    file is parsed again only on this error path, so valid files parse once.
    """
    node = yaml.compose(read_text(path), Loader=_Loader)
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


def item_lines(path: Path, key: str) -> list[int]:
    """1-based line of each item of the top-level list `key`, from one compose pass.

    For files with thousands of items, where calling `line_of` per item would
    parse the file once per item.
    """
    root = yaml.compose(read_text(path), Loader=_Loader)
    node = next((v for k, v in root.value if k.value == key), None) if isinstance(root, yaml.MappingNode) else None
    return [item.start_mark.line + 1 for item in node.value] if isinstance(node, yaml.SequenceNode) else []


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_text(path: Path) -> str:
    """A regular file's UTF-8 text; anything else is one DataFileError line.

    Opened non-blocking and checked with fstat before reading: a FIFO would
    block a plain open() until a writer comes, /dev/zero would never end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a file")
            raise DataFileError(f"{path}: not a regular file ({kind})")
        try:
            data = fh.read()
        except OSError as exc:
            raise DataFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); YAML files must be UTF-8"
        ) from None


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; malformed YAML becomes one DataFileError line."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DataFileError(f"{path}{where}: malformed YAML: {problem}") from None


def schema_validator(schema_path: Path):
    import jsonschema  # neurodocker already imports it; kept local for `list` speed

    with schema_path.open() as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def check_schema(data: Any, path: Path, validator, what: str) -> None:
    """Raise DataFileError naming file:line, YAML path and the first (best) violation."""
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return
    parts = list(error.absolute_path)
    raise DataFileError(f"{path}:{line_of(path, parts)}: {_yaml_path(parts)}: {_short(error)} ({what} schema)")


def _short(error) -> str:
    """The violation without a 100 KB repr of the offending value: one readable line."""
    message = error.message
    instance = repr(error.instance)
    if len(instance) > MAX_VALUE and instance in message:
        message = message.replace(instance, f"{instance[:MAX_VALUE - 20]}…{instance[-12:]}")
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


# Longest value repr and message an error line shows.
MAX_VALUE = 80
MAX_MESSAGE = 300
