"""core/schemamemo.py: a passed schema check is remembered by content; a failed one never is."""

from __future__ import annotations

import pytest

from neurodocker_nd.core import schemamemo


@pytest.fixture
def schema(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "schema.json"
    path.write_text('{"type": "object"}')
    return path


def _counting(calls: list, fail: bool = False):
    def check() -> None:
        calls.append(1)
        if fail:
            raise ValueError("bad")

    return check


def test_a_pass_is_remembered_for_the_same_data_and_schema(schema, tmp_path):
    calls: list = []
    for _ in range(3):
        schemamemo.checked({"a": [1, 2]}, schema, _counting(calls))
    assert len(calls) == 1
    schemamemo.checked({"a": [1, 3]}, schema, _counting(calls))  # other data
    other = tmp_path / "other.json"
    other.write_text('{"type": "array"}')
    schemamemo.checked({"a": [1, 2]}, other, _counting(calls))  # other schema
    assert len(calls) == 3


def test_a_failure_is_never_remembered(schema):
    calls: list = []
    for _ in range(2):
        with pytest.raises(ValueError, match="bad"):
            schemamemo.checked({"a": 1}, schema, _counting(calls, fail=True))
    assert len(calls) == 2 and not schemamemo.memo_dir().exists()


def test_data_without_a_canonical_form_is_always_checked(schema):
    calls: list = []
    for _ in range(2):
        schemamemo.checked({1.5: "x", "b": "y"}, schema, _counting(calls))  # keys of mixed types
    assert len(calls) == 2


def test_an_unwritable_cache_only_means_checking_again(schema, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file: no directory can be made under it
    calls: list = []
    for _ in range(2):
        schemamemo.checked({"a": 1}, schema, _counting(calls))
    assert len(calls) == 2
