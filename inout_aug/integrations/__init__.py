"""Adapters that put any inout-aug augmenter where users already work: albumentations, kornia, anomalib.

Each lives in its own module. The albumentations adapter imports albumentations on import, and a missing one raises an
ImportError naming the extra (``pip install "inout-aug[albumentations]"``); the kornia adapter uses kornia, a core
dependency; the anomalib adapter needs only torch (it matches anomalib's interface without importing it).
"""
