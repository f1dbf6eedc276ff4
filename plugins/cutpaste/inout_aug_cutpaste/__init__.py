"""inout-aug-cutpaste: the CutPaste "scar" augmenter as an inout-aug plugin."""

from inout_aug_cutpaste.scar import CutPasteScar

__version__ = "0.1.0"

__all__ = ["CutPasteScar", "__version__"]
