"""Where ndgen's data directories live, for a wheel and for a source checkout.

A wheel carries `registry/`, `schemas/` and `minify/` under
`neurodocker_nd/_data/`; a checkout (editable install) has them beside the
package, at the repository root — recognised by its pyproject.toml naming this
project, so that an unrelated `site-packages/registry` directory next to an
installed package is never taken for ndgen's data.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from neurodocker_nd.errors import NdgenError

_PACKAGE = Path(__file__).resolve().parent
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
