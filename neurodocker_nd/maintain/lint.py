"""Registry truth rules, checked by `ndgen validate`.

Two kinds of rule:

* provenance (never waivable): every version or URL an entry adds or changes
  versus upstream neurodocker's template carries `versions.V` in meta.yaml with
  a verification status and at least one source; meta never describes a
  version the template lacks; `inherited` is only for versions unchanged from
  upstream.
* download hygiene (waivable, each waiver with its reason in `waivers:`):
  `dropbox` URLs (neurodocker#635: they answer 403), `unpinned` versions or
  URLs (`latest`, `/latest/download/`, moving installers), `pipe-to-shell`
  (`curl … | sh|bash|python`), `apt-key`, `missing-checksum` (a binaries
  version without `versions.V.sha256`).  A waiver that matches nothing is an
  error too, so waivers cannot outlive their reason.

Rules read the entry's effective template: the registry's own, or upstream's
for meta-only entries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd.core.yamlfile import line_of, read_yaml
from neurodocker_nd.maintain.gone import is_dropbox, template_urls
from neurodocker_nd.registry.entries import MOVING_VERSIONS, Entry, Registry

WAIVABLE = ("dropbox", "unpinned", "pipe-to-shell", "apt-key", "missing-checksum")
_PIPE_TO_SHELL = re.compile(r"\b(curl|wget)\b[^\n|]*\|\s*(sudo\s+)?(sh|bash|python[0-9.]*)\b")


@attrs.frozen
class Finding:
    """One rule violation, located in a file."""

    entry: str
    rule: str
    version: str | None
    where: str  # file:line
    message: str
    waived: bool = False

    def line(self) -> str:
        return f"{self.where}: {self.message}"


def _where(path: Path | None, parts: list[Any]) -> str:
    if path is None:
        return "(no file)"
    try:
        return f"{path}:{line_of(path, parts)}"
    except Exception:  # the upstream file may be unreadable as a registry file; the name is enough
        return str(path)


def _meta_finding(entry: Entry, rule: str, version: str | None, parts: list[Any], message: str) -> Finding:
    """A finding located at `parts` (a YAML path) in the entry's meta.yaml."""
    return Finding(entry.name, rule, version, _where(entry.meta_path, parts), message)


def upstream_template(registry: Registry, name: str) -> Mapping[str, Any] | None:
    path = registry.upstream_dir / f"{name}.yaml"
    return read_yaml(path) if path.is_file() else None


def provenance(entry: Entry, upstream: Mapping[str, Any] | None) -> list[Finding]:
    """Versions added or changed by the registry's template need sourced meta."""
    out: list[Finding] = []
    meta = entry.meta
    if meta is None:
        return out
    own_template = entry.template_path is not None and entry.template_path.name == "template.yaml"
    ours = template_urls(entry.template)
    theirs = template_urls(upstream)
    for version, url in ours.items():
        info = meta.versions.get(version)
        changed = own_template and theirs.get(version) != url
        where = _where(entry.template_path, ["binaries", "urls", version])
        if changed and info is None:
            what = "changes upstream's URL" if version in theirs else "adds this version"
            out.append(
                Finding(
                    entry.name,
                    "provenance",
                    version,
                    where,
                    f"{entry.name} {version}: the registry {what} but meta.yaml has no "
                    f"versions.{version!r} with its sources (see registry/README.md)",
                )
            )
        elif changed and info is not None and info.status == "inherited":
            message = f"{entry.name} {version}: status 'inherited' but the URL differs from upstream's"
            out.append(_meta_finding(entry, "provenance", version, ["versions", version, "status"], message))
    for version in meta.versions:
        if version not in ours:
            message = f"{entry.name}: meta.yaml describes version {version!r}, which the template does not have"
            out.append(_meta_finding(entry, "provenance", version, ["versions", version], message))
    return out


def hygiene(entry: Entry) -> list[Finding]:
    """Download-hygiene findings of an entry's effective template (waived ones marked)."""
    found: list[Finding] = []
    template, path = entry.template, entry.template_path
    if template is None or entry.meta is None:
        return found
    for version, url in template_urls(template).items():
        where = _where(path, ["binaries", "urls", version])
        if is_dropbox(url):
            found.append(
                Finding(
                    entry.name,
                    "dropbox",
                    version,
                    where,
                    f"{entry.name} {version}: Dropbox URL (they answer 403 since neurodocker#635)",
                )
            )
        if version.lower() in MOVING_VERSIONS or "/latest/" in url or url.rstrip("/").endswith("/latest"):
            found.append(
                Finding(
                    entry.name,
                    "unpinned",
                    version,
                    where,
                    f"{entry.name} {version}: unpinned download {url} (its bytes change over time)",
                )
            )
        if entry.meta.sha256(version) is None:
            found.append(
                Finding(
                    entry.name,
                    "missing-checksum",
                    version,
                    where,
                    f"{entry.name} {version}: no sha256 in meta.yaml versions.{version!r}.sha256",
                )
            )
    for method in ("binaries", "source"):
        text = str((template.get(method) or {}).get("instructions", ""))
        where = _where(path, [method, "instructions"])
        if _PIPE_TO_SHELL.search(text):
            found.append(
                Finding(
                    entry.name,
                    "pipe-to-shell",
                    None,
                    where,
                    f"{entry.name} (method={method}): pipes a download into a shell or python",
                )
            )
        if "apt-key" in text:
            found.append(
                Finding(
                    entry.name,
                    "apt-key",
                    None,
                    where,
                    f"{entry.name} (method={method}): uses apt-key (deprecated; keyservers go away)",
                )
            )
    return [attrs.evolve(f, waived=entry.meta.waived(f.rule, f.version) is not None) for f in found]


def stale_waivers(entry: Entry, findings: Iterable[Finding]) -> list[Finding]:
    """Waivers that no finding needs."""
    if entry.meta is None:
        return []
    findings = list(findings)
    out = []
    for i, w in enumerate(entry.meta.waivers):
        if not any(w.covers(f.rule, f.version) for f in findings):
            scope = f" for {', '.join(w.versions)}" if w.versions else ""
            message = f"{entry.name}: waiver of {w.rule!r}{scope} matches nothing; remove it"
            out.append(_meta_finding(entry, "waiver", None, ["waivers", i], message))
    return out


def check_entry(entry: Entry, registry: Registry) -> list[Finding]:
    """Every finding for one registry entry: errors first, then waived ones."""
    if entry.meta is None:
        return []
    found = hygiene(entry)
    errors = provenance(entry, upstream_template(registry, entry.name))
    errors += [f for f in found if not f.waived] + stale_waivers(entry, found)
    return errors + [f for f in found if f.waived]


def errors_of(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if not f.waived]


def checksum_renders(entry: Entry, registry: Registry) -> int:
    """Render every version that records a sha256, so a template that streams its
    download (and so cannot be verified) fails `validate`, not a user's build."""
    from neurodocker_nd.render.pkg import package_plan
    from neurodocker_nd.render.renderer import RecipeRenderer
    from neurodocker_nd.render.target import resolve_target

    if entry.meta is None or entry.template is None or "binaries" not in entry.template:
        return 0
    pms = entry.pkg_managers("binaries")
    target = resolve_target("debian:bookworm" if "apt" in pms else "rockylinux:9")
    renderer = RecipeRenderer(registry)
    n = 0
    for version, info in entry.meta.versions.items():
        if info.sha256 is None:
            continue
        renderer.recipe(package_plan(entry.name, target, registry, method="binaries", version=version))
        n += 1
    return n


def check_or_raise(entries: Iterable[Entry], registry: Registry) -> tuple[int, int]:
    """Lint entries; raise one RegistryError line for the first error. Returns (waived, checksum renders)."""
    from neurodocker_nd.registry.entries import RegistryError

    waived = renders = 0
    errors: list[Finding] = []
    for entry in entries:
        found = check_entry(entry, registry)
        errors += errors_of(found)
        waived += len(found) - len(errors_of(found))
        if not errors_of(found):
            renders += checksum_renders(entry, registry)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RegistryError(errors[0].line() + more)
    return waived, renders
