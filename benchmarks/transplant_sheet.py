"""Make docs/transplant-preview.png: procedural defects transplanted onto procedural surfaces.

Nothing comes from a real dataset: the surfaces are ``inout_aug.tools.surfaces`` (brushed steel, ceramic, copper)
and the "real" defects (dark pits and scratches on other surfaces) are drawn here from a seed, written as a
``defect/`` + ``masks/`` folder in a temporary directory and read back by :class:`Transplant`. Each row: the
source defect (4x), the target with the transplant, the transplant at 4x, and its mask (the blended region) in
red. Run from the repository root: ``.venv/bin/python benchmarks/transplant_sheet.py``.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_segmentation_masks, make_grid

from inout_aug.augmenters.transplant import Transplant
from inout_aug.core.io import write_png
from inout_aug.core.sample import as_bytes
from inout_aug.data.masks import bounding_box
from inout_aug.tools.surfaces import make_surfaces

SIZE, DEFECTS, ROWS = 160, 6, 6
ZOOM, TILE = 40, 160  # a 40-pixel window around each defect shown at 4x
SHEET = Path(__file__).resolve().parent.parent / "docs" / "transplant-preview.png"


def draw_defect(image: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (3, H, W) uint8 with a dark pit (even seeds) or a thin scratch (odd seeds), and its (H, W) mask."""
    g = torch.Generator().manual_seed(seed)
    h, w = image.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    cy, cx = h / 2 + 20 * (torch.rand((), generator=g) - 0.5), w / 2 + 20 * (torch.rand((), generator=g) - 0.5)
    if seed % 2 == 0:
        r = 4 + 4 * torch.rand((), generator=g)
        d = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt() / r
        depth = (1 - d ** 2).clamp(min=0) ** 0.7
    else:
        a = torch.rand((), generator=g) * math.pi
        length = 20 + 15 * torch.rand((), generator=g)
        along = (xs - cx) * a.cos() + (ys - cy) * a.sin()
        across = -(xs - cx) * a.sin() + (ys - cy) * a.cos()
        d = torch.maximum(across.abs() / 1.6, (along.abs() - length / 2).clamp(min=0) / 1.6)
        depth = (1 - d ** 2).clamp(min=0) * (0.7 + 0.3 * torch.cos(along / 3))
    out = image.float() / 255 * (1 - 0.75 * depth)
    return as_bytes(out.clamp(0, 1)), depth > 0.05


def _zoom(image: torch.Tensor, centre: tuple[int, int]) -> torch.Tensor:
    """The ``ZOOM`` window of a (3, H, W) image around ``centre`` (y, x), scaled to ``TILE`` (nearest)."""
    h, w = image.shape[-2:]
    top = min(max(centre[0] - ZOOM // 2, 0), h - ZOOM)
    left = min(max(centre[1] - ZOOM // 2, 0), w - ZOOM)
    window = image[..., top:top + ZOOM, left:left + ZOOM]
    return F.resize(window, [TILE, TILE], interpolation=F.InterpolationMode.NEAREST)


def main() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = make_surfaces(DEFECTS, (96, 96), seed=7)
        shown = {}
        for i, surface in enumerate(sources):
            image, mask = draw_defect(surface, i)
            name = f"{'scratch' if i % 2 else 'pit'}-{i}.png"
            write_png(image, root / "defect" / name)
            write_png(mask[None].to(torch.uint8) * 255, root / "masks" / name)
            top, left, bottom, right = bounding_box(mask)
            shown[name] = _zoom(image, ((top + bottom) // 2, (left + right) // 2))
        augmenter = Transplant(defects=root, seed=3)
        targets = make_surfaces(ROWS, (SIZE, SIZE), seed=11)
        out = augmenter.augment(targets)
    tiles = []
    for i in range(ROWS):
        drawn = out.params[i]
        centre = tuple(int(v) for v in drawn["centre"])
        full = F.resize(out.image[i], [TILE, TILE], antialias=True)
        zoomed = _zoom(out.image[i], centre)
        region = _zoom(out.mask[i][None].expand(3, -1, -1).to(torch.uint8), centre)[0] > 0
        tiles += [shown[drawn["defect"]], full, zoomed,
                  draw_segmentation_masks(zoomed, region, alpha=0.35, colors="red")]
        print(drawn)
    write_png(make_grid(tiles, nrow=4, padding=4, pad_value=255), SHEET)
    return SHEET


if __name__ == "__main__":
    print(main())
