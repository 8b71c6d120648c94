"""What a recipe's strings mean: the Jinja context, its evaluation, and where an error points.

Every string of build.yaml may hold Jinja (`context.version`, `arch`,
`get_file()`, `parallel_jobs`, variables).  Most are plain `{{ a.b }}`
substitutions, answered here without compiling a template (`_substitute`, checked
against Jinja by the tests); the rest render in core.jinja's bounded sandbox.
`condition:` expressions are the same evaluation, compared with `True`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs

from neurodocker_nd.core.jinja import compiled
from neurodocker_nd.core.yamlfile import line_of
from neurodocker_nd.errors import NdgenError


class RecipeError(NdgenError):
    """A recipe that cannot be read or rendered (the message names file:line)."""


@attrs.frozen
class Where:
    """Where a value sits in build.yaml or an include: errors start with its `file:line`."""

    path: Path
    parts: tuple[Any, ...]
    # The text the loader parsed: line numbers come from it, never from reading the path
    # again (that would go around the contained reader, and the file may have changed).
    text: str = attrs.field(default="", repr=False)

    def line(self) -> str:
        try:
            return f"{self.path}:{line_of(self.path, list(self.parts), self.text)}"
        except Exception:  # noqa: BLE001 - best effort: the file name alone still names the culprit
            return str(self.path)

    def child(self, *parts: Any) -> Where:
        return Where(self.path, self.parts + parts, self.text)


@attrs.define(slots=False)  # __getattr__ reads __dict__
class Context:
    """What a recipe's Jinja sees as `context` (and, for variables, bare names)."""

    arch: str
    parallel_jobs: int
    # Set from build.yaml's name, version and options (Loader._context), before any Jinja runs.
    name: str = ""
    version: str = ""
    original_version: str = ""
    variant: str = ""
    options: Any = attrs.field(factory=SimpleNamespace)
    values: dict[str, Any] = attrs.field(factory=dict)
    file_guest: dict[str, str] = attrs.field(factory=dict)  # declared name -> guest file name
    file_source: dict[str, str] = attrs.field(factory=dict)  # declared name -> its URL, host path or name
    used: list[tuple[str, str]] | None = None  # (guest, name) get_file() handed out in one `run`
    run_key: Callable[[], str] | None = None
    cache_guests: dict[str, dict[str, str]] = attrs.field(factory=dict)  # cache id -> guest -> source

    def __getattr__(self, key: str) -> Any:  # recipe variables: context.foo
        values = self.__dict__.get("values") or {}
        if key in values:
            return values[key]
        raise AttributeError(key)

    def get_file(self, name: str) -> str:
        if name not in self.file_guest:
            raise RecipeError(
                f"get_file({name!r}): no such declared file (files: {', '.join(self.file_guest) or 'none'})"
            )
        guest = self.file_guest[name]
        if self.used is None or self.run_key is None:
            return f"/.neurocontainer-cache/{guest}"
        cache_id = self.run_key()
        names = self.cache_guests.setdefault(cache_id, {})
        source = self.file_source[name]
        if names.get(guest, source) != source:
            # Two different files with one guest name in one mount: as neurocontainers,
            # a digest suffix — of the URL/path (theirs hashes a host cache path).
            digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
            stem, dot, suffix = guest.rpartition(".")
            guest = f"{stem}_{digest}.{suffix}" if dot else f"{guest}_{digest}"
        names[guest] = source
        self.used.append((guest, name))
        return f"/.neurocontainer-cache/{cache_id}/{guest}"

    def has_local(self, key: str) -> bool:
        return False

    def get_local(self, key: str) -> str:
        raise RecipeError(f"get_local({key!r}): local build contexts are not supported")


_SIMPLE = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)\s*\}\}")
_MISSING = object()


def _lookup(ns: Mapping[str, Any], dotted: str) -> Any:
    """`a.b.c` as Jinja resolves it, for the plain cases only (else _MISSING: Jinja decides)."""
    head, *rest = dotted.split(".")
    value = ns.get(head, _MISSING)
    for attr in rest:
        if value is _MISSING:
            return _MISSING
        if isinstance(value, dict):
            # Jinja tries the attribute first: dict methods (`items`) are not plain values.
            value = value[attr] if attr in value and not hasattr(dict, attr) else _MISSING
        elif isinstance(value, (Context, SimpleNamespace)):
            value = getattr(value, attr, _MISSING)
        else:
            return _MISSING
    if isinstance(value, (str, int)):  # bool is an int: str(True) == "True", as Jinja prints it
        return str(value)
    return _MISSING


def _substitute(text: str, ns: Mapping[str, Any]) -> str | None:
    """`{{ context.version }}`-only strings without compiling a template (most of a
    recipe's Jinja); None when anything else is in the string."""
    if "{%" in text or "{#" in text:
        return None
    out, pos = [], 0
    for m in _SIMPLE.finditer(text):
        value = _lookup(ns, m.group(1))
        if value is _MISSING:
            return None
        out += [text[pos : m.start()], value]
        pos = m.end()
    out.append(text[pos:])
    result = "".join(out)
    if "{{" in "".join(out[::2]):
        return None
    return _drop_final_newline(result) if text.endswith("\n") else result


def _drop_final_newline(text: str) -> str:
    # Jinja with keep_trailing_newline=False drops one final newline of the template.
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _has_jinja(text: str) -> bool:
    # Shell's ${VAR} is not Jinja: only {{ }}, {% %} and {# #} need the engine.
    return "{{" in text or "{%" in text or "{#" in text


def namespace(ctx: Context) -> dict[str, Any]:
    """The names a recipe's Jinja sees: `context` (alias `local`), its helpers, then the variables."""
    ns = {
        "context": ctx,
        "local": ctx,
        "arch": ctx.arch,
        "parallel_jobs": ctx.parallel_jobs,
        "get_file": ctx.get_file,
        "has_local": ctx.has_local,
        "get_local": ctx.get_local,
    }
    ns.update(ctx.values)
    return ns


def render_str(ctx: Context, text: str, where: Where) -> str:
    """`text` evaluated as Jinja against the recipe context (RecipeError naming `where`)."""
    import jinja2

    if not _has_jinja(text):  # the common case: nothing to evaluate
        return _drop_final_newline(text)  # ...but as Jinja would
    ns = namespace(ctx)
    fast = _substitute(text, ns)
    if fast is not None:
        return fast
    try:
        # core.jinja's bounded sandbox: a recipe's Jinja is as hostile as a template's
        # (`{{ 9**(9**9) }}` in a build.yaml hung `ndgen recipe`).
        return compiled(text).render(**ns)
    except RecipeError as exc:
        raise RecipeError(f"{where.line()}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise RecipeError(f"{where.line()}: Jinja syntax error: {exc.message}") from None
    except (
        jinja2.TemplateError,
        TypeError,
        ValueError,
        ArithmeticError,
        AttributeError,
        KeyError,
        IndexError,
    ) as exc:
        msg = getattr(exc, "message", None) or str(exc)
        raise RecipeError(f"{where.line()}: {type(exc).__name__}: {msg}") from None


def render(ctx: Context, value: Any, where: Where) -> Any:
    """A YAML value with every string rendered; `{try: [{condition, value}, …]}` picks the first match."""
    if isinstance(value, str):
        return render_str(ctx, value, where)
    if isinstance(value, list):
        return [render(ctx, v, where.child(i)) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if isinstance(value.get("try"), list):
            for i, option in enumerate(value["try"]):
                if isinstance(option, Mapping) and isinstance(option.get("condition"), str):
                    if condition(ctx, option["condition"], where.child("try", i, "condition")):
                        return render(ctx, option.get("value"), where.child("try", i, "value"))
            raise RecipeError(f"{where.line()}: no `try` condition matched")
        return {str(render(ctx, k, where)): render(ctx, v, where.child(k)) for k, v in value.items()}
    return value


def condition(ctx: Context, cond: Any, where: Where) -> bool:
    """A `condition:` expression is true (it must parse on its own: `a }} {{ b` is refused)."""
    import jinja2

    try:
        compiled("{{ " + str(cond) + " }}")
    except jinja2.TemplateSyntaxError as exc:
        raise RecipeError(f"{where.line()}: condition {str(cond)!r} does not parse: {exc.message}") from None
    return render_str(ctx, "{{ " + str(cond) + " }}", where).strip() == "True"
