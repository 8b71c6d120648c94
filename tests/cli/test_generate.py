"""`ndgen generate docker|singularity`: neurodocker 2.1.2's command lines, unchanged, against the real
`neurodocker generate` — instruction by instruction, both formats — and the hints that lead
neurodocker users from ndgen's own syntax to it.

The reference renders with the same template text: where ndgen's registry overrides a template
(registry/<name>/template.yaml, whose meta says what it fixes) neurodocker is handed that file with
its own `--template-path`.  What may still differ is exactly the list in docs/render.md
("neurodocker's command lines"), which the equivalence helpers discount: the masthead, ndgen's
labels, the SC2016 entrypoint snippet, the saved-spec printf, checksums, and in Singularity the
ENV export, the COPY staging, `su - USER`, `"$@"` and `%help`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neurodocker_nd.maintain.equivalence import def_instructions, first_def_difference, first_difference, instructions
from support import REPO, one_error_line, run_ndgen

REGISTRY = REPO / "registry"

# neurodocker command lines (after `generate FORMAT`): templates with every kind of argument,
# mixed with every directive; versions pinned (neurodocker requires one; ndgen's default is
# its newest, which neurodocker may not have).
LINES = [
    "-p apt -b ubuntu:22.04 --ants version=2.4.3",
    '-p apt -b debian:bookworm --run "mkdir -p /opt/x" --env A=1 "B=two words" --workdir /opt/x --jq version=1.7.1',
    "-p apt -b debian:bookworm --install git curl opts=--quiet --user neuro --workdir /home/neuro --user root "
    "--copy a.txt b.txt /opt/",
    '-p apt -b ubuntu:22.04 --miniconda version=latest "conda_install=numpy scipy" pip_install=nibabel '
    '--run "python -V"',
    "-p yum -b centos:7 --ants version=2.3.4 method=binaries --env X=1",
    "-p apt -b debian:bullseye --dcm2niix version=v1.0.20220720 method=binaries --label maintainer=me org.x=y",
    '-p apt -b ubuntu:20.04 --fsl version=6.0.5.1 --arg V=1 --entrypoint "bash -c"',
    '-p apt -b debian:bookworm --mrtrix3 version=3.0.4 --run-bash "source /etc/os-release && echo ok"',
    "-p apt -b ubuntu:22.04 --afni method=binaries version=latest --workdir /work",
    "-p apt -b debian:bullseye --neurodebian os_codename=bullseye version=usa-nh --install dcm2niix",
    "-p apt -b ubuntu:22.04 --bids_validator version=1.13.0 --mricron version=1.0.20190902 --copy app.py /app.py",
    '-p yum -b rockylinux:9 --jq version=1.6 --run "echo hi" --user neuro',
    '-p apt -b debian:bookworm --ndfreeze date=20240101 --freesurfer version=7.4.1 --run "echo x"',
    "-p apt -b ubuntu:22.04 --matlabmcr version=2023b --spm12 version=r7771",
    "-p apt -b debian:bookworm --cat12 version=r1933_R2017b --petpvc version=1.2.4 --env FOO=bar",
    "-p apt -b debian:bookworm --niftyreg version=master --vnc passwd=secret --user neuro",
    "-p apt -b debian:bookworm --convert3d version=1.0.0 --add a.tar /opt/",  # docker only: see below
]
FORMATS = ("docker", "singularity")
CASES = [(line, fmt) for line in LINES for fmt in FORMATS if not (fmt == "singularity" and "--add" in line)]


def neurodocker_exe() -> str:
    exe = Path(sys.executable).with_name("neurodocker")
    found = str(exe) if exe.exists() else shutil.which("neurodocker")
    assert found, "neurodocker (the reference) is not installed"
    return found


def registry_templates(args: list[str], into: Path) -> Path:
    """The registry's own template files for the templates on the line, named as neurodocker registers them."""
    into.mkdir()
    for a in args:
        path = REGISTRY / a[2:] / "template.yaml"
        if a.startswith("--") and path.exists():
            shutil.copy(path, into / f"{a[2:]}.yaml")
    return into


def neurodocker(fmt: str, args: list[str], template_path: Path | None = None) -> subprocess.CompletedProcess:
    group = ["--template-path", str(template_path)] if template_path else []
    return subprocess.run(
        [neurodocker_exe(), "generate", *group, fmt, *args, "--yes"], capture_output=True, text=True, check=False
    )


def ndgen_generate(fmt: str, args: list[str]) -> subprocess.CompletedProcess:
    return run_ndgen("generate", fmt, *args, "--yes")


@pytest.mark.parametrize("line, fmt", CASES, ids=[f"{fmt}-{i}" for i, (_, fmt) in enumerate(CASES)])
def test_same_instructions_as_neurodocker(tmp_path, line, fmt):
    args = shlex.split(line)
    theirs = neurodocker(fmt, args, registry_templates(args, tmp_path / "templates"))
    assert theirs.returncode == 0, theirs.stderr[-800:]
    ours = ndgen_generate(fmt, args)
    assert ours.returncode == 0, ours.stderr
    if fmt == "docker":
        assert len(instructions(ours.stdout)) >= 5
        diff = first_difference(ours.stdout, theirs.stdout, ignore_checksums=True)
    else:
        assert len(def_instructions(ours.stdout, ndgen=True)) >= 5
        diff = first_def_difference(ours.stdout, theirs.stdout)
    assert diff is None, diff.line()


def test_registry_overrides_are_the_template_differences():
    """Without --template-path the reference uses neurodocker's templates: mrtrix3 differs exactly by
    the fix its registry meta names (LD_LIBRARY_PATH was '<install_path>/lib:$PATH')."""
    args = shlex.split("-p apt -b debian:bookworm --mrtrix3 version=3.0.4")
    theirs, ours = neurodocker("docker", args), ndgen_generate("docker", args)
    diff = first_difference(ours.stdout, theirs.stdout)
    assert diff is not None
    assert 'LD_LIBRARY_PATH="/opt/mrtrix3-3.0.4/lib:$LD_LIBRARY_PATH"' in (diff.ours or "")
    assert 'LD_LIBRARY_PATH="/opt/mrtrix3-3.0.4/lib:$PATH"' in (diff.theirs or "")


def test_json_is_reproenv_instructions_neurodocker_reads():
    """`--json` prints reproenv's instruction list; neurodocker's genfromjson renders it into ndgen's Dockerfile."""
    args = shlex.split("-p apt -b debian:bookworm --jq version=1.7.1 --run 'echo hi' --env A=1")
    ours = ndgen_generate("docker", [*args, "--json"])
    assert ours.returncode == 0, ours.stderr
    spec = json.loads(ours.stdout)
    assert spec["pkg_manager"] == "apt"
    assert [i["name"] for i in spec["instructions"]][:1] == ["from_"]
    text = ndgen_generate("docker", args).stdout
    replayed = subprocess.run(
        [neurodocker_exe(), "genfromjson", "docker"], input=ours.stdout, capture_output=True, text=True, check=True
    )
    assert first_difference(text, replayed.stdout, ignore_labels=False) is None


def test_reproduce_line_renders_the_same_file():
    args = shlex.split("-p yum -b centos:7 --ants version=2.3.4 --env X=1 --run 'echo a b'")
    for fmt in FORMATS:
        text = ndgen_generate(fmt, args).stdout
        line = next(ln for ln in text.splitlines() if ln.startswith("# Reproduce: ndgen "))
        again = run_ndgen(*shlex.split(line[len("# Reproduce: ndgen ") :]))
        assert again.returncode == 0, again.stderr
        assert again.stdout == text


def test_alert_is_a_note_and_never_a_prompt():
    """neurodocker asks to confirm FSL's licence unless --yes; ndgen never prompts (with or without --yes)."""
    proc = run_ndgen("generate", "docker", "-p", "apt", "-b", "debian:bookworm", "--fsl", "version=6.0.5.1", stdin=0)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("ndgen: note: fsl: ") and "FROM debian:bookworm" in proc.stdout


BAD = [
    (["-p", "apt", "-b", "a:1", "-b", "b:2", "--run", "x"], "-b/--base-image given 2 times"),
    (["-p", "apt", "-b", "debian:bookworm"], "nothing to generate"),
    (["-p", "apt", "-b", "debian:bookworm", "--ants", "2.4.3"], "--ants '2.4.3': expected KEY=VALUE"),
    (["-p", "apt", "-b", "debian:bookworm", "--miniconda", "version=latest", "conda_install=numpy>=1,<2"], "comma"),
    (["-p", "apt", "-b", "debian:bookworm", "--ants", "version=0.0.0"], "ants: unknown version '0.0.0'"),
    (["-p", "apt", "-b", "x", "--jq", "version=1.6", "--jq", "version=1.7.1"], "--jq given twice"),
    (["-p", "apt", "--run", "x"], "missing -b/--base-image IMAGE"),
    (["-b", "x", "--run", "x"], "missing -p/--pkg-manager apt|yum"),
    (["-p", "dnf", "-b", "x", "--run", "x"], "'dnf' is not one of 'apt', 'yum'"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_command_line_is_one_line(args, message):
    one_error_line(run_ndgen("generate", "docker", *args), message)


def test_add_in_singularity_is_refused_in_one_line():
    """neurodocker 2.1.2 fails with a traceback (reproenv has no Singularity ADD)."""
    one_error_line(
        run_ndgen("generate", "singularity", "-p", "apt", "-b", "debian:bookworm", "--add", "a.tar", "/opt/"),
        "--add a.tar /opt/: Singularity has no ADD",
    )


def test_template_path_is_refused_not_ignored(tmp_path):
    one_error_line(
        run_ndgen("generate", "--template-path", str(tmp_path), "docker", "-p", "apt", "-b", "x", "--run", "x"),
        "--template-path",
        "ndgen's registry",
    )
    one_error_line(
        run_ndgen("generate", "docker", "-p", "apt", "-b", "x", "--run", "x", env={"REPROENV_TEMPLATE_PATH": "/t"}),
        "REPROENV_TEMPLATE_PATH is set",
    )


def test_help_lists_template_flags_without_importing_neurodocker():
    for args in (["generate", "--help"], ["generate", "docker", "--help"]):
        proc = run_ndgen(*args)
        assert proc.returncode == 0, proc.stderr
        assert "--ants" in proc.stdout and "--minc-tools" in proc.stdout, proc.stdout
    code = (
        "import sys\nfrom neurodocker_nd.cli import main\n"
        "try:\n    main(['generate', 'singularity', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('neurodocker', 'jsonschema', 'jinja2')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]


# ---------------------------------------------------------------- ndgen's own syntax: the hints


def test_stray_key_value_after_pkg_says_the_comma_form():
    line = one_error_line(run_ndgen("--pkg", "ants", "version=2.4.3", "--os", "ubuntu"))
    assert line == "ndgen: error: 'version=2.4.3' after --pkg ants: write --pkg ants,version=2.4.3"
    one_error_line(
        run_ndgen("--pkg", "ants", "version=2.4.3", "method=binaries"), "write --pkg ants,version=2.4.3,method=binaries"
    )


def test_neurodocker_flags_without_generate_suggest_it():
    args = ["--pkg-manager", "apt", "--base-image", "ubuntu:22.04", "--ants", "version=2.4.3"]
    line = one_error_line(run_ndgen(*args), "--ants is neurodocker's syntax")
    suggested = line.split("runs as: ndgen ", 1)[1]
    assert suggested == "generate docker " + shlex.join(args)
    proc = run_ndgen(*shlex.split(suggested))  # and the suggestion works
    assert proc.returncode == 0 and "ants-2.4.3" in proc.stdout, proc.stderr
    one_error_line(run_ndgen("-p", "apt", "-b", "ubuntu:22.04", "--run", "x"), "-p is neurodocker's syntax")
    one_error_line(run_ndgen("--pkg", "ants", "--os", "ubuntu", "--bogus"), "No such option '--bogus'")


def test_add_in_ndgen_own_syntax_and_reproduce_line():
    proc = run_ndgen("--run", "echo a", "--add", "a.tar", "/opt/", "--os", "debian:bookworm")
    assert proc.returncode == 0, proc.stderr
    assert "ADD a.tar /opt/" in instructions(proc.stdout)
    assert "# Reproduce: ndgen --run 'echo a' --add a.tar /opt/ --os debian:bookworm\n" in proc.stdout
    one_error_line(run_ndgen("--add", "a.tar", "--os", "debian"), "--add a.tar: give one source")
