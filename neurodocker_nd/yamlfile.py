"""YAML data files checked by JSON Schema: registry entries and minify profiles.

Errors name the file, the line (from yaml's node marks) and the YAML path, in
one line, so `ndgen validate` and the minify profile loader report alike.
"""

from __future__ import annotations

import json
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
    node = yaml.compose(path.read_text(encoding="utf-8"), Loader=_Loader)
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
    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=_Loader)
    node = next((v for k, v in root.value if k.value == key), None) if isinstance(root, yaml.MappingNode) else None
    return [item.start_mark.line + 1 for item in node.value] if isinstance(node, yaml.SequenceNode) else []


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; malformed YAML becomes one DataFileError line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc.strerror}") from None
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
    raise DataFileError(f"{path}:{line_of(path, parts)}: {_yaml_path(parts)}: {error.message} ({what} schema)")
