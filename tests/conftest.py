"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def magnetic_tile() -> Path:
    """The real magnetic tile data set (INOUT_AUG_MAGNETIC_TILE); the test is skipped without it."""
    path = os.environ.get("INOUT_AUG_MAGNETIC_TILE")
    if not path or not Path(path).is_dir():
        pytest.skip("INOUT_AUG_MAGNETIC_TILE is not set to the magnetic tile data folder")
    return Path(path)
