"""Issue 17, finding 12 (class): a TEMPLATE's rendered text obeys the rules of a recipe's steps.

steps.py refuses a recipe `run:` that starts with an option (BuildKit read a
leading `--mount=…` as RUN flags and bound another local image), but a
template — a `--templates DIR` file or a registry entry, as untrusted as a
recipe — still rendered `RUN --mount=…`, and its ENV values could close their
quote and start a RUN of their own.  The renderer checks every RUN it emits;
only ndgen's own cache-mount prefix may start with an option.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from neurodocker_nd.render import steps as st
from neurodocker_nd.render.recipe import load_recipe
from neurodocker_nd.render.renderer import _renderer_classes, render
from support import RECIPE_HEAD, TESTS, run_ndgen

HERE = TESTS
FIXTURES = HERE / "golden" / "registry"
MOUNT = "--mount=type=bind,from=secret-image,source=/,target=/x"

RECIPE = (
    RECIPE_HEAD
    + """    - template:
        name: evil
"""
)


def _recipe_with_template(tmp_path: Path, template: str) -> tuple[Path, Path]:
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "evil.yaml").write_text(template)
    recipe = tmp_path / "r"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(RECIPE)
    return recipe, tdir


def _one_line_refusal(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert proc.stdout == "", "nothing is rendered"


@pytest.mark.parametrize("fmt", ["docker", "singularity"])
def test_a_templates_dir_template_starting_with_a_mount_flag_is_refused(tmp_path, fmt):
    recipe, tdir = _recipe_with_template(
        tmp_path, f"name: evil\nurl: https://example.org\nsource:\n  instructions: '{MOUNT} cat /x/etc/shadow'\n"
    )
    proc = run_ndgen("recipe", str(recipe), "--templates", str(tdir), "--format", fmt, timeout=300)
    _one_line_refusal(proc, f"{tdir / 'evil.yaml'}: template refused", "RUN flag")


def test_a_template_env_value_cannot_start_its_own_run(tmp_path):
    # `ENV K="x"` + newline + `RUN --mount=…` + newline + `ENV Y="1"` on the old code.
    value = f'x"\\nRUN {MOUNT} cat /x/etc/shadow\\nENV Y="1'
    recipe, tdir = _recipe_with_template(
        tmp_path,
        f'name: evil\nurl: https://example.org\nsource:\n  env:\n    K: "{value.replace(chr(34), chr(92) + chr(34))}"\n'
        "  instructions: echo hi\n",
    )
    proc = run_ndgen("recipe", str(recipe), "--templates", str(tdir), timeout=300)
    _one_line_refusal(proc, "evil.yaml: template refused: env K", "a newline")


def test_a_template_line_cannot_open_a_singularity_section(tmp_path):
    # In %post, a line `%files` would start a section copying a host file into the image.
    recipe, tdir = _recipe_with_template(
        tmp_path,
        "name: evil\nurl: https://example.org\nsource:\n  instructions: |\n    true\n    %files\n"
        "    /etc/shadow /shadow\n",
    )
    proc = run_ndgen("recipe", str(recipe), "--templates", str(tdir), "--format", "singularity", timeout=300)
    _one_line_refusal(proc, "evil.yaml: template refused", "Singularity section")


def test_a_registry_entry_starting_with_a_mount_flag_is_refused(tmp_path):
    reg = tmp_path / "reg"
    shutil.copytree(FIXTURES, reg)
    template = reg / "hello" / "template.yaml"
    text = template.read_text()
    template.write_text(text.replace("    {{ self.install_dependencies() }}\n", f"    {MOUNT} cat /x/etc/shadow\n"))
    out = tmp_path / "Dockerfile"
    proc = run_ndgen("--pkg", "hello", "--os", "debian", "-o", str(out), env={"NDGEN_REGISTRY": str(reg)}, timeout=300)
    _one_line_refusal(proc, "template refused", "RUN flag")
    assert not out.exists()


@pytest.mark.parametrize("cls", _renderer_classes(), ids=["docker", "singularity"])
def test_every_run_the_renderer_emits_is_checked(cls):
    r = cls(pkg_manager="apt")
    with pytest.raises(st.StepError, match="RUN flag"):
        r.run(f"{MOUNT} true")
    r.run("apt-get install -y --no-install-recommends jq")  # options later in a command are fine


def test_ndgens_own_cache_mounts_still_render():
    demo = HERE / "recipes" / "ndgen-demo"
    text = render(load_recipe(demo), "docker", cache_stage=True)
    assert "RUN --mount=type=bind,from=neurocontainer-cache,source=/h" in text
    with pytest.raises(st.StepError, match="RUN flag"):  # the command after ndgen's prefix is still the user's
        _renderer_classes()[0](pkg_manager="apt").run_with_cache_mounts("--mount=type=bind,from=x", f"{MOUNT} true")
