"""Three-way merge of a template: base (upstream when last synced), theirs (upstream now), ours (registry).

Upstream moves on after ndgen copied a template (e.g. fsl gains 6.0.7.24), so
"make upstream's file equal ours" would revert their work. Instead the changes
ours made since the base are replayed onto theirs, key by key, the way a VCS
merges — but on the parsed YAML, so that two versions added at the top of one
``urls`` mapping do not conflict the way two adjacent text insertions do:

* a key ours did not touch (ours == base) keeps theirs, whatever it is;
* a key ours added/changed is set (unless theirs already has the same value);
  nested mappings recurse, so a new version lands among theirs in our order;
* a key ours removed is removed only if theirs still has the base's value;
* both changed one leaf differently: a conflict. Ours wins (the registry is
  what ndgen tested) and the conflict is reported in the PR so maintainers see it.

The result is edited in place on a ruamel round-trip of *theirs*, so upstream's
comments, order and layout survive and the diff stays minimal.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import attrs

_MISSING = object()


@attrs.frozen
class Merged:
    text: str  # theirs with our changes, formatted as upstream's yamlfmt does
    conflicts: tuple[str, ...]  # dotted keys where theirs and ours both changed the base
    kept: tuple[str, ...]  # dotted keys upstream changed since the base that ours left alone


def _yaml():
    from ruamel.yaml import YAML  # only export needs it

    rt = YAML()
    rt.indent(mapping=4, sequence=4, offset=0)
    rt.explicit_start = True
    rt.width = 4096  # upstream keeps long URLs on one line
    return rt


def format_for_upstream(text: str) -> str:
    """Format a template as upstream's yamlfmt pre-commit hook does."""
    rt = _yaml()
    out = io.StringIO()
    rt.dump_all(list(rt.load_all(text)), out)
    return out.getvalue()


def dump(data: Any) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def load(text: str) -> Any:
    return _yaml().load(text)


def _plain(value: Any) -> Any:
    """Round-trip nodes → plain data, for comparisons that ignore comments/style."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def merge(base_text: str | None, theirs_text: str, ours_text: str) -> Merged:
    """Replay base→ours onto theirs. `base_text` None: ours and theirs were made independently."""
    theirs = load(theirs_text)
    ours = load(ours_text)
    base = load(base_text) if base_text is not None else {}
    conflicts: list[str] = []
    kept: list[str] = []
    _merge_map(base, theirs, ours, "", conflicts, kept)
    return Merged(dump(theirs), tuple(conflicts), tuple(kept))


def _merge_map(base: Mapping, theirs: Any, ours: Mapping, path: str, conflicts: list[str], kept: list[str]) -> None:
    for key in list(ours):
        o, b = ours[key], base.get(key, _MISSING) if isinstance(base, Mapping) else _MISSING
        t = theirs.get(key, _MISSING)
        where = f"{path}{key}"
        if b is not _MISSING and _plain(o) == _plain(b):
            if t is not _MISSING and _plain(t) != _plain(b):
                kept.append(where)
            continue  # ours did not touch it: theirs stands (changed, removed or not)
        if t is not _MISSING and _plain(t) == _plain(o):
            continue  # both made the same change
        if isinstance(o, Mapping) and isinstance(t, Mapping):
            _merge_map(b if isinstance(b, Mapping) else {}, t, o, f"{where}.", conflicts, kept)
            continue
        if t is not _MISSING and (b is _MISSING or _plain(t) != _plain(b)):
            conflicts.append(where)  # theirs changed/added it too, differently
        _set(theirs, ours, key, o)
    for key in theirs:
        if key not in ours and (not isinstance(base, Mapping) or key not in base):
            kept.append(f"{path}{key}")  # added upstream since the base: stays
    if isinstance(base, Mapping):
        for key in list(base):
            if key in ours or key not in theirs:
                continue
            if _plain(theirs[key]) == _plain(base[key]):
                del theirs[key]  # ours removed it, theirs left it alone
            else:
                conflicts.append(f"{path}{key}")  # ours removed what theirs changed: keep theirs


def _set(theirs: Any, ours: Mapping, key: Any, value: Any) -> None:
    """theirs[key] = value; a new key goes where ours has it: before ours' next key theirs has."""
    if key in theirs:
        theirs[key] = value
        return
    order = list(ours)
    after = [k for k in order[order.index(key) + 1 :] if k in theirs]
    before = [k for k in order[: order.index(key)] if k in theirs]
    keys = list(theirs)
    if after:
        pos = keys.index(after[0])
    elif before:
        pos = keys.index(before[-1]) + 1
    else:
        pos = len(keys)
    theirs.insert(pos, key, value)
