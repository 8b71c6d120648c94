"""Architectures: the one place where user spellings become ndgen's names.

neurocontainers' recipes say `x86_64` / `aarch64` (the kernel's `uname -m`);
Docker and Debian say `amd64` / `arm64`.  Users write either, so every entry
point (`--arch`, a recipe's `architectures:`) goes through `normalise`, and the
other spellings are derived here, never typed elsewhere.

The classic image store holds one architecture per tag, so an arm64 base cannot
share `debian:bookworm` with the amd64 one.  It is tagged as Docker Hub's
official images tag their per-architecture copies, `arm64v8/debian:bookworm`
(docker-library's "Architectures other than amd64" namespaces): an amd64 build
asks for `debian:bookworm` and can never pick it up, an arm64 build of a
recipe written `FROM debian:bookworm` is pointed at it (`arch_ref`), and a site
with a registry finds the very same name on Docker Hub.
"""

from __future__ import annotations

import os
from typing import Literal

from neurodocker_nd.errors import NdgenError

Arch = Literal["x86_64", "aarch64"]
ARCHES: tuple[Arch, ...] = ("x86_64", "aarch64")

_ALIASES: dict[str, Arch] = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
SPELLINGS = tuple(_ALIASES)  # every value `--arch` takes (shell completion)
# Arch → Docker's (and Debian's) name: the image config's Architecture, `--platform linux/NAME`.
_DOCKER: dict[Arch, str] = {"x86_64": "amd64", "aarch64": "arm64"}
# Arch → Docker Hub's namespace for the official images built for it.
_NAMESPACE: dict[Arch, str] = {"x86_64": "amd64", "aarch64": "arm64v8"}


class UnsupportedArch(NdgenError):
    """An architecture nobody builds for here."""


def normalise(value: str) -> Arch:
    """`aarch64`/`arm64` → aarch64, `x86_64`/`amd64` → x86_64; anything else is one error line."""
    arch = _ALIASES.get(str(value).strip().lower())
    if arch is None:
        raise UnsupportedArch(f"unsupported architecture {value!r}: choose x86_64 (or amd64) or aarch64 (or arm64)")
    return arch


def canonical(value: str) -> str:
    """`normalise` for a name in a list someone else keeps (a recipe's `architectures:`):
    one ndgen does not build for stays as written."""
    return _ALIASES.get(value.strip().lower(), value)


def docker_arch(arch: Arch) -> str:
    """Docker's name: what `docker inspect` shows as Architecture (amd64, arm64)."""
    return _DOCKER[arch]


def platform(arch: Arch) -> str:
    """BuildKit's `--platform` value."""
    return f"linux/{_DOCKER[arch]}"


def host_arch() -> Arch | None:
    """This machine's architecture; None when ndgen builds for none of its kind."""
    return _ALIASES.get(os.uname().machine)


def emulated(arch: Arch) -> bool:
    """True when `arch` binaries run here only through an emulator (qemu-user)."""
    return arch != host_arch()


def arch_ref(ref: str, arch: Arch) -> str:
    """The local name of `ref`'s `arch` image: an official image (`debian:bookworm`,
    `library/debian:bookworm`) non-native → `arm64v8/debian:bookworm`; anything
    else, or the host's own architecture, unchanged."""
    if not emulated(arch):
        return ref
    name = ref.removeprefix("docker.io/").removeprefix("library/")
    if "/" in name:  # not an official image, or already namespaced: the user's own name
        return ref
    return f"{_NAMESPACE[arch]}/{name}"
