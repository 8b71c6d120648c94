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

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from neurodocker_nd import __version__
from neurodocker_nd.core import outfile
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.upstream.gitcmd import Identity, git
from neurodocker_nd.upstream.merge import merge
from neurodocker_nd.upstream.proof import Proof, prove
from neurodocker_nd.upstream.tree import UpstreamTree, installed_version, prepare, template_at

TEMPLATES = "neurodocker/templates"
EXAMPLES_RST = "docs/user_guide/examples.rst"
CI_MATRIX = ".github/workflows/create_workflows.py"
PR_FILE = "PR.md"
NC_RECIPE_FILE = "build.yaml"  # a neurocontainers series carries its recipe under this name
HASH_MARKER = "ndgen-series"


@attrs.frozen
class Candidate:
    """A registry template to upstream, before it is turned into commits."""

    name: str
    text: str  # formatted for upstream
    data: Mapping[str, Any]
    upstream_data: Mapping[str, Any] | None  # None: upstream lacks it
    description: str
    homepage: str
    notes: str = ""  # meta upstream.notes: why, in the registry's words
    base_label: str = ""  # the revision the three-way merge used as base ("" for none)
    kept: tuple[str, ...] = ()  # upstream's own changes since the base, kept
    conflicts: tuple[str, ...] = ()  # keys both changed: ndgen's value proposed
    glibc: Mapping[str, str] = attrs.field(factory=dict)  # version -> minimum glibc
    system_apt: bool = False  # meta has a Debian-packaged method=system
    # meta `versions:` of this template's versions: (version, status, sha256, ((url, confirms), …));
    # upstream's template schema has no place for them, so the PR body carries them to reviewers.
    provenance: tuple[tuple[str, str, str | None, tuple[tuple[str, str], ...]], ...] = ()


@attrs.frozen
class Series:
    """One exported patch series, proven."""

    name: str
    kind: str  # "new" | "update"
    patches: tuple[tuple[str, bytes], ...]  # (file name, content)
    title: str
    body: str
    content_hash: str
    template_text: str  # neurodocker/templates/<name>.yaml once the series is applied
    file_name: str = ""  # written as (default <name>.yaml; a neurocontainers series: build.yaml)


# ---------------------------------------------------------------- formatting


def format_for_upstream(text: str) -> str:
    """Format a template as upstream's yamlfmt pre-commit hook does."""
    from neurodocker_nd.upstream.merge import _yaml

    rt = _yaml()
    out = io.StringIO()
    rt.dump_all(list(rt.load_all(text)), out)
    return out.getvalue()


def series_hash(patches: Iterable[tuple[str, bytes]]) -> str:
    """Content hash of a series: names the bot's branch (`ndgen/<name>-<hash>`)."""
    h = hashlib.sha256()
    for fname, content in sorted(patches):
        h.update(fname.encode() + b"\0" + content + b"\0")
    return h.hexdigest()[:12]


# ---------------------------------------------------------------- candidates


def exportable_entries(registry_dir: Path) -> list[Any]:
    """Registry entries with their own template whose meta does not say `ndgen-only`,
    each passing `ndgen validate`'s template checks (schema, test renders in the sandbox):
    an entry validate refuses never travels toward an upstream PR. Raises on the first."""
    from neurodocker_nd.registry.entries import Registry

    registry = Registry(registry_dir=registry_dir)
    root = registry_dir.resolve()
    found = []
    for entry in registry.entries():
        path = entry.template_path
        if entry.meta is None or path is None or path.resolve().parent.parent != root:
            continue  # upstream-only, or system-only (ndgen-only by definition)
        if entry.meta.upstream_status != "ndgen-only":
            found.append(entry)
    for entry in found:
        _validated(registry, entry)
    return found


def _validated(registry: Any, entry: Any) -> None:
    """`ndgen validate registry/<name>`'s template checks of one entry — its schema (checked
    when the registry read it) and test renders in ndgen's sandbox on apt and yum — as an
    export error: what makes a template unsafe or broken. (The provenance lint stays `validate`'s.)"""
    from neurodocker_nd.maintain.matrix import check_renders

    try:
        check_renders(registry, [entry])
    except NdgenError as exc:
        raise NdgenError(f"{entry.name}: not exported, `ndgen validate` refuses it: {exc.message}") from None


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
        text, kept, conflicts, label = ours, (), (), ""
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
    versions = list(_urls(data))
    return {
        v: ".".join(map(str, r.glibc))
        for r in meta.requires
        if "binaries" in r.methods
        for v in r.versions
        if v in versions
    }


# ---------------------------------------------------------------- what changed


def _urls(data: Mapping[str, Any] | None) -> dict[str, str]:
    if not data:
        return {}
    return {str(k): str(v) for k, v in ((data.get("binaries") or {}).get("urls") or {}).items()}


def _sorted_versions(versions: Iterable[str]) -> list[str]:
    from neurodocker_nd.registry.entries import sort_versions

    return list(sort_versions(versions))


def version_changes(c: Candidate) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, changed URL) versions of the binaries method."""
    ours, theirs = _urls(c.data), _urls(c.upstream_data)
    added = _sorted_versions(v for v in ours if v not in theirs)
    removed = _sorted_versions(v for v in theirs if v not in ours)
    changed = _sorted_versions(v for v in ours if v in theirs and ours[v] != theirs[v])
    return added, removed, changed


def other_changes(c: Candidate) -> list[str]:
    """Dotted keys (besides binaries.urls) whose content differs from upstream's, down to 3 levels."""
    return _diff_keys(c.data, c.upstream_data or {}, "", 3)


def _diff_keys(a: Any, b: Any, path: str, depth: int) -> list[str]:
    if not (isinstance(a, dict) and isinstance(b, dict)) or depth == 0:
        return [path.rstrip(".")] if a != b else []
    keys = []
    for key in sorted(set(a) | set(b), key=str):
        if f"{path}{key}" == "binaries.urls":
            continue  # reported as versions
        keys += _diff_keys(a.get(key), b.get(key), f"{path}{key}.", depth - 1)
    return keys


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1]


def title_for(c: Candidate) -> str:
    """What the PR does, in upstream's subject style ("Add FSL 6.0.7.20 to fsl template")."""
    if c.upstream_data is None:
        return f"Add {c.name} template"
    added, removed, changed = version_changes(c)
    other = other_changes(c)
    parts = []
    if added:
        parts.append(f"add {c.name} {', '.join(added)}")
    if removed:
        parts.append(f"remove {', '.join(removed)}")
    if changed:
        parts.append(f"fix the download URLs of {', '.join(changed)}")
    if other:
        parts.append(f"fix {_and(other)}")
    if not parts:
        return f"Update {c.name} template"
    if parts == parts[:1] and added:
        return f"Add {c.name} {', '.join(added)} to {c.name} template"
    text = _and(parts)
    return f"{text[0].upper()}{text[1:]} in {c.name} template"


def _methods(data: Mapping[str, Any]) -> list[str]:
    return [m for m in ("binaries", "source") if m in data]


def change_lines(c: Candidate, code: str = "") -> list[str]:
    """Sentences saying what an update changes (`code` quotes key names, for Markdown)."""
    added, removed, changed = version_changes(c)
    lines = [
        f"{label}: {', '.join(vs)}."
        for label, vs in (("New versions", added), ("Removed versions", removed), ("Changed download URLs", changed))
        if vs
    ]
    other = other_changes(c)
    if other:
        lines.append(f"Also changed: {', '.join(code + k + code for k in other)}.")
    return lines


def commit_message(c: Candidate) -> str:
    lines = [title_for(c), ""]
    if c.upstream_data is None:
        lines.append(f"{c.name} ({c.homepage}): {c.description}".rstrip())
        lines.append(f"Installation methods: {', '.join(_methods(c.data))}.")
        versions = _sorted_versions(_urls(c.data))
        if versions:
            lines.append(f"Versions: {', '.join(versions)}.")
    else:
        lines += change_lines(c)
    if c.notes:
        lines += ["", c.notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- docs / CI registration


def _register_in_docs(tree: Path, c: Candidate) -> bool:
    """Add the software list line upstream's docs keep (list_softwares.py format)."""
    path = tree / EXAMPLES_RST
    if not path.is_file():
        return False
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(".. INSERT LIST START"))
        end = next(i for i, line in enumerate(lines) if line.startswith(".. INSERT LIST END"))
    except StopIteration:
        return False
    item = re.compile(r"^- `(\S+) <")
    new = f"- `{c.name} <{c.data.get('url', c.homepage)}>`_\n"
    pos = None
    for i in range(start, end):
        m = item.match(lines[i])
        if m and m.group(1) > c.name:
            pos = i
            break
        if m:
            pos = i + 1
    if pos is None:
        return False
    lines.insert(pos, new)
    path.write_text("".join(lines), encoding="utf-8")
    return True


def ci_plan(c: Candidate) -> tuple[list[str] | None, str]:
    """(versions upstream's CI must skip, or None for no CI entry; why, for PR.md).

    Upstream's docker-build matrix builds every version on every OS it lists, apt-
    and yum-based alike, some with an older glibc than recent release binaries need;
    it can skip versions but not OSes. So a version with a glibc floor is skipped, and
    a template that cannot work on every listed OS gets no entry at all.
    """
    versions = list(_urls(c.data))
    if not versions:  # create_workflows.py reads versions from binaries.urls
        return (
            None,
            "not added to upstream's CI build matrix: it reads versions from `binaries.urls`, which this template lacks",
        )
    deps = (c.data.get("binaries") or {}).get("dependencies") or {}
    if deps.get("apt") and not deps.get("yum"):
        return None, (
            "not added to upstream's CI build matrix, which also builds on yum-based OSes:"
            " the template installs its dependencies on apt only"
        )
    skip = [v for v in versions if v in c.glibc]
    if len(skip) == len(versions):
        return None, (
            f"not added to upstream's CI build matrix: every version needs glibc >= "
            f"{min(c.glibc.values())}, older than some of its OSes have"
        )
    note = "added to upstream's CI build matrix"
    if skip:
        note += (
            f", skipping {', '.join(skip)} (needs glibc >= {min(c.glibc[v] for v in skip)},"
            " which some of its OSes lack)"
        )
    return skip, note


def _register_in_ci(tree: Path, c: Candidate) -> bool:
    """Add the template to upstream's docker-build CI matrix (software() dict)."""
    path = tree / CI_MATRIX
    skip, _ = ci_plan(c)
    if not path.is_file() or skip is None:
        return False
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("def software()"))
    except StopIteration:
        return False
    key = re.compile(r'^        "(\w+)": ')
    pos = None
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("    }"):
            pos = pos if pos is not None else i
            break
        m = key.match(lines[i])
        if m and m.group(1) == "miniconda":
            continue  # upstream keeps miniconda last, outside the alphabetical run
        if m and m.group(1) > c.name and pos is None:
            pos = i
    if pos is None:
        return False
    methods = ", ".join(f'"{m}"' for m in _methods(c.data))
    quoted = ", ".join(f'"{v}"' for v in skip)
    skips = f', "skip_versions": [{quoted}]' if skip else ""
    lines.insert(pos, f'        "{c.name}": {{"methods": [{methods}]{skips}}},\n')
    path.write_text("".join(lines), encoding="utf-8")
    return True


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
                (EXAMPLES_RST, "the docs software list", _register_in_docs),
                (CI_MATRIX, "the CI build matrix", _register_in_ci),
            )
            if register(repo, c)
        }
        if touched:
            git("add", *touched, cwd=repo)
            msg = f"Register {c.name} in {' and '.join(touched.values())}\n"
            git("commit", "-q", "-F", "-", cwd=repo, input_bytes=msg.encode(), identity=author)
    tree = git("rev-parse", "HEAD^{tree}", cwd=repo).strip()
    out.mkdir(parents=True)
    names = git(
        "format-patch",
        "--zero-commit",
        "--full-index",
        "--no-signature",
        "--numbered",
        "-o",
        str(out),
        f"{base.commit}..HEAD",
        cwd=repo,
    ).splitlines()
    git("checkout", "-q", "--detach", base.commit, cwd=repo)
    return [Path(n) if os.path.isabs(n) else repo / n for n in names], tree


def _provenance(meta, data: Mapping[str, Any]):
    urls = {str(v) for v in ((data.get("binaries") or {}).get("urls") or {})}
    return tuple(
        (v, i.status, i.sha256, tuple((src.url, src.confirms) for src in i.sources))
        for v, i in meta.versions.items()
        if v in urls
    )


def _provenance_lines(c: Candidate) -> list[str]:
    """`## Sources`: where each version and asset name was read, and its sha256 when known."""
    if not c.provenance:
        return []
    out = ["## Sources", ""]
    for version, status, sha, sources in c.provenance:
        digest = f"; sha256 `{sha}`" if sha else ""
        out.append(f"- `{version}` ({status}{digest}):")
        for url, confirms in sources:
            where = (
                f"a public file found through a code search index ({url})" if url.startswith("search-index:") else url
            )
            out.append(f"  - {where}: {confirms}")
    return [*out, ""]


def _pr_body(c: Candidate, base: UpstreamTree, proof: Proof, patches: list[Path], digest: str, built: str = "") -> str:
    what = []
    if c.upstream_data is None:
        what.append(f"Adds a template for **{c.name}** ({c.data.get('url', c.homepage)}): {c.description}")
        what.append(f"Methods: {', '.join(proof.methods)}.")
    else:
        what.append(f"Updates the **{c.name}** template.")
        what += change_lines(c, code="`")
        if c.kept:
            what.append(
                f"Upstream's own changes since {c.base_label or 'it was copied'} are kept:"
                f" {', '.join('`' + k + '`' for k in c.kept)}."
            )
        if c.conflicts:
            what.append(
                f"Upstream changed these since {c.base_label or 'it was copied'} too, differently;"
                f" this proposes ndgen's value: {', '.join('`' + k + '`' for k in c.conflicts)}."
            )
    why = _why(c)
    versions = _sorted_versions(proof.versions) or ["(source build; any version)"]
    fmts = sorted({r.split(":")[0] for r in proof.renders})
    pms = sorted({r.split(":")[1] for r in proof.renders})
    files = [p.name for p in patches]
    lines = [
        "## What",
        "",
        *what,
        "",
        "## Why",
        "",
        why.strip(),
        "",
        "## Versions",
        "",
        ", ".join(versions),
        "",
        *_provenance_lines(c),
        "## How it was tested",
        "",
        f"- the series ({', '.join(files)}) applies with `git am` to {base.description};",
        f"- neurodocker {proof.neurodocker_version}'s own `import neurodocker` registers it among"
        f" {proof.n_templates} templates, and `register_template` validates it against"
        " `reproenv/schemas/template.json`;",
        f"- neurodocker's renderers render it: {len(proof.renders)} recipes"
        f" ({' and '.join(fmts)} x {' and '.join(pms)} bases debian:bookworm-slim / rockylinux:9"
        f" x every method and version);",
        *[f"- `{cmd}` succeeds;" for cmd in proof.cli],
        f"- every rendered recipe is valid shell: `bash -n` accepts all {proof.shell_checked} shell"
        " commands (every Dockerfile `RUN`, split with dockerfile-parse, and every Singularity `%post`);",
        *([f"- hadolint reports no error in the {proof.hadolint};"] if proof.hadolint else []),
        *[f"- upstream's CI matrix generator reads it: {line};" for line in proof.ci_matrix],
        *(
            [f"- {ci_plan(c)[1]}{'' if base.has_docs else ' (on a full upstream checkout; this tree has no CI)'};"]
            if c.upstream_data is None
            else []
        ),
        f"- not built by ndgen: {_unbuilt_reason(c)}.",
        *([f"- {built};"] if built else []),
        "",
        "---",
        "",
        f"Generated by ndgen {__version__}"
        f" (`ndgen upstream export`) from its registry entry `registry/{c.name}/template.yaml`.",
        f"<!-- {HASH_MARKER}: {c.name} {digest} -->",
    ]
    return "\n".join(lines) + "\n"


def _unbuilt_reason(c: Candidate) -> str:
    """Why ndgen's engine could not build this template (its machines reach only package mirrors)."""
    from urllib.parse import urlsplit

    hosts = sorted({urlsplit(u).hostname or u for u in _urls(c.data).values()})
    what = []
    if hosts:
        what.append(f"the binaries come from {', '.join(hosts)}")
    if "source" in c.data:
        what.append("the source method downloads its sources")
    return ("; ".join(what) or "it downloads its files") + (
        ", which ndgen's build machines cannot reach (they reach only Debian and PyPI mirrors); upstream's CI builds it"
    )


def _why(c: Candidate) -> str:
    """Why upstream wants it: the template data, then the registry's `upstream.notes`."""
    notes = f" {c.notes}" if c.notes else ""
    if c.upstream_data is None:
        how = " and ".join({"binaries": "official release binaries", "source": "source"}[m] for m in _methods(c.data))
        return (
            f"neurodocker has no {c.name} template, so users write its installation by hand;"
            f" this one installs it from {how}.{notes}"
        )
    added, removed, changed = version_changes(c)
    reasons = []
    if added:
        theirs = _sorted_versions(_urls(c.upstream_data))
        since = f" since {theirs[0]}" if theirs else ""
        reasons.append(f"The template lacks the {c.name} releases{since}: {', '.join(added)}.")
    if removed:
        reasons.append(f"It removes {', '.join(removed)}.")
    if changed:
        reasons.append(f"The download URLs of {', '.join(changed)} moved.")
    other = other_changes(c)
    if other:
        reasons.append(f"It changes {', '.join('`' + k + '`' for k in other)}.")
    return " ".join(reasons) + notes


def build_evidence(c: Candidate, registry_dir: Path, network: str = "default") -> str:
    """Build the entry's Debian-packaged method=system on the engine and run its test ("" if none).

    The template's own downloads are unreachable here; this at least proves, on a real
    build, that the registry entry's test (what users of the template run) is right.
    `network` is `ndgen build --network` (the engine's default unless the user opts in).
    """
    from neurodocker_nd.build.docker_build import build_recipe
    from neurodocker_nd.core import engine
    from neurodocker_nd.registry.entries import Registry
    from neurodocker_nd.render.renderer import render_recipe

    if not c.system_apt:
        return ""
    tag = f"ndgen-upstream-evidence-{c.name.replace('_', '-')}:{os.getpid()}"
    recipe = render_recipe(
        [f"{c.name},method=system"], os_name="debian:bookworm", registry=Registry(registry_dir=registry_dir)
    )
    try:
        outcome = build_recipe(recipe, tag, network=network)
    finally:
        try:
            engine.connect().images.remove(tag, force=True)
        except Exception:  # noqa: BLE001 - never built, or already gone
            pass
    if outcome.failures:
        why = "; ".join(f"{t.name}: {t.reason}" for t in outcome.failures)
        raise NdgenError(
            f"{c.name}: ndgen build of its method=system: the entry's test failed ({why}); log: {outcome.log_path}"
        )
    return (
        f"the registry entry's test passes in a real `ndgen build --pkg {c.name},method=system --os debian:bookworm`"
        " (Debian's package, not this template: the test is the one shipped with it)"
    )


def build_series(
    base: UpstreamTree,
    c: Candidate,
    workdir: Path,
    author: Identity,
    build_from: Path | None = None,
    network: str = "default",
) -> Series:
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
        body=_pr_body(c, base, proof, patches, digest, built),
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


def render_pr_md(s: Series) -> str:
    return f"# {s.title}\n\n{s.body}"


def write_series_dir(series: list[Series], out: Path, upstream_name: str = "neurodocker") -> None:
    """Write `out/<name>/` (patches, PR.md, the file as it lands) per series and an index,
    replacing `out` whole: readers never see a half-written directory."""
    index = [
        f"# Patches for upstream {upstream_name}",
        "",
        "Generated by `ndgen upstream export`; do not edit (CI fails when stale).",
        "",
    ]
    with outfile.new_directory(out, replace=True) as staging:
        for s in series:
            d = staging / s.name
            d.mkdir()
            for fname, content in s.patches:
                (d / fname).write_bytes(content)
            (d / PR_FILE).write_text(render_pr_md(s), encoding="utf-8")
            # The bot compares this with upstream's file to tell when the template landed.
            (d / (s.file_name or f"{s.name}.yaml")).write_text(s.template_text, encoding="utf-8")
            index.append(f"- `{s.name}/` ({s.kind}, {len(s.patches)} patch(es)): {s.title}")
        if not series:
            index.append("Nothing to contribute: every registry template matches upstream.")
        (staging / "README.md").write_text("\n".join(index) + "\n", encoding="utf-8")


@attrs.frozen
class ExportedSeries:
    """A series as committed under upstream-patches/<name>/ (what the bot reads)."""

    name: str
    patches: tuple[Path, ...]
    title: str
    body: str
    content_hash: str
    template_text: str
    # Where the file lands upstream: neurodocker's template, or a neurocontainers recipe.
    landed_path: str = ""
    target: str = "neurodocker"

    @property
    def branch(self) -> str:
        """Stable per template: the content is tracked by the PR body's hash marker, not the name."""
        return f"ndgen/{self.name}"


def read_series_dir(out: Path) -> list[ExportedSeries]:
    """Read exported series back, sorted by name."""
    if not out.is_dir():
        raise NdgenError(f"{out}: no exported patches (run `ndgen upstream export` first)")
    found = []
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        pr, template = d / PR_FILE, d / f"{d.name}.yaml"
        target, landed = "neurodocker", f"{TEMPLATES}/{d.name}.yaml"
        if (d / NC_RECIPE_FILE).is_file():  # a neurocontainers series (export --target neurocontainers)
            template, target, landed = d / NC_RECIPE_FILE, "neurocontainers", f"recipes/{d.name}/{NC_RECIPE_FILE}"
        patches = sorted(d.glob("*.patch"))
        if not pr.is_file() or not template.is_file() or not patches:
            raise NdgenError(
                f"{d}: not an exported series (needs {PR_FILE}, {d.name}.yaml or {NC_RECIPE_FILE}, and *.patch)"
            )
        text = pr.read_text(encoding="utf-8")
        first, _, body = text.partition("\n")
        if not first.startswith("# "):
            raise NdgenError(f"{pr}:1: first line must be '# <title>'")
        digest = series_hash((p.name, p.read_bytes()) for p in patches)
        found.append(
            ExportedSeries(
                d.name,
                tuple(patches),
                first[2:].strip(),
                body.lstrip("\n"),
                digest,
                template.read_text(encoding="utf-8"),
                landed,
                target,
            )
        )
    return found
