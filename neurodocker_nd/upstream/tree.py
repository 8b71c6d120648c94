"""The upstream git tree patches are made against (and proven on).

Two sources, in order of preference:

* ``--upstream PATH``: a git checkout of ReproNim/neurodocker. It is cloned into
  a scratch directory (the user's checkout is never touched) at its HEAD;
  uncommitted changes there are ignored. A full checkout also has upstream's
  docs and CI matrix, so new templates get registered there too.
* otherwise the *installed* neurodocker package, laid out as the repository's
  ``neurodocker/`` directory and committed with a fixed identity and date. This
  needs no network (CI here cannot reach GitHub), is reproducible byte for byte,
  and for a release install (2.1.2) its files equal the release tag's
  ``neurodocker/`` directory, so the patches apply to upstream's repository.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from pathlib import Path

import attrs

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.upstream.gitcmd import git, init_repo

# Not part of upstream's repository: generated at build time, or bytecode.
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "_version.py")


@attrs.frozen
class UpstreamTree:
    """A git work tree of upstream neurodocker at commit `commit`."""

    path: Path
    commit: str
    description: str  # for PR bodies: where the base came from
    has_docs: bool  # docs/ and .github/ present (a full checkout)


def installed_package_dir() -> Path:
    """The installed neurodocker package directory, found without importing it.

    Importing neurodocker would register its templates in a class-level registry;
    find_spec only locates the files.
    """
    spec = importlib.util.find_spec("neurodocker")
    if spec is None or spec.origin is None:
        raise NdgenError("neurodocker is not installed (pip install neurodocker)")
    return Path(spec.origin).parent


def installed_version() -> str:
    return importlib.metadata.version("neurodocker")


def prepare(upstream: Path | None, workdir: Path) -> UpstreamTree:
    """Materialise the upstream tree under `workdir` (a scratch directory)."""
    dest = workdir / "upstream"
    if upstream is None:
        return _from_installed(dest)
    return _from_checkout(upstream, dest)


def _from_installed(dest: Path) -> UpstreamTree:
    version = installed_version()
    init_repo(dest)
    shutil.copytree(installed_package_dir(), dest / "neurodocker", ignore=_IGNORED)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", f"neurodocker {version} (installed package)", cwd=dest)
    commit = git("rev-parse", "HEAD", cwd=dest).strip()
    return UpstreamTree(dest, commit, f"neurodocker {version} as released (installed package files)", False)


def _from_checkout(upstream: Path, dest: Path) -> UpstreamTree:
    if not (upstream / "neurodocker" / "templates").is_dir():
        raise NdgenError(f"--upstream {upstream}: not a neurodocker checkout (no neurodocker/templates)")
    git("clone", "-q", "--no-checkout", str(upstream), str(dest), what=f"cloning --upstream {upstream}")
    commit = git("rev-parse", "HEAD", cwd=upstream, what=f"--upstream {upstream}").strip()
    git("checkout", "-q", "-B", "master", commit, cwd=dest)
    has_docs = (dest / "docs" / "user_guide" / "examples.rst").is_file()
    return UpstreamTree(dest, commit, f"ReproNim/neurodocker at {commit[:12]}", has_docs)
