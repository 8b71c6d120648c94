"""Where ndgen's data directories live, for a source checkout and for a wheel.

A checkout (editable install) reads `registry/`, `schemas/` and `minify/` from
the repository root; a wheel carries them under `neurodocker_nd/_data/`.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the directory `name` (registry, schemas or minify)."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    return _PACKAGE.parent / name


def registry_dir() -> Path:
    return data_dir("registry")


def schemas_dir() -> Path:
    return data_dir("schemas")


def profiles_dir() -> Path:
    return data_dir("minify")
