"""The package's layers, checked on its source (layout-review §4.2): this plays import-linter's role.

    errors ← core ← registry ← render ← {build, minify, upstream, maintain, fleet, deliver} ← cli

Every import counts: at the top of a module, inside a function (lazy, so it only fails
when that path runs) and under `if TYPE_CHECKING:`.  The checker fails on
  (a) an edge against that direction, except the cross edges listed in CROSS;
  (b) render/ importing the Docker SDK, core.engine or core.runcapture (rendering never
      needs an engine: the cold-import tests check one path, this checks them all);
  (c) any import cycle between modules, type-only imports included;
  (d) a `neurodocker_nd.x` import naming a module or attribute that does not exist;
and on more than MAX_ROOT_MODULES modules at the package root.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import attrs
import pytest

from support import REPO

PACKAGE = "neurodocker_nd"

# Rank of each top-level name of the package: an import may only go to a lower rank.
# The root `__init__` (version only) and errors.py import nothing of the package
# (ROOT_LEAVES).  `__main__` and the two documented-API shims (recipe.py, context.py,
# docs/recipes.md) are ways in, like cli: they sit on top of it, so they may import it
# and nothing in the package imports them.
RANK = {
    "__init__": 0,
    "errors": 0,
    "core": 1,
    "registry": 2,
    "render": 3,
    "build": 4,
    "minify": 4,
    "upstream": 4,
    "maintain": 4,
    "fleet": 4,
    "deliver": 4,
    "cli": 5,
    "__main__": 6,
    "recipe": 6,
    "context": 6,
}
ROOT_LEAVES = {"__init__", "errors"}
# Sideways edges between pipelines that exist by design.
CROSS = {
    ("minify", "build"),  # --tests runs the suite (suite, testrun, apptainer)
    ("upstream", "build"),  # export --build-evidence builds the image
    ("upstream", "maintain"),  # export checks its renders with maintain.matrix.check_renders
    ("fleet", "build"),  # a target is built and tested as `ndgen build RECIPE_DIR` does
    ("fleet", "minify"),  # fleet run --minify
    ("deliver", "minify"),  # sif reads the image through minify.source's read-only overlay of its layers
}
# render/ renders text; none of these may be reached from it.
RENDER_FORBIDDEN = {"docker", f"{PACKAGE}.core.engine", f"{PACKAGE}.core.runcapture"}
MAX_ROOT_MODULES = 6

# Violations the package has today, each keyed (rule, importer, imported) without a line
# number so unrelated edits do not shift it.  Other issue-18 commits remove them; an entry
# that no longer happens fails test_known_violations_still_happen, so this list only shrinks.
KNOWN: set[tuple[str, str, str]] = set()


@attrs.frozen
class Import:
    """One import statement's edge: `source` (a module of the package) imports `target`."""

    path: str  # the importing file, relative to the package's parent
    line: int
    source: str
    target: str  # a module name; for `from M import a`, M.a when that is a module, else M
    attribute: str | None  # `a` of `from M import a` when M.a is not a module
    kind: str  # "top", "lazy" (inside a def) or "type-only" (under TYPE_CHECKING)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@attrs.frozen
class Violation:
    rule: str  # "layer", "render", "cycle", "unresolved", "root"
    source: str
    target: str
    message: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule, self.source, self.target)


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name → file for every module of the package directory `root`."""
    package = root.name
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement in the file with where it sits: top, lazy or type-only."""

    def visit(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, kind
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, "type-only")
            for child in node.orelse:
                yield from visit(child, kind)
            return
        if kind == "top" and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            kind = "lazy"
        for inner in ast.iter_child_nodes(node):
            yield from visit(inner, kind)

    yield from visit(tree, "top")


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of `from .x import y` inside `module`."""
    if not node.level:
        return node.module or ""
    # In a package's __init__, `.` is the package itself; in a plain module, its parent.
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(root: Path) -> tuple[list[Import], list[tuple[str, str, int, str]]]:
    """The package's internal imports and its external ones as (source, top name, line, path)."""
    modules = module_names(root)
    package = root.name
    internal, external = [], []
    for source, path in modules.items():
        rel = str(path.relative_to(root.parent))
        for node, kind in _statements(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + "."):
                        internal.append(Import(rel, node.lineno, source, alias.name, None, kind))
                    else:
                        external.append((source, alias.name.split(".")[0], node.lineno, rel))
                continue
            module = _absolute(source, path.name == "__init__.py", node)
            if module != package and not module.startswith(package + "."):
                external.append((source, module.split(".")[0], node.lineno, rel))
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                if sub in modules:
                    internal.append(Import(rel, node.lineno, source, sub, None, kind))
                else:
                    internal.append(Import(rel, node.lineno, source, module, alias.name, kind))
    return internal, external


def _str_keys(table: ast.Dict) -> set[str]:
    return {k.value for k in table.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


@cache
def defined_names(path: Path) -> set[str]:
    """Names a module binds at its top level; with a module `__getattr__` (PEP 562), also
    the keys of its module-level dict literals (render/__init__'s lazy `_API` table).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    lazy_tables: set[str] = set()
    has_getattr = False

    def bind(target: ast.expr) -> None:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.add(node.id)

    def visit(body: list[ast.stmt]) -> None:
        nonlocal has_getattr
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
                has_getattr |= node.name == "__getattr__"
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    bind(target)
                if isinstance(node.value, ast.Dict):  # PEP 562 tables: {"name": "module", ...}
                    lazy_tables.update(_str_keys(node.value))
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                bind(node.target)
                if isinstance(node.value, ast.Dict):
                    lazy_tables.update(_str_keys(node.value))
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    if has_getattr:
        names |= lazy_tables
    return names


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edge(imp: Import) -> str:
    what = f"{imp.target}.{imp.attribute}" if imp.attribute else imp.target
    return f"{imp.source} imports {what} ({imp.kind})"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def check(root: Path) -> list[Violation]:
    """Every violation of the layer rules in the package directory `root`."""
    modules = module_names(root)
    internal, external = imports(root)
    return [
        *_check_root(root, modules),
        *_check_edges(root.name, modules, internal),
        *_check_render(internal, external),
        *_check_cycles(modules, internal),
    ]


def _check_root(root: Path, modules: dict[str, Path]) -> Iterator[Violation]:
    package = root.name
    roots = sorted(p.name for p in root.glob("*.py"))
    if len(roots) > MAX_ROOT_MODULES:
        why = f"{len(roots)} modules at {package}/ (at most {MAX_ROOT_MODULES}): {roots}"
        yield Violation("root", package, package, why)
    for group in sorted({_group(name) for name in modules} - RANK.keys()):
        yield Violation("layer", f"{package}.{group}", "", f"{package}/{group}: in no layer (add it to RANK)")


def _check_edges(package: str, modules: dict[str, Path], internal: list[Import]) -> Iterator[Violation]:
    """(d) every import resolves, (a) and goes down the layers."""
    for imp in internal:
        if imp.target not in modules:
            yield Violation("unresolved", imp.source, imp.target, f"{imp.where}: no module {imp.target}")
            continue
        if imp.attribute is not None and imp.attribute not in defined_names(modules[imp.target]):
            why = f"{imp.where}: {imp.target} has no {imp.attribute!r}"
            yield Violation("unresolved", imp.source, f"{imp.target}.{imp.attribute}", why)
        src, dst = _group(imp.source), _group(imp.target)
        if src == dst or src not in RANK or dst not in RANK:  # same package; no layer: reported once
            continue
        if src in ROOT_LEAVES:
            why = f"{package}/{src}.py imports nothing of the package"
        elif RANK[dst] < RANK[src] or (src, dst) in CROSS:
            continue
        else:
            why = f"{src} (layer {RANK[src]}) may not import {dst} (layer {RANK[dst]})"
        yield Violation("layer", imp.source, imp.target, f"{imp.where}: {_edge(imp)}: {why}")


def _check_render(internal: list[Import], external: list[tuple[str, str, int, str]]) -> Iterator[Violation]:
    """(b) render never reaches an engine."""
    for imp in internal:
        if _group(imp.source) == "render" and imp.target in RENDER_FORBIDDEN:
            yield Violation("render", imp.source, imp.target, f"{imp.where}: {_edge(imp)}: render runs no engine")
    for source, top, line, path in external:
        if _group(source) == "render" and top in RENDER_FORBIDDEN:
            why = f"{path}:{line}: {source} imports {top}: render runs no engine"
            yield Violation("render", source, top, why)


def _check_cycles(modules: dict[str, Path], internal: list[Import]) -> Iterator[Violation]:
    """(c) no cycles; the message names every edge inside the cycle."""
    graph: dict[str, set[str]] = {}
    for imp in internal:
        if imp.target in modules and imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
    for component in _cycles(graph):
        members = set(component)
        edges = sorted({f"{i.where}: {_edge(i)}" for i in internal if i.source in members and i.target in members})
        why = f"import cycle {' ↔ '.join(component)}:\n    " + "\n    ".join(edges)
        yield Violation("cycle", component[0], component[-1], why)


def _report(violations: list[Violation]) -> str:
    return "\n".join(f"[{v.rule}] {v.message}" for v in violations)


def test_package_keeps_its_layers():
    new = [v for v in check(REPO / PACKAGE) if v.key not in KNOWN]
    assert not new, "layer rules broken (layout-review §4.2):\n" + _report(new)


def test_known_violations_still_happen():
    # A fixed violation leaves KNOWN, so the list cannot hide a new one with the same edge later.
    happening = {v.key for v in check(REPO / PACKAGE)}
    gone = sorted(KNOWN - happening)
    assert not gone, f"fixed, remove from KNOWN in {__file__}: {gone}"


def test_the_checker_sees_every_import_kind(tmp_path):
    """A bad edge in each position, a type-only cycle, an unknown name: each is reported with file:line."""
    pkg = tmp_path / PACKAGE
    files = {
        "__init__.py": '"""v"""\n',
        "errors.py": "class NdgenError(Exception):\n    pass\n",
        "core/__init__.py": "",
        "core/engine.py": "import docker\n",
        "core/a.py": (
            "from neurodocker_nd.errors import NdgenError\n"
            "def f():\n"
            "    from neurodocker_nd.render import steps\n"  # lazy, upward: layer
        ),
        "render/__init__.py": "",
        "render/steps.py": (
            "from typing import TYPE_CHECKING\n"
            "from neurodocker_nd.errors import NoSuchError\n"  # unresolved attribute
            "if TYPE_CHECKING:\n"
            "    from neurodocker_nd.render.pkg import Spec\n"  # type-only half of a cycle
        ),
        "render/pkg.py": (
            "from neurodocker_nd.render.steps import Plan\n"  # unresolved, and the other half
            "import neurodocker_nd.core.gone\n"  # unresolved module
            "import docker.errors\n"  # render reaches the SDK
            "from neurodocker_nd.core import engine\n"  # ... and the engine module
            "Spec = 1\n"
        ),
        "build/__init__.py": "",
        "build/x.py": "from neurodocker_nd.minify import y\n",  # sideways, not a listed cross edge
        "minify/__init__.py": "",
        "minify/y.py": "from neurodocker_nd.build import x\n",  # listed cross edge, but closes a cycle
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text, encoding="utf-8")

    found = check(pkg)
    keys = {v.key for v in found}
    text = _report(found)
    assert ("layer", f"{PACKAGE}.core.a", f"{PACKAGE}.render.steps") in keys, text
    assert "neurodocker_nd/core/a.py:3: neurodocker_nd.core.a imports neurodocker_nd.render.steps (lazy)" in text
    assert ("layer", f"{PACKAGE}.build.x", f"{PACKAGE}.minify.y") in keys, text
    assert ("layer", f"{PACKAGE}.minify.y", f"{PACKAGE}.build.x") not in keys, text
    assert ("unresolved", f"{PACKAGE}.render.steps", f"{PACKAGE}.errors.NoSuchError") in keys, text
    assert ("unresolved", f"{PACKAGE}.render.pkg", f"{PACKAGE}.render.steps.Plan") in keys, text
    assert ("unresolved", f"{PACKAGE}.render.pkg", f"{PACKAGE}.core.gone") in keys, text
    assert ("render", f"{PACKAGE}.render.pkg", "docker") in keys, text
    assert ("render", f"{PACKAGE}.render.pkg", f"{PACKAGE}.core.engine") in keys, text
    assert ("cycle", f"{PACKAGE}.render.pkg", f"{PACKAGE}.render.steps") in keys, text
    type_only = "neurodocker_nd.render.steps imports neurodocker_nd.render.pkg.Spec (type-only)"
    assert f"neurodocker_nd/render/steps.py:4: {type_only}" in text
    assert ("cycle", f"{PACKAGE}.build.x", f"{PACKAGE}.minify.y") in keys, text
    # The engine module itself may import docker; errors imports nothing: no finding there.
    assert not [v for v in found if v.source in (f"{PACKAGE}.core.engine", f"{PACKAGE}.errors")], text


def test_the_checker_counts_root_modules_and_leaves(tmp_path):
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from neurodocker_nd import errors\n", encoding="utf-8")
    (pkg / "errors.py").write_text("", encoding="utf-8")
    for name in ("a", "b", "c", "d", "e"):
        (pkg / f"{name}.py").write_text("", encoding="utf-8")
    found = check(pkg)
    assert [v.rule for v in found].count("root") == 1, _report(found)
    assert ("layer", PACKAGE, f"{PACKAGE}.errors") in {v.key for v in found}, _report(found)
    assert f"{PACKAGE}/a: in no layer" in _report(found)


@pytest.mark.parametrize(
    ("module", "is_package", "node", "expected"),
    [
        ("neurodocker_nd.render.pkg", False, "from . import steps", "neurodocker_nd.render"),
        ("neurodocker_nd.render.pkg", False, "from ..core import paths", "neurodocker_nd.core"),
        ("neurodocker_nd.render", True, "from .steps import Plan", "neurodocker_nd.render.steps"),
    ],
)
def test_relative_imports_resolve_like_python(module, is_package, node, expected):
    stmt = ast.parse(node).body[0]
    assert isinstance(stmt, ast.ImportFrom)
    assert _absolute(module, is_package, stmt) == expected
