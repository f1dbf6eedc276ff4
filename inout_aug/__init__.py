"""inout-aug: defective training images for industrial surface inspection (In&Out augmentation).

The augmenter classes are imported on first use, so ``import inout_aug`` loads only the core.
"""

from __future__ import annotations

import importlib
from typing import Any

from inout_aug.core.augmenter import Augmented, Augmenter, Outcome
from inout_aug.core.registry import create, get, list_augmenters, register

__version__ = "0.1.0"

#: Public classes imported lazily: name -> module.
_LAZY = {
    "InOutMix": "inout_aug.augmenters.inout",
    "MemSegRegion": "inout_aug.augmenters.memseg",
    "DiffusionDefect": "inout_aug.augmenters.diffusion",
    "Transplant": "inout_aug.augmenters.transplant",
}

__all__ = ["Augmented", "Augmenter", "Outcome", "create", "get", "list_augmenters", "register", "__version__",
           *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'inout_aug' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
