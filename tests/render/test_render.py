"""Rendering: golden files, determinism, the SC2016 fixes, labels, Singularity sections."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render.renderer import RecipeRenderer, render_recipe
from support import TESTS

HERE = TESTS
GOLDEN = HERE / "golden"
FIXTURES = GOLDEN / "registry"

# (golden file, --pkg list, --os, format): upstream templates + the fixture registry,
# so the goldens do not move when the project registry grows.
CASES = [
    ("ants.ubuntu-24.04.Dockerfile", ["ants"], "ubuntu", "docker"),
    ("ants-fsl.ubuntu-22.04.def", ["ants==2.4.3", "fsl"], "ubuntu:22.04", "singularity"),
    (
        "mrtrix3-source.debian-bullseye.Dockerfile",
        ["mrtrix3,method=source,build_processes=2"],
        "debian:bullseye",
        "docker",
    ),
    ("hello-jq-system.rockylinux-8.Dockerfile", ["hello==2.10", "jq,method=system"], "rockylinux:8", "docker"),
    ("tinytool.debian-bookworm.Dockerfile", ["tinytool"], "debian:bookworm", "docker"),
    ("tinytool.rockylinux-9.def", ["tinytool"], "rockylinux", "singularity"),
]


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry(registry_dir=FIXTURES)


@pytest.mark.parametrize("golden, pkgs, os_name, fmt", CASES, ids=[c[0] for c in CASES])
def test_golden(reg, golden, pkgs, os_name, fmt):
    text = render_recipe(pkgs, os_name, fmt=fmt, registry=reg).text
    path = GOLDEN / golden
    if os.environ.get("NDGEN_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{golden} changed; NDGEN_UPDATE_GOLDEN=1 rewrites it after review"


def _entrypoint_block(instructions: str) -> str:
    m = re.search(r'^if \[ ! -f "\$ND_ENTRYPOINT" \]; then\n.*?^fi$', instructions, re.S | re.M)
    assert m, "entrypoint snippet not found"
    return m.group(0)


def test_entrypoint_fix_writes_the_same_script(tmp_path, reg):
    """Our double-quoted snippet writes byte-for-byte neurodocker's startup.sh."""
    upstream = yaml.safe_load((reg.upstream_dir / "_default.yaml").read_text())["source"]["instructions"]
    ours = RecipeRenderer(reg)._default_template()["source"]["instructions"]
    scripts = []
    for name, text in (("up", upstream), ("ours", ours)):
        target = tmp_path / f"{name}.sh"
        subprocess.run(
            ["sh", "-c", _entrypoint_block(text)],
            env={"ND_ENTRYPOINT": str(target), "PATH": os.environ["PATH"]},
            check=True,
        )
        scripts.append(target.read_bytes())
    assert scripts[0] == scripts[1]
    assert b'"${USER:=' in scripts[1] and b'"$@"' in scripts[1]
    # ...and it behaves as neurodocker's entrypoint: runs the given command.
    out = subprocess.run(["bash", str(tmp_path / "ours.sh"), "echo", "hi there"], capture_output=True, text=True)
    assert out.stdout == "hi there\n"


def _printf_command(dockerfile: str) -> str:
    block = dockerfile.split("# Save specification to JSON.\n", 1)[1].split("\n# End saving", 1)[0]
    assert block.startswith("RUN ")
    return block[4:].replace("\\\n", "")  # Docker joins continuation lines


def test_saved_json_spec_is_exact(tmp_path, reg):
    """The octal-escaped printf still writes neurodocker's JSON spec byte-for-byte."""
    text = render_recipe(["ants", "jq,method=system"], "ubuntu", registry=reg).text
    cmd = _printf_command(text).replace("/.reproenv.json", str(tmp_path / "spec.json"))
    assert "$" not in cmd.split(">")[0] and "`" not in cmd
    subprocess.run(["sh", "-c", cmd], check=True)
    spec = json.loads((tmp_path / "spec.json").read_text())
    names = [i["name"] for i in spec["instructions"]]
    # method=system is one run (not install() + the run() it logs again: a replay would install twice).
    assert names == ["from_", "env", "run", "env", "run", "run", "label", "entrypoint"]
    assert spec["instructions"][0]["kwds"] == {"base_image": "ubuntu:24.04"}
    assert "${USER:=`whoami`}" in spec["instructions"][2]["kwds"]["command"].replace("\\", "")
    # Every RUN of the Dockerfile is in the spec, byte-for-byte after Docker's line joining.
    runs = [i["kwds"]["command"] for i in spec["instructions"] if i["name"] == "run"]
    assert "curl -fsSL -o ants.zip https://github.com/ANTsX/ANTs/releases/download/v2.6.2/" in runs[1]
    assert (
        runs[2]
        == "apt-get update -qq\napt-get install -y -q --no-install-recommends \\\n    jq\nrm -rf /var/lib/apt/lists/*"
    )
    assert spec["instructions"][6]["kwds"]["org.opencontainers.image.description"].endswith("(system) on ubuntu:24.04")


def test_upstream_printf_spec_is_invalid_json_with_parentheses(tmp_path):
    """Why `_printf_spec` un-escapes parentheses: neurodocker's own spec breaks on them."""
    from neurodocker.reproenv import DockerRenderer

    from neurodocker_nd.render.renderer import _renderer_classes

    specs = []
    for cls in (DockerRenderer, _renderer_classes()[0]):
        r = cls(pkg_manager="apt")
        r.from_("debian:bookworm")
        r.run("(echo $HOME) || true")
        out = tmp_path / f"{cls.__name__}.json"
        cmd = _printf_command(
            "# Save specification to JSON.\n" + r.render().split("# Save specification to JSON.\n")[1]
        )
        subprocess.run(["sh", "-c", cmd.replace("/.reproenv.json", str(out))], check=True)
        specs.append(out.read_text())
    with pytest.raises(json.JSONDecodeError):
        json.loads(specs[0])
    assert json.loads(specs[1])["instructions"][1]["kwds"]["command"] == "(echo $HOME) || true"


def test_output_is_deterministic_across_processes(reg):
    pkgs = ["ants", "hello==2.9", "tinytool"]
    here = render_recipe(pkgs, "debian", registry=reg).text
    code = (
        "import sys; from neurodocker_nd.render.renderer import render_recipe;"
        " from neurodocker_nd.registry.entries import Registry;"
        f"sys.stdout.write(render_recipe({pkgs!r}, 'debian', registry=Registry(registry_dir={str(FIXTURES)!r})).text)"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        assert out == here
    assert not re.search(r"20\d\d-\d\d-\d\d[T ]\d\d:", here)  # no timestamps


def test_docker_labels_and_entrypoint(reg):
    text = render_recipe(["hello", "jq,method=system"], "rockylinux:8", registry=reg).text
    assert 'org.opencontainers.image.title="hello-jq"' in text
    assert 'org.opencontainers.image.base.name="rockylinux:8"' in text
    assert 'org.ndgen.packages="hello=2.12.1 jq=system"' in text
    assert 'org.ndgen.version="' in text
    assert '\nENTRYPOINT ["/neurodocker/startup.sh"]\n' in text
    assert text.startswith("# Generated by ndgen ")
    assert "# Reproduce: ndgen --pkg hello==2.12.1 --pkg jq,method=system --os rockylinux:8\n" in text


def test_singularity_is_complete(reg):
    text = render_recipe(["ants", "tinytool"], "ubuntu:20.04", fmt="singularity", registry=reg).text
    assert "\nBootstrap: docker\nFrom: ubuntu:20.04\n" in text
    for section in ("%environment", "%post", "%runscript", "%labels", "%help"):
        assert f"\n{section}\n" in text, section
    assert '\n%runscript\n/neurodocker/startup.sh "$@"\n' in text
    assert "org.ndgen.packages ants=2.6.2 tinytool=system" in text
    assert "    tinytool (system)\n        commands: dcmdump" in text
    import tempfile

    from spython.main.parse.parsers import SingularityParser

    with tempfile.NamedTemporaryFile("w", suffix=".def") as f:
        f.write(text)
        f.flush()
        recipe = next(iter(SingularityParser(f.name).recipe.values()))
    assert recipe.fromHeader == "ubuntu:20.04"
    assert "org.ndgen.version" in " ".join(recipe.labels)


def test_system_method_repositories(reg):
    apt = render_recipe(["tinytool"], "ubuntu:22.04", registry=reg).text
    assert "neuro.debian.net/lists/jammy.us-nh.full" in apt and "dcmtk" in apt
    yum = render_recipe(["tinytool"], "rockylinux:9", registry=reg).text
    assert "epel-release" in yum and "yum install -y -q" in yum and "neuro.debian" not in yum
    plain = render_recipe(["jq,method=system"], "ubuntu:22.04", registry=reg).text
    assert "neuro.debian" not in plain and "epel" not in plain


def test_base_image_with_pkg_manager(reg):
    r = render_recipe(["jq"], base_image="myorg/base:1", pkg_manager="yum", registry=reg)
    assert (r.base_image, r.pkg_manager) == ("myorg/base:1", "yum")
    assert "\nFROM myorg/base:1\n" in r.text
    assert "--base-image myorg/base:1 --pkg-manager yum" in r.text
    with pytest.raises(NdgenError, match="NeuroDebian needs a known release"):
        render_recipe(["tinytool"], base_image="myorg/deb:1", pkg_manager="apt", registry=reg)


def test_public_api_shape(reg):
    recipe = render_recipe(
        pkgs=["jq,method=system", "tinytool"],
        os_name="debian:bookworm",
        base_image=None,
        pkg_manager=None,
        fmt="docker",
        registry=reg,
    )
    assert (recipe.fmt, recipe.base_image, recipe.pkg_manager) == ("docker", "debian:bookworm", "apt")
    jq, tiny = recipe.packages
    assert (jq.name, jq.version, jq.method, jq.test, jq.commands) == ("jq", None, "system", "echo '{}' | jq .", ("jq",))
    assert (tiny.name, tiny.test, tiny.commands) == ("tinytool", "dcmdump --version", ("dcmdump",))
    upstream_only = render_recipe(["ants"], "debian", registry=reg).packages[0]
    assert (upstream_only.version, upstream_only.test, upstream_only.commands) == ("2.6.2", None, ())


def test_public_api_with_project_registry():
    """The call `ndgen build` makes, against the committed registry."""
    recipe = render_recipe(
        pkgs=["dcm2niix,method=system", "mrtrix3,method=system"],
        os_name="debian:bookworm",
        base_image=None,
        pkg_manager=None,
        fmt="docker",
    )
    assert [p.method for p in recipe.packages] == ["system", "system"]
    assert all(p.test and p.commands for p in recipe.packages)
    assert "dcm2niix" in recipe.text and "mrtrix3" in recipe.text


def test_template_error_is_one_line(tmp_path):
    entry = tmp_path / "broken"
    entry.mkdir()
    (entry / "template.yaml").write_text("name: broken\nurl: x\nsource:\n  instructions: |\n    echo {{ self.nope }}\n")
    (entry / "meta.yaml").write_text(
        "name: broken\ndescription: d\nhomepage: https://x.org\ncommands: [x]\ntest: x\nupstream: {status: new}\n"
    )
    with pytest.raises(NdgenError, match=r"broken/template.yaml: template error: .*required argument") as exc:
        render_recipe(["broken"], "debian", registry=Registry(registry_dir=tmp_path))
    assert "\n" not in exc.value.message
