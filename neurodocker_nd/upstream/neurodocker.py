"""`ndgen upstream export`: registry templates upstream lacks or has stale → patch series.

For every registry entry with a ``template.yaml`` whose meta is not
``upstream.status: ndgen-only``, compare with the upstream tree's
``neurodocker/templates/<name>.yaml``. When upstream lacks it (new) or it
differs in content (update), make commits on top of the upstream tree:

* the template, formatted the way upstream's pre-commit ``yamlfmt`` hook
  formats templates (ruamel round trip, ``--mapping 4 --sequence 4 --offset 0``,
  explicit document start), so upstream's linting leaves it alone;
* for a new template on a full checkout (docs/ and .github/ present): the
  software list in ``docs/user_guide/examples.rst`` and, when it has binaries,
  the docker-build CI matrix in ``.github/workflows/create_workflows.py`` — what
  upstream's template PRs touch besides the template.

Only the template file crosses over: ``meta.yaml`` and ``method=system`` are
ndgen's and never appear in a patch. Each series is proven (:mod:`.proof`)
before anything is written; the output directory is replaced atomically.
Commits use a fixed identity and date and ``format-patch --zero-commit
--full-index --no-signature`` so re-running gives byte-identical files.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from neurodocker_nd.upstream.candidate import Candidate, binary_urls, commit_message, exportable_entries, title_for
from neurodocker_nd.upstream.gitcmd import Identity, git
from neurodocker_nd.upstream.merge import format_for_upstream, merge
from neurodocker_nd.upstream.pr_body import body_for, build_evidence
from neurodocker_nd.upstream.proof import prove
from neurodocker_nd.upstream.registration import CI_MATRIX, EXAMPLES_RST, register_in_ci, register_in_docs
from neurodocker_nd.upstream.series import TEMPLATES, Series, format_patches, series_hash, write_series_dir
from neurodocker_nd.upstream.tree import UpstreamTree, installed_version, prepare, template_at


def candidates(registry_dir: Path, base: UpstreamTree, entries: list[Any] | None = None) -> list[Candidate]:
    """Registry templates that differ from (or are missing in) the upstream tree
    (`entries`: exportable_entries(registry_dir), when the caller has them already)."""
    found = []
    for entry in entries if entries is not None else exportable_entries(registry_dir):
        path, meta = entry.template_path, entry.meta
        ours = format_for_upstream(path.read_text(encoding="utf-8"))
        theirs_path = base.path / TEMPLATES / f"{entry.name}.yaml"
        theirs_text = theirs_path.read_text(encoding="utf-8") if theirs_path.is_file() else None
        theirs = yaml.safe_load(theirs_text) if theirs_text is not None else None
        text, label = ours, ""
        kept: tuple[str, ...] = ()
        conflicts: tuple[str, ...] = ()
        if theirs_text is not None:
            # Replay what the registry changed since it synced onto upstream as it is now,
            # so upstream's later work (a version added since) is never reverted.
            rev = meta.upstream_synced_from or (installed_version() if meta.upstream_status == "update" else None)
            base_text = template_at(base, rev, entry.name) if rev else None
            merged = merge(base_text, theirs_text, ours)
            text, kept, conflicts = format_for_upstream(merged.text), merged.kept, merged.conflicts
            label = rev or ""
        data = yaml.safe_load(text)
        if theirs == data:
            continue  # same content (formatting aside): nothing to contribute
        found.append(
            Candidate(
                name=entry.name,
                text=text,
                data=data,
                upstream_data=theirs,
                description=meta.description,
                homepage=meta.homepage,
                notes=(meta.upstream_notes or "").strip(),
                base_label=label,
                kept=kept,
                conflicts=conflicts,
                glibc=_glibc_needs(meta, entry.name, data),
                system_apt=bool(meta.system and meta.system.apt),
                provenance=_provenance(meta, data),
            )
        )
    return found


def _glibc_needs(meta: Any, name: str, data: Mapping[str, Any]) -> dict[str, str]:
    """version -> minimum glibc of the binaries, from meta `requires:`."""
    versions = list(binary_urls(data))
    return {
        v: ".".join(map(str, r.glibc))
        for r in meta.requires
        if "binaries" in r.methods
        for v in r.versions
        if v in versions
    }


def _provenance(meta, data: Mapping[str, Any]):
    urls = {str(v) for v in ((data.get("binaries") or {}).get("urls") or {})}
    return tuple(
        (v, i.status, i.sha256, tuple((src.url, src.confirms) for src in i.sources))
        for v, i in meta.versions.items()
        if v in urls
    )


# ---------------------------------------------------------------- commits → patches


def _commit_series(base: UpstreamTree, c: Candidate, out: Path, author: Identity) -> tuple[list[Path], str]:
    """Commit the series on a branch of the base repo; format-patch into `out`."""
    repo = base.path
    git("checkout", "-q", "-B", f"ndgen/{c.name}", base.commit, cwd=repo)
    (repo / TEMPLATES / f"{c.name}.yaml").write_text(c.text, encoding="utf-8")
    git("add", f"{TEMPLATES}/{c.name}.yaml", cwd=repo)
    git("commit", "-q", "-F", "-", cwd=repo, input_bytes=commit_message(c).encode(), identity=author)
    if c.upstream_data is None and base.has_docs:
        touched = {
            path: what
            for path, what, register in (
                (EXAMPLES_RST, "the docs software list", register_in_docs),
                (CI_MATRIX, "the CI build matrix", register_in_ci),
            )
            if register(repo, c)
        }
        if touched:
            git("add", *touched, cwd=repo)
            msg = f"Register {c.name} in {' and '.join(touched.values())}\n"
            git("commit", "-q", "-F", "-", cwd=repo, input_bytes=msg.encode(), identity=author)
    tree = git("rev-parse", "HEAD^{tree}", cwd=repo).strip()
    patches = format_patches(repo, base.commit, out)
    git("checkout", "-q", "--detach", base.commit, cwd=repo)
    return patches, tree


def build_series(
    base: UpstreamTree,
    c: Candidate,
    workdir: Path,
    author: Identity,
    build_from: Path | None = None,
    network: str = "default",
) -> Series:
    """Commit, prove and describe one candidate (with `build_from`, a registry: build evidence too)."""
    patch_dir = workdir / "patches" / c.name
    patches, tree = _commit_series(base, c, patch_dir, author)
    proof = prove(base, patches, c.name, tree, workdir)
    built = build_evidence(c, build_from, network) if build_from is not None else ""
    contents = tuple((p.name, p.read_bytes()) for p in patches)
    digest = series_hash(contents)
    return Series(
        name=c.name,
        kind="new" if c.upstream_data is None else "update",
        patches=contents,
        title=title_for(c),
        body=body_for(c, base, proof, patches, digest, built),
        content_hash=digest,
        template_text=c.text,
    )


# ---------------------------------------------------------------- the step


def export(
    registry_dir: Path,
    upstream: Path | None,
    out: Path,
    author: Identity,
    build: bool = False,
    network: str = "default",
) -> list[Series]:
    """Write every proven series under `out` (replacing it whole); return them.

    `author` signs the commits (and so the patches' From: lines): configured by the
    user, so no commit is attributed to an account that did not make it.
    """
    entries = exportable_entries(registry_dir)  # refuses an invalid entry before any work
    with tempfile.TemporaryDirectory(prefix="ndgen-export-") as tmp:
        work = Path(tmp)
        base = prepare(upstream, work)
        series = [
            build_series(base, c, work, author, registry_dir if build else None, network)
            for c in candidates(registry_dir, base, entries)
        ]
        write_series_dir(series, out)
    return series
