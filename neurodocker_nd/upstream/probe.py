"""Run inside a fresh interpreter: does upstream's own code accept and render a template?

    python -I -m neurodocker_nd.upstream.probe TREE NAME

TREE is an upstream work tree (with the patch series applied); its
``neurodocker`` package is imported *instead of* any installed one. That import
registers every template in TREE's ``neurodocker/templates`` (upstream's own
registration code), validating each against upstream's JSON schema. The probe
then registers NAME's file explicitly with ``register_template``, renders it with
upstream's renderers (docker and singularity, apt and yum bases, every method
and version the template declares) and through upstream's CLI
(``neurodocker generate docker|singularity --NAME version=V``).

A separate interpreter is required: upstream's template registry is class-level
global state, and the tree under test must not mix with the installed package.
Prints one JSON object on stdout; exit status 0 either way (the caller reads ``ok``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

# (package manager, base image): one apt and one yum base, as upstream's CI matrix does.
BASES: tuple[tuple[str, str], ...] = (("apt", "debian:bookworm-slim"), ("yum", "rockylinux:9"))
FORMATS = ("docker", "singularity")


def _versions(method_spec: Any, binaries_versions: list[str]) -> list[str]:
    """Versions to render a method with: its own `urls`, else the binaries' ones."""
    own = sorted(method_spec.versions) if method_spec.versions else []
    if own:
        return own
    # Source methods take a free-form version; upstream's CI builds them with the
    # binaries' versions (create_workflows.py), so do the same.
    return binaries_versions or ["latest"]


def _newest(versions: list[str]) -> str:
    """Newest version by its numbers; moving names (latest, master) only when alone."""
    fixed = [v for v in versions if v.lower() not in ("latest", "master", "main")] or versions
    return max(fixed, key=lambda v: [int(n) for n in re.findall(r"\d+", v)])


def _kwds(method_spec: Any, name: str, version: str) -> dict[str, str]:
    missing = [a for a in method_spec.required_arguments if a != "version"]
    if missing:
        raise ValueError(f"template {name} requires arguments without defaults: {', '.join(sorted(missing))}")
    return {"version": version} if "version" in method_spec.required_arguments else {}


def probe(tree: Path, name: str) -> dict[str, Any]:
    sys.path.insert(0, str(tree))
    import neurodocker  # noqa: E402 - after sys.path points at the tree: registers all templates
    from neurodocker.reproenv import DockerRenderer, SingularityRenderer
    from neurodocker.reproenv.state import register_template, registered_templates
    from neurodocker.reproenv.template import Template

    module_file = Path(neurodocker.__file__).resolve()
    if tree.resolve() not in module_file.parents:
        raise RuntimeError(f"imported neurodocker from {module_file}, not from the tree under test")
    template_file = tree / "neurodocker" / "templates" / f"{name}.yaml"
    registered_by_import = name in registered_templates()
    tmpl_dict = register_template(template_file)
    if str(tmpl_dict["name"]) != name:
        raise ValueError(f"template name {tmpl_dict['name']!r} does not match file name {name}.yaml")
    template = Template(tmpl_dict)
    methods = [m for m in ("binaries", "source") if m in tmpl_dict]
    binaries_versions = sorted(template.binaries.versions) if "binaries" in tmpl_dict else []
    renders: list[str] = []
    texts: dict[str, str] = {}  # render -> recipe text, linted by the parent (proof.py)
    renderers = {"docker": DockerRenderer, "singularity": SingularityRenderer}
    for method in methods:
        spec = getattr(template, method)
        for version in _versions(spec, binaries_versions):
            for fmt in FORMATS:
                for pkg_manager, base in BASES:
                    r = renderers[fmt](pkg_manager).from_(base)
                    r.add_registered_template(name, method=method, **_kwds(spec, name, version))
                    text = str(r)
                    if not text.strip():
                        raise ValueError(f"empty {fmt} recipe for {method} {version} on {base}")
                    renders.append(f"{fmt}:{pkg_manager}:{method}:{version}")
                    texts[renders[-1]] = text
    cli_checks = _cli_checks(name, template, methods, binaries_versions)
    ci_matrix = _ci_matrix_check(tree, name)
    return {
        "ok": True,
        "neurodocker_version": str(getattr(neurodocker, "__version__", "unknown")),
        "registered_by_import": registered_by_import,
        "n_templates": len([t for t in registered_templates() if not t.startswith("_")]),
        "methods": methods,
        "versions": binaries_versions,
        "renders": renders,
        "texts": texts,
        "cli": cli_checks,
        "ci_matrix": ci_matrix,
    }


def _ci_matrix_check(tree: Path, name: str) -> list[str]:
    """If the tree lists NAME in its CI build matrix, upstream's generator must read it."""
    script = tree / ".github" / "workflows" / "create_workflows.py"
    if not script.is_file():
        return []
    import runpy

    module = runpy.run_path(str(script), run_name="ndgen_probe")
    if name not in module["software"]():
        return []
    versions = module["get_versions_from_neurodocker_template"](name)
    return [f"create_workflows.py builds {name} {', '.join(map(str, versions))}"]


def _cli_checks(name: str, template: Any, methods: list[str], binaries_versions: list[str]) -> list[str]:
    """Render once per format through upstream's CLI, as its CI workflows do."""
    from click.testing import CliRunner
    from neurodocker.cli.cli import cli

    method = methods[0]
    spec = getattr(template, method)
    version = _newest(_versions(spec, binaries_versions))
    args = [f"{k}={v}" for k, v in _kwds(spec, name, version).items()] + [f"method={method}"]
    done = []
    for fmt in FORMATS:
        result = CliRunner().invoke(
            cli,
            ["generate", fmt, "--pkg-manager", "apt", "--base-image", BASES[0][1], "--yes", f"--{name}", *args],
        )
        head = "FROM " if fmt == "docker" else "Bootstrap:"
        if result.exit_code != 0 or head not in result.output:
            raise ValueError(
                f"`neurodocker generate {fmt} --{name} {' '.join(args)}` failed: {result.output.strip()[-300:]}"
            )
        done.append(f"neurodocker generate {fmt} --{name} {' '.join(args)}")
    return done


def main(argv: list[str]) -> None:
    tree, name = Path(argv[0]), argv[1]
    try:
        out = probe(tree, name)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        out = {"ok": False, "error": f"{type(exc).__name__}: {first}"}
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
