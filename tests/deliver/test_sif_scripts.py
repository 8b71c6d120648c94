"""The /.singularity.d scripts `ndgen sif` adds, run by the host's /bin/sh (no engine needed):
the runscript combines ENTRYPOINT, CMD and arguments as `docker run` does, in apptainer's default
(evaluating) mode and with SINGULARITY_NO_EVAL; the env script quotes every value."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from neurodocker_nd.deliver import singularityd
from neurodocker_nd.minify.model import ImageConfig

PRINT = ("printf", "<%s>")


def _run(script: Path, args: list[str], no_eval: bool) -> str:
    env = {"PATH": os.environ["PATH"], **({"SINGULARITY_NO_EVAL": "1"} if no_eval else {})}
    proc = subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("no_eval", [False, True], ids=["eval", "no-eval"])
@pytest.mark.parametrize(
    ("entrypoint", "cmd", "args", "want"),
    [
        (PRINT, None, [], "<>"),  # ENTRYPOINT only
        (PRINT, None, ["a", "b"], "<a><b>"),
        (None, (*PRINT, "x"), [], "<x>"),  # CMD only: args replace it
        (None, (*PRINT, "x"), ["printf", "[%s]", "y"], "[y]"),
        (PRINT, ("d1", "d2"), [], "<d1><d2>"),  # ENTRYPOINT + CMD: args replace CMD
        (PRINT, ("d1", "d2"), ["a"], "<a>"),
        (None, None, ["printf", "%s", "z"], "z"),  # neither: the arguments run
    ],
)
def test_runscript_combines_entrypoint_cmd_and_args_like_docker(tmp_path, entrypoint, cmd, args, want, no_eval):
    script = tmp_path / "runscript"
    script.write_text(singularityd.runscript(entrypoint, cmd))
    assert _run(script, args, no_eval) == want


def test_runscript_no_eval_keeps_arguments_verbatim(tmp_path):
    script = tmp_path / "runscript"
    script.write_text(singularityd.runscript(PRINT, ("it's",)))
    odd = ["a b", "$HOME", "`id`", "'q'", '"dq"', "back\\slash"]
    assert _run(script, odd, no_eval=True) == "".join(f"<{a}>" for a in odd)
    assert _run(script, [], no_eval=True) == "<it's>"
    assert _run(script, [], no_eval=False) == "<it's>"


def test_env_script_quotes_values_and_lets_the_caller_override(tmp_path):
    tricky = "a $HOME `id` \"q\" \\ 's' $(id)"
    env = (f"TRICKY={tricky}", "PATH=/opt/x/bin:/usr/bin:/bin", "KEEP=image", "EMPTY", "BAD-NAME=x", "DEPLOY_BINS=a:b")
    script = tmp_path / "10-docker2singularity.sh"
    script.write_text(singularityd.env_script(env))
    show = '. "$1"; printf "%s|" "$TRICKY" "$PATH" "$KEEP" "${EMPTY-unset}" "$DEPLOY_BINS"'
    proc = subprocess.run(
        ["/bin/sh", "-c", show, "sh", str(script)],
        capture_output=True,
        text=True,
        env={"PATH": "/caller/bin", "KEEP": "caller"},
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    # PATH is the image's; other variables are defaults the caller's values win over
    assert proc.stdout == f"{tricky}|/opt/x/bin:/usr/bin:/bin|caller||a:b|"
    assert "BAD-NAME" not in script.read_text()  # sh cannot export it: skipped as apptainer does


def test_every_added_script_parses(tmp_path):
    config = ImageConfig(image_id="sha256:0", name="x:1", env=("A=1",), entrypoint=("e",), cmd=("c",))
    meta = singularityd.build(config, "amd64")
    scripts = [f for f in meta.files if f.mode & 0o111]
    assert {f.path.rsplit("/", 1)[-1] for f in scripts} >= {"exec", "run", "shell", "test", "runscript"}
    for item in scripts:
        path = tmp_path / item.path.replace("/", "_")
        path.write_bytes(item.content)
        proc = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, (item.path, proc.stderr)
