"""What a rendered package relies on that is gone: the notes a render prints (`ndgen: note: …`).

Apart from maintain.lint (whose `dropbox` and `apt-key` rules hold the registry's own
entries to the same facts) so that a render does not import the registry's lint rules.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neurodocker_nd.registry.entries import Registry
    from neurodocker_nd.render.steps import Package


def template_urls(template: Mapping[str, Any] | None) -> dict[str, str]:
    if not template:
        return {}
    return {str(k): str(v) for k, v in ((template.get("binaries") or {}).get("urls") or {}).items()}


def is_dropbox(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host == "dropbox.com" or host.endswith(".dropbox.com")


def dead_download_notes(packages: Iterable[Package], registry: Registry) -> list[str]:
    """Notes for rendered packages whose download is known dead (Dropbox), one per package.

    Rendering still succeeds (upstream lists these versions), but the user
    learns now, not minutes into a build, that the download answers 403.
    `registry`: the one the packages were rendered from (not read twice).
    """
    notes = []
    for p in packages:
        if p.method != "binaries" or p.version is None or p.name not in registry:
            continue
        if is_dropbox(template_urls(registry.get(p.name).template).get(p.version, "")):
            notes.append(
                f"{p.name} {p.version} downloads from Dropbox, which answers 403 "
                "(neurodocker#635): the build will fail; choose another version"
            )
    return notes


# What a template's instructions may rely on that is gone (the notes below; the
# `apt-key` and `dropbox` lint rules hold the registry's own entries to them):
# * apt-key: deprecated, and removed from apt in Debian trixie (its images have
#   no apt-key: neurodebian/dockerfiles#18, apt 2.9.26's changelog);
# * the SKS keyserver pool: shut down in 2021 (neurodebian/neurodebian#83 moved
#   NeuroDebian's instructions to keyserver.ubuntu.com because of it);
# * Dropbox links: they answer 403 (neurodocker#635).
# neurodocker's neurodebian template uses all three for its APT key, so its
# build fails; it is not fixed here because NeuroDebian's own key is DSA1024,
# which apt in trixie and Ubuntu 24.04 rejects (neurodebian/neurodebian#97),
# and the newer key's fingerprint is not in a source read for this.
_SKS_POOL = "sks-keyservers.net"
_INSTRUCTION_URL = re.compile(r"https?://[^\s'\"|)<>]+")


def _gone_in(instructions: str) -> tuple[list[str], bool]:
    """What `instructions` relies on that is gone, and whether that certainly fails a build."""
    found: list[str] = []
    dropbox = any(is_dropbox(url) for url in _INSTRUCTION_URL.findall(instructions))
    if "apt-key" in instructions:
        found.append("apt-key (removed from apt in Debian trixie)")
    if dropbox:
        found.append("a Dropbox download (Dropbox answers 403, neurodocker#635)")
    if _SKS_POOL in instructions:
        found.append("the keyserver pool.sks-keyservers.net (shut down in 2021)")
    return found, dropbox


def gone_instruction_notes(packages: Iterable[Package], registry: Registry) -> list[str]:
    """Notes for rendered packages whose template's instructions rely on something gone.

    dead_download_notes reads a version's URL; this reads the instructions
    themselves (a key or installer fetched by a literal URL, apt-key), which
    break the build whatever the version.  The template text is read as
    written, not rendered, so a step behind a Jinja condition counts too.
    """
    notes = []
    for p in packages:
        if p.method == "system" or p.name not in registry:
            continue
        template = registry.get(p.name).template or {}
        found, fails = _gone_in(str((template.get(p.method) or {}).get("instructions", "")))
        if found:
            listed = ", ".join(found[:-1]) + (" and " if len(found) > 1 else "") + found[-1]
            notes.append(f"{p.name}: its instructions use {listed}: the build {'will' if fails else 'may'} fail")
    return notes
