"""The README's install section names the extra of every command that needs one (cli/extras.py)."""

from __future__ import annotations

import re

from neurodocker_nd.cli.extras import COMMANDS, EXTRAS
from support import REPO

# Options that need an extra their subcommand does not (checked where the option is handled).
OPTIONS = {"check-urls --write": "upstream"}


def _install_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("**Install and run**", 1)[1].split("**Test**", 1)[0]
    return " ".join(section.split())


def test_readme_says_which_commands_need_which_extra():
    section = _install_section()
    # "`build` (the Docker SDK) for `ndgen build`, `base` and `test`; …": one clause per extra.
    clauses = {m[1]: m[2] for m in re.finditer(r"`(\w+)` \([^)]*\) for ([^;.]*)", section)}
    assert set(clauses) == set(EXTRAS), clauses
    for command, extra in {**COMMANDS, **OPTIONS}.items():
        assert re.search(rf"`(ndgen )?{re.escape(command)}`", clauses[extra]), (command, extra, clauses[extra])
    # check-urls runs on the core install; only --write is in an extra's clause.
    assert "`check-urls`" in section.split("The rest needs an extra")[0]
