"""Adapters that put any inout-aug augmenter where users already work: albumentations, kornia, anomalib.

Each lives in its own module. The albumentations and kornia adapters import their library on import, and a missing
one raises an ImportError naming the extra (``pip install "inout-aug[albumentations]"``, ``[kornia]``); the anomalib
adapter needs only torch (it matches anomalib's interface without importing it).
"""

from __future__ import annotations

from inout_aug.core.augmenter import Augmenter
from inout_aug.core.registry import create


def checked_augmenter(augmenter: object, adapter: str) -> Augmenter:
    """``augmenter`` if it is an inout-aug Augmenter built with ``p=1`` (the adapter ``adapter`` takes the
    probability), or the one a registry name builds with its defaults; a TypeError or ValueError saying what to
    build otherwise."""
    if isinstance(augmenter, str):
        augmenter = create(augmenter)
    if not isinstance(augmenter, Augmenter):
        raise TypeError(f"augmenter must be an inout_aug Augmenter or a registry name, got {type(augmenter).__name__}")
    if augmenter.p < 1:
        raise ValueError(f"build the augmenter with p=1 (got p={augmenter.p}) and give p to {adapter}")
    return augmenter
