"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _data_folder(variable: str, what: str) -> Path:
    path = os.environ.get(variable)
    if not path or not Path(path).is_dir():
        pytest.skip(f"{variable} is not set to the {what} folder")
    return Path(path).resolve()


@pytest.fixture
def magnetic_tile() -> Path:
    """The real magnetic tile data set (INOUT_AUG_MAGNETIC_TILE); the test is skipped without it."""
    return _data_folder("INOUT_AUG_MAGNETIC_TILE", "magnetic tile data")


@pytest.fixture
def textures() -> Path:
    """A folder of real CC0 texture photographs (INOUT_AUG_TEXTURES); the test is skipped without it."""
    return _data_folder("INOUT_AUG_TEXTURES", "texture")
