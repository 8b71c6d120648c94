"""OS presets: what `--os NAME[:VERSION]` means as a base image and package manager.

A preset is data, not code: the base image, the package manager neurodocker's
renderer uses for it, and the release codename (NeuroDebian's apt lists and
templates with an `os_codename` argument need it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import attrs

from neurodocker_nd.errors import NdgenError

PkgManager = Literal["apt", "yum"]


@attrs.frozen
class Target:
    """Where a recipe installs to: base image + package manager (+ codename if known)."""

    base_image: str
    pkg_manager: PkgManager
    os_name: str  # the preset name, or the base image for --base-image
    codename: str | None = None
    glibc: tuple[int, int] | None = None  # the release's C library (None: unknown image)
    # Options of the OS package manager's install command (None: neurodocker's
    # default, `-q` for yum, `-q --no-install-recommends` for apt).
    install_opts: str | None = None


# Rocky 9 and 10 images ship curl-minimal (and coreutils-single), which conflict
# with `yum install curl` (coreutils) that most templates ask for; dnf — the
# `yum` of Rocky 8, 9 and 10 — replaces them with --allowerasing. Only for the
# presets: an arbitrary `--base-image … --pkg-manager yum` may be CentOS 7,
# whose yum 3 has no such option.
_DNF_OPTS = "-q --allowerasing"


def _t(name: str, image: str, pm: PkgManager, codename: str | None, glibc: tuple[int, int] | None) -> Target:
    opts = _DNF_OPTS if pm == "yum" else None
    return Target(base_image=image, pkg_manager=pm, os_name=name, codename=codename, glibc=glibc, install_opts=opts)


# Canonical presets, one per distinct base image; `ndgen matrix` renders each.
# glibc per release (checked by `requires:` in registry meta): the table
# "Linux distributions to kernel and glibc versions map",
# https://gist.github.com/richardlau/6a01d7829cc33ddab35269dacc127680 (Debian
# 11: 2.31, 12: 2.36; RHEL 8: 2.28, 9: 2.34; Ubuntu 20.04: 2.31, 22.04: 2.35,
# 24.04: 2.39); bookworm's 2.36 also from `apt-cache policy libc6` (2.36-9+deb12u14).
# Newer releases, each confirmed released by a source read on 2026-11-27:
# * debian:trixie (13): released 2025-08-09 per distro-info-data's
#   /usr/share/distro-info/debian.csv; glibc 2.41 per systemd's NEWS table of
#   distributions (Debian 13: 2.41; CentOS 10: 2.39), as mirrored at
#   https://git.ipfire.org/gitweb.cgi?p=thirdparty/systemd.git;a=commitdiff;h=fd8c62075197e4f4702bb6e4537116a64cb539b7
# * ubuntu:26.04 LTS (resolute): released 2026-04-23 per distro-info-data's
#   /usr/share/distro-info/ubuntu.csv; its glibc is not in a source read, so
#   unknown (None: `requires:` checks pass, as for --base-image).
# * rockylinux:10: Rocky Linux 10.1 (based on RHEL 10) published in November
#   2025 per https://www.opennet.ru/opennews/art.shtml?num=64357 (Rocky 9.7
#   release note); glibc 2.39 = CentOS Stream 10's, from the systemd table above.
PRESETS: Mapping[str, Target] = MappingProxyType(
    {
        t.os_name: t
        for t in (
            _t("ubuntu:20.04", "ubuntu:20.04", "apt", "focal", (2, 31)),
            _t("ubuntu:22.04", "ubuntu:22.04", "apt", "jammy", (2, 35)),
            _t("ubuntu:24.04", "ubuntu:24.04", "apt", "noble", (2, 39)),
            _t("ubuntu:26.04", "ubuntu:26.04", "apt", "resolute", None),
            _t("debian:bullseye", "debian:bullseye", "apt", "bullseye", (2, 31)),
            _t("debian:bookworm", "debian:bookworm", "apt", "bookworm", (2, 36)),
            _t("debian:bookworm-slim", "debian:bookworm-slim", "apt", "bookworm", (2, 36)),
            _t("debian:trixie", "debian:trixie", "apt", "trixie", (2, 41)),
            _t("rockylinux:8", "rockylinux:8", "yum", None, (2, 28)),
            _t("rockylinux:9", "rockylinux:9", "yum", None, (2, 34)),
            _t("rockylinux:10", "rockylinux:10", "yum", None, (2, 39)),
        )
    }
)

# Short names users type; each resolves to one canonical preset.
ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "ubuntu": "ubuntu:24.04",
        "debian": "debian:bookworm-slim",
        "rockylinux": "rockylinux:9",
        "debian:11": "debian:bullseye",
        "debian:12": "debian:bookworm",
        "debian:13": "debian:trixie",
    }
)


def preset_names() -> tuple[str, ...]:
    """Every name `--os` accepts (aliases first, then canonical presets)."""
    return tuple(ALIASES) + tuple(PRESETS)


# A Docker image reference: [registry[:port]/]name[:tag][@digest].  Anything
# else (spaces, quotes, newlines) would be rendered straight into FROM/LABEL.
_IMAGE_RE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?[A-Za-z0-9][A-Za-z0-9._/-]*(?::[A-Za-z0-9._-]+)?(?:@sha256:[0-9a-f]{64})?$"
)


def check_image(image: str) -> str:
    """`image` itself when it is a Docker image reference; NdgenError otherwise (it goes into FROM/LABEL)."""
    if not _IMAGE_RE.match(image) or "//" in image:
        raise NdgenError(f"--base-image {image!r} is not a Docker image reference (name[:tag][@sha256:…])")
    return image


def _pkg_manager(value: str | None, image: str) -> PkgManager:
    if value == "apt":
        return "apt"
    if value == "yum":
        return "yum"
    raise NdgenError(f"--base-image {image} needs --pkg-manager apt|yum")


def resolve_target(os_name: str | None, base_image: str | None = None, pkg_manager: str | None = None) -> Target:
    """Turn --os / --base-image / --pkg-manager into a Target, or raise NdgenError."""
    # `is not None`, not truthiness: an empty --os or --base-image is refused, never ignored.
    if os_name is not None:
        key = ALIASES.get(os_name.strip().lower(), os_name.strip().lower())
        preset = PRESETS.get(key)
        if preset is None:
            raise NdgenError(
                f"unknown OS {os_name!r}; presets: {', '.join(preset_names())} "
                "(or use --base-image IMAGE --pkg-manager apt|yum)"
            )
        # One rule, with or without --base-image: the preset names the OS, so its
        # package manager is the OS's. (--base-image narrows the preset to a
        # derived image of the same OS; a yum image is not an Ubuntu.)
        if pkg_manager and pkg_manager != preset.pkg_manager:
            with_image = f" --base-image {base_image}" if base_image is not None else ""
            raise NdgenError(
                f"--pkg-manager {pkg_manager} does not match --os {os_name}{with_image} "
                f"({preset.os_name} uses {preset.pkg_manager}; for another OS's image "
                "give --base-image IMAGE --pkg-manager without --os)"
            )
        if base_image is not None:
            return attrs.evolve(preset, base_image=check_image(base_image))
        return preset
    if base_image is not None:
        pm = _pkg_manager(pkg_manager, base_image)
        return Target(base_image=check_image(base_image), pkg_manager=pm, os_name=base_image)
    raise NdgenError("no OS given: use --os OS[:VERSION] or --base-image IMAGE --pkg-manager apt|yum")
