"""One bash wrapper per command: run it in the container from the caller's directory.

Apptainer/Singularity (transparent-singularity's wrapper, neurodesk/neurocommand commit
8796bb4, run_transparent_singularity.sh): `exec --cleanenv` keeps the host's
environment out of the container, `--pwd "$PWD"` starts the command where the
caller is, and `--bind "$PWD"` makes sure that directory exists inside (their
deploy script exported the bind path instead). `PWD` is first made physical
(`pwd -P`), as theirs does, so a symlinked directory binds as its target.

Docker/Podman (shpc's docker.sh wrapper template, singularity-hpc 0.1.32, for
the flags): `run --rm -i` as the caller's uid:gid, `$PWD` bound at the same path
and the working directory; `--entrypoint ''` so the command runs as `apptainer
exec` would run it, not as arguments of an image ENTRYPOINT. No `--network`:
that is left to the engine's and the user's configuration.

Every word an image or a user supplied is quoted with `shlex.quote`; command
names were already checked to be bare words (deliver.commands.check_name).
"""

from __future__ import annotations

import shlex

TECHS = ("apptainer", "singularity", "docker", "podman")
SIF_TECHS = frozenset({"apptainer", "singularity"})


def argv(tech: str, container: str, command: str) -> list[str]:
    """The command line the wrapper runs, before the caller's arguments (`"$@"`), unexpanded.

    `$PWD` and `$(id -u):$(id -g)` are left for the shell (double-quoted in the wrapper).
    """
    if tech in SIF_TECHS:
        return [tech, "--silent", "exec", "--cleanenv", "--bind", "$PWD", "--pwd", "$PWD", container, command]
    return [
        tech, "run", "--rm", "-i", "--user", "$(id -u):$(id -g)", "-v", "$PWD:$PWD", "-w", "$PWD",
        "--entrypoint", "", container, command,
    ]  # fmt: skip


def _word(word: str) -> str:
    # The shell's own expansions stay live (double quotes); everything else is literal.
    if word in ("$PWD", "$PWD:$PWD", "$(id -u):$(id -g)"):
        return f'"{word}"'
    return shlex.quote(word)


def wrapper(tech: str, container: str, command: str) -> str:
    """The wrapper script's text for `command` in `container` (a SIF path, or an image reference)."""
    line = " ".join(_word(w) for w in argv(tech, container, command))
    return (
        "#!/usr/bin/env bash\n"
        f"# ndgen modules: {command} through {tech}\n"
        'PWD="$(pwd -P)"\n'
        "export PWD\n"
        f'exec {line} "$@"\n'
    )
