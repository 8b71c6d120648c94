"""`ndgen modules`' texts without the engine: which DEPLOY_ENV_* variables a module may set on the host."""

from __future__ import annotations

import pytest

from neurodocker_nd.deliver.commands import DeployError, deploy_env
from support import one_error_line, run_ndgen


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
