"""Are two Dockerfiles the same build?  Instruction by instruction, for the
comparisons with neurodocker's and neurocontainers' own generators
(tests/test_directives.py, tests/test_recipe_corpus.py, bench/recipes.py).

Both files are parsed with `dockerfile-parse` (continuation lines joined);
an instruction is (keyword, value with whitespace runs collapsed).  Left out,
because they are not build steps: comments and reproenv's saved-spec RUN
(`printf '…' > /.reproenv.json`).  ndgen's deliberate differences
(docs/recipes.md) are applied to the reference side first: the SC2016-fixed
entrypoint snippet; `ignore_labels` drops ndgen's own `org.ndgen`/OCI labels.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable

import attrs

from neurodocker_nd.render.defaults import fix_entrypoint_snippet

SPEC_FILE = "/.reproenv.json"
# neurocontainers suffixes colliding cache file names with a digest of a host
# cache path ($HOME-dependent); ndgen's digest is of the URL (docs/recipes.md).
_CACHE_DIGEST = re.compile(r"(/\.neurocontainer-cache/h[0-9a-f]{8}/[^\s\"'/]*?)_[0-9a-f]{12}\b")
_NDGEN_LABEL = "org.opencontainers.image.title="


@attrs.frozen
class Difference:
    index: int
    ours: str | None
    theirs: str | None

    def line(self) -> str:
        def cut(s: str | None) -> str:
            return "(nothing)" if s is None else (s if len(s) <= 110 else s[:107] + "...")

        return f"instruction {self.index + 1}: ours {cut(self.ours)} | theirs {cut(self.theirs)}"


def instructions(text: str, *, ignore_labels: bool = False) -> list[str]:
    """`KEYWORD value` per build instruction, normalised (see module doc)."""
    from dockerfile_parse import DockerfileParser

    # Docker skips blank lines inside a continuation (dockerfile-parse would end the
    # instruction there); neurocontainers' fix-locale-def leaves one.
    text = "\n".join(ln for ln in text.splitlines() if ln.strip())
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")))
    out = []
    for item in parser.structure:
        kw, value = item["instruction"], item["value"]
        if kw == "COMMENT":
            continue
        if kw == "RUN" and value.lstrip().startswith("printf '") and value.rstrip().endswith(f"> {SPEC_FILE}"):
            continue
        if ignore_labels and kw == "LABEL" and value.startswith(_NDGEN_LABEL):
            continue
        out.append(_CACHE_DIGEST.sub(r"\1_DIGEST", f"{kw} {' '.join(value.split())}"))
    return out


def first_difference(
    ours: str, theirs: str, *, ignore_labels: bool = True, ignore_checksums: bool = False
) -> Difference | None:
    """None when equivalent; else the first instruction that differs.

    `ignore_checksums` drops ndgen's `sha256sum -c` commands from `ours` (for a reference
    without them: neurodocker's templates)."""
    a = instructions(ours, ignore_labels=ignore_labels)
    if ignore_checksums:
        a = [strip_checksums(i) for i in a]
    b = [" ".join(fix_entrypoint_snippet(i, strict=False).split()) for i in instructions(theirs)]
    return _first(a, b)


def summarise(diffs: Iterable[Difference | None]) -> tuple[int, int]:
    """(equivalent, total)."""
    items = list(diffs)
    return sum(1 for d in items if d is None), len(items)


# ---------------------------------------------------------------- checksums, Singularity

# ndgen's `sha256sum -c` after a download whose meta records a digest (render/checksum.py,
# docs/render.md): an addition to the template's command, nothing else changes.
_CHECKSUM = re.compile(
    r'(?:\s*&&\s*|\n)?\{ echo "[0-9a-f]{64}\s+[^"\s]+" \| sha256sum -c --quiet - '
    r'\|\| \{ echo "ndgen: [^\n]*?; exit 1; \}; \}'
)


def strip_checksums(text: str) -> str:
    """`text` without ndgen's checksum commands (to compare with a renderer that has none)."""
    return _CHECKSUM.sub("", text)


_SECTION_RE = re.compile(r"^%(\w+)[ \t]*$", re.M)
_EXPORT_RE = re.compile(r'^export [A-Za-z_][A-Za-z0-9_]*=".*"$')
# ndgen's staged COPY (render/renderer.py _singularity_copy): a directory destination, or a file one.
_STAGED_INTO = re.compile(r"^mkdir -p (\S+) && if \[ -d (\S+) \]; then cp -a ")
_STAGED_ONE = re.compile(r"^if \[ -d (\S+) \]; then mkdir -p (\S+) && cp -a ")
_STAGE_CLEANUP = "rm -rf /.ndgen-copy /.neurocontainer-cache"
_NDGEN_LABEL_KEYS = ("org.opencontainers.image.", "org.ndgen.")


def _sections(text: str) -> tuple[str, dict[str, str]]:
    """The header and each `%section`'s body (a section given twice is not a reproenv output)."""
    parts = _SECTION_RE.split(text)
    return parts[0], {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts), 2)}


def _unstage_copies(files: list[str], chunks: list[str]) -> tuple[list[str], list[str]]:
    """ndgen's `%files SRC STAGE` + `%post` copy lines → neurodocker's `%files SRC DST` (docs/recipes.md)."""
    staged = {}
    for line in files:
        src, _, dst = line.rpartition(" ")
        if dst.startswith("/.ndgen-copy/"):
            staged[dst] = src
    if not staged:
        return files, chunks
    dst_of: dict[str, str] = {}
    kept = []
    for chunk in chunks:
        lines = chunk.splitlines()
        pairs = [(m.group(2), m.group(1)) for m in map(_STAGED_INTO.match, lines) if m]
        pairs += [(m.group(1), m.group(2)) for m in map(_STAGED_ONE.match, lines) if m]
        if pairs and len(pairs) == len(lines):
            dst_of.update(pairs)
        elif chunk.strip() != _STAGE_CLEANUP:
            kept.append(chunk)
    out = []
    for line in files:
        src, _, dst = line.rpartition(" ")
        out.append(f"{src} {dst_of.get(dst, dst)}" if dst in staged else line)
    return out, kept


def def_instructions(text: str, *, ndgen: bool, ignore_labels: bool = True) -> list[str]:
    """A Singularity definition as `SECTION item` strings, normalised like `instructions`.

    Items: the header lines, each `%files` and `%environment` line, each `%post` block
    (reproenv writes one per step, separated by a blank line), the runscript, each label.
    Left out on both sides: comments, reproenv's saved-spec printf and its `su - USER`
    lines (ndgen writes none: USER only creates the user).  `ndgen=True` undoes ndgen's
    documented differences (docs/recipes.md, docs/render.md): the ENV re-exported in
    `%post`, COPY staged through `/.ndgen-copy`, checksums, `"$@"` in `%runscript`, `%help`
    and, with `ignore_labels`, its OCI labels.  `ndgen=False` applies the SC2016 fix of
    the entrypoint snippet, as `first_difference` does.
    """
    header, sections = _sections(text)
    out = [f"HEADER {ln.strip()}" for ln in header.splitlines() if ln.strip() and not ln.startswith("#")]
    files = [ln.strip() for ln in sections.get("files", "").splitlines() if ln.strip()]
    post = sections.get("post", "")
    if not ndgen:
        post = fix_entrypoint_snippet(post, strict=False)
    chunks = []
    for chunk in post.split("\n\n"):
        lines = [ln for ln in chunk.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        lines = [ln for ln in lines if not re.fullmatch(r"su - \S+", ln.strip())]
        body = "\n".join(lines)
        if not body or (body.startswith("printf '") and body.rstrip().endswith(f"> {SPEC_FILE}")):
            continue
        if ndgen and all(_EXPORT_RE.match(ln) for ln in lines):
            continue
        chunks.append(strip_checksums(body) if ndgen else body)
    if ndgen:
        files, chunks = _unstage_copies(files, chunks)
    out += [f"FILES {f}" for f in files]
    out += [f"ENV {ln.strip()}" for ln in sections.get("environment", "").splitlines() if ln.strip()]
    out += [f"POST {' '.join(c.split())}" for c in chunks]
    runscript = " ".join(sections.get("runscript", "").split())
    if ndgen and runscript.endswith(' "$@"'):
        runscript = runscript[: -len(' "$@"')]
    if runscript:
        out.append(f"RUNSCRIPT {runscript}")
    for ln in sections.get("labels", "").splitlines():
        if ln.strip() and not (ndgen and ignore_labels and ln.strip().startswith(_NDGEN_LABEL_KEYS)):
            out.append(f"LABEL {ln.strip()}")
    return out


def first_def_difference(ours: str, theirs: str, *, ignore_labels: bool = True) -> Difference | None:
    """As `first_difference`, for an ndgen Singularity definition against neurodocker's."""
    return _first(
        def_instructions(ours, ndgen=True, ignore_labels=ignore_labels), def_instructions(theirs, ndgen=False)
    )


def _first(a: list[str], b: list[str]) -> Difference | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return Difference(i, x, y)
    if len(a) != len(b):
        n = min(len(a), len(b))
        return Difference(n, a[n] if n < len(a) else None, b[n] if n < len(b) else None)
    return None
