"""OS presets: what `--os NAME[:VERSION]` means as a base image and package manager.

A preset is data, not code: the base image, the package manager neurodocker's
renderer uses for it, and the release codename (NeuroDebian's apt lists and
templates with an `os_codename` argument need it).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Literal, Mapping

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


def _t(name: str, image: str, pm: PkgManager, codename: str | None) -> Target:
    return Target(base_image=image, pkg_manager=pm, os_name=name, codename=codename)


# Canonical presets, one per distinct base image; `ndgen matrix` renders each.
PRESETS: Mapping[str, Target] = MappingProxyType(
    {
        t.os_name: t
        for t in (
            _t("ubuntu:20.04", "ubuntu:20.04", "apt", "focal"),
            _t("ubuntu:22.04", "ubuntu:22.04", "apt", "jammy"),
            _t("ubuntu:24.04", "ubuntu:24.04", "apt", "noble"),
            _t("debian:bullseye", "debian:bullseye", "apt", "bullseye"),
            _t("debian:bookworm", "debian:bookworm", "apt", "bookworm"),
            _t("debian:bookworm-slim", "debian:bookworm-slim", "apt", "bookworm"),
            _t("rockylinux:8", "rockylinux:8", "yum", None),
            _t("rockylinux:9", "rockylinux:9", "yum", None),
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


def _check_image(image: str) -> str:
    if not _IMAGE_RE.match(image) or "//" in image:
        raise NdgenError(f"--base-image {image!r} is not a Docker image reference (name[:tag][@sha256:…])")
    return image


def _pkg_manager(value: str | None, image: str) -> PkgManager:
    if value == "apt":
        return "apt"
    if value == "yum":
        return "yum"
    raise NdgenError(f"--base-image {image} needs --pkg-manager apt|yum")


def resolve_target(
    os_name: str | None, base_image: str | None = None, pkg_manager: str | None = None
) -> Target:
    """Turn --os / --base-image / --pkg-manager into a Target, or raise NdgenError."""
    if os_name:
        key = ALIASES.get(os_name.strip().lower(), os_name.strip().lower())
        preset = PRESETS.get(key)
        if preset is None:
            raise NdgenError(
                f"unknown OS {os_name!r}; presets: {', '.join(preset_names())} "
                "(or use --base-image IMAGE --pkg-manager apt|yum)"
            )
        if base_image:
            # --base-image narrows the preset to a derived image of the same OS.
            return attrs.evolve(
                preset,
                base_image=_check_image(base_image),
                pkg_manager=_pkg_manager(pkg_manager or preset.pkg_manager, base_image),
            )
        if pkg_manager and pkg_manager != preset.pkg_manager:
            raise NdgenError(
                f"--pkg-manager {pkg_manager} does not match --os {os_name} "
                f"(which uses {preset.pkg_manager})"
            )
        return preset
    if base_image:
        pm = _pkg_manager(pkg_manager, base_image)
        return Target(base_image=_check_image(base_image), pkg_manager=pm, os_name=base_image)
    raise NdgenError("no OS given: use --os OS[:VERSION] or --base-image IMAGE --pkg-manager apt|yum")
