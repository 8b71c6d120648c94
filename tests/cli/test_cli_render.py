"""The CLI: rendering, list/show/validate, and every bad input — through click's
runner and as a real subprocess (one stderr line, exit 2, no traceback, no file)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurodocker_nd.cli import cli
from neurodocker_nd.errors import NdgenError
from support import TESTS, run_ndgen

HERE = TESTS
FIXTURES = HERE / "golden" / "registry"


def broken_registry(tmp_path: Path, kind: str) -> Path:
    reg = tmp_path / f"reg-{kind}"
    shutil.copytree(FIXTURES, reg)
    meta = reg / "hello" / "meta.yaml"
    if kind == "yaml":
        meta.write_text("name: hello\ncommands: [hello\n")
    else:  # schema violation: test must be a string
        meta.write_text(meta.read_text().replace('test: "hello --version"', "test: [1, 2]"))
    return reg


# (id, args, NDGEN_REGISTRY kind or None, text the one error line must contain)
BAD = [
    ("unknown-package", ["--pkg", "antz", "--os", "ubuntu"], None, "unknown package 'antz'; did you mean: ants?"),
    (
        "unknown-version",
        ["--pkg", "hello==3.0", "--os", "ubuntu"],
        None,
        "unknown version '3.0'; available: 2.12.1, 2.10, 2.9, latest",
    ),
    ("unknown-os", ["--pkg", "ants", "--os", "windows"], None, "unknown OS 'windows'"),
    ("malformed-pkg", ["--pkg", "ants,version", "--os", "ubuntu"], None, "malformed --pkg 'ants,version'"),
    ("unknown-argument", ["--pkg", "ants,prefix=/x", "--os", "ubuntu"], None, "unknown template argument 'prefix'"),
    (
        "metachar",
        ["--pkg", "ants,install_path=/opt/a;id", "--os", "ubuntu"],
        None,
        "value of install_path contains ';'",
    ),
    ("subshell", ["--pkg", "ants,install_path=$(id)", "--os", "ubuntu"], None, "value of install_path contains '$'"),
    (
        "newline",
        ["--pkg", "ants,install_path=/opt/a\nRUN id", "--os", "ubuntu"],
        None,
        "value of install_path contains a newline",
    ),
    ("no-os", ["--pkg", "ants"], None, "no OS given"),
    (
        "bad-base-image",
        ["--pkg", "ants", "--base-image", "ubuntu\nRUN id", "--pkg-manager", "apt"],
        None,
        "is not a Docker image reference",
    ),
    ("unknown-method", ["--pkg", "hello,method=source", "--os", "ubuntu"], None, "unknown method 'source'"),
    ("malformed-yaml", ["--pkg", "hello", "--os", "ubuntu"], "yaml", "hello/meta.yaml:3: malformed YAML"),
    (
        "schema-violation",
        ["--pkg", "hello", "--os", "ubuntu"],
        "schema",
        "hello/meta.yaml:5: test: [1, 2] is not of type 'string'",
    ),
]


@pytest.fixture
def env(tmp_path, monkeypatch):
    def make(kind):
        reg = broken_registry(tmp_path, kind) if kind else FIXTURES
        monkeypatch.setenv("NDGEN_REGISTRY", str(reg))
        return {**os.environ, "NDGEN_REGISTRY": str(reg)}

    return make


@pytest.mark.parametrize("case, args, kind, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_runner(tmp_path, env, case, args, kind, message):
    env(kind)
    out = tmp_path / "out" / "Dockerfile"
    out.parent.mkdir()
    result = CliRunner().invoke(cli, [*args, "-o", str(out)])
    assert result.exit_code != 0
    assert isinstance(result.exception, NdgenError), result.exception
    assert message in result.exception.message
    assert "\n" not in result.exception.message
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("case, args, kind, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_subprocess(tmp_path, env, case, args, kind, message):
    environ = env(kind)
    out = tmp_path / "out" / "Dockerfile"
    out.parent.mkdir()
    proc = run_ndgen(*args, "-o", str(out), environ=environ)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert list(out.parent.iterdir()) == []


def test_render_as_typed_with_console_script(tmp_path):
    """`ndgen --pkg ants --os ubuntu` exactly as typed, via the installed script."""
    script = Path(sys.executable).with_name("ndgen")  # a venv's bin/ need not be on PATH
    ndgen = str(script) if script.exists() else shutil.which("ndgen")
    assert ndgen, "the ndgen console script is not installed"
    proc = subprocess.run([ndgen, "--pkg", "ants", "--os", "ubuntu"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "\nFROM ubuntu:24.04\n" in proc.stdout and "ants" in proc.stdout and proc.stderr == ""


def test_output_file_equals_stdout(tmp_path, env):
    env(None)
    out = tmp_path / "ants.def"
    runner = CliRunner()
    r1 = runner.invoke(
        cli, ["--pkg", "ants", "--pkg", "tinytool", "--os", "debian", "--format", "singularity", "-o", str(out)]
    )
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(cli, ["--pkg", "ants", "--pkg", "tinytool", "--os", "debian", "--format", "singularity"])
    assert out.read_text() == r2.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["ants.def"]  # no temp files left


def test_template_alert_is_a_note_not_a_prompt(tmp_path):
    """neurodocker prompts to confirm FSL's licence alert; ndgen renders and tells on stderr."""
    out = tmp_path / "Dockerfile"
    proc = run_ndgen("--pkg", "fsl", "--os", "ubuntu", "-o", str(out), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("ndgen: note: fsl: FSL is non-free.") and proc.stderr.count("\n") == 1
    assert "FROM ubuntu:24.04" in out.read_text()


def test_existing_output_untouched_on_error(tmp_path, env):
    env(None)
    out = tmp_path / "Dockerfile"
    out.write_text("keep me\n")
    result = CliRunner().invoke(cli, ["--pkg", "antz", "--os", "ubuntu", "-o", str(out)])
    assert result.exit_code != 0 and out.read_text() == "keep me\n"


def test_rendering_does_not_import_docker_sdk():
    code = (
        "import sys\nfrom neurodocker_nd.cli import main\n"
        "main(['--pkg', 'ants', '--os', 'ubuntu', '-o', '/dev/null'])\n"
        "print('docker' in sys.modules, 'reprozip' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


# ---- list / show / validate


def test_list_json(env):
    env(None)
    result = CliRunner().invoke(cli, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["ants"]["source"] == "upstream" and rows["ants"]["versions"][0] == "2.6.2"
    assert rows["jq"]["source"] == "both" and rows["jq"]["methods"] == ["binaries", "source", "system"]
    assert rows["hello"]["source"] == "registry"
    assert rows["tinytool"] == {**rows["tinytool"], "methods": ["system"], "versions": [], "source": "registry"}
    for r in rows.values():
        assert {"name", "versions", "methods", "source"} <= set(r)


def test_list_table_subprocess():
    proc = run_ndgen("list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["NAME", "SOURCE", "METHODS", "DEFAULT"]
    assert any(line.split()[0] == "ants" for line in proc.stdout.splitlines()[1:])


def test_show(env):
    env(None)
    result = CliRunner().invoke(cli, ["show", "ants"])
    assert result.exit_code == 0
    assert "versions: 2.6.2, 2.6.1" in result.stdout and "(default: 2.6.2)" in result.stdout
    assert "install_path [default: /opt/ants-{{ self.version }}]" in result.stdout
    assert "method=source [apt, yum]" in result.stdout
    result = CliRunner().invoke(cli, ["show", "tinytool"])
    assert "apt: dcmtk" in result.stdout and "commands: dcmdump" in result.stdout
    assert "adds the NeuroDebian repository first" in result.stdout
    data = json.loads(CliRunner().invoke(cli, ["show", "jq", "--json"]).stdout)
    assert data["arguments"]["system"]["pkg_managers"] == ["apt", "yum"]
    assert data["test"] == "jq --version"


def test_show_unknown_subprocess(env):
    environ = env(None)
    proc = run_ndgen("show", "helo", environ=environ)
    assert proc.returncode == 2 and proc.stderr == "ndgen: error: unknown package 'helo'; did you mean: hello?\n"


def test_validate_whole_registry(env):
    env(None)
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: 22 entries (24 files) valid; 8 test renders")


def test_validate_project_registry_subprocess():
    proc = run_ndgen("validate", env={"NDGEN_REGISTRY": None})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: ")


@pytest.mark.parametrize(
    "kind, message",
    [("yaml", "meta.yaml:3: malformed YAML"), ("schema", "meta.yaml:5: test: [1, 2] is not of type 'string'")],
)
def test_validate_reports_file_and_line(tmp_path, env, kind, message):
    environ = env(kind)
    reg = Path(environ["NDGEN_REGISTRY"])
    for args in (["validate"], ["validate", str(reg / "hello" / "meta.yaml")], ["validate", str(reg / "hello")]):
        proc = run_ndgen(*args, environ=environ)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and message in proc.stderr and str(reg / "hello") in proc.stderr


def test_validate_user_template_ok(tmp_path):
    result = CliRunner().invoke(
        cli, ["validate", str(FIXTURES / "hello" / "template.yaml"), str(FIXTURES / "tinytool")]
    )
    assert result.exit_code == 0 and result.stdout == "ok: 2 file(s) valid; 2 test renders\n"


def test_validate_entry_directory_test_renders_it(tmp_path):
    entry = tmp_path / "hello"
    shutil.copytree(FIXTURES / "hello", entry)
    tpl = entry / "template.yaml"
    tpl.write_text(tpl.read_text().replace("{{ self.install_path }}/bin", "{{ self.prefix }}/bin"))
    proc = run_ndgen("validate", str(entry))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"ndgen: error: {tpl}: template error") and proc.stderr.count("\n") == 1


def test_package_names_are_case_insensitive(env):
    env(None)
    result = CliRunner().invoke(cli, ["--pkg", "ANTs", "--os", "ubuntu"])
    assert result.exit_code == 0 and "# Reproduce: ndgen --pkg ants==2.6.2 --os ubuntu:24.04" in result.stdout


def test_output_to_a_device_writes_through_it_and_keeps_the_device(tmp_path):
    # `-o /dev/null` as root once replaced the machine's /dev/null with a plain file
    # (atomic rename over a device node). A FIFO stands in for the device here.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    result = CliRunner().invoke(cli, ["--pkg", "jq", "--os", "debian", "-o", str(fifo)])
    text = reader.communicate(timeout=30)[0].decode()
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and text.startswith("# Generated by ndgen")
