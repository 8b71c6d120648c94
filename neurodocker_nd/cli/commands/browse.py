"""`ndgen list`, `ndgen show NAME`, `ndgen validate [PATH…]`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from neurodocker_nd.registry.entries import Entry


def entry_summary(entry: Entry) -> dict[str, Any]:
    """The JSON object `ndgen list --json` prints for one entry."""
    meta = entry.meta
    return {
        "name": entry.name,
        "source": entry.source,
        "methods": list(entry.methods),
        "versions": list(entry.versions()),
        "default_method": entry.default_method,
        "default_version": entry.default_version(entry.default_method),
        "description": meta.description if meta else None,
        "homepage": meta.homepage if meta else (entry.template or {}).get("url"),
        "commands": list(meta.commands) if meta else [],
        "system": ({"apt": list(meta.system.apt), "yum": list(meta.system.yum)} if meta and meta.system else None),
        "upstream_status": meta.upstream_status if meta else None,
    }


def entry_details(entry: Entry) -> dict[str, Any]:
    """`ndgen show --json`: the summary plus arguments per method and the test."""
    d = entry_summary(entry)
    methods: dict[str, Any] = {}
    for m in entry.methods:
        required, optional = entry.arguments(m)
        methods[m] = {
            "required": list(required),
            "optional": {k: str(v) for k, v in optional.items()},
            "pkg_managers": sorted(entry.pkg_managers(m)),
            "default_version": entry.default_version(m),
        }
    d["arguments"] = methods
    d["test"] = entry.meta.test if entry.meta else None
    if entry.meta and entry.meta.system:
        d["system"].update(
            neurodebian=entry.meta.system.neurodebian,
            epel=entry.meta.system.epel,
            test=entry.meta.system.test,
        )
    d["template_path"] = str(entry.template_path) if entry.template_path else None
    d["meta_path"] = str(entry.meta_path) if entry.meta_path else None
    d["alert"] = (entry.template or {}).get("alert")
    meta = entry.meta
    d["provenance"] = {
        v: {
            "status": i.status,
            "sha256": i.sha256,
            "sources": [{"url": s.url, "confirms": s.confirms} for s in i.sources],
        }
        for v, i in (meta.versions.items() if meta else ())
    }
    d["requires"] = [
        {
            "versions": list(r.versions),
            "methods": list(r.methods),
            "glibc": ".".join(map(str, r.glibc)),
            "reason": r.reason,
        }
        for r in (meta.requires if meta else ())
    ]
    d["waivers"] = [
        {"rule": w.rule, "versions": list(w.versions), "reason": w.reason} for w in (meta.waivers if meta else ())
    ]
    return d


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def list_cmd(as_json: bool) -> None:
    """List every installable software (upstream neurodocker + ndgen registry)."""
    from neurodocker_nd.registry.entries import Registry

    rows = [entry_summary(e) for e in Registry().entries()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{'NAME':<{width}}  {'SOURCE':<8}  {'METHODS':<23}  DEFAULT")
    for r in rows:
        default = r["default_version"] or "-"
        click.echo(f"{r['name']:<{width}}  {r['source']:<8}  {','.join(r['methods']):<23}  {default}")


@click.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show_cmd(name: str, as_json: bool) -> None:
    """Show versions, methods, arguments with defaults and exposed commands of NAME."""
    from neurodocker_nd.registry.entries import Registry

    d = entry_details(Registry().get(name))
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    out = [f"{d['name']} ({d['source']})"]
    if d["description"]:
        out.append(f"  {d['description']}")
    if d["homepage"]:
        out.append(f"  homepage: {d['homepage']}")
    out.append(f"  methods:  {', '.join(d['methods'])} (default: {d['default_method']})")
    if d["versions"]:
        out.append(f"  versions: {', '.join(d['versions'])} (default: {d['default_version']})")
        sums = [v for v in d["versions"] if (d["provenance"].get(v) or {}).get("sha256")]
        if sums:
            out.append(f"  sha256:   {', '.join(sums)} (checked in the build)")
        for r in d["requires"]:
            out.append(f"  requires: glibc >= {r['glibc']} for {', '.join(r['versions'])}: {r['reason']}")
    for m, a in d["arguments"].items():
        out.append(f"  method={m} [{', '.join(a['pkg_managers'])}]")
        if m == "system":
            sysd = d["system"]
            for pm in ("apt", "yum"):
                if sysd[pm]:
                    out.append(f"    {pm}: {' '.join(sysd[pm])}")
            if sysd["neurodebian"]:
                out.append("    adds the NeuroDebian repository first")
            if sysd["epel"]:
                out.append("    enables EPEL first")
            continue
        for r in a["required"]:
            extra = f" (default: {a['default_version']})" if r == "version" and a["default_version"] else ""
            out.append(f"    {r} [required]{extra}")
        for k, v in a["optional"].items():
            out.append(f"    {k} [default: {v}]")
    out.append(f"  commands: {' '.join(d['commands']) or '-'}")
    if d["test"]:
        out.append(f"  test:     {d['test']}")
    if d["alert"]:
        out.append(f"  note:     {d['alert']}")
    click.echo("\n".join(out))


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path())
def validate_cmd(paths: tuple[str, ...]) -> None:
    """Validate the whole registry, or the given template/meta files or entry directories.

    Templates are checked with neurodocker's own schema, meta.yaml with
    schemas/meta.schema.json; registry entries are also test-rendered and
    linted: every version the registry adds needs sourced `versions:` in meta,
    and Dropbox/unpinned URLs, `curl | sh`, apt-key and missing checksums need
    a `waivers:` entry with a reason (registry/README.md).
    Errors name the file, the YAML path and the line.
    """
    from pathlib import Path

    from neurodocker_nd.maintain.validate import validate_files, validate_registry
    from neurodocker_nd.registry.entries import Registry

    if paths:
        done = validate_files([Path(p) for p in paths], Registry())
        extra = f"; {done.renders} test renders" if done.renders else ""
        extra += f"; {done.waived} waived lint findings" if done.waived else ""
        click.echo(f"ok: {done.files} file(s) valid{extra}")
        return
    done = validate_registry(Registry())
    click.echo(
        f"ok: {done.entries} entries ({done.files} files) valid; {done.renders} test renders; "
        f"{done.waived} waived lint findings"
    )
