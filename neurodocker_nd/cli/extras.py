"""Optional dependencies: which subcommand needs which extra of `pip install`.

Rendering (the default command, list, show, validate, matrix, recipe) and
`check-urls` (the standard library's HTTP client) need only the core
dependencies, which install on every platform. The engine side (Docker SDK),
the tracer's ELF/dpkg readers, the GitHub client and the comment-keeping YAML
writer are extras; a subcommand whose extra is missing stops with one line
naming it, before importing anything (names must match pyproject.toml's
optional-dependencies). An option that needs an extra its subcommand does not
(`check-urls --write`) asks with `require`, before doing any work.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from types import MappingProxyType

from neurodocker_nd.errors import NdgenError

# extra -> the import names its distributions provide
EXTRAS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "build": ("docker", "rich"),
        "minify": ("docker", "rich", "elftools", "debian.deb822"),
        "upstream": ("ghapi", "ruamel.yaml"),
    }
)

# subcommand -> the extra it needs
COMMANDS: Mapping[str, str] = MappingProxyType(
    {
        "base": "build",
        "build": "build",
        "test": "build",
        "fleet": "build",  # plan reads base images on the engine; run builds and pushes
        "minify": "minify",
        "modules": "build",  # the Docker SDK: the image's ENV and its DEPLOY_PATH listing
        "sif": "build",  # the Docker SDK finds the image's layers
        # Registry maintenance: rewrites YAML with ruamel.yaml (comments kept).
        "upstream": "upstream",
        # Not check-urls: only its --write rewrites YAML (ruamel.yaml, comments kept);
        # the command asks for the extra itself then (`require`).
    }
)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package of a dotted name
        return False


def missing(extra: str) -> tuple[str, ...]:
    """Import names of `extra` that are not installed."""
    return tuple(m for m in EXTRAS[extra] if not _importable(m))


def require(extra: str, what: str) -> None:
    """Raise one NdgenError line if `extra` is not installed; `what` is the command line that needs it."""
    if missing(extra):
        raise NdgenError(f"ndgen {what} needs the '{extra}' extra: pip install 'neurodocker-nd[{extra}]'")


def require_for(command: str) -> None:
    """Raise one NdgenError line if `ndgen COMMAND` needs an extra that is not installed."""
    extra = COMMANDS.get(command)
    if extra is not None:
        require(extra, command)
