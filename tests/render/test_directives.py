"""neurodocker's directive flags on `ndgen`: order kept, mixed with --pkg, and
instruction by instruction the same Dockerfile as `neurodocker generate docker`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurodocker_nd.cli import cli
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.maintain.equivalence import first_difference, instructions
from support import TESTS, run_ndgen


def neurodocker(args: list[str]) -> str:
    exe = Path(sys.executable).with_name("neurodocker")
    nd = str(exe) if exe.exists() else shutil.which("neurodocker")
    assert nd, "neurodocker (the reference) is not installed"
    proc = subprocess.run(
        [nd, "generate", "docker", "--pkg-manager", "apt", "--base-image", "debian:bookworm", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def ndgen(args: list[str]) -> str:
    result = CliRunner().invoke(cli, [*args, "--os", "debian:bookworm"])
    assert result.exit_code == 0, result.output
    return result.stdout


# Command lines as neurodocker users write them (neurocontainers' old build.sh files).
# (neurodocker args, ndgen args): identical except that templates are --pkg NAME,k=v.
COMMON = [
    ["--run", "mkdir -p /opt/x && echo ok > /opt/x/y", "--env", "A=1", "B=two words", "--workdir", "/opt/x"],
    [
        "--install",
        "git",
        "curl",
        "opts=--quiet",
        "--run-bash",
        "source /etc/os-release && echo $ID",
        "--user",
        "neuro",
        "--workdir",
        "/home/neuro",
        "--user",
        "root",
        "--copy",
        "a.txt",
        "b.txt",
        "/opt/",
    ],
    [
        "--env",
        "PATH=/opt/bin:$PATH",
        "--install",
        "jq",
        "--label",
        "maintainer=me",
        "org.x=y",
        "--arg",
        "V=1",
        "--entrypoint",
        "bash -c",
        "--run",
        "echo done",
    ],
]
LINES = [(a, a) for a in COMMON] + [
    (
        [
            "--run",
            "echo pre",
            "--miniconda",
            "version=latest",
            "conda_install=numpy",
            "--run",
            "python -V",
            "--env",
            "X=1",
        ],
        ["--run", "echo pre", "--pkg", "miniconda==latest,conda_install=numpy", "--run", "python -V", "--env", "X=1"],
    ),
]


@pytest.mark.parametrize("theirs_args, ours_args", LINES, ids=[f"line{i}" for i in range(len(LINES))])
def test_same_instructions_as_neurodocker_generate(theirs_args, ours_args):
    theirs, ours = neurodocker(theirs_args), ndgen(ours_args)
    # The deliberate differences (ndgen's labels, the SC2016-fixed entrypoint
    # snippet) are what first_difference discounts; nothing else may differ.
    assert len(instructions(ours)) >= 6
    assert first_difference(ours, theirs) is None


def test_order_is_kept_and_mixed_with_pkg(tmp_path, monkeypatch):
    monkeypatch.setenv("NDGEN_REGISTRY", str(TESTS / "golden" / "registry"))
    text = ndgen(["--run", "echo first", "--pkg", "jq,method=system", "--env", "A=1", "--run", "echo last"])
    ins = instructions(text)
    first = next(i for i, s in enumerate(ins) if s == "RUN echo first")
    jq = next(i for i, s in enumerate(ins) if "jq" in s and s.startswith("RUN"))
    env = ins.index('ENV A="1"')
    last = ins.index("RUN echo last")
    assert first < jq < env < last
    assert (
        "# Reproduce: ndgen --run 'echo first' --pkg jq,method=system --env A=1 --run 'echo last' --os debian:bookworm"
        in text
    )
    assert ins[-1] == 'ENTRYPOINT ["/neurodocker/startup.sh"]'


def test_pkg_only_output_unchanged_by_directive_support(monkeypatch):
    """Without directive flags the --pkg path is the golden one (tests/test_render.py)."""
    monkeypatch.setenv("NDGEN_REGISTRY", str(TESTS / "golden" / "registry"))
    golden = (TESTS / "golden" / "tinytool.debian-bookworm.Dockerfile").read_text()
    assert ndgen(["--pkg", "tinytool"]) == golden


BAD = [
    (["--run", "echo a\nFROM evil"], "--run 'echo a\\nFROM evil': contains a newline"),
    (["--env", "A=1\nRUN id"], "contains a newline"),
    (["--env", "A"], "--env 'A': expected KEY=VALUE"),
    (["--env", 'A=x"y'], "unpaired"),
    (["--copy", "only-one"], "--copy only-one: give at least one source and a destination"),
    (["--workdir", "/a b"], "must be one non-empty word"),
    (["--user", "x;id"], "contains ';'"),
    (["--run", "echo a\\"], "ends with a backslash"),
    (["--run-bash", "echo 'x'"], "single quote"),
    (["--install", "opts=-q"], "--install: no packages given"),
    (["--label", "a=b\rc"], "carriage return"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_directive_one_line_exit_2(tmp_path, args, message):
    out = tmp_path / "Dockerfile"
    proc = run_ndgen(*args, "--os", "debian", "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: ") and message in lines[0], proc.stderr
    assert not out.exists()


def test_directive_before_subcommand_is_refused():
    result = CliRunner().invoke(cli, ["--run", "echo", "list"])
    assert isinstance(result.exception, NdgenError) and "ndgen list has no --run option" in result.exception.message
