"""Lmod (.lua) and Tcl modulefiles for one container: help, whatis, PATH to its wrappers, its variables.

The Lmod text follows transparent-singularity's module (neurodesk/neurocommand
commit 8796bb4, run_transparent_singularity.sh): the image's /README.md as the
help, in a level-3 long bracket (`help([===[ … ]===])`), a `whatis`, PATH
prepended with the wrapper directory, and one `setenv` per DEPLOY_ENV_* variable
with `BASEPATH` replaced by the container's path. To that it adds
`extensions()`, which lists the commands in `module spider`. The Tcl modulefile
says the same in Tcl (Lmod reads it through its tcl2lua; so does Environment
Modules).

The README and the variables' values are the image's: a README holding `]===]`
would end the help string early and run the rest as Lua, so it is refused
(`HelpError`), and every value goes into a double-quoted string with each
character the language treats specially escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from neurodocker_nd.errors import NdgenError

LUA_CLOSE = "]===]"


class HelpError(NdgenError):
    """The README cannot be a modulefile's help text."""


@attrs.frozen
class ModuleText:
    """What a modulefile says, whatever its language."""

    name: str
    version: str
    image: str  # shown in whatis
    tech: str
    help: str
    commands: tuple[str, ...]
    bin_dir: str  # absolute, where the wrappers are on the cluster
    env: tuple[tuple[str, str], ...]  # BASEPATH already replaced


def _quoted(text: str, special: str, control: str) -> str:
    """`text` in double quotes: each of `special` backslashed, a newline as \\n, other control
    characters as `control` formats their code (each language's own escape)."""
    out = []
    for ch in text:
        if ch in special:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(control.format(ord(ch)))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _lua_string(text: str) -> str:
    return _quoted(text, '\\"', "\\{:03d}")


def _tcl_string(text: str) -> str:
    return _quoted(text, '\\"$[]{}', "\\{:03o}")  # octal: at most 3 digits are read, in every Tcl


def _whatis(m: ModuleText) -> list[str]:
    return [
        f"{m.name} {m.version}: the container {m.image} through {m.tech}",
        "Commands: " + ", ".join(m.commands),
    ]


def lua(m: ModuleText, where: str) -> str:
    """The Lmod modulefile; `where` names the README's source in an error."""
    if LUA_CLOSE in m.help:
        raise HelpError(f"{where}: the README contains {LUA_CLOSE}, which would end the Lmod help string early")
    lines = ["-- -*- lua -*-", f"-- ndgen modules: {m.name}/{m.version}", f"help([===[\n{m.help}\n]===])"]
    lines += [f"whatis({_lua_string(w)})" for w in _whatis(m)]
    lines.append("extensions(" + _lua_string(", ".join(f"{c}/{m.version}" for c in m.commands)) + ")")
    lines.append(f'prepend_path("PATH", {_lua_string(m.bin_dir)})')
    lines += [f"setenv({_lua_string(k)}, {_lua_string(v)})" for k, v in m.env]
    return "\n".join(lines) + "\n"


def tcl(m: ModuleText) -> str:
    """The Tcl modulefile."""
    lines = [
        "#%Module1.0",
        f"## ndgen modules: {m.name}/{m.version}",
        "proc ModulesHelp { } {",
        f"    puts stderr {_tcl_string(m.help)}",
        "}",
    ]
    lines += [f"module-whatis {_tcl_string(w)}" for w in _whatis(m)]
    lines.append(f"prepend-path PATH {_tcl_string(m.bin_dir)}")
    lines += [f"setenv {_tcl_string(k)} {_tcl_string(v)}" for k, v in m.env]
    return "\n".join(lines) + "\n"


def with_basepath(env: Sequence[tuple[str, str]], basepath: str) -> tuple[tuple[str, str], ...]:
    """DEPLOY_ENV values with every `BASEPATH` replaced, as transparent-singularity does."""
    return tuple((k, v.replace("BASEPATH", basepath)) for k, v in env)
