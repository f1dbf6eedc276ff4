"""Where a diffusion model paints a defect: real defect masks, turned, scaled and placed at random."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as F

from inout_aug.core.io import list_images, read_image
from inout_aug.data.layouts import LayoutError, detect_layout, open_dataset, read_mask


class RealMasks:
    """Real defect masks (from the defective images of a dataset's ``split``, only those of ``defect_type`` when
    given, or a folder of mask images), each drawn at random, flipped and turned by a multiple of 90 degrees,
    scaled by ``scale`` (a range) and placed at a random spot. The training split by default: defect shapes of
    the test split would leak into the training data. ``options`` go to the dataset layout (e.g. the
    ``test_fraction``, ``seed`` or ``fold`` the training run splits the data with: they decide the split).

    Masks are decoded once and kept cropped to their defect's bounding box; ``types`` holds each one's defect
    type (None for a folder of mask images).
    """

    def __init__(self, source: str | Path, scale: tuple[float, float] = (0.75, 1.25), defect_type: str | None = None,
                 split: str = "train", options: dict[str, Any] | None = None):
        path = Path(source)
        self.source = path
        self.scale = (float(scale[0]), float(scale[1]))
        cropped = [(_crop(mask), kind) for mask, kind in _load_masks(path, defect_type, split, options or {})]
        kept = [(shape, kind) for shape, kind in cropped if shape.numel()]
        if not kept:
            raise ValueError(f"no defect pixels in the masks of {path}: give a dataset with masked defects "
                             "or a folder of mask images (white = defect)")
        self.shapes = [shape for shape, _ in kept]
        self.types: list[str | None] = [kind for _, kind in kept]

    def __repr__(self) -> str:
        return f"RealMasks({str(self.source)!r}, {len(self.shapes)} masks)"

    def draw(self, n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """(n, H, W) bool masks, one randomly chosen, turned, scaled and placed real defect shape each."""
        return self.draw_typed(n, size, generator)[0]

    def draw_typed(self, n: int, size: tuple[int, int],
                   generator: torch.Generator) -> tuple[torch.Tensor, list[str | None]]:
        """The masks of :meth:`draw` (the same draws) and the defect type of each one's shape."""
        h, w = size
        out = torch.zeros((n, h, w), dtype=torch.bool)
        pick = torch.randint(len(self.shapes), (n,), generator=generator).tolist()
        turns = torch.randint(4, (n,), generator=generator).tolist()
        flips = (torch.rand(n, generator=generator) < 0.5).tolist()
        scales = torch.empty(n).uniform_(*self.scale, generator=generator).tolist()
        spots = torch.rand((n, 2), generator=generator).tolist()
        for i in range(n):  # a handful of masks per batch of slow diffusion samples
            shape = torch.rot90(self.shapes[pick[i]], turns[i], (0, 1))
            shape = shape.flip(1) if flips[i] else shape
            fit = min(scales[i], h / shape.shape[0], w / shape.shape[1])
            size_i = [max(1, round(shape.shape[0] * fit)), max(1, round(shape.shape[1] * fit))]
            shape = F.resize(shape[None].float(), size_i, interpolation=F.InterpolationMode.NEAREST)[0] > 0.5
            top = int(spots[i][0] * (h - shape.shape[0] + 1))
            left = int(spots[i][1] * (w - shape.shape[1] + 1))
            out[i, top:top + shape.shape[0], left:left + shape.shape[1]] = shape
        return out, [self.types[k] for k in pick]


def _load_masks(path: Path, defect_type: str | None, split: str,
                options: dict[str, Any]) -> list[tuple[torch.Tensor, str | None]]:
    """Defect masks with their defect types, from a dataset layout (the masks of the defective images of its
    ``split``) or from a folder of mask images (type None)."""
    if not path.exists():
        raise FileNotFoundError(f"mask source {path} not found: give a dataset folder or a folder of mask images")
    try:
        layout = detect_layout(path)
    except LayoutError:
        if defect_type is not None or options:
            raise ValueError(f"a defect type or dataset options need a dataset; {path} is a plain folder") from None
        return [(read_image(p).amax(0) >= 128, None) for p in list_images(path)]
    dataset = open_dataset(path, layout, split, **options)
    records = [r for r in dataset.defects(defect_type) if r.mask is not None]
    if not records:
        raise ValueError(f"no masked defects{'' if defect_type is None else f' of type {defect_type!r}'} in the "
                         f"{split} split of {path}: give a dataset with mask files, a folder of mask images, or "
                         "another split (masks_split='all' takes every split's)")
    return [(read_mask(r.mask, dataset.mask_threshold), r.defect_type) for r in records]


def bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the True pixels of an (H, W) mask, bottom and right exclusive; all 0 when
    there are none."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    if not len(rows):
        return 0, 0, 0, 0
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def fit_size(shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The largest (H, W) of ``shape``'s aspect ratio that fits inside ``size`` (H, W)."""
    scale = min(size[0] / shape[0], size[1] / shape[1])
    return tuple(min(n, max(1, round(m * scale))) for n, m in zip(size, shape))


def resize_with_mask(image: torch.Tensor, mask: torch.Tensor,
                     size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A (C, h, w) image (antialiased) and its (h, w) bool mask (nearest neighbour) resized to ``size`` (H, W)."""
    image = F.resize(image, list(size), antialias=True)
    mask = F.resize(mask[None].to(torch.uint8), list(size), interpolation=F.InterpolationMode.NEAREST)[0].bool()
    return image, mask


def _crop(mask: torch.Tensor) -> torch.Tensor:
    """The mask cut to the bounding box of its True pixels (empty when it has none)."""
    top, left, bottom, right = bounding_box(mask)
    return mask[top:bottom, left:right]
