"""The `/.singularity.d` tree that `apptainer build X.sif docker-daemon://IMAGE` adds to an image.

Formats reproduced from apptainer/apptainer at 917d66577963ca297352a22e13c86f1748ddc645:
- internal/pkg/build/sources/conveyorPacker_oci.go: `insertEnv` (env/10-docker2singularity.sh:
  one export per ENV entry, PATH overriding, every other variable a default the caller's
  environment may override), `insertRunScript` (runscript: OCI_ENTRYPOINT/OCI_CMD and the
  combination rule of ENTRYPOINT, CMD and arguments), `insertOCILabels` (labels.json);
- internal/pkg/util/shell/escape.go: the quoting those files use;
- internal/pkg/build/sources/base_environment.go: the base files (actions/, env/01-base.sh,
  90-environment.sh, 99-base.sh, libs/, startscript), the root symlinks /singularity, /environment,
  /.run, /.exec, /.shell, /.test (makeSymlinks), the mount points the runtime binds onto (makeDirs:
  /dev, /proc, /sys, /tmp, /var/tmp, /root, /home, /etc) and the empty /etc/hosts and
  /etc/resolv.conf it binds the host's over (makeFiles), each only where the image has no such name.
The base scripts here are ndgen's own, shorter ones with the same behaviour for an OCI image (no
SCIF apps): source env/*.sh in order, then exec.  The deffile is what apptainer records for a
`docker-daemon://` build ("bootstrap: docker-daemon", "from: IMAGE"), as neurodesk/neurocontainers'
builder/docker-save-to-simg.go (fb49b050eaa69874f501816f26ebaf4fcbd42fed) does for its archives.
"""

from __future__ import annotations

import json
import re

import attrs

from neurodocker_nd.minify.model import ImageConfig

# conveyorPacker_oci.go's variableRegex: other names cannot be exported by sh and are skipped.
_VARIABLE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

_SOURCE_ENV = (
    'for script in /.singularity.d/env/*.sh; do\n    if [ -f "$script" ]; then\n        . "$script"\n    fi\ndone\n'
)

# actions/: what `apptainer exec|run|shell|test` start in the container.
_ACTIONS = {
    "exec": f'#!/bin/sh\n{_SOURCE_ENV}\nexec "$@"\n',
    "run": f"#!/bin/sh\n{_SOURCE_ENV}\nif [ -x /.singularity.d/runscript ]; then\n"
    '    exec /.singularity.d/runscript "$@"\nfi\nexec /bin/sh "$@"\n',
    "shell": f"#!/bin/sh\n{_SOURCE_ENV}\nif [ -x /bin/bash ]; then\n"
    '    SHELL=/bin/bash\n    export SHELL\n    exec /bin/bash --norc "$@"\nfi\n'
    'SHELL=/bin/sh\nexport SHELL\nexec /bin/sh "$@"\n',
    "test": f"#!/bin/sh\n{_SOURCE_ENV}\nif [ -x /.singularity.d/test ]; then\n"
    '    exec /.singularity.d/test "$@"\nfi\nexec /bin/sh -c true\n',
    # `apptainer instance start`: PID 1 waits for SIGCONT before it goes on (start.sh).
    "start": f"#!/bin/sh\nkill -CONT 1\n\n{_SOURCE_ENV}\nif test -x /.singularity.d/startscript; then\n"
    "    exec /.singularity.d/startscript\nfi\n",
}

_ENV_BASE = {
    "01-base.sh": "#!/bin/sh\n",
    "90-environment.sh": "#!/bin/sh\n# Custom environment shell code should follow\n",
    # Libraries an administrator binds into the container (apptainer.conf's `bind path`) live here.
    "99-base.sh": '#!/bin/sh\nif [ -z "${LD_LIBRARY_PATH:-}" ]; then\n    LD_LIBRARY_PATH=/.singularity.d/libs\n'
    'else\n    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"\nfi\nexport LD_LIBRARY_PATH\n',
}

# makeDirs' mount points (parents first: "var" for "var/tmp") and makeFiles' empty files the
# runtime binds the host's /etc/hosts and /etc/resolv.conf over; only where the image has no such
# name (a FROM-scratch or minified image lacks most of them).
ROOT_DIRECTORIES = ("dev", "proc", "root", "var", "var/tmp", "tmp", "etc", "sys", "home")
ROOT_FILES = ("etc/hosts", "etc/resolv.conf")

# The root symlinks apptainer's makeSymlinks adds (name -> target), when the image has no such name.
ROOT_SYMLINKS = {
    "singularity": ".singularity.d/runscript",
    ".run": ".singularity.d/actions/run",
    ".exec": ".singularity.d/actions/exec",
    ".shell": ".singularity.d/actions/shell",
    ".test": ".singularity.d/actions/test",
    "environment": ".singularity.d/env/90-environment.sh",
}

# conveyorPacker_oci.go's ociRunscript template with its two placeholders filled in below.
_RUNSCRIPT_BODY = """
# SINGULARITY_NO_EVAL: OCI semantics, no shell evaluation of CMD/ENTRYPOINT/arguments.
if [ -n "$SINGULARITY_NO_EVAL" ]; then
    if [ -z "$OCI_CMD" ] && [ -n "$OCI_ENTRYPOINT" ]; then
        {entrypoint}
        exec "$@"
    fi
    if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then
        if [ $# -eq 0 ]; then
            {cmd}
        fi
        exec "$@"
    fi
    if [ $# -gt 0 ]; then
        {entrypoint}
    else
        {cmd}
        {entrypoint}
    fi
    exec "$@"
fi

# Apptainer's default: the combination is evaluated by the shell, arguments quoted.
CMDLINE_ARGS=""
for arg in "$@"; do
        CMDLINE_ARGS="${{CMDLINE_ARGS}} \\"$arg\\""
done

if [ -z "$OCI_CMD" ] && [ -n "$OCI_ENTRYPOINT" ]; then
    if [ $# -gt 0 ]; then
        SINGULARITY_OCI_RUN="${{OCI_ENTRYPOINT}} ${{CMDLINE_ARGS}}"
    else
        SINGULARITY_OCI_RUN="${{OCI_ENTRYPOINT}}"
    fi
fi

if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then
    if [ $# -gt 0 ]; then
        SINGULARITY_OCI_RUN="${{CMDLINE_ARGS}}"
    else
        SINGULARITY_OCI_RUN="${{OCI_CMD}}"
    fi
fi

if [ $# -gt 0 ]; then
    SINGULARITY_OCI_RUN="${{OCI_ENTRYPOINT}} ${{CMDLINE_ARGS}}"
else
    SINGULARITY_OCI_RUN="${{OCI_ENTRYPOINT}} ${{OCI_CMD}}"
fi

eval "set ${{SINGULARITY_OCI_RUN}}"
exec "$@"
"""


@attrs.frozen
class MetaFile:
    """One file of the tree: its path below the root, mode and content."""

    path: str
    mode: int
    content: bytes


@attrs.frozen
class SingularityD:
    """What ndgen adds to the image's root filesystem, and the SIF's deffile and labels objects."""

    directories: tuple[str, ...]
    files: tuple[MetaFile, ...]
    deffile: bytes
    labels: bytes


def escape(value: str) -> str:
    """apptainer's shell.Escape: safe inside double quotes."""
    for char, quoted in (("\\", "\\\\"), ('"', '\\"'), ("`", "\\`"), ("$", "\\$")):
        value = value.replace(char, quoted)
    return value


def _single_quoted_body(value: str) -> str:
    """apptainer's shell.EscapeSingleQuotes: safe inside single quotes."""
    return value.replace("'", "'\"'\"'")


def _args_quoted(args: tuple[str, ...]) -> str:
    return " ".join(f'"{escape(arg)}"' for arg in args)


def env_script(env: tuple[str, ...]) -> str:
    lines = ["#!/bin/sh"]
    for item in env:
        name, sep, value = item.partition("=")
        if not _VARIABLE.fullmatch(name):
            continue  # as apptainer does: sh could not export it
        if not sep:
            lines.append(f'export {name}="${{{name}:-}}"')
        elif name == "PATH":
            lines.append(f'export PATH="{escape(value)}"')
        else:
            lines.append(f'export {name}="${{{name}:-"{escape(value)}"}}"')
    return "\n".join(lines) + "\n"


def runscript(entrypoint: tuple[str, ...] | None, cmd: tuple[str, ...] | None) -> str:
    entrypoint, cmd = entrypoint or (), cmd or ()

    def prepend(args: tuple[str, ...]) -> str:
        # `set -- 'a' "$@"` for each word, last first: the words end up in order before "$@".
        return "\n".join(f"set -- '{_single_quoted_body(a)}' \"$@\"" for a in reversed(args)) or ":"

    head = (
        "#!/bin/sh\n"
        f"OCI_ENTRYPOINT='{_single_quoted_body(_args_quoted(entrypoint))}'\n"
        f"OCI_CMD='{_single_quoted_body(_args_quoted(cmd))}'\n"
    )
    return head + _RUNSCRIPT_BODY.format(entrypoint=prepend(entrypoint), cmd=prepend(cmd))


def labels_json(config: ImageConfig, arch: str) -> bytes:
    """The image's labels plus the label-schema ones apptainer's build adds (no build date: that
    would make two runs differ)."""
    labels = {
        "org.label-schema.schema-version": "1.0",
        "org.label-schema.build-arch": arch,
        "org.label-schema.usage.singularity.deffile.bootstrap": "docker-daemon",
        "org.label-schema.usage.singularity.deffile.from": config.name,
    }
    labels.update(dict(config.labels))  # the image's own win, as in apptainer's getExistingLabels
    # Go's json.MarshalIndent(labels, "", "\t") sorts map keys.
    return json.dumps(dict(sorted(labels.items())), indent="\t", ensure_ascii=False).encode()


def deffile(config: ImageConfig) -> bytes:
    return f"bootstrap: docker-daemon\nfrom: {config.name}\n".encode()


def build(config: ImageConfig, arch: str) -> SingularityD:
    definition, labels = deffile(config), labels_json(config, arch)
    files = [
        MetaFile(f".singularity.d/actions/{name}", 0o755, text.encode()) for name, text in sorted(_ACTIONS.items())
    ]
    env = {**_ENV_BASE, "10-docker2singularity.sh": env_script(config.env)}
    files += [MetaFile(f".singularity.d/env/{name}", 0o755, text.encode()) for name, text in sorted(env.items())]
    files += [
        MetaFile(".singularity.d/runscript", 0o755, runscript(config.entrypoint, config.cmd).encode()),
        MetaFile(".singularity.d/startscript", 0o755, b"#!/bin/sh\n"),
        MetaFile(".singularity.d/Singularity", 0o644, definition),
        MetaFile(".singularity.d/labels.json", 0o644, labels),
    ]
    directories = (".singularity.d", ".singularity.d/actions", ".singularity.d/env", ".singularity.d/libs")
    return SingularityD(directories=directories, files=tuple(files), deffile=definition, labels=labels)
