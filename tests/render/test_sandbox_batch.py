"""Issue 22: a recipe's template methods render in one forked worker, not one each, with the
outcome each would have had alone: the same text, and the same error line for a bad one."""

from __future__ import annotations

import os

import pytest

from neurodocker_nd.render import renderer, template_sandbox
from support import entry, run_ndgen


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """Every fork this process makes (the children exit through os._exit: only the parent appends)."""
    made: list[int] = []
    real = os.fork

    def counting() -> int:
        pid = real()
        if pid:
            made.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting)
    return made


def _render(fmt: str = "docker") -> str:
    return renderer.render_recipe(["ants==2.6.2", "fsl"], os_name="ubuntu", fmt=fmt).text


@pytest.mark.parametrize("fmt", ["docker", "singularity"])
def test_one_worker_renders_every_template_of_a_recipe(forks, monkeypatch, fmt):
    batched = _render(fmt)
    assert len(forks) == 1
    monkeypatch.setattr(renderer.RecipeRenderer, "_prerender", lambda *args: None)  # one worker per template
    forks.clear()
    assert _render(fmt) == batched
    assert len(forks) == 3  # _default, ants and fsl: what the single worker replaced


def test_a_failed_worker_leaves_each_template_to_its_own(forks, monkeypatch):
    expected = _render()
    real, calls = template_sandbox.isolated, []

    def first_dies(work, *args):
        calls.append(work)
        if len(calls) == 1:  # the batch: as if killed at its deadline
            raise template_sandbox.RenderLimit("the rendering process ended without a result")
        return real(work, *args)

    monkeypatch.setattr(template_sandbox, "isolated", first_dies)
    forks.clear()
    assert _render() == expected
    assert len(calls) == 4 and len(forks) == 3  # the batch, then each template alone


# A bad template first or second in a recipe: its error line is the one it gets alone.
BAD = {
    "unsafe": "{{ self.__init__.__globals__ }}",
    "undefined": "{{ self.nothing_here }}",
    "over-a-bound": "{{ 'a' * 3000000 }}",
    "raise": '{{ raise("refused by its author") }}',
}


@pytest.mark.parametrize("first", [True, False], ids=["bad-first", "bad-second"])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_template_in_a_batch_fails_as_it_does_alone(tmp_path, kind, first):
    reg = tmp_path / "reg"
    entry(reg, "fine", name="good")
    entry(reg, BAD[kind], name="evil")
    env = {"NDGEN_REGISTRY": str(reg)}
    alone = run_ndgen("--pkg", "evil==1.0", "--os", "debian:bookworm", env=env, timeout=120)
    pkgs = ["evil==1.0", "good==1.0"] if first else ["good==1.0", "evil==1.0"]
    batched = run_ndgen(*(a for p in pkgs for a in ("--pkg", p)), "--os", "debian:bookworm", env=env, timeout=120)
    assert alone.returncode == batched.returncode == 2, batched.stderr
    assert batched.stderr == alone.stderr and batched.stderr.count("\n") == 1
    assert "evil" in batched.stderr and batched.stdout == ""
