"""Issue 17, finding 6 (class): `--pkg` values refuse every line boundary, as every single-line value.

spec.py kept its own control-character pattern (C0 and DEL only), so a
template argument could carry U+2028, U+2029, U+0085 or another C1 control —
line boundaries for str.splitlines re-parsers — into the recipe and its
`# Reproduce:` comment.  It now uses steps.control_char / steps.describe_char,
the one check and the one describer of every other single-line value.
"""

from __future__ import annotations

import pytest

from neurodocker_nd.render import steps as st
from neurodocker_nd.render.recipe import load_recipe
from neurodocker_nd.render.renderer import render
from support import run_ndgen

CASES = [
    # (--pkg, what the one error line says)
    (
        "miniconda,version=latest,env_name=a\u2028b",
        "--pkg miniconda: value of env_name contains a line separator (U+2028)",
    ),
    (
        "miniconda,version=latest,env_name=a\u2029b",
        "--pkg miniconda: value of env_name contains a paragraph separator (U+2029)",
    ),
    (
        "miniconda,version=latest,env_name=a\x85b",
        "--pkg miniconda: value of env_name contains a next-line character (U+0085)",
    ),
    ("miniconda,version=latest,env_name=a\x9bb", "--pkg miniconda: value of env_name contains '\\x9b' (U+009B)"),
    (
        "miniconda,version=latest,conda_install=numpy\u2028scipy",
        "--pkg miniconda: value of conda_install contains a line separator (U+2028)",
    ),
    ("jq,version=1\u2028x", "--pkg jq: value of version contains a line separator (U+2028)"),
    ("jq==1\u2028x", "--pkg jq: version '1\\u2028x' contains a line separator (U+2028)"),
]


@pytest.mark.parametrize("pkg, message", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_a_line_boundary_in_a_pkg_value_is_one_error_line(tmp_path, pkg, message):
    out = tmp_path / "Dockerfile"
    proc = run_ndgen("--pkg", pkg, "--os", "debian", "-o", str(out), timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"ndgen: error: {message}"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_the_old_messages_stay(tmp_path):
    proc = run_ndgen("--pkg", "ants,install_path=/opt/a\tb", "--os", "debian", timeout=300)
    assert proc.returncode == 2 and "value of install_path contains a tab" in proc.stderr, proc.stderr
    proc = run_ndgen("--pkg", "ants,install_path=/opt/a;id", "--os", "debian", timeout=300)
    assert proc.returncode == 2 and "value of install_path contains ';';" in proc.stderr, proc.stderr


@pytest.mark.parametrize("sep", ["\u2028", "\x85"])
def test_the_reproduce_comment_holds_no_line_boundary(tmp_path, sep):
    # A recipe path is the user's (any bytes a file name may hold): shown escaped, on one line.
    recipe = tmp_path / f"a{sep}b"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(
        "name: r\nversion: '1'\nreadme: hi\nbuild:\n  kind: neurodocker\n  base-image: debian:bookworm\n"
        "  add-default-template: false\n  directives:\n    - run: ['true']\n"
    )
    for fmt in ("docker", "singularity"):
        text = render(load_recipe(recipe), fmt)
        assert not any(ch in text for ch in st.LINE_BREAKS.replace("\n", "")), fmt
        reproduce = text.split("\n")[1]
        escaped = "a\\u2028b" if sep == "\u2028" else "a\\x85b"
        assert reproduce.startswith("# Reproduce: ndgen recipe ") and escaped in reproduce, reproduce
