"""Issue 17, finding 12: a recipe `run:` starting with `--mount=…` became BuildKit RUN flags.

Shown by the audit: the build read a file of another local image (and could
share cache mounts with every build).  Only ndgen's own cache stage may emit RUN
flags; a user's RUN text never starts with an option, in either format.
"""

from __future__ import annotations

import io
import os
import subprocess
import uuid

import pytest

from neurodocker_nd.build.docker_build import BUILDKIT_CLI
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.render import steps as st
from neurodocker_nd.render.recipe import load_recipe
from support import RECIPE_HEAD, remove_images, run_ndgen, unique_tag

HEAD = RECIPE_HEAD

FLAGGED = [
    "--mount=type=bind,from=x,source=/,target=/x cat /x/etc/shadow",
    "  --network=host curl 127.0.0.1",
    '"--mount=type=cache,target=/root" true',
    "'--mount=type=cache,target=/root' true",
    "\\--mount=type=cache,target=/root true",
    "\\\n--mount=type=cache,target=/root true",
    "\n\n--security=insecure true",
    "# a comment\n--mount=type=secret,id=x cat /run/secrets/x",
]


@pytest.mark.parametrize("command", FLAGGED)
def test_a_run_step_never_starts_with_an_option(command):
    for shell in ("sh", "bash"):
        with pytest.raises(st.StepError, match="which Docker would read as a RUN flag"):
            st.Run(command.replace("'", "") if shell == "bash" else command, shell=shell)


def test_options_later_in_a_command_are_fine():
    assert st.Run("apt-get install -y --no-install-recommends jq").command
    assert st.Run("echo a\n--version").command  # not the first word: a shell line, not a RUN flag


def test_a_recipe_run_with_a_mount_flag_names_file_and_line(tmp_path):
    (tmp_path / "build.yaml").write_text(HEAD + '    - run:\n        - "--mount=type=bind,from=x,target=/x cat /x/s"\n')
    with pytest.raises(NdgenError, match=r"build\.yaml:9: run: the command starts with '--mount=type=bind"):
        load_recipe(tmp_path)


@pytest.mark.parametrize("flag", ["--run", "--run-bash"])
def test_a_run_flag_is_one_error_line(tmp_path, flag):
    out = tmp_path / "Dockerfile"
    proc = run_ndgen(flag, "--mount=type=cache,target=/root true", "--os", "debian", "-o", str(out), timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "RUN flag" in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.fixture
def secret_image(docker_client, base_image):
    """A local image holding a file no recipe may read."""
    tag = unique_tag("ndgen-test-sec12-secret")
    token = uuid.uuid4().hex
    dockerfile = f"FROM {base_image}\nRUN echo {token} > /secret.txt\n"
    docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none", pull=False
    )
    yield tag, token
    remove_images(docker_client, [tag])


@pytest.mark.docker
def test_a_recipe_build_cannot_read_another_local_image(tmp_path, docker_client, secret_image, base_image):
    secret_tag, token = secret_image
    mount = f"--mount=type=bind,from={secret_tag},source=/secret.txt,target=/s"
    # The threat is real on this engine: a raw BuildKit build with that flag prints the file.
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "Dockerfile").write_text(f"FROM {base_image}\nRUN {mount} cat /s\n")
    raw = subprocess.run(
        [BUILDKIT_CLI, "build", "--network", "none", "--pull=false", "--no-cache", "--progress", "plain", str(probe)],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        timeout=600,
    )
    assert raw.returncode == 0 and token in raw.stdout + raw.stderr, raw.stdout + raw.stderr
    # ndgen refuses the same RUN from a recipe, in both formats, before any build.
    recipe = tmp_path / "r"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(
        HEAD.replace("debian:bookworm", base_image) + f'    - run:\n        - "{mount} cp /s /leak.txt"\n'
    )
    for fmt in ("docker", "singularity"):
        tag = unique_tag("ndgen-test-sec12", fmt)
        try:
            proc = run_ndgen("build", str(recipe), "-t", tag, "--format", fmt, "--no-test", timeout=900)
            leaked = ""
            if proc.returncode == 0:
                leaked = docker_client.containers.run(
                    tag, ["/leak.txt"], entrypoint=["cat"], network_mode="none", remove=True
                ).decode()
            assert token not in leaked, f"{fmt}: the recipe read another image's file"
            assert proc.returncode == 2, proc.stdout + proc.stderr
            assert proc.stderr.count("\n") == 1 and "RUN flag" in proc.stderr, proc.stderr
        finally:
            remove_images(docker_client, [tag])
