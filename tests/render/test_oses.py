"""OS presets: current releases, and Rocky installs that survive curl-minimal (issue 12, item 4).

No Rocky image can be made here (no registry, debootstrap is Debian-only), so
the rendered commands are checked: every yum install on a Rocky preset lets
dnf replace curl-minimal/coreutils-single, and nothing else changes.
"""

from __future__ import annotations

import re

import pytest

from neurodocker_nd.render.renderer import render_recipe
from neurodocker_nd.render.target import PRESETS, resolve_target

ROCKY = [name for name in PRESETS if name.startswith("rockylinux:")]


def _yum_installs(text: str) -> list[str]:
    return re.findall(r"yum install [^\\\n]*", text)


@pytest.mark.parametrize("os_name", ROCKY)
@pytest.mark.parametrize("fmt", ["docker", "singularity"])
def test_rocky_installs_allow_erasing_curl_minimal(os_name, fmt):
    # ants: a template dependency on curl; jq,method=system: an OS package.
    text = render_recipe(["ants", "jq,method=system"], os_name=os_name, fmt=fmt).text
    installs = _yum_installs(text)
    assert len(installs) >= 3, installs  # _default, ants' curl, jq (each also in the saved JSON)
    assert all("--allowerasing" in i for i in installs), installs


def test_other_yum_images_keep_neurodocker_options():
    # `--base-image … --pkg-manager yum` may be CentOS 7, whose yum has no --allowerasing.
    text = render_recipe(["ants"], base_image="centos:7", pkg_manager="yum").text
    assert _yum_installs(text) and not any("--allowerasing" in i for i in _yum_installs(text))
    assert "allowerasing" not in render_recipe(["ants"], os_name="debian:bookworm").text


@pytest.mark.parametrize(
    "os_name, image, codename",
    [
        ("debian:trixie", "debian:trixie", "trixie"),
        ("debian:13", "debian:trixie", "trixie"),
        ("ubuntu:26.04", "ubuntu:26.04", "resolute"),
        ("rockylinux:10", "rockylinux:10", None),
    ],
)
def test_current_presets(os_name, image, codename):
    target = resolve_target(os_name)
    assert (target.base_image, target.codename) == (image, codename)
    text = render_recipe(["jq,method=system"], os_name=os_name).text
    assert f"\nFROM {image}\n" in text
