"""Issue 22: a cold render runs without the cyclic garbage collector; its template workers collect their own,
and a program calling ndgen's `main` in-process gets its collector back."""

from __future__ import annotations

import gc

import pytest

from neurodocker_nd.cli import main
from neurodocker_nd.render import template_sandbox


def _collector_seen_by(render_hook) -> list[bool]:
    seen: list[bool] = []
    real = template_sandbox.isolated

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    render_hook(spy)
    return seen


def test_a_render_pauses_the_collector_and_restores_it(monkeypatch, tmp_path):
    seen = _collector_seen_by(lambda spy: monkeypatch.setattr(template_sandbox, "isolated", spy))
    assert gc.isenabled()
    collections: list[int] = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start" and seen:  # from the render's worker on
            collections.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        main(["--pkg", "ants==2.6.2", "--os", "ubuntu", "-o", str(tmp_path / "Dockerfile")])
    finally:
        gc.callbacks.remove(watch)
    assert seen and not any(seen)  # paused while rendering
    assert gc.isenabled()  # and back for the caller
    # ... without a pass over everything the render made (it was moved out of the young
    # generation unscanned): that pass would cost what pausing saved.
    assert collections == []
    assert (tmp_path / "Dockerfile").read_text().startswith("#")


def test_a_failed_render_restores_the_collector(tmp_path):
    with pytest.raises(SystemExit):
        main(["--pkg", "no-such-package", "--os", "ubuntu", "-o", str(tmp_path / "Dockerfile")])
    assert gc.isenabled()


def test_a_worker_collects_even_when_its_parent_does_not():
    gc.disable()
    try:
        assert template_sandbox.isolated(gc.isenabled) is True
    finally:
        gc.enable()
