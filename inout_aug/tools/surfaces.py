"""Procedural defect-free surfaces (brushed metal, ceramic tile, copper foil) for the built-in demo."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from inout_aug.core.augmenter import mix_seed
from inout_aug.core.sample import as_bytes

# RGB tints of the materials the demo draws from.
MATERIALS = {
    "steel": (0.92, 0.94, 0.98),
    "ceramic": (0.86, 0.84, 0.80),
    "copper": (1.00, 0.72, 0.52),
}


def make_surfaces(n: int, size: tuple[int, int] = (256, 256), seed: int = 0) -> torch.Tensor:
    """``n`` (3, H, W) uint8 surfaces: a lit base tone, brushing streaks and fine grain.

    Surface ``i`` depends only on ``seed`` and ``i``, so a longer run starts with the same surfaces.
    """
    return torch.stack([_surface(size, torch.Generator().manual_seed(mix_seed(seed, i))) for i in range(n)])


def _surface(size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    h, w = size
    base = 0.35 + 0.3 * torch.rand(1, generator=g)
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    angle = torch.rand(1, generator=g) * 2 * torch.pi
    light = 0.12 * (ys * torch.sin(angle) + xs * torch.cos(angle))
    along_x = _stretched_noise(1, h, max(2, w // 48), (h, w), g)
    along_y = _stretched_noise(1, max(2, h // 48), w, (h, w), g)
    streaks = along_x if torch.rand(1, generator=g) < 0.5 else along_y
    grain = torch.randn(1, 1, h, w, generator=g)
    grey = base + light + 0.05 * streaks + 0.02 * grain
    tints = torch.tensor(list(MATERIALS.values()))
    tint = tints[torch.randint(len(tints), (1,), generator=g)].view(1, 3, 1, 1)
    return as_bytes(grey * tint, inplace=True)[0]


def _stretched_noise(n: int, h: int, w: int, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Gaussian noise drawn at (h, w) and stretched to ``size``: streaks along the stretched axis."""
    return nnf.interpolate(torch.randn(n, 1, h, w, generator=g), size=size, mode="bicubic", align_corners=False)
