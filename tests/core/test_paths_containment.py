"""core.paths' two containment checks: resolved (`resolve_inside`) and lexical (`is_relative_inside`)."""

from __future__ import annotations

import os

import pytest

from neurodocker_nd.core.paths import is_relative_inside, resolve_inside


def test_resolve_inside_follows_links_and_refuses_what_leaves(tmp_path):
    root = tmp_path / "recipe"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_text("x")
    os.symlink("sub/f", root / "in-link")
    os.symlink("/etc/passwd", root / "out-link")
    os.symlink("..", root / "up")
    assert resolve_inside(root, "sub/f") == (root / "sub" / "f").resolve()
    assert resolve_inside(root, "in-link") == (root / "sub" / "f").resolve()
    assert resolve_inside(root, "sub/../sub/f") == (root / "sub" / "f").resolve()
    assert resolve_inside(root, ".") == root.resolve()  # the root itself is inside
    assert resolve_inside(root, "missing") == root.resolve() / "missing"  # existence is the caller's question
    for outside in ("out-link", "../x", "up/recipe-sibling", "/etc/passwd", str(tmp_path)):
        assert resolve_inside(root, outside) is None, outside
    assert resolve_inside(root, str(root / "sub")) == (root / "sub").resolve()  # absolute, but below root


@pytest.mark.parametrize(
    ("value", "inside"),
    [
        ("out", True),
        ("a/b/c", True),
        ("./a", True),
        ("a/./b", True),
        ("", False),
        (".", False),
        ("./", False),
        ("/abs", False),
        ("..", False),
        ("a/../b", False),
        ("a/..", False),
    ],
)
def test_is_relative_inside_is_lexical(value, inside):
    assert is_relative_inside(value) is inside
