"""An image's deploy contract: the commands it exposes, its DEPLOY_ENV_* variables and its /README.md.

Semantics of transparent-singularity (neurodesk/neurocommand, commit 8796bb4,
neurodesk/transparent-singularity/ts_binaryFinder.sh and run_transparent_singularity.sh):
the commands are the executables directly in each `DEPLOY_PATH` directory plus
each `DEPLOY_BINS` name (both `:`-separated), minus a list of system commands
that would shadow the host's; every `DEPLOY_ENV_<NAME>=VALUE` becomes a
variable `NAME` of the module, `BASEPATH` in VALUE standing for the container.

The variables come from the image's configuration (its ENV), read through the
engine. The listing runs inside the image, with the image's own `sh`, in a
throw-away container (`engine.run_once`: network none, a timeout, bounded
output). What it prints is the image's word, so every name is checked: a bare
file name without shell metacharacters, at most `MAX_NAME` characters and
`MAX_COMMANDS` of them. Differences from transparent-singularity: hidden files
(a leading `.`) are not commands, and a DEPLOY_PATH directory that is missing
in the image is an error rather than an empty listing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from neurodocker_nd.core import engine
from neurodocker_nd.errors import NdgenError, clip

# Commands never wrapped, whatever the image lists: a wrapper named `ls` or `env` on the host's
# PATH would send every use of it into the container. transparent-singularity excludes these
# (the generic head of its ts_binaryFinderExcludes.txt; the rest of that file is one conda
# environment's tools); `sh` is added here because a wrapper named `sh` breaks every script.
SYSTEM_COMMANDS = frozenset(
    "bash cat chmod conda cp cut date echo env find grep head ln ls mkdir mv pwd rm sed sh sort tail "
    "touch tr uname uniq wc".split()
)

MAX_COMMANDS = 5000
MAX_NAME = 255
README_BYTES = 256 * 1024  # Lmod help text: more is not a README
LIST_TIMEOUT_S = 120.0
_LIST_BYTES = MAX_COMMANDS * (MAX_NAME + 1) + README_BYTES + 64
# A command name is used bare in shell wrappers, Lua, Tcl and YAML: letters, digits and `._+-`,
# not starting with `.` or `-` (a hidden file, an option).
_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_PREFIX = "DEPLOY_ENV_"
# Variables a module must not take from an image: `module load` sets them in the user's own shell
# on the host, where these steer what runs (the loader, the shell, Lmod itself). The container
# never sees them (the wrappers clean or do not pass the environment), so no real use is lost.
HOST_STEERING = frozenset(
    "PATH HOME SHELL USER IFS ENV BASH_ENV PROMPT_COMMAND PS1 PS4 SHELLOPTS BASHOPTS CDPATH "
    "GLOBIGNORE MODULEPATH MODULESHOME PYTHONPATH PYTHONSTARTUP PERL5LIB PERL5OPT".split()
)
HOST_STEERING_PREFIXES = ("LD_", "LMOD", "BASH_FUNC_", "_ModuleTable", "__LMOD", "DYLD_")

# Run inside the image as `sh -c LIST sh DIR…`: each regular executable (a link to one counts,
# as find -executable follows it) directly in each DIR, NUL-terminated; then an empty record;
# then /README.md if it is a file. A name cannot be empty, so the first empty record is the seam.
LIST = r"""
for dir in "$@"; do
    if [ ! -d "$dir" ]; then printf 'ndgen: DEPLOY_PATH directory %s does not exist\n' "$dir" >&2; exit 3; fi
    for file in "$dir"/*; do
        [ -f "$file" ] && [ -x "$file" ] && printf '%s\0' "${file##*/}"
    done
done
printf '\0'
if [ -f /README.md ]; then cat /README.md; fi
exit 0
"""


class DeployError(NdgenError):
    """The image's deploy contract cannot make modules (missing, or a name ndgen will not write)."""


@attrs.frozen
class Deploy:
    """What modules are made of, read from one image."""

    image: str  # the reference as given
    image_id: str  # sha256:…
    repo_digests: tuple[str, ...]  # repo@sha256:… when the image came from a registry
    commands: tuple[str, ...]  # sorted, unique, system commands removed
    env: tuple[tuple[str, str], ...]  # (NAME, VALUE) from DEPLOY_ENV_NAME=VALUE, BASEPATH unreplaced
    readme: str  # /README.md, "" when the image has none
    labels: Mapping[str, str] = attrs.field(factory=dict)


def check_name(name: str, where: str) -> str:
    """`name` if it is safe as a bare command word; DeployError naming it otherwise."""
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise DeployError(
            f"{where}: command name {clip(repr(name))} is not a bare name of letters, digits and ._+- "
            f"(no '/', no shell metacharacters, at most {MAX_NAME} characters)"
        )
    return name


def image_env(config_env: Sequence[str] | None) -> dict[str, str]:
    """An image's `Config.Env` list as a mapping (the last definition wins, as in the engine)."""
    env: dict[str, str] = {}
    for item in config_env or ():
        name, _, value = item.partition("=")
        env[name] = value
    return env


def deploy_env(env: Mapping[str, str], image: str) -> tuple[tuple[str, str], ...]:
    """The DEPLOY_ENV_* variables as (NAME, VALUE), sorted; a name unfit for setenv is an error."""
    found = []
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX) :]
            if not _ENV_NAME.fullmatch(name) or len(name) > MAX_NAME:
                raise DeployError(f"image {image}: {clip(key)} does not name a variable")
            if name in HOST_STEERING or name.startswith(HOST_STEERING_PREFIXES):
                raise DeployError(f"image {image}: {key} would set {name} in the user's shell on the host")
            found.append((name, value))
    return tuple(sorted(found))


def _split(value: str) -> list[str]:
    return [part for part in value.split(":") if part]


def read_deploy(client: Any, ref: str) -> Deploy:
    """The deploy contract of local image `ref` (never pulled)."""
    image = engine.local_image(client, ref)
    config = image.attrs.get("Config") or {}
    env = image_env(config.get("Env"))
    bins, dirs = _split(env.get("DEPLOY_BINS", "")), _split(env.get("DEPLOY_PATH", ""))
    if not bins and not dirs:
        raise DeployError(f"image {ref} sets neither DEPLOY_BINS nor DEPLOY_PATH: it exposes no commands")
    for d in dirs:
        if not d.startswith("/"):
            raise DeployError(f"image {ref}: DEPLOY_PATH entry {clip(repr(d))} is not an absolute directory")
    listed, readme = _list_in_image(client, ref, dirs)
    names = [check_name(b, f"image {ref}: DEPLOY_BINS") for b in bins]
    names += [check_name(n, f"image {ref}: DEPLOY_PATH") for n in listed]
    commands = tuple(sorted(set(names) - SYSTEM_COMMANDS))
    if not commands:
        raise DeployError(f"image {ref}: DEPLOY_BINS/DEPLOY_PATH hold only system commands; nothing to wrap")
    if len(commands) > MAX_COMMANDS:
        raise DeployError(f"image {ref}: {len(commands)} commands, more than {MAX_COMMANDS}")
    return Deploy(
        image=ref,
        image_id=image.id,
        repo_digests=tuple(image.attrs.get("RepoDigests") or ()),
        commands=commands,
        env=deploy_env(env, ref),
        readme=readme,
        labels=dict(config.get("Labels") or {}),
    )


def _list_in_image(client: Any, ref: str, dirs: Sequence[str]) -> tuple[list[str], str]:
    """The executables' names in `dirs` and /README.md, from inside the image."""
    run = engine.run_once(
        client,
        ref,
        ["-c", LIST, "sh", *dirs],
        entrypoint=["/bin/sh"],
        timeout=LIST_TIMEOUT_S,
        keep_bytes=_LIST_BYTES + 1,
        tail_bytes=4096,
    )
    if run.exit_code is None:
        raise DeployError(f"image {ref}: listing DEPLOY_PATH took longer than {LIST_TIMEOUT_S:.0f} s")
    if run.exit_code != 0:
        why = run.stderr.strip().splitlines()[-1:] or [f"exit {run.exit_code}"]
        raise DeployError(f"image {ref}: listing DEPLOY_PATH failed: {clip(why[0])}")
    if run.stdout_bytes > _LIST_BYTES:
        raise DeployError(f"image {ref}: the DEPLOY_PATH listing and /README.md exceed {_LIST_BYTES} bytes")
    out = run.stdout_head
    if out.startswith(b"\0"):  # no executables: the seam is the very first byte
        names_part, readme = b"", out[1:]
    else:
        names_part, seam, readme = out.partition(b"\0\0")
        if not seam:
            raise DeployError(f"image {ref}: the DEPLOY_PATH listing is malformed")
    if len(readme) > README_BYTES:
        raise DeployError(f"image {ref}: /README.md is larger than {README_BYTES} bytes")
    names = [n.decode(errors="replace") for n in names_part.split(b"\0") if n]
    return names, readme.decode(errors="replace")
