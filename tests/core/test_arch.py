"""Architectures and the emulation check (issue 20): spellings, per-arch tags, binfmt_misc entries.

The kernel's binfmt_misc directory is read through a path argument, so the "no F flag" and
"not mounted" cases are its entries' real text in a temporary directory: the host's own
handler is shared by every run on this machine and is never unregistered by a test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from neurodocker_nd.core import arch, emulation
from support import TESTS, run_ndgen

# /proc/sys/fs/binfmt_misc/qemu-aarch64 as Linux shows qemu-user-static's handler (Debian 12).
_ENTRY = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: {flags}
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def _binfmt(tmp_path: Path, flags: str | None, state: str = "enabled") -> Path:
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir(parents=True)
    (binfmt / "register").write_text("")
    (binfmt / "status").write_text("enabled\n")
    if flags is not None:
        (binfmt / "qemu-aarch64").write_text(_ENTRY.format(flags=flags).replace("enabled", state, 1))
    return binfmt


@pytest.mark.parametrize(
    ("given", "expected"), [("aarch64", "aarch64"), ("arm64", "aarch64"), ("AMD64", "x86_64"), ("x86_64", "x86_64")]
)
def test_both_spellings_normalise_in_one_place(given, expected):
    assert arch.normalise(given) == expected


def test_docker_names_and_per_arch_tags():
    assert (arch.docker_arch("aarch64"), arch.platform("aarch64")) == ("arm64", "linux/arm64")
    assert arch.arch_ref("debian:bookworm", "aarch64") == "arm64v8/debian:bookworm"
    assert arch.arch_ref("docker.io/library/ubuntu:24.04", "aarch64") == "arm64v8/ubuntu:24.04"
    assert arch.arch_ref("arm64v8/debian:bookworm", "aarch64") == "arm64v8/debian:bookworm"
    assert arch.arch_ref("me/base:1", "aarch64") == "me/base:1"  # the user's own name
    assert arch.arch_ref("debian:bookworm", "x86_64") == "debian:bookworm"  # native: never renamed


def test_emulation_check_names_what_is_missing_and_the_fix(tmp_path):
    fixed = _binfmt(tmp_path / "a", "POCF")
    assert emulation.problem("aarch64", fixed) is None
    assert emulation.problem("x86_64", tmp_path / "nowhere") is None  # native: nothing asked of the host
    cases = {
        "not mounted": tmp_path / "nowhere",
        "no binfmt_misc handler runs aarch64": _binfmt(tmp_path / "b", None),
        "lacks the F flag (flags: P)": _binfmt(tmp_path / "c", "P"),
        "is disabled": _binfmt(tmp_path / "d", "PF", state="disabled"),
    }
    for why, binfmt in cases.items():
        with pytest.raises(emulation.EmulationMissing) as raised:
            emulation.check("aarch64", "ndgen build x:1", binfmt)
        assert why in str(raised.value)
        assert str(raised.value).endswith("as root run: apt-get install qemu-user-static && ndgen setup-emulation")


def test_the_handler_line_comes_from_the_installed_package(tmp_path):
    conf = tmp_path / "binfmt.d"
    conf.mkdir()
    line = ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46:\\xff\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:P"
    (conf / "qemu-aarch64.conf").write_text(f"# comment\n{line}\n")
    assert emulation.package_line(places=(conf,)) == line
    assert emulation.with_fix_binary(line).endswith(":PF")
    assert emulation.with_fix_binary(line + "F") == line + "F"  # already there: unchanged
    with pytest.raises(emulation.EmulationMissing, match="apt-get install qemu-user-static"):
        emulation.package_line(places=(tmp_path / "none",))


def test_unknown_arch_is_one_line_listing_the_supported_ones():
    proc = run_ndgen("recipe", str(TESTS / "recipes" / "ndarch"), "--arch", "mips")
    assert proc.returncode == 2
    assert proc.stderr == (
        "ndgen: error: unsupported architecture 'mips': choose x86_64 (or amd64) or aarch64 (or arm64)\n"
    )


def test_recipe_without_aarch64_refuses_an_arm64_build():
    proc = run_ndgen("build", str(TESTS / "recipes" / "ndtool"), "--arch", "arm64", "-t", "i20-never:1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("ndgen: error: ") and proc.stderr.count("\n") == 1
    assert "ndtool does not support aarch64 (architectures: x86_64)" in proc.stderr


def test_arm64_recipe_is_named_as_neurocontainers_names_it():
    from neurodocker_nd.build.recipe_dir import default_tag
    from neurodocker_nd.render.recipe import load_recipe

    for given, name in (("arm64", "ndarch_arm64:1.0"), ("x86_64", "ndarch:1.0")):
        plan = load_recipe(TESTS / "recipes" / "ndarch", arch=arch.normalise(given))
        assert default_tag(plan.name, plan.version) == name


def test_singularity_arm64_build_is_refused_in_one_line():
    proc = run_ndgen(
        "build", "--pkg", "jq,method=system", "--os", "debian:bookworm", "--arch", "arm64",
        "--format", "singularity", "-t", "i20-never:1",
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == (
        "ndgen: error: ndgen build i20-never:1: --arch aarch64 builds Docker images only "
        "(the Apptainer stand-in has no --platform)\n"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="setup-emulation mounts and registers as root")
def test_setup_emulation_is_idempotent():
    first = run_ndgen("setup-emulation")
    assert first.returncode == 0, first.stderr
    again = run_ndgen("setup-emulation")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert emulation.problem("aarch64") is None
    assert "F" in emulation.read_handler(emulation.BINFMT_DIR / "qemu-aarch64").flags


def test_an_images_own_architecture_decides(tmp_path):
    """`ndgen test` and `ndgen minify` ask for emulation by the image's Architecture, not a flag."""
    unmounted = tmp_path / "nowhere"
    emulation.check_image({"Architecture": "amd64"}, "testing a:1", unmounted)  # native: nothing needed
    with pytest.raises(emulation.EmulationMissing, match="^testing b:1 for aarch64 needs qemu-user emulation"):
        emulation.check_image({"Architecture": "arm64"}, "testing b:1", unmounted)
    with pytest.raises(arch.UnsupportedArch, match="unsupported architecture 'ppc64le'"):
        emulation.check_image({"Architecture": "ppc64le"}, "testing c:1", unmounted)


def test_arm64_base_plan_names_its_tag_and_mirror():
    from neurodocker_nd.build.base_image import UBUNTU_PORTS, debootstrap_argv, plan_base

    spec = plan_base("debian:bookworm", arch="aarch64")
    assert (spec.ref, spec.suite, spec.mirror) == (
        "arm64v8/debian:bookworm",
        "bookworm",
        "http://deb.debian.org/debian",
    )
    argv = debootstrap_argv(spec, Path("/t"))
    assert "--foreign" in argv and "--arch=arm64" in argv
    assert "--foreign" not in debootstrap_argv(plan_base("debian:bookworm"), Path("/t"))
    assert plan_base("ubuntu:24.04", arch="aarch64").mirror == UBUNTU_PORTS
    assert plan_base("ubuntu:24.04").mirror == "http://archive.ubuntu.com/ubuntu"


def test_arch_completes_every_spelling():
    words = {"_NDGEN_COMPLETE": "bash_complete", "COMP_WORDS": "ndgen build --arch a", "COMP_CWORD": "3"}
    proc = run_ndgen(env=words)
    assert proc.stdout.split() == ["plain,amd64", "plain,aarch64", "plain,arm64"]
