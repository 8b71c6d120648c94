"""A stand-in for `apptainer build`: run a definition file's sections on the Docker engine.

There is no apptainer binary here, yet a `.def` recipe must be proven to
install its software. This module parses the definition file the way
Apptainer does and translates each section into what Apptainer itself does
with it, as a Docker build context:

=============== ==============================================================
``From:``       the base image (``Bootstrap: docker`` only; a local image)
``%files``      copied in before ``%post``, like Apptainer
``%post``       one script, run as ``/bin/sh -ex`` from ``/`` (Apptainer's
                exact invocation), with ``$SINGULARITY_ENVIRONMENT`` /
                ``$APPTAINER_ENVIRONMENT`` pointing at
                ``/.singularity.d/env/91-environment.sh``; ``%environment`` is
                NOT visible during ``%post`` (as in Apptainer)
``%environment`` ``/.singularity.d/env/90-environment.sh``, sourced at run time
``%runscript``  ``/.singularity.d/runscript`` (``#!/bin/sh``); the image's
                entrypoint is ``/.singularity.d/actions/run``, so
                ``docker run IMG ARGS`` behaves like ``apptainer run IMG ARGS``
``%test``       ``/.singularity.d/test``, run after the build (``--no-test``
                skips it, like ``apptainer build --notest``)
``%labels``     image labels and ``/.singularity.d/labels.json``
``%help``       ``/.singularity.d/runscript.help``
=============== ==============================================================

``/.singularity.d/actions/{exec,run,test}`` source every
``/.singularity.d/env/*.sh`` first, as Apptainer's actions do, so
``docker run --entrypoint /.singularity.d/actions/exec IMG CMD`` is the
equivalent of ``apptainer exec IMG CMD``.

Why not spython's parser: it strips indentation and blank lines from
scripts, treats any ``%post`` line containing ``bootstrap`` or ``from:`` as a
header, lower-cases ``From:`` and drops ``%environment`` lines without ``=``.
A stand-in that claims to be faithful cannot afford that; Apptainer's own
grammar (header ``Key: value`` lines, then ``%section`` blocks kept verbatim)
is small.  Sections that run on the build host (``%setup``, ``%pre``),
multi-stage files and SCIF apps are refused with a clear error.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import attrs

from neurodocker_nd.core import paths
from neurodocker_nd.core.engine import BuildContext, ContextFile, slug
from neurodocker_nd.errors import NdgenError

# Apptainer's section names (pkg/build/types/parser/deffile.go: validSections).
SECTIONS = frozenset(
    {"help", "setup", "files", "labels", "environment", "pre", "post", "runscript", "test", "startscript"}
)
APP_SECTIONS = frozenset({"appinstall", "apphelp", "apprun", "applabels", "appenv", "appfiles", "apptest", "appstart"})
HOST_SECTIONS = frozenset({"setup", "pre"})  # run as root on the build host: never by ndgen
_SECTION_LINE = re.compile(r"^\s*%([A-Za-z]+)\b(.*)$")
_HEADER_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*:\s*(.*?)\s*$")

SD = PurePosixPath("/.singularity.d")
ENV_FILE_POST = SD / "env" / "91-environment.sh"  # $SINGULARITY_ENVIRONMENT during %post
RUN_ENTRYPOINT = str(SD / "actions" / "run")
EXEC_ENTRYPOINT = str(SD / "actions" / "exec")
TEST_ENTRYPOINT = str(SD / "actions" / "test")
_CTX = "ndgen-sif"  # context directory holding what the Dockerfile copies

# Every action first sources the environment scripts, in name order, as Apptainer does.
_ACTION_PRELUDE = """#!/bin/sh
# ndgen's stand-in for Apptainer's `{action}` action: source the environment, then act.
for __ndgen_env in /.singularity.d/env/*.sh; do
    if [ -f "$__ndgen_env" ]; then . "$__ndgen_env"; fi
done
unset __ndgen_env
"""
_ACTIONS = {
    "exec": 'exec "$@"\n',
    "run": (
        'if [ -x /.singularity.d/runscript ]; then exec /.singularity.d/runscript "$@"; fi\n'
        'echo "No runscript found in container, executing /bin/sh" >&2\nexec /bin/sh "$@"\n'
    ),
    "test": (
        'if [ -x /.singularity.d/test ]; then exec /.singularity.d/test "$@"; fi\n'
        'echo "No test script found in container, exiting" >&2\nexit 0\n'
    ),
}


@attrs.frozen
class Section:
    name: str
    args: str  # text after the section name (e.g. `%post -c /bin/bash`)
    body: str  # verbatim lines, indentation kept
    line: int  # 1-based line of the `%name` header


@attrs.frozen
class Definition:
    """A parsed definition file: header keys and sections in file order."""

    header: tuple[tuple[str, str], ...]
    sections: tuple[Section, ...]
    text: str  # the file as given (stored in the image as /.singularity.d/Singularity)

    def get(self, key: str) -> str | None:
        """A header value by case-insensitive key (`Bootstrap`, `From`, …)."""
        for k, v in self.header:
            if k.lower() == key.lower():
                return v
        return None

    def body(self, name: str) -> str:
        """The text of section `name`; repeated sections are concatenated in order."""
        return "\n".join(s.body for s in self.sections if s.name == name)

    def has(self, name: str) -> bool:
        return any(s.name == name and s.body.strip() for s in self.sections)


# --------------------------------------------------------------------------- parse


def _lines(text: str) -> list[str]:
    """Lines as Apptainer's parser sees them (bufio.ScanLines): split on \\n only, one
    trailing \\r dropped.  Never str.splitlines: it also ends a line at U+2028,
    U+0085, \\v, \\f… so a value holding one would open a section Apptainer never sees."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def parse_definition(text: str, source: str = "definition") -> Definition:
    """Parse Apptainer's definition-file grammar; NdgenError names file and line."""
    header: list[tuple[str, str]] = []
    sections: list[Section] = []
    current: tuple[str, str, int] | None = None
    body: list[str] = []

    def close() -> None:
        if current is not None:
            sections.append(Section(current[0], current[1], "\n".join(body).strip("\n"), current[2]))

    for lineno, raw in enumerate(_lines(text), start=1):
        match = _SECTION_LINE.match(raw)
        if match and (match.group(1).lower() in SECTIONS | APP_SECTIONS or current is None):
            name = match.group(1).lower()
            if name not in SECTIONS | APP_SECTIONS:
                raise NdgenError(f"{source}:{lineno}: unknown section %{match.group(1)}")
            close()
            current, body = (name, match.group(2).split("#", 1)[0].strip(), lineno), []
            continue
        if current is not None:
            body.append(raw)
            continue
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        head = _HEADER_LINE.match(raw)
        if head is None:
            raise NdgenError(f"{source}:{lineno}: expected `Key: value` in the header, got {stripped[:60]!r}")
        header.append((head.group(1), head.group(2).split("#", 1)[0].strip()))
    close()
    return Definition(tuple(header), tuple(sections), text)


# --------------------------------------------------------------------------- translate


@attrs.frozen
class StandIn:
    """What `ndgen build` needs to run a definition file on the Docker engine."""

    context: BuildContext
    base_image: str
    labels: Mapping[str, str]
    has_test: bool  # a %test section exists: run /.singularity.d/test after the build


def translate(definition: Definition, source: str = "definition", files_root: Path | None = None) -> StandIn:
    """Turn a parsed definition into a Docker build context that does what Apptainer does."""
    base = _check_supported(definition, source)
    files: list[ContextFile] = []
    lines = [f"FROM {base}"]
    for index, (src, dst) in enumerate(_file_pairs(definition, source, files_root or Path.cwd())):
        arc = f"{_CTX}/files/{index}"
        files.append(ContextFile(arc, None, source=src))
        lines.append("COPY " + json.dumps([arc, dst]))
    post = definition.body("post")
    if post.strip():
        post_args = next(s.args for s in definition.sections if s.name == "post")
        if post_args:
            raise NdgenError(f"{source}: %post {post_args}: section arguments are not supported by the stand-in")
        files.append(ContextFile(f"{_CTX}/post.sh", post + "\n", mode=0o755))
        lines.append(f"COPY {_CTX}/post.sh /.post.script")
        lines.append("RUN " + json.dumps(_post_argv()))
    files += _metadata_files(definition)
    lines.append(f"COPY {_CTX}/singularity.d/ {SD}/")
    lines.append("ENTRYPOINT " + json.dumps([RUN_ENTRYPOINT]))
    lines.append("CMD []")
    return StandIn(
        context=BuildContext(dockerfile="\n".join(lines) + "\n", files=tuple(files)),
        base_image=base,
        labels=parse_labels(definition.body("labels")),
        has_test=definition.has("test"),
    )


def _check_supported(definition: Definition, source: str) -> str:
    bootstraps = [v for k, v in definition.header if k.lower() == "bootstrap"]
    if len(bootstraps) != 1:
        raise NdgenError(
            f"{source}: {'no Bootstrap: line' if not bootstraps else 'multi-stage definitions'} "
            "(the Docker stand-in builds single-stage `Bootstrap: docker` files)"
        )
    if bootstraps[0].lower() not in {"docker", "docker-daemon"}:
        raise NdgenError(f"{source}: Bootstrap: {bootstraps[0]} is not supported by the Docker stand-in (use docker)")
    base = definition.get("From")
    if not base:
        raise NdgenError(f"{source}: no From: line")
    for section in definition.sections:
        if section.name in HOST_SECTIONS and section.body.strip():
            raise NdgenError(
                f"{source}:{section.line}: %{section.name} runs on the build host; the stand-in refuses it"
            )
        if section.name in APP_SECTIONS:
            raise NdgenError(f"{source}:{section.line}: %{section.name} (SCIF apps) is not supported by the stand-in")
        if section.name == "files" and section.args:
            raise NdgenError(f"{source}:{section.line}: %files {section.args} (copy from a stage) is not supported")
    return base


def _file_pairs(definition: Definition, source: str, root: Path) -> list[tuple[Path, str]]:
    """`%files` lines: `SRC [DST]` (DST defaults to SRC), paths inside the build directory.

    Unlike Apptainer, which reads any host path, the stand-in builds a context:
    a source that resolves (symlinks included) outside it is refused, so a
    definition can never ship a host file such as /etc/shadow into the image.
    """
    pairs = []
    base = root.resolve()
    for line in _lines(definition.body("files")):
        words = shlex.split(line.split("#", 1)[0]) if line.strip() else []
        if not words:
            continue
        if len(words) > 2:
            raise NdgenError(f"{source}: %files line {line.strip()!r}: expected SRC [DST]")
        src = paths.resolve_inside(base, words[0])
        if src is None:
            raise NdgenError(f"{source}: %files source {words[0]} is outside the build context {base}")
        if not src.exists():
            raise NdgenError(f"{source}: %files source {words[0]} does not exist (relative to {root})")
        dst = words[-1] if len(words) == 2 else words[0]
        pairs.append((src, dst if dst.startswith("/") else "/" + dst))
    return pairs


def _post_argv() -> list[str]:
    # Apptainer: `apptainer exec --pwd / … /bin/sh -ex /.post.script` with
    # SINGULARITY_ENVIRONMENT set; the script is deleted afterwards.
    script = (
        f"mkdir -p {ENV_FILE_POST.parent} && cd / && /bin/sh -ex /.post.script; rc=$?; rm -f /.post.script; exit $rc"
    )
    return [
        "/usr/bin/env",
        f"SINGULARITY_ENVIRONMENT={ENV_FILE_POST}",
        f"APPTAINER_ENVIRONMENT={ENV_FILE_POST}",
        "/bin/sh",
        "-c",
        script,
    ]


def _metadata_files(definition: Definition) -> list[ContextFile]:
    """`/.singularity.d` as Apptainer lays it out after `%post`."""
    root = f"{_CTX}/singularity.d"
    out = [ContextFile(f"{root}/Singularity", definition.text)]
    out.append(ContextFile(f"{root}/labels.json", json.dumps(parse_labels(definition.body("labels")), indent=2) + "\n"))
    if definition.has("environment"):
        env = "#!/bin/sh\n# Custom environment shell code should follow\n\n" + definition.body("environment") + "\n"
        out.append(ContextFile(f"{root}/env/90-environment.sh", env, mode=0o755))
    for section, name in (("runscript", "runscript"), ("test", "test"), ("startscript", "startscript")):
        if definition.has(section):
            out.append(ContextFile(f"{root}/{name}", "#!/bin/sh\n\n" + definition.body(section) + "\n", mode=0o755))
    if definition.has("help"):
        out.append(ContextFile(f"{root}/runscript.help", definition.body("help") + "\n", mode=0o644))
    for action, tail in _ACTIONS.items():
        out.append(ContextFile(f"{root}/actions/{action}", _ACTION_PRELUDE.format(action=action) + tail, mode=0o755))
    return out


def parse_labels(body: str) -> dict[str, str]:
    """`%labels`: one `KEY VALUE…` per line (Apptainer splits at the first whitespace)."""
    labels: dict[str, str] = {}
    for line in _lines(body):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, _, value = stripped.partition(" ")
        labels[key] = value.strip()
    return labels


def apptainer_command(tag: str, def_path: Path) -> str:
    """The equivalent real build, for sites that have Apptainer."""
    sif = slug(tag) + ".sif"
    return f"apptainer build {shlex.quote(sif)} {shlex.quote(str(def_path))}"
