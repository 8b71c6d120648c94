"""Templates a recipe names (`template: {name: fsl, …}`), as Template steps.

Looked up in the `--templates` directories first (NAME.yaml), then in ndgen's
registry (upstream neurodocker templates + registry/).  A file may be in
neurodocker's form (`env:` + `instructions:`) or in neurocontainers' form
(`directives:` — a list of `environment:`, `install:` and `run:` items).  The
second form becomes neurodocker-form template data, so reproenv renders every
template the same way (its `self.*` Jinja, `install_dependencies()`):

* `[environment?, run?]` (every template neurocontainers vendors) is exactly
  neurodocker's `env` + `instructions`;
* any other sequence becomes one template per item, in order; an `install:`
  item becomes `{{ self.install([...]) }}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from neurodocker_nd.core.yamlfile import read_yaml
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Registry, unknown_name_message
from neurodocker_nd.render import steps as st

_METHOD_KEYS = ("arguments", "urls", "dependencies")


def _split_directives(name: str, method: str, data: Mapping[str, Any], path: Path) -> list[dict[str, Any]]:
    """Method data in neurocontainers' `directives:` form → neurodocker-form method dicts."""
    base = {k: data[k] for k in _METHOD_KEYS if k in data}
    if method == "binaries":
        base.setdefault("urls", {})
    directives = data.get("directives") or []
    if not isinstance(directives, list):
        raise NdgenError(f"{path}: {method}.directives must be a list")
    parts: list[dict[str, Any]] = []
    for i, d in enumerate(directives):
        if not isinstance(d, Mapping) or len(d) != 1:
            raise NdgenError(f"{path}: {method}.directives[{i}]: expected one of environment, install, run")
        ((kind, value),) = d.items()
        if kind == "environment" and isinstance(value, Mapping):
            parts.append({"env": {str(k): str(v) for k, v in value.items()}, "instructions": ""})
        elif kind == "run":
            text = " \\\n && ".join(str(v) for v in value if v is not None) if isinstance(value, list) else str(value)
            if text.strip():
                parts.append({"instructions": text})
        elif kind == "install" and isinstance(value, list):
            parts.append({"instructions": "{{ self.install(" + json.dumps([str(v) for v in value]) + ") }}"})
        else:
            raise NdgenError(f"{path}: {method}.directives[{i}]: unsupported template directive {kind!r}")
    # The common shape: one environment, then one run — neurodocker's own form.
    if len(parts) == 2 and "env" in parts[0] and "env" not in parts[1]:
        parts = [{"env": parts[0]["env"], "instructions": parts[1]["instructions"]}]
    if not parts:
        parts = [{"instructions": ""}]
    return [{**base, **p} for p in parts]


def _methods(name: str, data: Mapping[str, Any], path: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for method in ("binaries", "source"):
        m = data.get(method)
        if m is None:
            continue
        if not isinstance(m, Mapping):
            raise NdgenError(f"{path}: {method} must be a mapping")
        builder = m.get("builder", "neurodocker")
        if builder != "neurodocker":
            raise NdgenError(f"{path}: {method} uses builder {builder!r}; only neurodocker templates are supported")
        if "directives" in m:
            out[method] = _split_directives(name, method, m, path)
        else:
            out[method] = [{k: v for k, v in m.items() if k != "builder"}]
    if not out:
        raise NdgenError(f"{path}: template has neither binaries nor source")
    return out


class TemplateSource:
    """--templates directories, then the registry; files read once per run."""

    def __init__(self, dirs: Sequence[Path] = (), registry: Registry | None = None) -> None:
        self._forms: dict[str, str] = {}
        self.dirs = tuple(Path(d) for d in dirs)
        for d in self.dirs:
            if not d.is_dir():
                raise NdgenError(f"--templates {d}: not a directory")
        self.registry = registry if registry is not None else Registry()
        self._memo: dict[str, tuple[str, dict[str, list[dict[str, Any]]], Mapping[str, Any]]] = {}

    def _load(self, name: str):
        if name in self._memo:
            return self._memo[name]
        found = None
        if "/" not in name and not name.startswith("."):
            for d in self.dirs:
                p = d / f"{name}.yaml"
                if p.is_file():
                    found = p
                    break
        if found is not None:
            data = read_yaml(found)
            if not isinstance(data, Mapping):
                raise NdgenError(f"{found}: template must be a mapping")
            key = str(found)
        else:
            reg_name = name if name in self.registry else name.lower()
            if reg_name.startswith("_") or reg_name not in self.registry:
                raise NdgenError(unknown_name_message("template", name, self.registry.names()))
            entry = self.registry.get(reg_name)
            if entry.template is None:
                raise NdgenError(f"template {name!r}: registry entry {reg_name} has no template (method=system only)")
            assert entry.template_path is not None  # an entry's template and its path are set together
            data, key, found = entry.template, str(entry.template_path), entry.template_path
        form = (
            "neurocontainers"
            if any(isinstance(data.get(m), Mapping) and "directives" in data[m] for m in ("binaries", "source"))
            else "neurodocker"
        )
        self._forms[name] = form
        result = (key, _methods(name, data, Path(found)), data)
        self._memo[name] = result
        return result

    def steps(self, name: str, params: Mapping[str, str], arch: str) -> list[st.Template]:
        """Template steps for `template: {name: NAME, method?, …params}`."""
        key, methods, data = self._load(name)
        method = params.get("method") or ("binaries" if "binaries" in methods else "source")
        if method not in methods:
            raise NdgenError(f"template {name}: unknown method {method!r}; available: {', '.join(methods)}")
        parts = methods[method]
        args_decl = parts[0].get("arguments") or {}
        declared = set(args_decl.get("required") or ()) | set(args_decl.get("optional") or {})
        args = {k: str(v) for k, v in params.items() if k != "method"}
        if "arch" in declared:
            # neurocontainers passes the target architecture to every template.
            args.setdefault("arch", arch)
        else:
            args.pop("arch", None)
        # Pass-through of neurodocker's version check: an unknown version is one clear line.
        if method == "binaries" and "version" in args:
            urls = parts[0].get("urls") or {}
            if urls and "*" not in urls and args["version"] not in {str(u) for u in urls}:
                raise NdgenError(
                    f"template {name}: unknown version {args['version']!r}; "
                    f"available: {', '.join(str(u) for u in urls)}"
                )
        out = []
        for i, part in enumerate(parts):
            tmpl = MappingProxyType(
                {"name": str(data.get("name", name)), "url": str(data.get("url", "")), method: part}
            )
            out.append(
                st.Template(
                    name=name,
                    method=method,
                    args=tuple(sorted(args.items())),
                    key=key if len(parts) == 1 else f"{key}#{i}",
                    template=tmpl,
                    schema=self._forms[name],  # type: ignore[arg-type]
                    origin="recipe",
                )
            )
        return out
