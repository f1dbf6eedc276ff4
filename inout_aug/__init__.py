"""inout-aug: defective training images for industrial surface inspection (In&Out augmentation)."""

from inout_aug.augmenter import Augmented, Augmenter
from inout_aug.registry import create, get, list_augmenters, register

__version__ = "0.1.0"

__all__ = ["Augmented", "Augmenter", "create", "get", "list_augmenters", "register", "__version__"]
