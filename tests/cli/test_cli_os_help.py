"""`--os` help lists every value --os accepts, in every command that takes it (issue 22)."""

from __future__ import annotations

import pytest

from neurodocker_nd.render.target import ALIASES, PRESETS, preset_names
from support import run_ndgen


@pytest.mark.parametrize("command", [(), ("build",)])
def test_os_help_lists_every_accepted_value(command):
    proc = run_ndgen(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    help_text = proc.stdout.split("--os OS[:VERSION]", 1)[1].split("--base-image", 1)[0]
    # Whole words: a value split across lines (click breaks words at hyphens) would be missing.
    words = {word.strip(",.[]") for word in help_text.split()}
    assert set(preset_names()) - words == set()


def test_short_names_are_shown_with_their_preset():
    proc = run_ndgen("--help")
    lines = proc.stdout.split("--os OS[:VERSION]", 1)[1].split("--base-image", 1)[0].splitlines()
    for alias, name in ALIASES.items():
        line = next(line for line in lines if f"{name} [" in line)
        assert alias in line.split(f"{name} [", 1)[1].split("]", 1)[0], (alias, line)
    assert all(any(name in line for line in lines) for name in PRESETS)
