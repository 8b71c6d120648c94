"""`ndgen check-urls`: does every download URL of the registry (or a recipe) answer?

Targets come from the registry (each entry's effective template: `binaries.urls`,
with the sha256 its meta records) or from a recipe's `files:` entries.  Each is
probed (status, redirect chain, size); with `fetch` its bytes are hashed and
compared with the recorded sha256 (a wrong digest is a failure).  `write`
records fetched digests: into meta.yaml `versions.V.sha256` (an unchanged
upstream version gets `status: inherited` with the URL as its source) or a
recipe's `files[].sha256`, with ruamel.yaml so comments and layout survive, and
whole-or-nothing: every new file text is checked against its schema first, then
all are replaced.

Probing goes through fetch's download policy (http(s) only at every hop, no
loopback/link-local/private address, size cap, deadline): a refused URL is a
failed target, so `write` records nothing for it — a registry URL can never make
ndgen hash and record a host file or a host-local service's answer.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd.core import fetch
from neurodocker_nd.registry.entries import Registry


@attrs.frozen
class Target:
    """One URL to check and where its digest lives."""

    owner: str  # entry name, or the recipe path
    key: str  # version, or the recipe file's name
    url: str
    sha256: str | None
    kind: str  # registry | recipe
    file: Path | None  # meta.yaml or build.yaml to write into
    known_dead: bool = False  # a `dropbox` waiver says it answers 403: reported, not a failure


@attrs.frozen
class Result:
    target: Target
    probe: fetch.Probe | None  # None: not checked (templated URL)
    problem: str | None  # None: fine

    def as_json(self) -> dict[str, Any]:
        t, p = self.target, self.probe
        return {
            "owner": t.owner,
            "key": t.key,
            "url": t.url,
            "ok": self.problem is None,
            "problem": self.problem,
            "status": p.status if p else None,
            "final_url": p.final_url if p else None,
            "redirects": [{"status": c, "url": u} for c, u in p.redirects] if p else [],
            "size": p.size if p else None,
            "sha256": p.sha256 if p else None,
            "recorded_sha256": t.sha256,
            "known_dead": t.known_dead,
        }


def registry_targets(registry: Registry, names: Iterable[str]) -> list[Target]:
    names = list(names) or [e.name for e in registry.entries() if e.source != "upstream"]
    out: list[Target] = []
    for name in names:
        entry = registry.get(name)
        urls = ((entry.template or {}).get("binaries") or {}).get("urls") or {}
        for version, url in urls.items():
            sha = entry.meta.sha256(str(version)) if entry.meta else None
            dead = bool(entry.meta and entry.meta.waived("dropbox", str(version)))
            out.append(Target(entry.name, str(version), str(url), sha, "registry", entry.meta_path, dead))
    return out


def recipe_targets(path: str | Path) -> list[Target]:
    from neurodocker_nd.render.recipe import find_recipe, load_recipe

    build = find_recipe(path)
    plan = load_recipe(build)
    return [Target(str(build.parent), f.name, f.url, f.sha256, "recipe", build) for f in plan.files if f.url]


def _check(t: Target, timeout: float, do_fetch: bool) -> Result:
    if "{{" in t.url or "{%" in t.url:
        return Result(t, None, "templated URL (depends on template arguments); not checked")
    p = fetch.probe(t.url, timeout=timeout, fetch=do_fetch and not t.known_dead)
    if not p.ok:
        return Result(t, p, p.error or f"HTTP {p.status}")
    if do_fetch and t.sha256 and p.sha256 != t.sha256:
        return Result(t, p, f"wrong digest: recorded {t.sha256}, got {p.sha256}")
    return Result(t, p, None)


def check(targets: list[Target], timeout: float = 30.0, do_fetch: bool = False, jobs: int = 4) -> list[Result]:
    """Probe every target (a few at once: most time is waiting on servers)."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda t: _check(t, timeout, do_fetch), targets))


# ---------------------------------------------------------------- --write


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _dump(y, data) -> str:
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


def _record_meta(
    data, all_versions: set[str], fetched: dict[str, tuple[str, str]], upstream_urls: dict[str, str]
) -> int:
    """Set versions.V.sha256 for fetched versions lacking one; prune waivers they make stale."""
    from ruamel.yaml.comments import CommentedMap

    today = datetime.date.today().isoformat()
    versions = data.get("versions")
    if versions is None:
        versions = data["versions"] = CommentedMap()
    n = 0
    for version, (digest, url) in fetched.items():
        info = versions.get(version)
        if info is None:
            if upstream_urls.get(version) != url:
                continue  # an added version without sources: validate reports it, --write does not invent any
            info = versions[version] = CommentedMap(status="inherited", sources=[])
        if info.get("sha256"):
            continue
        info["sha256"] = digest
        info.setdefault("sources", []).append(
            CommentedMap(url=url, confirms=f"sha256 computed from this download by ndgen check-urls --fetch on {today}")
        )
        n += 1
    covered = {v for v, i in versions.items() if i.get("sha256")}
    waivers = data.get("waivers") or []
    keep = []
    for w in waivers:
        if w.get("rule") == "missing-checksum":
            if not w.get("versions") and all_versions <= covered:
                continue
            if w.get("versions"):
                left = [v for v in w["versions"] if str(v) not in covered]
                if not left:
                    continue
                w["versions"] = left
        keep.append(w)
    if waivers and len(keep) != len(waivers):
        if keep:
            data["waivers"] = keep
        else:
            del data["waivers"]
    return n


def write_digests(results: list[Result], registry: Registry) -> list[Path]:
    """Record fetched digests; all files or none. Returns the files changed."""
    from neurodocker_nd.maintain import gone, lint

    y = _yaml()
    texts: dict[Path, str] = {}
    # (result, its fetched digest) for each new digest, by the file that records it
    by_file: dict[Path, list[tuple[Result, str]]] = {}
    for r in results:
        if r.problem is None and r.probe is not None and r.probe.sha256 and not r.target.sha256 and r.target.file:
            by_file.setdefault(r.target.file, []).append((r, r.probe.sha256))
    for path, rs in by_file.items():
        data = y.load(path.read_text(encoding="utf-8"))
        if rs[0][0].target.kind == "registry":
            name = rs[0][0].target.owner
            up = gone.template_urls(lint.upstream_template(registry, name))
            every = {t.key for t in registry_targets(registry, [name])}
            n = _record_meta(data, every, {r.target.key: (sha256, r.target.url) for r, sha256 in rs}, up)
        else:
            n = 0
            for item in data.get("files") or []:
                hit = next((sha256 for r, sha256 in rs if str(item.get("name")) == r.target.key), None)
                if hit is not None and not item.get("sha256"):
                    item["sha256"] = hit
                    n += 1
        if n:
            texts[path] = _dump(y, data)
    _check_new_texts(texts, registry)
    _replace_all(texts)
    return sorted(texts)


def _check_new_texts(texts: dict[Path, str], registry: Registry) -> None:
    """Every new meta.yaml must still pass its schema before anything is written."""
    import yaml as pyyaml

    from neurodocker_nd.core.yamlfile import check_schema

    for path, text in texts.items():
        if path.name == "meta.yaml":
            check_schema(pyyaml.safe_load(text), path, registry._meta_validator, "ndgen meta")


def _replace_all(texts: dict[Path, str]) -> None:
    """All files or none: every temp file is written before the first rename."""
    import contextlib

    from neurodocker_nd.core import outfile

    with contextlib.ExitStack() as stack:
        for path, text in texts.items():
            tmp = stack.enter_context(outfile.replacing(path))
            tmp.write_text(text, encoding="utf-8")
