"""`ndgen upstream export --target neurocontainers`: registry entries → neurocontainers recipes.

neurocontainers (Neurodesk's container recipes) no longer builds through neurodocker's
templates, so a template PR to neurodocker does not reach them. This writes, per
registry entry with a template (not `ndgen-only`), a recipe in *their* format:

* ``recipes/<name>/build.yaml``: name (their names cannot hold ``_``: it becomes ``-``),
  the newest version, ``build.kind: neurodocker`` on ``ubuntu:24.04`` (glibc 2.39, which
  every registry glibc floor allows) with install directives — an ``install:`` of the
  template's apt dependencies, an ``environment:`` and a ``run:`` holding the template's
  instructions rendered for that version in ndgen's bounded sandbox (their builder
  has no copy of most of our templates, so no ``template:`` directive), a ``deploy:``
  of meta ``commands``, a ``test:`` running meta ``test``; copyright (a pointer to the
  homepage: the registry records no license), a readme, one category from their fixed
  list (mapped from meta ``categories``) and an icon (their validation requires an
  inline image; ndgen draws a neutral SVG with the name's initials);
* ``recipes/<name>/fulltest.yaml``: name, version and meta ``test`` as the one test.

Their own validator (``builder/validation.py`` of a neurocontainers checkout) accepts
the result; tests run it when ``NDGEN_NEUROCONTAINERS`` points at a checkout.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from neurodocker_nd.core import outfile
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.render.template_sandbox import BoundMethod
from neurodocker_nd.upstream.gitcmd import Identity, git
from neurodocker_nd.upstream.series import (
    HASH_MARKER,
    NC_RECIPE_FILE,
    Series,
    format_patches,
    series_hash,
    write_series_dir,
)

BASE_IMAGE = "ubuntu:24.04"
# ndgen meta category → one of neurocontainers' categories (their validation.CATEGORIES).
CATEGORY_MAP: dict[str, str] = {
    "registration": "image registration",
    "segmentation": "image segmentation",
    "skull-stripping": "image segmentation",
    "fmri": "functional imaging",
    "diffusion": "diffusion imaging",
    "tractography": "diffusion imaging",
    "structural": "structural imaging",
    "morphometry": "structural imaging",
    "visualization": "visualization",
    "surface": "visualization",
    "conversion": "data organisation",
    "dicom": "data organisation",
    "bids": "data organisation",
    "image-math": "data organisation",
    "minc": "data organisation",
}
FALLBACK_CATEGORY = "data organisation"


@attrs.frozen
class NcRecipe:
    name: str  # their name
    entry: str  # ndgen registry name
    version: str
    build: str  # build.yaml text
    fulltest: str  # fulltest.yaml text


def recipe_name(entry: str) -> str:
    return entry.replace("_", "-")


def _category(categories: tuple[str, ...]) -> str:
    return next((CATEGORY_MAP[c] for c in categories if c in CATEGORY_MAP), FALLBACK_CATEGORY)


def _icon(name: str) -> str:
    """A neutral SVG (the name's initials on grey), ndgen's own drawing, as a data URI."""
    initials = "".join(part[0] for part in name.replace("_", "-").split("-") if part)[:3].upper() or "?"
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        '<rect width="64" height="64" rx="8" fill="#5a6270"/>'
        '<text x="32" y="40" font-family="sans-serif" font-size="20" fill="#fff" text-anchor="middle">'
        f"{initials}</text>"
        "</svg>"
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _rendered(name: str, template: Mapping[str, Any], version: str) -> tuple[list[str], dict[str, str], list[str]]:
    """(apt packages, env, instruction lines) of the binaries method at `version`.

    Rendered by ndgen's bounded sandbox (neurodocker_nd.render.template_sandbox), never by neurodocker's
    own unsandboxed Jinja: a registry template is untrusted input, and this runs with the
    exporter's privileges and environment (a GITHUB_TOKEN among them).
    """
    from neurodocker_nd.core import reproenv
    from neurodocker_nd.render import template_sandbox as sandbox

    Template = reproenv.module("reproenv.template").Template
    with sandbox.refusals(name):
        method = Template(dict(template), binaries_kwds={"version": version}).binaries
        env, text = sandbox.render_method(method, "apt", bound=_ExportMethod(method, "apt"))
        deps = list(method.dependencies("apt"))
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return deps, dict(env), lines


class _ExportMethod(BoundMethod):
    """`self` for the export: dependencies become an `install:` directive, so the
    template's own install calls render empty."""

    def install(self, pkgs: list[str], opts: str | None = None) -> str:
        return ""

    def install_dependencies(self, opts: str | None = None) -> str:
        return ""


def build_recipe(entry: Any) -> NcRecipe | None:
    """One registry entry → their recipe (None: nothing to build from, e.g. no binaries)."""
    from neurodocker_nd.registry.entries import sort_versions

    meta, template = entry.meta, entry.template
    urls = ((template or {}).get("binaries") or {}).get("urls") or {}
    fixed = [v for v in sort_versions(map(str, urls)) if v.lower() not in ("latest", "master", "main")]
    if meta is None or not fixed:
        return None
    version = fixed[0]
    deps, env, lines = _rendered(entry.name, template, version)
    name = recipe_name(entry.name)
    directives: list[dict[str, Any]] = []
    if deps:
        directives.append({"install": deps})
    if env:
        directives.append({"environment": env})
    directives.append({"run": lines})
    directives.append({"deploy": {"bins": list(meta.commands)}})
    directives.append(
        {"test": {"name": f"{name} registry test", "script": f"#!/usr/bin/env bash\nset -e\n{meta.test}\n"}}
    )
    readme = [f"## {name}/{{{{ context.version }}}} ##", "", meta.description, "", f"Homepage: {meta.homepage}"]
    alert = (template or {}).get("alert")
    if alert:
        readme += ["", str(alert)]
    readme += [
        "",
        f"Commands: {', '.join(meta.commands)}",
        "",
        f"To run container outside of this environment: ml {name}/{{{{ context.version }}}}",
        "",
        f"Generated by ndgen from its registry entry `{entry.name}`.",
    ]
    build = {
        "name": name,
        "version": version,
        "copyright": [{"name": f"{entry.name} license (see its homepage)", "url": meta.homepage}],
        "architectures": ["x86_64"],
        "build": {"kind": "neurodocker", "base-image": BASE_IMAGE, "pkg-manager": "apt", "directives": directives},
        "categories": [_category(meta.categories)],
        "readme": "\n".join(readme) + "\n",
        "icon": _icon(entry.name),
    }
    fulltest = {
        "name": name,
        "version": version,
        "tests": [{"name": "registry test", "description": f"ndgen's test for {entry.name}", "command": meta.test}],
    }
    return NcRecipe(name, entry.name, version, _dump(build), _dump(fulltest))


def _dump(data: Any) -> str:
    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)


def recipes(registry_dir: Path) -> list[NcRecipe]:
    from neurodocker_nd.upstream.candidate import exportable_entries

    return [r for r in map(build_recipe, exportable_entries(registry_dir)) if r is not None]


def export(registry_dir: Path, out: Path) -> list[NcRecipe]:
    """Write `out/recipes/<name>/{build,fulltest}.yaml`, replacing `out` whole."""
    found = recipes(registry_dir)
    with outfile.new_directory(out, replace=True) as staging:
        for r in found:
            d = staging / "recipes" / r.name
            d.mkdir(parents=True)
            (d / "build.yaml").write_text(r.build, encoding="utf-8")
            (d / "fulltest.yaml").write_text(r.fulltest, encoding="utf-8")
    return found


# ---------------------------------------------------------------- series for the bot


def export_series(registry_dir: Path, checkout: Path, out: Path, author: Identity) -> list[Series]:
    """Per recipe, a proven patch series against a neurocontainers checkout (what `ndgen upstream pr
    --target neurocontainers` reads): adds or updates recipes/<name>/{build,fulltest}.yaml."""
    if not (checkout / "recipes").is_dir():
        raise NdgenError(f"--upstream {checkout}: not a neurocontainers checkout (no recipes/)")
    found = recipes(registry_dir)
    series = []
    with tempfile.TemporaryDirectory(prefix="ndgen-nc-export-") as tmp:
        repo = Path(tmp) / "upstream"
        git("clone", "-q", "--no-checkout", str(checkout), str(repo), what=f"cloning --upstream {checkout}")
        base = git("rev-parse", "HEAD", cwd=checkout, what=f"--upstream {checkout}").strip()
        git("checkout", "-q", "--detach", base, cwd=repo)
        for r in found:
            made = _series(repo, base, r, Path(tmp) / "patches", author)
            if made is not None:
                series.append(made)
        write_series_dir(series, out, "neurocontainers")
    return series


def _series(repo: Path, base: str, r: NcRecipe, patch_root: Path, author: Identity) -> Series | None:
    """`r` committed on `base` of the clone `repo`, proven (None: `base` holds this build.yaml already)."""
    rel = Path("recipes") / r.name
    theirs = repo / rel / NC_RECIPE_FILE
    if theirs.is_file() and yaml.safe_load(theirs.read_text(encoding="utf-8")) == yaml.safe_load(r.build):
        return None  # landed
    kind = "update" if theirs.is_file() else "new"
    title = f"{'Update' if kind == 'update' else 'Add'} {r.name} recipe ({r.version})"
    git("checkout", "-q", "--detach", base, cwd=repo)
    (repo / rel).mkdir(parents=True, exist_ok=True)
    (repo / rel / NC_RECIPE_FILE).write_text(r.build, encoding="utf-8")
    (repo / rel / "fulltest.yaml").write_text(r.fulltest, encoding="utf-8")
    git("add", str(rel), cwd=repo)
    msg = f"{title}\n\nGenerated by ndgen from its registry entry {r.entry}.\n"
    git("commit", "-q", "-F", "-", cwd=repo, input_bytes=msg.encode(), identity=author)
    patches = format_patches(repo, base, patch_root / r.name)
    evidence = _prove(repo, rel, r)
    git("checkout", "-q", "--detach", base, cwd=repo)
    contents = tuple((p.name, p.read_bytes()) for p in patches)
    digest = series_hash(contents)
    return Series(r.name, kind, contents, title, _body(r, kind, evidence, digest), digest, r.build, NC_RECIPE_FILE)


def _body(r: NcRecipe, kind: str, evidence: list[str], digest: str) -> str:
    """PR.md's body: what the series adds or updates and how it was tested."""
    lines = [
        "## What",
        "",
        f"{'Adds' if kind == 'new' else 'Updates'} the **{r.name}** recipe, version {r.version}:"
        f" `recipes/{r.name}/build.yaml` and `fulltest.yaml`.",
        "",
        "## How it was tested",
        "",
        *[f"- {line};" for line in evidence],
        "- not built by ndgen: its downloads are unreachable from ndgen's build machines.",
        "",
        "---",
        "",
        f"Generated by ndgen (`ndgen upstream export --target neurocontainers`) from its registry entry `{r.entry}`.",
        f"<!-- {HASH_MARKER}: {r.name} {digest} -->",
    ]
    return "\n".join(lines) + "\n"


def _prove(repo: Path, rel: Path, r: NcRecipe) -> list[str]:
    """Their validator (when the checkout has it) and `ndgen recipe` accept the recipe.

    The validator is the checkout's code: it runs in upstream's sandbox (no network, no
    environment, nothing of the host writable), as upstream neurodocker's renders do."""
    import subprocess
    import sys

    from neurodocker_nd.upstream.proof import sandboxed

    done = []
    if (repo / "builder" / "validation.py").is_file():
        # -B: the checkout is read-only in there; the cwd stays on sys.path (it holds `builder`).
        validate = [sys.executable, "-B", "-m", "builder.validation", str(rel / "build.yaml")]
        try:
            proc = subprocess.run(sandboxed(validate, repo), cwd=repo, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise NdgenError(f"{r.name}: neurocontainers' validation did not finish in 120 s") from None
        if proc.returncode != 0:
            last = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise NdgenError(f"{r.name}: neurocontainers' validation rejects the recipe: {last}")
        done.append("neurocontainers' own `python -m builder.validation` accepts build.yaml and fulltest.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "neurodocker_nd.cli", "recipe", str(repo / rel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise NdgenError(f"{r.name}: `ndgen recipe` cannot render the recipe: {proc.stderr.strip()[-200:]}")
    done.append("`ndgen recipe` renders it to a Dockerfile")
    return done
