"""The one representation every front end produces: an immutable list of steps.

`--pkg` strings (render.pkg), the directive flags (render.flags) and recipe files
(render.recipe) only parse and validate into a :class:`Plan`; the renderer
(`render(plan, fmt)`, render.renderer) is the one place that turns steps into
Dockerfile or Singularity text (through neurodocker's reproenv renderers).
Steps are plain data: any Jinja of a recipe has been evaluated before a step exists.

Safety lives here, so that every front end gets it: a step's value can never
start a new instruction.  Single-line fields (paths, users, env values…)
reject control characters and the quote that would close reproenv's quoting;
RUN commands may span lines (recipes' `run:` lists do), but a line may not
start a Singularity section (`%post`…), and the last line may not continue
into the next instruction (a trailing backslash or a trailing comment line,
which Docker's parser skips while it keeps the continuation open).

Line boundaries are those of every consumer, not only `\n`: str.splitlines
(Python re-parsers, spython) also ends a line at \v \f \r \x1c-\x1e U+0085
U+2028 U+2029, so none of them may hide in a value.  And a RUN command never
starts with an option: BuildKit reads leading `--mount=…` words as RUN flags
(a bind of another local image, a shared cache), which only ndgen's own
cache stage may emit (render.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.render.target import Target

# Every line boundary str.splitlines honours (a test checks the list against it).
LINE_BREAKS = "\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029"
# Single-line values: C0 controls, DEL, the C1 controls (U+0085 among them) and
# U+2028/U+2029 - so no line boundary of any parser can hide in one.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Commands may span lines with \n only (the one boundary Docker and Apptainer use).
_COMMAND_BAD_RE = re.compile("[\x00" + LINE_BREAKS.replace("\n", "") + "]")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
# Apptainer opens a section at any line whose first word starts with `%`
# (`%%files` included: it trims every leading `%`); \s is Unicode here, a
# superset of Go's unicode.IsSpace that bufio.ScanWords skips.
_SECTION_RE = re.compile(r"^\s*%")
# What BuildKit's flag parser skips or unwraps before it looks for `--`: blanks,
# escapes and quotes (`RUN "--mount=…"` and `RUN \\--mount=…` are flags too).
_FLAG_NOISE = "\\\"'"

_NAMES = {
    "\n": "a newline",
    "\r": "a carriage return",
    "\t": "a tab",
    "\x00": "a NUL byte",
    "\v": "a vertical tab",
    "\f": "a form feed",
    "\x85": "a next-line character (U+0085)",
    "\u2028": "a line separator (U+2028)",
    "\u2029": "a paragraph separator (U+2029)",
}


class StepError(NdgenError):
    """A step's value would break out of its instruction."""


def describe_char(ch: str) -> str:
    """The one name for a refused character, in every error message."""
    return _NAMES.get(ch, f"{ch!r} (U+{ord(ch):04X})")


def control_char(value: str) -> str | None:
    """The first character a single-line value may not hold, or None."""
    m = _CONTROL_RE.search(value)
    return m.group(0) if m else None


def check_line(what: str, value: str, *, forbid: str = '"', spaces: bool = True) -> str:
    """A single-line value: no control or line-separator characters, none of `forbid`, maybe no spaces."""
    if not isinstance(value, str):
        raise StepError(f"{what}: expected a string, got {type(value).__name__}")
    bad = control_char(value)
    if bad is not None:
        raise StepError(f"{what}: value {value[:40]!r} contains {describe_char(bad)}")
    for ch in forbid:
        if ch in value:
            raise StepError(f"{what}: value {value[:40]!r} contains {ch!r}")
    if not spaces and (" " in value or not value):
        raise StepError(f"{what}: {value!r} must be one non-empty word")
    return value


_OUTSIDE_QUOTES_RE = re.compile(r"^[A-Za-z0-9._/:@%+,=~-]*$")


def check_balanced(what: str, value: str) -> str:
    """A value reproenv writes as K="VALUE": quotes inside must pair up, and what
    they leave unquoted must be a plain word, so `/opt/x-"1.0"/bin` stays one
    value while `a" B="c` (another variable) or `a"; id; "` (a command in
    Singularity's %environment) cannot get out."""
    check_line(what, value, forbid="")
    parts = value.split('"')
    if len(parts) % 2 == 0:
        raise StepError(f"{what}: value {value[:40]!r} contains an unpaired '\"'")
    for outside in parts[1::2]:
        if not _OUTSIDE_QUOTES_RE.match(outside):
            raise StepError(f"{what}: value {value[:40]!r} leaves {outside[:20]!r} outside its quotes")
    return value


def leading_option(command: str) -> str | None:
    """The first word of `command` when BuildKit would take it for a RUN flag, else None.

    Docker joins continuation lines and drops comment lines inside them before
    it reads flags, so blank, `\\`-only and `#` lines are skipped here too
    (stricter than needed: a shell command never starts with `-` anyway).
    """
    for line in command.split("\n"):
        text = line.lstrip()
        while text and (text[0] in _FLAG_NOISE or text[0].isspace()):
            text = text[1:]
        if not text or text.startswith("#"):
            continue
        return text.split(maxsplit=1)[0] if text.startswith("-") else None
    return None


def check_no_flags(what: str, command: str) -> str:
    """A user's RUN text never starts with an option (BuildKit would read `--mount=…` as a RUN flag)."""
    word = leading_option(command)
    if word is not None:
        raise StepError(
            f"{what}: the command starts with {word[:40]!r}, which Docker would read as a RUN flag; "
            "only ndgen's own cache mounts may add RUN flags"
        )
    return command


def check_command(what: str, command: str) -> str:
    """A RUN command: lines are fine, escaping the instruction is not."""
    m = _COMMAND_BAD_RE.search(command)
    if m:
        raise StepError(f"{what}: command contains {describe_char(m.group(0))}")
    lines = [ln for ln in command.split("\n") if ln.strip()]
    if not lines:
        raise StepError(f"{what}: empty command")
    check_no_flags(what, command)
    for ln in lines:
        if _SECTION_RE.match(ln):
            raise StepError(f"{what}: a line starts with {ln.strip()[:20]!r}, which would open a Singularity section")
    last = lines[-1].rstrip()
    if last.endswith("\\"):
        raise StepError(f"{what}: the last line ends with a backslash, continuing into the next instruction")
    if last.lstrip().startswith("#") and len(lines) > 1:
        raise StepError(f"{what}: the last line is a comment, which would continue into the next instruction")
    return command


def _frozen_pairs(what: str, key_re: re.Pattern[str]) -> Callable[[Any], tuple[tuple[str, str], ...]]:
    def convert(value: Any) -> tuple[tuple[str, str], ...]:
        items = value.items() if isinstance(value, Mapping) else value
        pairs = tuple((str(k), str(v)) for k, v in items)
        for k, v in pairs:
            if not key_re.match(k):
                raise StepError(f"{what}: bad name {k!r}")
            check_balanced(f"{what} {k}", v)
            if (len(v) - len(v.rstrip("\\"))) % 2:
                # A final backslash would escape the closing quote of ENV K="V".
                raise StepError(f"{what} {k}: value {v[:40]!r} ends with a backslash")
        return pairs

    return convert


# Named, so mypy's attrs plugin can read the converters' types (it cannot read a call's result).
_env_pairs = _frozen_pairs("env", _ENV_KEY_RE)
_label_pairs = _frozen_pairs("label", _LABEL_KEY_RE)


def _env_values(value: Any) -> tuple[tuple[str, str], ...]:
    return _env_pairs(value)


def _label_values(value: Any) -> tuple[tuple[str, str], ...]:
    return _label_pairs(value)


# ---------------------------------------------------------------- steps


@attrs.frozen
class Template:
    """A neurodocker template (registry entry, `_default`, a --templates file).

    `template` is the template as data (neurodocker's form); `key` names it for
    memoising and messages (its file path, or `path#system`).
    """

    name: str
    method: str  # binaries | source
    args: tuple[tuple[str, str], ...]
    key: str
    template: Mapping[str, Any] = attrs.field(eq=False, repr=False)
    # The download the renderer verifies (registry meta `versions.V.sha256`).
    sha256: str | None = None
    url: str | None = None
    # "neurodocker": checked against neurodocker's template schema when rendered;
    # "neurocontainers": a `directives:`-form file, checked by render/recipe/templates.py.
    schema: Literal["neurodocker", "neurocontainers"] = "neurodocker"
    # "pkg": arguments from `--pkg` (package-list words get quoted, render.py);
    # "recipe": a recipe's own words, passed verbatim as neurocontainers does.
    origin: Literal["pkg", "recipe"] = "pkg"


@attrs.frozen
class Install:
    """OS packages with the plan's package manager (reproenv's `install`)."""

    pkgs: tuple[str, ...]
    opts: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.pkgs:
            raise StepError("install: no packages")
        for p in self.pkgs:
            # neurocontainers' `install: [a b]` passes "a b" as one item: words are fine.
            check_line("install", p, forbid="\"'\\;&|`$<>()")
            if not p.strip():
                raise StepError("install: empty package name")
        if self.opts is not None:
            check_line("install opts", self.opts, forbid="\"'\\;&|`$<>")


@attrs.frozen
class CacheMount:
    """Declared files a RUN reads from the `neurocontainer-cache` build stage.

    `files` maps the guest file name under /.neurocontainer-cache/<cache_id>/
    to the declared file's name (Plan.files).
    """

    cache_id: str
    files: tuple[tuple[str, str], ...] = ()

    @property
    def target(self) -> str:
        return f"/.neurocontainer-cache/{self.cache_id}"


@attrs.frozen
class Run:
    """A shell command; `shell="bash"` is neurodocker's --run-bash."""

    command: str
    shell: Literal["sh", "bash"] = "sh"
    mounts: tuple[CacheMount, ...] = ()

    def __attrs_post_init__(self) -> None:
        check_command("run", self.command)
        if self.shell == "bash" and "'" in self.command:
            # reproenv wraps it as bash -c '…'; a quote would end the string.
            raise StepError("run-bash: command contains a single quote")


@attrs.frozen
class Env:
    values: tuple[tuple[str, str], ...] = attrs.field(converter=_env_values)

    def __attrs_post_init__(self) -> None:
        if not self.values:
            raise StepError("env: no variables")


@attrs.frozen
class Copy:
    srcs: tuple[str, ...]
    dst: str
    from_: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.srcs:
            raise StepError("copy: needs at least one source and a destination")
        for p in (*self.srcs, self.dst):
            check_line("copy", p, forbid='"\\', spaces=False)
        if self.from_ is not None:
            check_line("copy --from", self.from_, forbid='"\\', spaces=False)


@attrs.frozen
class Add:
    """Docker's ADD (neurodocker's `--add SRC DST`): a local tar archive extracted as a layer."""

    src: str
    dst: str

    def __attrs_post_init__(self) -> None:
        # Written unquoted (`ADD SRC DST`), as neurodocker does: one word each.
        for p in (self.src, self.dst):
            check_line("add", p, forbid='"\\', spaces=False)


@attrs.frozen
class Workdir:
    path: str

    def __attrs_post_init__(self) -> None:
        # Docker expands $VAR in WORKDIR; Singularity runs `mkdir -p` + `cd` in %post.
        check_line("workdir", self.path, forbid="\\;&|`<>()'", spaces=False)


@attrs.frozen
class User:
    name: str

    def __attrs_post_init__(self) -> None:
        # `${NB_USER}` is fine (Docker expands it; so does the shell in useradd).
        check_line("user", self.name, forbid="\"'\\;&|`<>()", spaces=False)


@attrs.frozen
class Entrypoint:
    """Exec form; Singularity's %runscript forwards its arguments ("$@")."""

    args: tuple[str, ...]

    def __attrs_post_init__(self) -> None:
        if not self.args:
            raise StepError("entrypoint: empty")
        for a in self.args:
            check_line("entrypoint", a, forbid="\\")
            if '"' in a and a != '"$@"':
                raise StepError(f"entrypoint: value {a[:40]!r} contains '\"'")


@attrs.frozen
class Label:
    values: tuple[tuple[str, str], ...] = attrs.field(converter=_label_values)


@attrs.frozen
class Arg:
    key: str
    value: str | None = None

    def __attrs_post_init__(self) -> None:
        if not _ENV_KEY_RE.match(self.key):
            raise StepError(f"arg: bad name {self.key!r}")
        if self.value is not None:
            check_line(f"arg {self.key}", self.value, forbid='"\\ ')


@attrs.frozen
class Deploy:
    """Neurodesk's deploy contract: DEPLOY_PATH and DEPLOY_BINS in the final environment."""

    bins: tuple[str, ...] = ()
    path: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        for v in (*self.bins, *self.path):
            check_line("deploy", v, forbid="\\", spaces=False)
            check_balanced("deploy", v)


Step = Template | Install | Run | Env | Copy | Add | Workdir | User | Entrypoint | Label | Arg | Deploy


# ---------------------------------------------------------------- plan


@attrs.frozen
class File:
    """A file a recipe declares (`files:` / `file:`): staged on the host, then
    visible to the build at /.neurocontainer-cache/… (get_file) or by COPY.

    Exactly one of url, path (absolute, on the host) or contents is set.
    """

    name: str
    guest_filename: str
    url: str | None = None
    path: str | None = None
    contents: str | None = None
    sha256: str | None = None
    executable: bool = False


@attrs.frozen
class Package:
    """What a plan installs from the registry, for `ndgen build` to test."""

    name: str
    version: str | None
    method: str
    test: str | None
    commands: tuple[str, ...]
    alert: str | None = None


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (for jsonschema, yaml.dump): steps hold read-only views."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@attrs.frozen
class Plan:
    """Everything a renderer needs; identical plans render identical text.

    * `steps`: in order, after FROM (the renderer adds nothing but the header,
      the masthead, %help and reproenv's saved spec);
    * `files`: declared files by name (staging for get_file and COPY);
    * `context_files`: (COPY source relative to the build context, declared file
      name or None) pairs: a declared file is staged from `files`, any other
      source comes from the recipe directory (`--out` copies them there);
    * `readme`: README text (a recipe's README.md), None for --pkg plans;
    * `metadata`: the recipe's top-level keys (read-only), for release tools;
    * `recipe_text`: the recipe file as read (its build context's build.yaml).
    """

    target: Target
    steps: tuple[Step, ...]
    files: tuple[File, ...] = ()
    context_files: tuple[tuple[str, str | None], ...] = ()
    readme: str | None = None
    name: str | None = None
    version: str | None = None
    arch: str | None = None
    recipe_dir: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze, eq=False, repr=False)
    packages: tuple[Package, ...] = ()
    reproduce: str | None = None  # the command line that renders this plan again
    help_text: str | None = None  # Singularity %help
    # The recipe file's text as the loader read it (contained, regular, capped):
    # `--out` writes these bytes as build.yaml, never the file again.
    recipe_text: str | None = attrs.field(default=None, eq=False, repr=False)

    def file(self, name: str) -> File:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def cache_mounts(self) -> tuple[CacheMount, ...]:
        return tuple(m for s in self.steps if isinstance(s, Run) for m in s.mounts)

    @property
    def deploy(self) -> Deploy:
        """The deploy step (the last one wins), or an empty one."""
        found = [s for s in self.steps if isinstance(s, Deploy)]
        return found[-1] if found else Deploy()
