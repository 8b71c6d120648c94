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


def template_at(base: UpstreamTree, revision: str, name: str) -> str | None:
    """Upstream's `templates/<name>.yaml` at `revision` (None: it had none then).

    `revision` is what a registry entry records as `upstream.synced_from`: the
    installed neurodocker release (read from the installed files, which equal the
    release tag's), or a tag/commit the upstream checkout has (`2.1.2` also
    finds the tag `v2.1.2`).
    """
    path = f"neurodocker/templates/{name}.yaml"
    if revision == installed_version():
        installed = installed_package_dir() / "templates" / f"{name}.yaml"
        return installed.read_text(encoding="utf-8") if installed.is_file() else None
    for rev in (revision, f"v{revision}"):
        try:
            commit = git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}", cwd=base.path).strip()
        except NdgenError:
            continue
        try:
            return git("show", f"{commit}:{path}", cwd=base.path)
        except NdgenError:
            return None
    raise NdgenError(
        f"{name}: meta upstream.synced_from {revision!r} is neither the installed neurodocker"
        f" {installed_version()} nor a revision of the upstream tree (pass --upstream with a checkout that has it)"
    )
