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


def first_difference(ours: str, theirs: str, *, ignore_labels: bool = True) -> Difference | None:
    """None when equivalent; else the first instruction that differs."""
    a = instructions(ours, ignore_labels=ignore_labels)
    b = [" ".join(fix_entrypoint_snippet(i, strict=False).split()) for i in instructions(theirs)]
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return Difference(i, x, y)
    if len(a) != len(b):
        n = min(len(a), len(b))
        return Difference(n, a[n] if n < len(a) else None, b[n] if n < len(b) else None)
    return None


def summarise(diffs: Iterable[Difference | None]) -> tuple[int, int]:
    """(equivalent, total)."""
    items = list(diffs)
    return sum(1 for d in items if d is None), len(items)
