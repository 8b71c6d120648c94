"""`ndgen modules` without the engine: DEPLOY_ENV_* names, option checks, values quoted for Lua and Tcl."""

from __future__ import annotations

import subprocess

import pytest

from neurodocker_nd.deliver import modulefiles
from neurodocker_nd.deliver.commands import DeployError, deploy_env
from support import one_error_line, run_ndgen, tool


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "BASH_ENV", "PROMPT_COMMAND", "LMOD_CMD"])
def test_deploy_env_may_not_steer_the_users_shell(name):
    # `module load` runs setenv in the user's shell: an image must not choose its loader or PATH.
    with pytest.raises(DeployError, match=f"DEPLOY_ENV_{name} would set {name}"):
        deploy_env({f"DEPLOY_ENV_{name}": "BASEPATH/evil", "DEPLOY_ENV_FSLDIR": "BASEPATH/opt/fsl"}, "img:1")


def test_deploy_env_keeps_the_tools_variables_sorted():
    env = {"DEPLOY_ENV_SPMMCRCMD": "BASEPATH/run_spm12.sh script", "DEPLOY_ENV_FSLDIR": "BASEPATH/opt/fsl", "X": "y"}
    assert deploy_env(env, "img:1") == (("FSLDIR", "BASEPATH/opt/fsl"), ("SPMMCRCMD", "BASEPATH/run_spm12.sh script"))


@pytest.mark.parametrize("key", ["DEPLOY_ENV_", "DEPLOY_ENV_A-B", "DEPLOY_ENV_1X"])
def test_deploy_env_name_must_be_a_variable(key):
    with pytest.raises(DeployError, match="does not name a variable"):
        deploy_env({key: "v"}, "img:1")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--format", "lmod"], "--format lmod needs --tech"),
        (["--format", "tcl", "--tech", "apptainer"], "--tech apptainer needs --sif PATH"),
        (["--format", "lmod", "--tech", "docker", "--sif", "/x.sif"], "--sif applies to --tech apptainer|singularity"),
        (["--format", "lmod", "--tech", "singularity", "--sif", "x.sif"], "--sif 'x.sif': expected an absolute path"),
        (["--format", "shpc", "--tech", "docker"], "--tech does not apply to --format shpc"),
        (["--format", "lmod", "--tech", "docker", "--maintainer", "me"], "--maintainer applies only to --format shpc"),
    ],
)
def test_options_that_do_not_fit_are_refused_before_any_work(tmp_path, args, needle):
    out = tmp_path / "m"
    one_error_line(run_ndgen("modules", "some/image:1", *args, "-o", str(out)), needle)
    assert not out.exists()


# Every character a value may hold that Lua or Tcl treat specially, each control character among them.
HOSTILE = 'a"b\\c$d[e]f{g}h\nj' + "".join(chr(c) for c in range(1, 0x20)) + "\x7f07 ]===] ]] é"


def test_lua_string_reads_back_verbatim_in_lua():
    # Lmod's Lua (Debian's lmod depends on lua5.3): the value Lua sees is the image's, byte for byte.
    lua = tool("lua5.3")
    proc = subprocess.run([lua, "-e", f"io.write({modulefiles._lua_string(HOSTILE)})"], capture_output=True, check=True)
    assert proc.stdout == HOSTILE.encode()


def test_tcl_string_reads_back_verbatim_in_tcl(tmp_path):
    # The Tcl modulefile's strings are read by a real Tcl (Lmod's tcl2lua runs tclsh).
    script = tmp_path / "t.tcl"
    script.write_text(
        f"fconfigure stdout -translation binary -encoding utf-8\nputs -nonewline {modulefiles._tcl_string(HOSTILE)}\n"
        f"proc p {{ }} {{\n    puts -nonewline {modulefiles._tcl_string('{')}\n}}\np\n",
        encoding="utf-8",
    )
    proc = subprocess.run([tool("tclsh"), str(script)], capture_output=True, check=True)
    assert proc.stdout == HOSTILE.encode() + b"{"


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("x", ("sha256:" + "a" * 64, True)),  # Docker Hub's library/x, however the engine spelled it
        ("library/x", ("sha256:" + "a" * 64, True)),
        ("other/x", ("sha256:" + "b" * 64, True)),
        ("quay.io/x", ("sha256:" + "c" * 64, False)),  # pulled from elsewhere: only the image ID is known
    ],
)
def test_shpc_digest_is_the_registry_digest_of_that_repository(repo, expected):
    from neurodocker_nd.deliver.commands import Deploy
    from neurodocker_nd.deliver.shpc import digest

    deploy = Deploy(
        image=f"{repo}:1",
        image_id="sha256:" + "c" * 64,
        repo_digests=("docker.io/other/x@sha256:" + "b" * 64, "x@sha256:" + "a" * 64),  # other/x first
        commands=("t",),
        env=(),
        readme="",
    )
    assert digest(deploy, repo) == expected
