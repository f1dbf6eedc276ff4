"""Adapters that put any inout-aug augmenter where users already work: albumentations, kornia, anomalib.

Each lives in its own module. The albumentations and kornia adapters import their library on import, and a missing
one raises an ImportError naming the extra (``pip install "inout-aug[albumentations]"``, ``[kornia]``); the anomalib
adapter needs only torch (it matches anomalib's interface without importing it).
"""
