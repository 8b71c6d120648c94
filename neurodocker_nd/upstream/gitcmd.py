"""git through subprocess: deterministic identity/clock, token kept off disk and argv.

Every call runs with the user's and the system's git configuration ignored, so
that `format-patch` output (abbreviations, prefixes, signatures) and commit
hashes depend only on the content. The token, when one is needed for a push,
travels as an environment-only config entry (``GIT_CONFIG_COUNT``/
``GIT_CONFIG_KEY_0``/``GIT_CONFIG_VALUE_0``, git >= 2.31): never in a remote URL,
never in ``.git/config``, never on the command line where ``ps`` shows it.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import attrs

from neurodocker_nd.errors import NdgenError

# Git ignores a global config file that does not exist: that is how the user's
# ~/.gitconfig is kept out (not /dev/null, which a broken host may turn into a file).
NO_GLOBAL_CONFIG = "/nonexistent/ndgen/gitconfig"
# A fixed clock makes commits (and so format-patch output) reproducible.
FIXED_DATE = "2024-01-01T00:00:00+0000"
AUTHOR_ENV = "NDGEN_UPSTREAM_AUTHOR"


@attrs.frozen
class Identity:
    """Who commits: configured by the user, never a default some GitHub account owns."""

    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


# Commits that never leave this machine (the seeded installed tree, proof clones).
# `.invalid` is reserved (RFC 2606): no GitHub account can own it.
SCRATCH = Identity("ndgen scratch", "scratch@ndgen.invalid")
_IDENT = re.compile(r"^\s*([^<>]*[^<>\s])\s*<([^<>\s]+@[^<>\s]+)>\s*$")


def parse_identity(text: str, what: str = "--author") -> Identity:
    m = _IDENT.match(text)
    if not m:
        raise NdgenError(f"{what} {text!r}: expected 'Name <email>'")
    return Identity(m.group(1), m.group(2))


def resolve_identity(explicit: str | None) -> Identity:
    """--author, else $NDGEN_UPSTREAM_AUTHOR, else the user's git config user.name/user.email."""
    if explicit:
        return parse_identity(explicit)
    if os.environ.get(AUTHOR_ENV):
        return parse_identity(os.environ[AUTHOR_ENV], f"${AUTHOR_ENV}")
    got = []
    for key in ("user.name", "user.email"):
        # The user's own configuration (not base_env, which hides it on purpose).
        proc = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True)
        got.append(proc.stdout.strip() if proc.returncode == 0 else "")
    if all(got):
        return Identity(*got)
    raise NdgenError(
        "no commit identity: pass --author 'Name <email>', set $NDGEN_UPSTREAM_AUTHOR,"
        " or set git config user.name and user.email"
    )


def redact(text: str, secret: str | None) -> str:
    """Remove `secret` (and its Basic-auth encoding) from `text`."""
    if not secret:
        return text
    for needle in (secret, _basic(secret)):
        text = text.replace(needle, "***")
    return text


def _basic(token: str) -> str:
    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


def base_env(token: str | None = None, identity: Identity = SCRATCH) -> dict[str, str]:
    """Environment for a git call: no user/system config, given identity, fixed dates."""
    env = {
        k: v
        for k, v in os.environ.items()
        # Inherited GIT_* (GIT_DIR, GIT_CONFIG_*, …) would change what git does.
        if not k.startswith("GIT_")
    }
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=NO_GLOBAL_CONFIG,
        GIT_AUTHOR_NAME=identity.name,
        GIT_AUTHOR_EMAIL=identity.email,
        GIT_COMMITTER_NAME=identity.name,
        GIT_COMMITTER_EMAIL=identity.email,
        GIT_AUTHOR_DATE=FIXED_DATE,
        GIT_COMMITTER_DATE=FIXED_DATE,
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        TZ="UTC",
    )
    if token:
        # GitHub accepts the token as Basic auth with any user name over HTTPS.
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {_basic(token)}",
        )
    return env


def git(
    *args: str,
    cwd: Path | None = None,
    token: str | None = None,
    input_bytes: bytes | None = None,
    what: str = "",
    identity: Identity = SCRATCH,
) -> str:
    """Run `git ARGS` and return stdout; raise NdgenError with git's own last line."""
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=base_env(token, identity),
            input=input_bytes,
            capture_output=True,
            timeout=600,
        )
    except FileNotFoundError as exc:
        raise NdgenError("git is not installed (needed for upstream patches)") from exc
    except subprocess.TimeoutExpired as exc:
        raise NdgenError(f"git {args[0]} timed out after 600 s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        # The line naming the cause: a push's "! [rejected] … (stale info)" rather than
        # its generic "error: failed to push some refs", and never a "hint:".
        useful = [
            line.strip()
            for line in err
            if line.strip() and not line.startswith("hint:") and "failed to push some refs" not in line
        ]
        last = (useful or [line for line in err if line.strip()] or ["no message"])[-1]
        label = what or f"git {args[0]}"
        raise NdgenError(redact(f"{label} failed: {last}", token))
    return proc.stdout.decode(errors="replace")


def init_repo(path: Path) -> None:
    """A fresh repository whose only branch is `master` (upstream's default)."""
    git("init", "-q", "--initial-branch=master", str(path))
