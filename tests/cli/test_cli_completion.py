"""Shell completion through the console script: `main` bypasses click's `cli.main()`,
which is where click normally honours `_NDGEN_COMPLETE`."""

from __future__ import annotations

import os
import subprocess

from support import tool


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
