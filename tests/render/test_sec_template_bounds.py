"""Issue 17, finding 14: the one template sandbox is bounded in size and time.

A template that computes too much (`9**(9**9)`), allocates too much (`"a"*3000000000`)
or loops too long ends within seconds, one line, exit 2 — never a hang or an internal error.
"""

from __future__ import annotations

import pytest

from support import entry as _entry
from support import one_error_line as _one_error_line
from support import template_text as _template
from support import timed as _timed

# Each must end in a few seconds with one error line (on 157b632 the first and the nested
# loops hang, the others end in an internal error, exit 70).
HEAVY = {
    "power": "{{ 9**(9**9) }}",
    "repeat": '{{ "a"*3000000000 }}',
    # Rendered only when `{{ }}` is present (neurodocker's rule), so each loop carries one.
    "range": "{% for i in range(10**9) %}{{ i }}{% endfor %}",
    "nested-loops": "{{ self.version }}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
    "{% endfor %}",
    "ljust": '{{ "a".ljust(3000000000) }}',
    # 2**60 leaves through shared references: its repr is one C call no in-process check
    # interrupts; only the worker's deadline ends it.
    "shared-repr": "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}"
    "{% endfor %}{{ ns.l }}",
}
# The sandbox's deadline is 5 s per render; `validate` renders on apt and on yum.
FAST = 45.0


# ---------------------------------------------------------------- finding 14


@pytest.mark.parametrize("kind", sorted(HEAVY))
def test_heavy_registry_template_ends_fast_with_one_line(tmp_path, kind):
    entry = _entry(tmp_path / "reg", HEAVY[kind])
    for args, env in (
        (("--pkg", "evil==1.0", "--os", "debian:bookworm"), {"NDGEN_REGISTRY": str(entry.parent)}),
        (("validate", str(entry)), None),
    ):
        proc, took = _timed(*args, env=env)
        _one_error_line(proc, "evil")
        assert took < FAST, f"{kind}: ndgen {args[0]} took {took:.0f} s"


@pytest.mark.parametrize("kind", ["power", "repeat", "nested-loops"])
def test_heavy_recipe_template_ends_fast_with_one_line(tmp_path, kind):
    """The same through `ndgen recipe --templates DIR` (a recipe's `template:` directive)."""
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "evil.yaml").write_text(_template(HEAVY[kind]), encoding="utf-8")
    recipe = tmp_path / "r"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(
        "name: r\nversion: '1'\narchitectures: [x86_64]\nreadme: hi\nbuild:\n  kind: neurodocker\n"
        "  base-image: ubuntu:24.04\n  pkg-manager: apt\n  directives:\n"
        "    - template:\n        name: evil\n        version: '1.0'\n",
        encoding="utf-8",
    )
    proc, took = _timed("recipe", str(recipe), "--templates", str(tdir))
    _one_error_line(proc, "evil")
    assert took < FAST, f"{kind}: ndgen recipe took {took:.0f} s"


@pytest.mark.parametrize("kind", ["power", "repeat", "range", "ljust"])
def test_heavy_jinja_in_build_yaml_ends_fast_with_one_line(tmp_path, kind):
    """A build.yaml's own Jinja (not a template's) renders in the same bounded sandbox:
    on the old second factory `{{ 9**(9**9) }}` hung `ndgen recipe`, the repetition exit 70."""
    recipe = tmp_path / "r"
    recipe.mkdir()
    payload = HEAVY[kind].replace("'", "''")
    (recipe / "build.yaml").write_text(
        "name: r\nversion: '1'\narchitectures: [x86_64]\nreadme: hi\nbuild:\n  kind: neurodocker\n"
        "  base-image: ubuntu:24.04\n  pkg-manager: apt\n  directives:\n"
        f"    - run:\n        - 'echo {payload}'\n",
        encoding="utf-8",
    )
    proc, took = _timed("recipe", str(recipe))
    _one_error_line(proc, "build.yaml:11")
    assert took < FAST, f"{kind}: ndgen recipe took {took:.0f} s"


def test_bounded_sandbox_keeps_ordinary_templates_working():
    """Loops, `~`, `*`, `%`, filters and method calls within the bounds render as before."""
    from neurodocker_nd.core import jinja

    env = jinja.environment()
    text = env.from_string(
        "{% for p in 'a b'.split() %}{{ p ~ '-' ~ loop.index }}{% if not loop.last %},{% endif %}{% endfor %} "
        "{{ '%s=%d' % ('x', 2 ** 10) }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }} {{ ['q', 'r'] | join('/') }} "
        "{{ '6.0.7'.split('.') | map('int') | list >= [6, 0, 6] }} {{ '{}!'.format('hi') }}"
    ).render()
    assert text == "a-1,b-2 x=1024 ababab [1, 2, 3] q/r True hi!"
    with pytest.raises(jinja.RenderLimit):
        env.from_string("{{ 'x' | center(10 ** 9) }}").render()
    with pytest.raises(jinja.RenderLimit):
        env.from_string("{{ (2).to_bytes(10 ** 9, 'big') }}").render()
