"""core/jinjacache.py: compiled templates are reused across runs, only from a cache nobody else can write,
and code loaded from it is as sandboxed and bounded as freshly compiled code."""

from __future__ import annotations

import hashlib
import os

import pytest
from jinja2.sandbox import SecurityError

from neurodocker_nd.core import jinja, jinjacache
from support import run_ndgen

SOURCE = "{% for x in xs %}[{{ x }}]{% endfor %}"


@pytest.fixture
def compiles(tmp_path, monkeypatch) -> list[str]:
    """A private cache in the test's directory, an empty in-memory cache, and every compile recorded."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = jinja.environment()
    calls: list[str] = []
    real = env.compile

    def counting(source, *args, **kwargs):
        calls.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(env, "compile", counting)
    jinja.compiled.cache_clear()
    yield calls
    jinja.compiled.cache_clear()


def _fresh(source: str):
    """`jinja.compiled(source)` as a new process sees it: nothing in memory, the disk cache as it is."""
    jinja.compiled.cache_clear()
    return jinja.compiled(source)


def _entries() -> list[str]:
    return sorted(os.listdir(jinjacache.cache_dir()))


def _entry_path(source: str):
    return jinjacache.cache_dir() / jinjacache.key(source.encode(), jinja._fingerprint())


def test_a_second_run_loads_the_code_instead_of_compiling(compiles):
    assert _fresh(SOURCE).render(xs=[1, 2]) == "[1][2]"
    assert compiles == [SOURCE] and len(_entries()) == 1
    assert _fresh(SOURCE).render(xs=[3]) == "[3]"
    assert compiles == [SOURCE]  # loaded, not compiled
    mode = os.stat(jinjacache.cache_dir()).st_mode & 0o777
    assert mode == 0o700 and os.stat(_entry_path(SOURCE)).st_mode & 0o777 == 0o600


def test_cached_code_is_still_sandboxed_and_bounded(compiles):
    """The sandbox's checks are calls the compiled code makes at render time, and core.jinja's
    guards are written into the code: both hold for code loaded from the cache."""
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    huge = "{{ 'a' * 2000000 }}"
    for _ in range(2):
        with pytest.raises(SecurityError):
            _fresh(escape).render()
        with pytest.raises(jinja.RenderLimit):
            _fresh(huge).render()
        with jinja.deadline(-1), pytest.raises(jinja.RenderLimit):  # the for-loop's deadline guard
            _fresh(SOURCE).render(xs=[1])
    assert compiles == [escape, huge, SOURCE]  # the second round ran cached code


def _plant(source: str, code_source: str, padding: int = 0) -> None:
    """An entry for `source` whose code renders `code_source` (jinja2's checksum of `source`, a
    valid digest): what someone who can write into the cache directory could leave there."""
    _fresh(source)
    path = _entry_path(source)
    env = jinja.environment()
    cache = jinjacache._bytecode_cache()
    bucket = cache.get_bucket(env, path.name, None, source)
    bucket.code = env.compile(code_source)
    body = bucket.bytecode_to_string() + bytes(padding)  # jinja2 reads no further than the code
    path.write_bytes(hashlib.sha256(body).digest() + body)


@pytest.mark.parametrize("padding", [0, jinjacache.MAX_ENTRY_BYTES // 2])
def test_an_entry_of_ours_is_what_runs(compiles, padding):
    """The planted entry is loaded when it is ours: the foreign-entry tests below are not vacuous."""
    _plant(SOURCE, "planted", padding)
    assert _fresh(SOURCE).render(xs=[1]) == "planted"


@pytest.mark.parametrize("how", ["dir-open", "dir-symlink", "entry-symlink", "entry-foreign-owner", "entry-too-big"])
def test_an_entry_someone_else_could_have_written_is_never_loaded(compiles, tmp_path, how):
    _plant(SOURCE, "planted", padding=jinjacache.MAX_ENTRY_BYTES if how == "entry-too-big" else 0)
    directory, entry = jinjacache.cache_dir(), _entry_path(SOURCE)
    if how == "dir-open":
        directory.chmod(0o770)
    elif how == "dir-symlink":
        directory.rename(tmp_path / "elsewhere")
        directory.symlink_to(tmp_path / "elsewhere")
    elif how == "entry-symlink":
        entry.rename(directory / "target")
        entry.symlink_to(directory / "target")
    elif how == "entry-foreign-owner":
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(entry, 4242, 4242)
    assert _fresh(SOURCE).render(xs=[1]) == "[1]"
    assert len(compiles) == 3  # the first compile, the plant's first, and this one


@pytest.mark.parametrize("damage", ["flipped", "truncated", "empty", "garbage-with-digest", "other-source"])
def test_a_corrupt_or_stale_entry_is_ignored_and_replaced(compiles, damage):
    _fresh(SOURCE)
    entry = _entry_path(SOURCE)
    data = entry.read_bytes()
    if damage == "flipped":
        data = data[:-7] + bytes([data[-7] ^ 1]) + data[-6:]
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    elif damage == "garbage-with-digest":
        body = b"j2 not a bucket"
        data = hashlib.sha256(body).digest() + body
    else:  # a valid entry of another source under this source's name: jinja2's checksum refuses it
        other = "{{ 'other' }}"
        _fresh(other)
        data = _entry_path(other).read_bytes()
    entry.write_bytes(data)
    assert _fresh(SOURCE).render(xs=[1]) == "[1]"
    assert compiles[-1] == SOURCE and compiles.count(SOURCE) == 2
    assert _fresh(SOURCE).render(xs=[2]) == "[2]" and compiles.count(SOURCE) == 2  # rewritten whole


def test_another_code_generator_does_not_reuse_entries(compiles, monkeypatch):
    _fresh(SOURCE)
    monkeypatch.setattr(jinja, "_fingerprint", lambda: b"another core/jinja.py")
    _fresh(SOURCE)
    assert compiles == [SOURCE, SOURCE] and len(_entries()) == 2


def test_an_unusable_cache_only_costs_a_compile(compiles, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # no directory can be made under a file
    for _ in range(2):
        assert _fresh(SOURCE).render(xs=[1]) == "[1]"
    assert compiles == [SOURCE, SOURCE]


def test_a_full_cache_is_emptied(compiles, monkeypatch):
    monkeypatch.setattr(jinjacache, "MAX_ENTRIES", 3)
    for i in range(3):
        _fresh(f"{{{{ {i} }}}}")
    assert len(_entries()) == 3
    _fresh(SOURCE)
    assert _entries() == [_entry_path(SOURCE).name]


def test_a_render_fills_the_cache_and_renders_the_same_from_it(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = run_ndgen("--pkg", "ants==2.6.2", "--os", "ubuntu", env=env)
    assert first.returncode == 0, first.stderr
    cached = sorted(os.listdir(tmp_path / "cache" / "ndgen" / "jinja-bytecode"))
    assert cached
    second = run_ndgen("--pkg", "ants==2.6.2", "--os", "ubuntu", env=env)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert sorted(os.listdir(tmp_path / "cache" / "ndgen" / "jinja-bytecode")) == cached
