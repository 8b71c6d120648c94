"""Which (schema, data) pairs passed a JSON Schema check before, remembered across runs.

Importing jsonschema costs a cold render about as much CPU as all the rest of ndgen's
own work (~0.15 s here), for a check whose answer depends only on the schema's and
the data's bytes. So a passed check leaves an empty marker file named by the sha256
of both in `$XDG_CACHE_HOME/ndgen/schema-ok/`; the same template or meta file, against
the same schema, is then not checked again and jsonschema is not imported. Anything
else — a new or changed file, another schema, data that has no canonical JSON form,
a cache that cannot be read or written — is checked as before, with the same error.
Only passes are remembered: a broken file fails every time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def memo_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ndgen" / "schema-ok"


@functools.cache
def _schema_digest(schema_path: Path) -> bytes:
    return hashlib.sha256(schema_path.read_bytes()).digest()


def _key(data: Any, schema_path: Path) -> str | None:
    try:
        text = json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):  # keys of mixed types, dates, NaN: no canonical form, always checked
        return None
    try:
        schema = _schema_digest(schema_path)
    except OSError:
        return None
    return hashlib.sha256(schema + b"\0" + text.encode()).hexdigest()


def checked(data: Any, schema_path: Path, check: Callable[[], None]) -> None:
    """Run `check()` (which raises when `data` violates the schema) unless this pair passed before."""
    key = _key(data, schema_path)
    marker = memo_dir() / key if key is not None else None
    if marker is not None and marker.is_file():
        return
    check()
    if marker is not None:
        _remember(marker)


def _remember(marker: Path) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except OSError:  # read-only home, full disk: the check just runs again next time
        pass
