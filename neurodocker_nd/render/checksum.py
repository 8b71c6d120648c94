"""`sha256sum -c` after a verified download, inserted into a rendered template block.

Checksums live in meta.yaml (`versions.V.sha256`, carried by the Template step),
not in template.yaml: neurodocker's template schema forbids extra keys under
`binaries`, so the template stays exportable upstream and the check is added
here, on the rendered instruction list, right after the line that downloads
`binaries.urls[V]` to a file and before anything uses it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.render import steps as st

Block = tuple[tuple[str, Mapping[str, Any]], ...]  # a rendered template: (reproenv method, kwds) pairs


def download_target(line: str, url: str) -> str | None:
    """The file a `curl -o FILE URL` (or `wget -O FILE URL`) line writes; None if it streams.

    A line continued with `\\` or piping the download elsewhere cannot be
    verified before use, so it yields None.
    """
    if line.rstrip().endswith("\\"):
        return None
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if not words or words[0] not in ("curl", "wget") or url not in words or "|" in line:
        return None
    flags = ("-o", "--output") if words[0] == "curl" else ("-O", "--output-document")
    for i, w in enumerate(words[:-1]):
        if w in flags:
            return words[i + 1]
    return None


def verify_line(sha: str, target: str) -> str:
    """`sha256sum -c` of a downloaded file; on a mismatch the last output line
    (what a failed build reports) names the file and both digests."""
    got = f"$(sha256sum {target} | cut -d ' ' -f 1)"
    return (
        f'{{ echo "{sha}  {target}" | sha256sum -c --quiet - || '
        f'{{ echo "ndgen: {target}: sha256 mismatch: expected {sha}, got {got}" >&2; exit 1; }}; }}'
    )


def with_checksum(block: Block, step: st.Template) -> Block:
    """Insert `sha256sum -c` after the download of a version whose sha256 meta records.

    A template that streams that URL into a pipe cannot be verified: that is an
    error, not a silently unchecked download.
    """
    sha, url = step.sha256, step.url
    if sha is None or not url:
        return block
    label = f"{step.name} {dict(step.args).get('version', '')}".strip()
    out, found = [], False
    for name, kwds in block:
        if name == "run" and url and url in kwds.get("command", ""):
            lines = []
            for line in kwds["command"].split("\n"):
                lines.append(line)
                if url in line:
                    target = download_target(line, url)
                    if target is None:
                        raise NdgenError(
                            f"{label}: cannot verify sha256: the template does not "
                            f"download {url} to a file first (curl -o FILE URL)"
                        )
                    indent = line[: len(line) - len(line.lstrip())]
                    lines.append(indent + verify_line(sha, target))
                    found = True
            kwds = {**kwds, "command": "\n".join(lines)}
        out.append((name, kwds))
    if not found:
        raise NdgenError(f"{label}: sha256 recorded but the template never downloads {url}")
    return tuple(out)
