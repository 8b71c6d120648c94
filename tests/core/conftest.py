"""Fixtures of the core tests (the root conftest has the engine's)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """ndgen's download cache (NDGEN_CACHE), empty, in the test's own directory."""
    root = tmp_path / "cache"
    monkeypatch.setenv("NDGEN_CACHE", str(root))
    return root
