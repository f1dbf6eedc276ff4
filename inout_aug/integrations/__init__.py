"""Adapters that put any inout-aug augmenter where users already work: albumentations, kornia, anomalib.

Each lives in its own module and imports its library on import; a missing library raises an ImportError that
names the extra to install (``pip install "inout-aug[albumentations]"``, ``[anomalib]``).
"""
