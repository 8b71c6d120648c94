"""Issue 22, "Options are never silently ignored": ndgen's own command line.

An option before a subcommand, a conflicting --pkg-manager, an empty value:
each either applies or is one `ndgen: error:` line. The Reproduce line renders
the same file again, and an error line stays short whatever it echoes.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest

from neurodocker_nd.cli import cli, main
from neurodocker_nd.cli.options import EatAllOption
from support import run_ndgen

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "ndtool")


def _error(proc, *needles: str) -> str:
    """The one stderr line of a usage error (exit 2, nothing on stdout)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[:300], proc.stderr)
    assert proc.stdout == "", proc.stdout[:300]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------ options before a subcommand


def test_format_before_recipe_names_the_command_line(tmp_path):
    line = _error(run_ndgen("--format", "singularity", "recipe", RECIPE, cwd=tmp_path, timeout=120))
    suggested = f"ndgen recipe {RECIPE} --format singularity"
    assert line == f"ndgen: error: --format belongs after the subcommand: {suggested}"
    # The suggestion is a working command line: it renders the Singularity file.
    again = run_ndgen(*shlex.split(suggested)[1:], cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "Bootstrap: docker" in again.stdout


def test_output_before_recipe_writes_nothing(tmp_path):
    line = _error(run_ndgen("-o", "x.def", "recipe", RECIPE, cwd=tmp_path, timeout=120))
    assert line.endswith(f"-o belongs after the subcommand: ndgen recipe {RECIPE} -o x.def"), line
    assert not (tmp_path / "x.def").exists()


def test_pkg_before_list_does_not_point_to_a_list_option():
    line = _error(run_ndgen("--pkg", "ants", "list", timeout=120), "ndgen list has no --pkg option")
    assert "ndgen list --pkg" not in line


def _group_options() -> list[click.Option]:
    return [p for p in cli.params if isinstance(p, click.Option) and p.name not in ("help", "version")]


def _subcommands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    return {name: cmd for name in cli.list_commands(ctx) if (cmd := cli.get_command(ctx, name)) is not None}


def _value(option: click.Option) -> list[str]:
    if isinstance(option, EatAllOption):
        # It takes every word up to the next option (neurodocker's nargs="*"),
        # the subcommand's name too: another option must end it.
        return ["x=1", "--format", "docker"]
    if isinstance(option.type, click.Choice):
        return [str(option.type.choices[0])]
    return ["x=1"]


@pytest.mark.parametrize("option", _group_options(), ids=lambda o: o.opts[-1])
def test_every_group_option_before_every_subcommand_is_an_error(option, capsys):
    """Each option of the default command, before each subcommand: moved or refused, never run."""
    for name, cmd in _subcommands().items():
        flag = max(option.opts, key=len)
        with pytest.raises(SystemExit) as exit_info:
            main([flag, *_value(option), name, "--help"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, (name, flag, err)
        has = {opt for p in cmd.params for opt in p.opts}
        if set(option.opts) & has and (not isinstance(option, EatAllOption) or "--format" in has):
            assert f" after the subcommand: ndgen {name} --help {flag}" in err, err
        else:
            assert f"ndgen: error: ndgen {name} has no {flag} option" in err, err


def test_several_options_move_together(capsys):
    with pytest.raises(SystemExit):
        main(["--pkg", "ants", "--os", "ubuntu", "--pkg", "fsl", "build", "-t", "x:1"])
    err = capsys.readouterr().err.strip()
    assert err == (
        "ndgen: error: --pkg, --os belong after the subcommand: ndgen build -t x:1 --pkg ants --os ubuntu --pkg fsl"
    )


# ------------------------------------------------------------ --pkg-manager with --os: one rule


@pytest.mark.parametrize(
    "where",
    [
        ["--os", "ubuntu", "--pkg-manager", "yum"],
        ["--os", "ubuntu", "--base-image", "myorg/ubuntu:1", "--pkg-manager", "yum"],
        ["--os", "rockylinux:9", "--base-image", "myorg/rocky:9", "--pkg-manager", "apt"],
    ],
    ids=["preset", "preset+base-image", "yum-preset+base-image"],
)
def test_pkg_manager_conflicting_with_os_is_an_error(where):
    _error(run_ndgen("--pkg", "ants", *where, timeout=120), f"--pkg-manager {where[-1]} does not match --os")


def test_pkg_manager_repeating_the_preset_is_accepted():
    proc = run_ndgen("--pkg", "ants", "--os", "ubuntu", "--base-image", "myorg/u:1", "--pkg-manager", "apt")
    assert proc.returncode == 0, proc.stderr
    assert "FROM myorg/u:1" in proc.stdout and "yum" not in proc.stdout


# ------------------------------------------------------------ the Reproduce line


REPRODUCE = [
    ["--pkg", "ants", "--os", "ubuntu"],
    ["--pkg", "ants", "--base-image", "rockylinux:9", "--pkg-manager", "yum"],
    ["--pkg", "ants", "--base-image", "ubuntu:22.04", "--pkg-manager", "apt"],
    ["--pkg", "ants", "--os", "rockylinux", "--base-image", "myorg/rocky:9", "--pkg-manager", "yum"],
    ["--pkg", "ants", "--os", "debian:12", "--base-image", "debian:bookworm"],
    ["--run", "echo hi", "--pkg", "miniconda,conda_install=numpy scipy", "--env", "A=1", "B=x y", "--os", "debian"],
    ["--pkg", "jq,method=system", "--os", "rockylinux:9", "--format", "singularity"],
    ["--pkg", "ants", "--base-image", "centos:7", "--pkg-manager", "yum", "--format", "singularity"],
]


@pytest.mark.parametrize("args", REPRODUCE, ids=[" ".join(a) for a in REPRODUCE])
def test_reproduce_line_renders_the_same_bytes(args):
    first = run_ndgen(*args, timeout=120)
    assert first.returncode == 0, first.stderr
    [line] = [x for x in first.stdout.splitlines() if x.startswith("# Reproduce: ")]
    command = shlex.split(line.removeprefix("# Reproduce: "))
    assert command[0] == "ndgen"
    again = run_ndgen(*command[1:], timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


# ------------------------------------------------------------ empty values


@pytest.mark.parametrize(
    "args",
    [
        ["--pkg", "ants", "--os", "ubuntu", "-o", ""],
        ["--pkg", "ants", "--os", "ubuntu", "--output="],
        ["recipe", RECIPE, "-o", ""],
        ["recipe", RECIPE, "--out", ""],
    ],
    ids=["-o", "--output=", "recipe -o", "recipe --out"],
)
def test_empty_output_path_is_an_error(args, tmp_path):
    _error(run_ndgen(*args, cwd=tmp_path, timeout=120), "empty path")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["method", "version", "install_path"])
def test_empty_pkg_argument_names_the_key(key):
    _error(run_ndgen("--pkg", f"ants,{key}=", "--os", "ubuntu", timeout=120), f"'{key}' has an empty value")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--os", ""], "unknown OS ''"),
        (["--os", "ubuntu", "--base-image", ""], "--base-image ''"),
    ],
    ids=["--os", "--base-image"],
)
def test_empty_os_or_base_image_is_an_error(args, needle):
    _error(run_ndgen("--pkg", "ants", *args, timeout=120), needle)


# ------------------------------------------------------------ long values in error lines

BIG = "a" * 100_000


@pytest.mark.parametrize(
    "args",
    [
        ["--pkg", BIG, "--os", "ubuntu"],
        ["--pkg", "ants", "--os", BIG],
        ["--pkg", "ants", "--os", "ubuntu", "--pkg-manager", BIG],  # click's usage error
        ["--pkg", "ants", "--os", "ubuntu", "--" + BIG],
        ["--pkg", f"ants,method={BIG}", "--os", "ubuntu"],
    ],
    ids=["--pkg", "--os", "--pkg-manager", "unknown option", "method="],
)
def test_long_value_is_cut_in_the_error_line(args):
    line = _error(run_ndgen(*args, timeout=120), "… (100000 characters)")
    assert len(line.encode()) < 500, len(line)


def test_long_value_with_spaces_is_cut_too():
    words = " ".join(["a"] * 50_000)
    line = _error(run_ndgen("--pkg", "ants", "--os", "ubuntu", "--env", words, timeout=120))
    assert len(line.encode()) < 1200, len(line)


def test_bounded_keeps_short_words_and_the_punctuation_around_a_cut():
    from neurodocker_nd.errors import bounded

    url = "https://example.org/" + "p" * 150  # under 200 characters: whole
    assert bounded(f"fetch {url} failed") == f"fetch {url} failed"
    assert bounded(f"unknown OS '{'b' * 300}'; presets: x") == f"unknown OS '{'b' * 100}… (300 characters)'; presets: x"
