"""Content checks for `registry/`: every entry is valid, renders, and keeps the contract.

These read the YAML files directly and use neurodocker's own schema and renderers,
so a broken registry entry fails here even if ndgen's loader changes.
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import neurodocker
import pytest
import yaml
from neurodocker.reproenv.renderers import DockerRenderer, SingularityRenderer
from neurodocker.reproenv.template import Template

from neurodocker_nd.registry.entries import sort_versions
from support import REPO, tool

ROOT = REPO
REGISTRY = ROOT / "registry"
ND_DIR = Path(neurodocker.__file__).parent
UPSTREAM_TEMPLATES = ND_DIR / "templates"
TEMPLATE_SCHEMA = ND_DIR / "reproenv" / "schemas" / "template.json"
META_SCHEMA = ROOT / "schemas" / "meta.schema.json"

ENTRIES = sorted(p.name for p in REGISTRY.iterdir() if p.is_dir())
TEMPLATED = [n for n in ENTRIES if (REGISTRY / n / "template.yaml").exists()]
# Source-only templates have no default version to lint (no skip per template).
BINARIES = [n for n in TEMPLATED if "binaries" in yaml.safe_load((REGISTRY / n / "template.yaml").read_text())]
SYSTEM = [n for n in ENTRIES if "system" in (yaml.safe_load((REGISTRY / n / "meta.yaml").read_text()) or {})]
# Keys that belong to meta.yaml only; none may leak into an upstream-clean template.
META_ONLY_KEYS = {"commands", "test", "system", "upstream", "categories", "homepage", "description"}
# Base images only name the OS family here; nothing is pulled.
BASES = {"apt": "debian:bookworm-slim", "yum": "rockylinux:9"}


@cache
def load(name: str, kind: str) -> dict:
    return yaml.safe_load((REGISTRY / name / f"{kind}.yaml").read_text())


@cache
def upstream(name: str) -> dict | None:
    path = UPSTREAM_TEMPLATES / f"{name}.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


def default_version(template: dict) -> str:
    return sort_versions(str(v) for v in template["binaries"]["urls"])[0]


def render(template: dict, method: str, version: str, pkg_manager: str, renderer=DockerRenderer) -> str:
    kwds = {"version": version}
    tmpl = Template(
        template,
        binaries_kwds=kwds if method == "binaries" else None,
        source_kwds=kwds if method == "source" else None,
    )
    return str(renderer(pkg_manager).from_(BASES[pkg_manager]).add_template(tmpl, method))


def test_registry_is_not_empty() -> None:
    # The contract asks for ANTs/FSL/dcm2niix/MRtrix3 updates, >= 5 new tools and
    # system entries: a registry shrinking below that is a regression.
    statuses = [load(n, "meta")["upstream"]["status"] for n in ENTRIES]
    assert statuses.count("new") >= 5
    assert statuses.count("update") >= 1
    assert {"dcm2niix", "mrtrix3", "dcmtk", "minc-tools", "nibabel"} <= set(SYSTEM)


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_has_meta(name: str) -> None:
    assert (REGISTRY / name / "meta.yaml").is_file(), f"registry/{name} lacks meta.yaml"
    extra = {p.name for p in (REGISTRY / name).iterdir()} - {"template.yaml", "meta.yaml"}
    assert not extra, f"unexpected files in registry/{name}: {sorted(extra)}"


@pytest.mark.parametrize("name", TEMPLATED)
def test_template_matches_neurodocker_schema(name: str) -> None:
    template = load(name, "template")
    jsonschema.validate(template, json.loads(TEMPLATE_SCHEMA.read_text()))
    assert template["name"] == name
    # neurodocker's CLI derives `--<name>` options from template names and drops
    # names whose option spelling differs, so upstream-bound names avoid hyphens.
    assert re.fullmatch(r"[a-z0-9_]+", name), name
    assert not META_ONLY_KEYS & set(template), f"meta keys in registry/{name}/template.yaml"


@pytest.mark.parametrize("name", ENTRIES)
def test_meta_matches_schema_and_contract(name: str) -> None:
    meta = load(name, "meta")
    jsonschema.Draft202012Validator(json.loads(META_SCHEMA.read_text())).validate(meta)
    assert meta["name"] == name
    status = meta["upstream"]["status"]
    has_template = name in TEMPLATED
    if not has_template:
        # meta.yaml alone either annotates upstream's template or is system-only.
        assert "system" in meta or upstream(name) is not None, f"{name}: no template and no system method"
    if status == "new":
        assert has_template and upstream(name) is None, f"{name}: 'new' needs a template upstream lacks"
    elif status == "update":
        assert has_template and upstream(name) is not None, f"{name}: 'update' must override an upstream template"
    else:
        assert not has_template or upstream(name) is None


@pytest.mark.parametrize("name", [n for n in TEMPLATED if upstream(n) is not None])
def test_override_keeps_upstream(name: str) -> None:
    """An override is upstream's template plus additions: nothing upstream has is lost."""
    ours, theirs = load(name, "template"), upstream(name)
    assert set(theirs) <= set(ours)
    for method in ("binaries", "source"):
        if method not in theirs:
            continue
        assert theirs[method]["arguments"] == ours[method]["arguments"]
        assert set(theirs[method].get("dependencies", {})) <= set(ours[method].get("dependencies", {}))
        if method == "binaries":
            lost = {str(v) for v in theirs[method]["urls"]} - {str(v) for v in ours[method]["urls"]}
            assert not lost, f"{name}: override drops upstream versions {sorted(lost)}"


@pytest.mark.parametrize("name", TEMPLATED)
def test_binary_urls_are_https_and_versioned(name: str) -> None:
    urls = load(name, "template").get("binaries", {}).get("urls", {})
    for version, url in urls.items():
        assert url.startswith("https://"), f"{name} {version}: {url}"
        assert not re.search(r"\s", url)


@pytest.mark.parametrize("pkg_manager", ["apt", "yum"])
@pytest.mark.parametrize("name", TEMPLATED)
def test_template_renders_default_version(name: str, pkg_manager: str) -> None:
    template = load(name, "template")
    method = "binaries" if "binaries" in template else "source"
    version = default_version(template) if method == "binaries" else "master"
    for renderer in (DockerRenderer, SingularityRenderer):
        text = render(template, method, version, pkg_manager, renderer)
        assert version in text or method == "source"
        # The package manager of the base decides the dependency install line.
        if pkg_manager in template[method].get("dependencies", {}):
            assert ("apt-get install" if pkg_manager == "apt" else "yum install") in text


@pytest.mark.parametrize("name", BINARIES)
def test_default_dockerfile_is_lint_clean(name: str) -> None:
    """The registry's own templates lint clean apart from unpinned packages.

    Only the template's part is linted: the JSON-saving printf that neurodocker
    appends is the renderer's concern (ndgen's renderer rewrites it).
    """
    template = load(name, "template")
    text = render(template, "binaries", default_version(template), "apt")
    text = text.split("# Save specification to JSON.")[0]
    ignore = ["DL3008"]
    if upstream(name) is not None:
        # Overrides keep upstream's instructions verbatim (they go back upstream as a
        # small diff), including its `curl | tar` pipes.
        ignore.append("DL4006")
    args = [a for rule in ignore for a in ("--ignore", rule)]
    out = subprocess.run([tool("hadolint"), "--no-color", *args, "-"], input=text, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("name", ENTRIES)
def test_test_command_is_real(name: str) -> None:
    """A test must run one of the exposed commands (not `true`) and be one line."""
    meta = load(name, "meta")
    for test in filter(None, (meta["test"], meta.get("system", {}).get("test"))):
        assert "\n" not in test
        assert any(re.search(rf"(^|[\s(]){re.escape(c)}(\s|$|\"|\))", test) for c in meta["commands"]), (
            f"{name}: test {test!r} runs none of {meta['commands']}"
        )
