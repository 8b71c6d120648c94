"""`ndgen modules` on the real engine and Debian's Lmod: modules load, wrappers run the container's commands.

One small image built from the debootstrapped base (a shell tool and a link in
DEPLOY_PATH, DEPLOY_BINS, DEPLOY_ENV_*, a /README.md, OCI labels) and three
broken copies of it, all removed at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from support import RECIPE_HEAD, one_error_line, remove_images, run_ndgen, unique_tag

pytestmark = pytest.mark.docker

# Debian 12's lmod package (scripts/test.sh installs it): the shell integration `module` needs.
LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")

GOOD = """\
FROM {base}
RUN mkdir -p /opt/t/bin \\
 && printf '#!/bin/sh\\necho "ttool $#"; for a in "$@"; do echo "[$a]"; done; echo "FOO=$DEPLOY_ENV_FOO"\\n' \\
      > /opt/t/bin/ttool && chmod 755 /opt/t/bin/ttool \\
 && ln -s /usr/bin/md5sum /opt/t/bin/tsum \\
 && printf 'data\\n' > /opt/t/bin/notexec \\
 && printf '#!/bin/sh\\n' > /opt/t/bin/.hidden && chmod 755 /opt/t/bin/.hidden \\
 && printf '# ttools\\nA test tool: `ttool ARGS` {{x [y] "$z".\\n' > /README.md
ENV PATH=/opt/t/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    DEPLOY_PATH=/opt/t/bin DEPLOY_BINS=hostname:ls \\
    DEPLOY_ENV_FOO=BASEPATH/opt/t DEPLOY_ENV_QUOTED='say "hi" $HOME [x] {{y}}'
LABEL org.opencontainers.image.authors="T Tester <t@example.org>" \\
      org.opencontainers.image.description="ttools for ndgen's tests" \\
      org.opencontainers.image.url="https://example.org/ttools"
"""
BAD_BINS = "FROM {good}\nENV DEPLOY_BINS='hostname;reboot'\n"
BAD_FILE = "FROM {good}\nRUN printf '#!/bin/sh\\n' > '/opt/t/bin/x$(y)' && chmod 755 '/opt/t/bin/x$(y)'\n"
BAD_README = "FROM {good}\nRUN printf 'see ]===] here\\n' >> /README.md\n"
QUOTED = 'say "hi" $HOME [x] {y}'


def _build(client, dockerfile: str, tag: str) -> str:
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True)
    return tag


@pytest.fixture(scope="module")
def images(docker_client, base_image):
    made: list[str] = []
    try:
        good = _build(docker_client, GOOD.format(base=base_image), unique_tag("ndgen-test-modules", "1.0"))
        made.append(good)
        for key, text in (("bins", BAD_BINS), ("file", BAD_FILE), ("readme", BAD_README)):
            made.append(_build(docker_client, text.format(good=good), unique_tag(f"ndgen-test-modules-{key}", "1.0")))
        yield dict(zip(("good", "bins", "file", "readme"), made, strict=True))
    finally:
        remove_images(docker_client, reversed(made))


def _made(image: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    """`ndgen modules IMAGE ARGS -o OUT`, which must succeed."""
    proc = run_ndgen("modules", image, *args, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return proc


def _name(tag: str) -> str:
    return tag.split(":")[0]


def _lmod(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """`script` in a bash that has Lmod's `module` (as a login shell on a cluster has it)."""
    assert LMOD_INIT.is_file(), "Debian's lmod is not installed (scripts/test.sh installs it)"
    return subprocess.run(
        ["bash", "-c", f"source {LMOD_INIT}\nset -e\n{script}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith(("LMOD", "MODULE"))},
    )


def _docker_run(image: str, *argv: str) -> str:
    return subprocess.run(
        ["docker", "run", "--rm", image, *argv], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def test_lmod_module_runs_the_command_in_the_container_through_docker(images, tmp_path):
    image = images["good"]
    out = tmp_path / "modules"
    _made(image, out, "--tech", "docker", "--format", "lmod")
    name = _name(image)
    # The commands: DEPLOY_PATH's executables (a link to one counts) and DEPLOY_BINS, minus
    # system commands (ls) — not the plain file, not the hidden one.
    wrappers = sorted(p.name for p in (out / name / "1.0.bin").iterdir())
    assert wrappers == ["hostname", "tsum", "ttool"]
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.txt").write_text("the caller's file\n")
    args = ["a", "b c", "$HOME", "*"]
    script = f"""
        module use {shlex.quote(str(out))}
        module -t avail 2>&1
        echo ---
        module load {name}/1.0
        echo "FOO=$FOO"
        printf 'QUOTED=%s\\n' "$QUOTED"
        echo ---
        ttool {shlex.join(args)}
        echo ---
        tsum input.txt
    """
    run = _lmod(script, work)
    assert run.returncode == 0 and run.stdout.count("---\n") == 3, (run.stdout, run.stderr)
    avail, env, via_module, digest = run.stdout.split("---\n")
    # Lmod sees the modulefile only, not the wrappers beside it.
    assert [line for line in avail.splitlines() if line.startswith(name)] == [f"{name}/", f"{name}/1.0"]
    # DEPLOY_ENV_*: BASEPATH is the container's root for the docker backend; values kept verbatim.
    assert env.splitlines() == ["FOO=/opt/t", f"QUOTED={QUOTED}"]
    assert via_module == _docker_run(image, "ttool", *args)
    # The caller's directory is bound at the same path and is the working directory.
    assert digest == f"{hashlib.md5((work / 'input.txt').read_bytes()).hexdigest()}  input.txt\n"


def test_tcl_modulefile_loads_in_lmod(images, tmp_path):
    image = images["good"]
    out = tmp_path / "modules"
    _made(image, out, "--tech", "podman", "--format", "tcl")
    name = _name(image)
    modulefile = out / name / "1.0"
    assert modulefile.read_text().startswith("#%Module1.0\n")
    run = _lmod(
        f"""module use {shlex.quote(str(out))}; module load {name}/1.0
        echo "FOO=$FOO"; printf 'QUOTED=%s\\n' "$QUOTED"; command -v ttool; module help {name}/1.0 2>&1""",
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[:3] == ["FOO=/opt/t", f"QUOTED={QUOTED}", str(out / name / "1.0.bin" / "ttool")]
    assert 'A test tool: `ttool ARGS` {x [y] "$z".' in run.stdout  # Tcl's special characters, escaped
    wrapper = (out / name / "1.0.bin" / "ttool").read_text()
    assert (
        'exec podman run --rm -i --user "$(id -u):$(id -g)" -v "$PWD:$PWD" -w "$PWD" '
        f"--entrypoint '' {image} ttool \"$@\"" in wrapper
    )


@pytest.mark.parametrize("tech", ["apptainer", "singularity"])
def test_apptainer_wrappers_run_exec_cleanenv_with_pwd_bound(images, tmp_path, tech):
    image = images["good"]
    out, sif = tmp_path / "modules", "/cvmfs/sites/t tools_1.0.sif"
    _made(image, out, "--tech", tech, "--sif", sif, "--format", "lmod")
    bindir = out / _name(image) / "1.0.bin"
    for wrapper in bindir.iterdir():
        assert subprocess.run(["bash", "-n", str(wrapper)], capture_output=True).returncode == 0, wrapper
    # A stand-in for the runtime, which cannot be installed here: it records its argv.
    fake = tmp_path / "fakebin"
    fake.mkdir()
    record = tmp_path / "argv"
    (fake / tech).write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > {shlex.quote(str(record))}\n")
    (fake / tech).chmod(0o755)
    real = tmp_path / "real dir"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)  # the caller stands in a symlinked directory: bound as its target
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "PWD": str(tmp_path / "link")}
    subprocess.run([str(bindir / "ttool"), "a", "b c", "$x"], cwd=tmp_path / "link", env=env, check=True, timeout=30)
    argv = record.read_bytes().split(b"\0")[:-1]
    expected = [
        "--silent",
        "exec",
        "--cleanenv",
        "--bind",
        str(real),
        "--pwd",
        str(real),
        sif,
        "ttool",
        "a",
        "b c",
        "$x",
    ]
    assert [a.decode() for a in argv] == expected
    # BASEPATH is the container's path, as transparent-singularity writes it.
    assert f'setenv("FOO", "{sif}/opt/t")' in (out / _name(image) / "1.0.lua").read_text()


def test_shpc_entry_validates_against_shpc_schema(images, tmp_path):
    from shpc.main.schemas import containerConfig

    image = images["good"]
    out = tmp_path / "registry"
    proc = _made(image, out, "--format", "shpc")
    data = yaml.safe_load((out / _name(image) / "container.yaml").read_text())
    jsonschema.validate(data, containerConfig)
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert data == {
        "docker": _name(image),
        "url": "https://example.org/ttools",
        "maintainer": "T Tester <t@example.org>",
        "description": "ttools for ndgen's tests",
        "latest": {"1.0": image_id},
        "tags": {"1.0": image_id},
        "aliases": {"hostname": "hostname", "tsum": "tsum", "ttool": "ttool"},
        "env": {"FOO": "/opt/t", "QUOTED": QUOTED},
    }
    # Built here, never pushed: no registry digest, and ndgen says what it wrote instead.
    assert "has no registry digest" in proc.stderr and proc.stderr.startswith("ndgen: note:")


def test_recipe_dir_names_the_image_its_build_tags(images, tmp_path, docker_client):
    name = unique_tag("ndgen-test-modules-recipe")
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    head = RECIPE_HEAD.replace("name: r", f"name: {name}").replace('version: "1"', 'version: "2.5"')
    readme = "structured_readme:\n  description: From the recipe.\n  documentation: https://example.org/recipe-docs\n"
    (recipe / "build.yaml").write_text(readme + head + '    - run: ["true"]\n')
    missing = run_ndgen("modules", str(recipe), "--tech", "docker", "--format", "lmod", "-o", str(tmp_path / "m"))
    one_error_line(missing, f"{name}:2.5", "not on this engine")
    docker_client.images.get(images["good"]).tag(name, "2.5")
    try:
        proc = run_ndgen("modules", str(recipe), "--tech", "docker", "--format", "lmod", "-o", str(tmp_path / "m"))
        shpc_run = run_ndgen("modules", str(recipe), "--format", "shpc", "-o", str(tmp_path / "s"))
    finally:
        remove_images(docker_client, [f"{name}:2.5"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m" / name / "2.5.lua").is_file()
    assert shpc_run.returncode == 0, shpc_run.stderr
    data = yaml.safe_load((tmp_path / "s" / name / "container.yaml").read_text())
    # The recipe's words before the image's labels; the maintainer only the labels know.
    assert (data["description"], data["url"]) == ("From the recipe.", "https://example.org/recipe-docs")
    assert data["maintainer"] == "T Tester <t@example.org>" and data["docker"] == name


def test_a_module_directory_grows_and_keeps_earlier_modules(images, tmp_path):
    out = tmp_path / "modules"
    _made(images["good"], out, "--tech", "docker", "--format", "lmod")
    _made(images["good"], out, "--tech", "docker", "--format", "tcl")
    name = _name(images["good"])
    assert (out / name / "1.0.lua").is_file() and (out / name / "1.0").is_file()
    manifest = json.loads((out / ".ndgen-modules").read_text())["files"]
    assert f"{name}/1.0.lua" in manifest and f"{name}/1.0" in manifest
    # A module file removed by hand is forgotten, not an error, on the next run.
    (out / name / "1.0").unlink()
    _made(images["good"], out, "--tech", "docker", "--format", "lmod")
    manifest = json.loads((out / ".ndgen-modules").read_text())["files"]
    assert f"{name}/1.0.lua" in manifest and f"{name}/1.0" not in manifest


# --------------------------------------------------------------------------- bad input


def _refused(args: list[str], out: Path, *needles: str) -> str:
    before = sorted(p.relative_to(out.parent).as_posix() for p in out.parent.rglob("*"))
    line = one_error_line(run_ndgen("modules", *args, "-o", str(out)), *needles)
    after = sorted(p.relative_to(out.parent).as_posix() for p in out.parent.rglob("*"))
    assert after == before, "something was written"
    return line


def test_image_without_deploy_variables_is_refused(base_image, tmp_path):
    _refused([base_image, "--tech", "docker", "--format", "lmod"], tmp_path / "m", base_image, "DEPLOY_BINS")


@pytest.mark.parametrize(("key", "culprit"), [("bins", "'hostname;reboot'"), ("file", "'x$(y)'")])
def test_command_name_with_shell_metacharacters_is_refused(images, tmp_path, key, culprit):
    _refused([images[key], "--tech", "docker", "--format", "lmod"], tmp_path / "m", culprit, "command name")


def test_readme_that_would_end_lmod_help_is_refused(images, tmp_path):
    _refused([images["readme"], "--tech", "docker", "--format", "lmod"], tmp_path / "m", "]===]", "/README.md")


def test_output_directory_with_foreign_files_is_refused(images, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    _refused([images["good"], "--tech", "docker", "--format", "lmod"], out, "notes.txt", "did not write")
    assert (out / "notes.txt").read_text() == "mine\n"


def test_image_the_engine_does_not_have_is_refused(tmp_path):
    ghost = unique_tag("ndgen-test-modules-ghost", "1.0")
    _refused([ghost, "--tech", "docker", "--format", "lmod"], tmp_path / "m", ghost, "not on this engine")
