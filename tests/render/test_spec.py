"""--pkg parsing and resolution against the registry and the OS presets."""

from __future__ import annotations

import pytest

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render.pkg import MissingArgument, UnsupportedTarget, parse_pkg, resolve
from neurodocker_nd.render.target import PRESETS, resolve_target
from support import TESTS

FIXTURES = TESTS / "golden" / "registry"


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry(registry_dir=FIXTURES)


def test_parse_name_version_and_args():
    req = parse_pkg("ants==2.4.3,method=source,conda_opts=-q --offline")
    assert (req.name, req.version) == ("ants", "2.4.3")
    assert req.args == (("method", "source"), ("conda_opts", "-q --offline"))
    assert parse_pkg("fsl").version is None


@pytest.mark.parametrize(
    "text, culprit",
    [
        ("", "malformed --pkg"),
        ("==1.0", "malformed --pkg"),
        ("ants==", "empty version"),
        ("ants,method", "is not key=value"),
        ("ants,=x", "is not key=value"),
        ("ants,Bad-Key=1", "bad argument name"),
        ("ants,method=a,method=b", "given twice"),
        ("ants;rm -rf /", "malformed --pkg"),
    ],
)
def test_parse_malformed(text, culprit):
    with pytest.raises(NdgenError, match=culprit):
        parse_pkg(text)


@pytest.mark.parametrize(
    "value",
    [
        "/opt/x;rm -rf /",
        "a&&b",
        "a|b",
        "$(id)",
        "`id`",
        "a>b",
        "x\ny",
        "x\rb",
        "{{ self.x }}",
        "'q'",
        '"q"',
        "a\\b",
        "*",
    ],
)
def test_unsafe_values_rejected(value):
    with pytest.raises(NdgenError, match="value of install_path contains"):
        parse_pkg(f"ants,install_path={value}")


def test_unsafe_version_rejected():
    with pytest.raises(NdgenError, match="version"):
        parse_pkg("ants==2.4;id")


def test_default_version_is_newest(reg):
    spec = resolve(["ants", "hello", "dcm2niix"], "ubuntu", registry=reg)
    versions = {p.name: p.version for p in spec.packages}
    # hello: "2.12.1" beats "2.10" and "2.9" numerically; `latest` is never the default.
    assert versions["hello"] == "2.12.1"
    assert versions["ants"] == reg.get("ants").versions()[0] == "2.6.2"
    assert versions["dcm2niix"].startswith("v1.0.2025")
    assert [p.name for p in spec.packages] == ["ants", "hello", "dcm2niix"]  # order kept


def test_version_and_args_reach_kwds(reg):
    (pkg,) = resolve(["ants==2.4.3,install_path=/opt/a"], "ubuntu:22.04", registry=reg).packages
    assert dict(pkg.kwds) == {"version": "2.4.3", "install_path": "/opt/a"}
    (pkg,) = resolve(["ants,version=2.4.3"], "ubuntu:22.04", registry=reg).packages
    assert pkg.version == "2.4.3"


def test_source_method_accepts_any_version(reg):
    (pkg,) = resolve(["ants==2.99.0,method=source"], "debian", registry=reg).packages
    assert (pkg.method, pkg.version) == ("source", "2.99.0")


def test_unknown_package_suggests(reg):
    with pytest.raises(NdgenError, match=r"unknown package 'antz'; did you mean: ants"):
        resolve(["antz"], "ubuntu", registry=reg)


def test_unknown_version_lists_available(reg):
    with pytest.raises(NdgenError, match=r"unknown version '9.9'; available: 2.12.1, 2.10, 2.9, latest"):
        resolve(["hello==9.9"], "ubuntu", registry=reg)


def test_unknown_argument_names_known_ones(reg):
    with pytest.raises(NdgenError, match=r"unknown template argument 'prefix'.*install_path"):
        resolve(["ants,prefix=/x"], "ubuntu", registry=reg)


def test_unknown_method(reg):
    with pytest.raises(NdgenError, match=r"unknown method 'conda'; available: binaries, source"):
        resolve(["ants,method=conda"], "ubuntu", registry=reg)


def test_system_method_takes_no_version(reg):
    with pytest.raises(NdgenError, match="takes no version"):
        resolve(["jq==1.7.1,method=system"], "ubuntu", registry=reg)
    (pkg,) = resolve(["jq,method=system"], "rockylinux:8", registry=reg).packages
    assert (pkg.method, pkg.version, pkg.kwds) == ("system", None, ())
    assert pkg.test == "echo '{}' | jq ."  # system.test overrides test
    assert pkg.commands == ("jq",)


def test_system_only_entry_defaults_to_system(reg):
    (pkg,) = resolve(["tinytool"], "debian:bookworm", registry=reg).packages
    assert pkg.method == "system" and pkg.test == "dcmdump --version"


def test_missing_required_argument(reg):
    with pytest.raises(MissingArgument, match=r"vnc: missing required argument 'passwd'"):
        resolve(["vnc"], "ubuntu", registry=reg)


def test_os_codename_filled_from_preset(reg):
    (pkg,) = resolve(["neurodebian"], "ubuntu:22.04", registry=reg).packages
    assert dict(pkg.kwds)["os_codename"] == "jammy"


def test_apt_only_template_rejected_on_yum(reg):
    with pytest.raises(UnsupportedTarget, match="cannot install with yum"):
        resolve(["neurodebian"], "rockylinux", registry=reg)


def test_duplicate_package(reg):
    with pytest.raises(NdgenError, match="given twice"):
        resolve(["ants", "ants==2.4.3"], "ubuntu", registry=reg)


# ---- OS presets


@pytest.mark.parametrize(
    "name, image, pm",
    [
        ("ubuntu", "ubuntu:24.04", "apt"),
        ("ubuntu:20.04", "ubuntu:20.04", "apt"),
        ("ubuntu:22.04", "ubuntu:22.04", "apt"),
        ("debian", "debian:bookworm-slim", "apt"),
        ("debian:bullseye", "debian:bullseye", "apt"),
        ("debian:bookworm", "debian:bookworm", "apt"),
        ("rockylinux", "rockylinux:9", "yum"),
        ("rockylinux:8", "rockylinux:8", "yum"),
    ],
)
def test_presets(name, image, pm):
    t = resolve_target(name)
    assert (t.base_image, t.pkg_manager) == (image, pm)


def test_unknown_os_lists_presets():
    with pytest.raises(NdgenError, match=r"unknown OS 'centos:7'; presets: ubuntu, debian"):
        resolve_target("centos:7")


def test_base_image_needs_pkg_manager():
    with pytest.raises(NdgenError, match="needs --pkg-manager"):
        resolve_target(None, "myorg/img:1")
    t = resolve_target(None, "myorg/img:1", "yum")
    assert (t.base_image, t.pkg_manager, t.codename) == ("myorg/img:1", "yum", None)
    with pytest.raises(NdgenError, match="no OS given"):
        resolve_target(None)


def test_base_image_refines_preset():
    t = resolve_target("debian:bookworm", "my/bookworm:2")
    assert (t.base_image, t.pkg_manager, t.codename) == ("my/bookworm:2", "apt", "bookworm")
    with pytest.raises(NdgenError, match="does not match"):
        resolve_target("ubuntu", None, "yum")


def test_every_preset_is_distinct():
    assert len({t.base_image for t in PRESETS.values()}) == len(PRESETS)


@pytest.mark.parametrize("image", ["ubuntu:24.04\nRUN id", "my image", "img:tag;id", 'a"b', "-x"])
def test_bad_base_image_rejected(image):
    with pytest.raises(NdgenError, match="is not a Docker image reference"):
        resolve_target(None, image, "apt")


@pytest.mark.parametrize("image", ["localhost:5000/org/img:1.0", "ghcr.io/a/b@sha256:" + "0" * 64, "busybox"])
def test_good_base_image_accepted(image):
    assert resolve_target(None, image, "apt").base_image == image


@pytest.mark.parametrize("names", [("ants", "ANTS"), ("ANTs", "ants"), ("jq,method=system", "JQ,method=system")])
def test_same_package_in_other_case_is_given_twice(names):
    with pytest.raises(NdgenError, match=r"--pkg \w+ given twice"):
        resolve([names[0], names[1]], "debian:bookworm")


def test_show_is_case_insensitive(ndgen_cli):
    proc = ndgen_cli("show", "ANTS", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ants (")
