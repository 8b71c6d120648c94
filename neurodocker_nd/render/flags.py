"""neurodocker's directive flags (`--run`, `--env K=V`, `--copy SRC… DST`, …) → steps.

The values arrive in command-line order (the CLI records it); each flag
occurrence becomes one step, as in `neurodocker generate`.  Values are
command-line text, so on top of the step checks (steps.py) a value may not
contain a line break (any that str.splitlines honours): one `--run` is one
command, and nothing a user types can start another instruction.
"""

from __future__ import annotations

from collections.abc import Sequence

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.render import steps as st

# click parameter name -> flag, for the flags that take one value / many values.
SINGLE = {"run": "--run", "run_bash": "--run-bash", "workdir": "--workdir", "user": "--user", "arg": "--arg"}
MANY = {
    "env": "--env",
    "copy": "--copy",
    "add": "--add",
    "install": "--install",
    "entrypoint": "--entrypoint",
    "label": "--label",
}
NAMES = (*SINGLE, *MANY)


def _one_line(flag: str, value: str) -> str:
    # Every boundary str.splitlines knows (U+2028 too), not only \n: a
    # Python-side re-parse of the output must see one line per value as well.
    for ch in value:
        if ch == "\x00" or ch in st.LINE_BREAKS:
            raise NdgenError(f"{flag} {value[:40]!r}: contains {st.describe_char(ch)}; give one value per flag")
    return value


def key_values(flag: str, words: Sequence[str]) -> dict[str, str]:
    """`K=V` words (a value may contain `=`); NdgenError names the flag and the word."""
    out: dict[str, str] = {}
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise NdgenError(f"{flag} {w!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _step(name: str, value: str | tuple[str, ...]) -> st.Step:
    flag = SINGLE.get(name) or MANY[name]
    words = (value,) if isinstance(value, str) else tuple(value)
    for w in words:
        _one_line(flag, w)
    if name == "run":
        return st.Run(words[0])
    if name == "run_bash":
        return st.Run(words[0], shell="bash")
    if name == "workdir":
        return st.Workdir(words[0])
    if name == "user":
        return st.User(words[0])
    if name == "arg":
        key, eq, val = words[0].partition("=")
        return st.Arg(key, val if eq else None)
    if name == "env":
        return st.Env(key_values(flag, words))
    if name == "label":
        return st.Label(key_values(flag, words))
    if name == "copy":
        if len(words) < 2:
            raise NdgenError(f"--copy {' '.join(words)}: give at least one source and a destination")
        return st.Copy(tuple(words[:-1]), words[-1])
    if name == "add":
        if len(words) != 2:
            raise NdgenError(f"--add {' '.join(words)}: give one source (a tar archive) and a destination")
        return st.Add(words[0], words[1])
    if name == "install":
        # neurodocker's special case: an `opts=…` word sets the package manager options.
        opts = [w[len("opts=") :] for w in words if w.startswith("opts=")]
        pkgs = tuple(w for w in words if not w.startswith("opts="))
        if not pkgs:
            raise NdgenError("--install: no packages given")
        return st.Install(pkgs, opts[-1] if opts else None)
    if name == "entrypoint":
        # As neurodocker: every word (split on whitespace) is one exec-form argument.
        return st.Entrypoint(tuple(part for w in words for part in w.split()))
    raise AssertionError(name)


def to_step(name: str, value: str | tuple[str, ...]) -> st.Step:
    """One flag occurrence (click parameter name + value) → a step; NdgenError names the flag."""
    try:
        return _step(name, value)
    except st.StepError as exc:
        flag = SINGLE.get(name) or MANY[name]
        raise NdgenError(f"{flag}: {exc.message}") from None
