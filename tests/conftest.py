"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module: tiny diffusion models run fastest so, and two threads crawl on a
    busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
