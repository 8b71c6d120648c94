"""Values reach shell code intact or not at all (issue 12, items 2 and 8).

The rendered commands are executed by bash with stub `conda`/`python`
executables that record the words they receive.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.render.renderer import render_recipe
from support import run_ndgen

CONDA = "numpy<2 nibabel>=5 scipy *ants* !x ~root"
PIP = "nipype[all] git+https://github.com/nipy/nipype#egg=nipype #c pkg!=1"


def _stubs(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("conda", "python"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {tmp_path}/{name}.args\n')
        stub.chmod(0o755)
    (bin_dir / "activate").write_text("")  # `source activate base` looks it up in PATH
    # Files a glob (`nipype[all]`, `*ants*`) would expand to if left unquoted.
    for name in ("nipypea", "xantsx"):
        (tmp_path / name).write_text("")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}


def _segment(recipe_text: str, fmt: str) -> str:
    """The shell text from `conda install` to the clean-up, as the shell will see it."""
    if fmt == "docker":
        # What Docker's parser hands to /bin/sh -c: comments dropped, continuations joined.
        lines = [ln for ln in recipe_text.splitlines() if not ln.lstrip().startswith("#")]
        text = "\n".join(lines).replace("\\\n", "")
        start, end = text.index("conda install -y"), text.index("&& sync && conda clean")
        return text[start:end].rstrip()
    start, end = recipe_text.index("conda install -y"), recipe_text.index("# Clean up")
    return recipe_text[start:end]


@pytest.mark.parametrize("fmt", ["docker", "singularity"])
def test_package_specs_reach_conda_and_pip_literally(tmp_path, fmt):
    recipe = render_recipe([f"miniconda,conda_install={CONDA},pip_install={PIP}"], os_name="debian:bookworm", fmt=fmt)
    script = _segment(recipe.text, fmt)
    env = _stubs(tmp_path)
    shell = ["sh", "-c", script] if fmt == "docker" else ["bash", "-e", "-c", script]
    proc = subprocess.run(shell, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    conda = (tmp_path / "conda.args").read_text().splitlines()
    python = (tmp_path / "python.args").read_text().splitlines()
    assert [w for w in conda if w] == ["install", "-y", "--name", "base", *CONDA.split()]
    assert [w for w in python if w] == ["-m", "pip", "install", "--no-cache-dir", *PIP.split()]
    # No redirection happened (`numpy<2` would read a file `2`, `>=5` create `=5`).
    assert not (tmp_path / "=5").exists()


HOSTILE = ['x"; rm -rf / #', "$(id)", "`id`", "a;b", "x'y", "a\\b", "{{ 7*7 }}", "a|b", "a&b", "x\ny"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("key", ["conda_install", "pip_install", "install_path", "conda_opts"])
def test_hostile_values_are_rejected(key, value):
    with pytest.raises(NdgenError, match=rf"--pkg miniconda: .*{key}"):
        render_recipe([f"miniconda,{key}={value}"], os_name="debian:bookworm")


def test_whole_recipe_parses_and_keeps_its_words():
    """bash -n on the %post and shlex on the pip command: the words are the packages."""
    recipe = render_recipe(
        [f"miniconda,conda_install={CONDA},pip_install={PIP}"], os_name="debian:bookworm", fmt="singularity"
    )
    post = recipe.text.split("%post\n", 1)[1].split("\n%runscript", 1)[0]
    assert subprocess.run(["bash", "-n"], input=post, text=True).returncode == 0
    line = recipe.text[recipe.text.index('bash -c "source activate') : recipe.text.index("# Clean up")]
    words = shlex.split(line.replace("\\\n", " "))
    assert words[:2] == ["bash", "-c"] and len(words) == 3
    inner = shlex.split(words[2].replace("\\\n", " "))
    assert inner[-len(PIP.split()) :] == PIP.split()


def test_path_with_spaces_is_refused_not_split():
    with pytest.raises(NdgenError, match="install_path .*whitespace"):
        render_recipe(["miniconda,install_path=/opt/my conda"], os_name="debian:bookworm")


def test_singularity_saves_valid_json(tmp_path):
    """Run the %post printf that writes /.reproenv.json; the file must parse."""
    recipe = render_recipe(
        ["ants", "jq,method=system", f"miniconda,conda_install={CONDA}"], os_name="ubuntu", fmt="singularity"
    )
    text = recipe.text
    printf = text[text.index("printf '{") : text.index("> /.reproenv.json")]
    out = tmp_path / "reproenv.json"
    subprocess.run(["bash", "-e", "-c", f"{printf} > {out}"], check=True, timeout=30)
    spec = json.loads(out.read_text())
    assert [i["name"] for i in spec["instructions"]][0] == "from_"
    commands = [i["kwds"].get("command", "") for i in spec["instructions"]]
    assert any("numpy<2" in c for c in commands)


@pytest.mark.parametrize("fmt", ["docker", "singularity"])
def test_reproduce_line_is_shell_quoted_and_reproduces(fmt):
    args = ["--pkg", "miniconda,conda_install=numpy scipy,pip_install=nipype[all]", "--os", "debian:bookworm"]
    if fmt == "singularity":
        args += ["--format", "singularity"]
    first = run_ndgen(*args, timeout=120)
    assert first.returncode == 0, first.stderr
    line = re.search(r"^# Reproduce: (.*)$", first.stdout, re.M).group(1)
    argv = shlex.split(line)
    assert argv[0] == "ndgen"
    again = run_ndgen(*argv[1:], timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
