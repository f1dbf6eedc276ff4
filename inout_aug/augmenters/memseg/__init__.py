"""MemSeg's per-region defect simulation: Perlin masks (noise), anomaly sources (textures, structure), the blend."""

from inout_aug.augmenters.memseg.region import MemSegRegion

__all__ = ["MemSegRegion"]
