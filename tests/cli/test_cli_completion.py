"""Shell completion through the console script: `main` bypasses click's `cli.main()`,
which is where click normally honours `_NDGEN_COMPLETE`."""

from __future__ import annotations

import os
import subprocess
import sys

from neurodocker_nd.render.target import preset_names
from support import download_entry, tool


def _ndgen(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("ndgen")], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_bash_source_prints_the_completion_function():
    proc = _ndgen({"_NDGEN_COMPLETE": "bash_source"})
    assert proc.returncode == 0, proc.stderr
    assert "_ndgen_completion()" in proc.stdout and "complete -o nosort -F _ndgen_completion ndgen" in proc.stdout


def test_subcommands_and_options_complete():
    proc = _ndgen({"_NDGEN_COMPLETE": "bash_complete", "COMP_WORDS": "ndgen mi", "COMP_CWORD": "1"})
    assert (proc.returncode, proc.stdout.split()) == (0, ["plain,minify"]), proc.stderr
    proc = _ndgen({"_NDGEN_COMPLETE": "bash_complete", "COMP_WORDS": "ndgen minify --tra", "COMP_CWORD": "2"})
    assert proc.stdout.split() == ["plain,--tracer"], proc.stderr


def test_an_unknown_shell_is_one_line():
    proc = _ndgen({"_NDGEN_COMPLETE": "tcsh_source"})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "_NDGEN_COMPLETE=tcsh_source" in proc.stderr, proc.stderr


def _complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What `ndgen` offers for the last of `words` (bash's protocol: one `TYPE,VALUE` a line)."""
    cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    proc = _ndgen({"_NDGEN_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": cword, **(env or {})})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.split()


def test_pkg_completes_registry_names(tmp_path):
    assert _complete("ndgen --pkg an") == ["plain,ants"]
    assert _complete("ndgen --pkg AN") == ["plain,ants"]  # --pkg names are case-insensitive
    assert _complete("ndgen build --pkg mrtrix") == ["plain,mrtrix3"]
    assert _complete("ndgen matrix --out m --pkg mrtrix") == ["plain,mrtrix3"]
    assert _complete("ndgen --pkg ants,meth") == []  # past the name: arguments are not completed
    # From the registry in use, not a fixed list: an entry of $NDGEN_REGISTRY completes.
    download_entry(tmp_path / "reg", {"1.0": "https://example.org/dltest-1.0"})
    assert _complete("ndgen --pkg dlt", {"NDGEN_REGISTRY": str(tmp_path / "reg")}) == ["plain,dltest"]
    assert _complete("ndgen --pkg dlt", {"NDGEN_REGISTRY": str(tmp_path / "missing")}) == []


def test_os_completes_every_preset():
    assert _complete("ndgen --os ") == [f"plain,{name}" for name in preset_names()]
    assert _complete("ndgen --pkg ants --os rocky") == [
        f"plain,{name}" for name in preset_names() if name.startswith("rocky")
    ]


def test_completion_imports_no_template_machinery():
    """Completion is typed interactively: neither neurodocker nor the schema checker loads."""
    env = {"_NDGEN_COMPLETE": "bash_complete", "COMP_WORDS": "ndgen --pkg an", "COMP_CWORD": "2"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "neurodocker_nd.cli"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.split() == ["plain,ants"], proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "click.shell_completion" in imported  # the measurement sees the imports
    assert not {m for m in imported if m.split(".")[0] in {"neurodocker", "jsonschema", "jinja2", "docker"}}
