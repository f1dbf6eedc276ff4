"""Contact sheets: generated images beside the same images with their defect masks overlaid, as one PNG."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_segmentation_masks, make_grid

from inout_aug.core.io import list_images, read_image, write_png
from inout_aug.core.sample import match_channels
from inout_aug.data.manifest import read_manifest


def _fit(image: torch.Tensor, tile: int) -> torch.Tensor:
    """An RGB uint8 image scaled to fit a ``tile`` square, centred on grey."""
    rgb = match_channels(image, 3)
    h, w = rgb.shape[-2:]
    scale = tile / max(h, w)
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    small = F.resize(rgb, size, antialias=True)
    canvas = torch.full((3, tile, tile), 64, dtype=torch.uint8)
    top, left = (tile - size[0]) // 2, (tile - size[1]) // 2
    canvas[:, top:top + size[0], left:left + size[1]] = small
    return canvas


#: Width in pixels of the red frame that marks a weak label (a defect somewhere, no pixel known) on a sheet.
WEAK_FRAME = 4


def contact_sheet(images: list[torch.Tensor], masks: list[torch.Tensor | None],
                  tile: int = 160, columns: int = 4, weak: list[bool] | None = None) -> torch.Tensor:
    """A (3, H, W) uint8 sheet: for each image, the image and the image with its mask in red; an image marked
    ``weak`` (a defect without a pixel mask) gets a red frame instead."""
    weak = weak or [False] * len(images)
    with_masks = any(m is not None for m in masks) or any(weak)
    tiles = []
    for image, mask, frame in zip(images, masks, weak):
        shown = _fit(image, tile)
        tiles.append(shown)
        if with_masks:
            if frame:
                fitted = torch.ones((tile, tile), dtype=torch.bool)
                fitted[WEAK_FRAME:-WEAK_FRAME, WEAK_FRAME:-WEAK_FRAME] = False
            else:
                fitted = None if mask is None else _fit(mask.to(torch.uint8)[None] * 255, tile)[0] > 127
            tiles.append(shown if fitted is None else draw_segmentation_masks(shown, fitted, alpha=0.45, colors="red"))
    return make_grid(tiles, nrow=columns * (2 if with_masks else 1), padding=4, pad_value=255)


def preview_folder(folder: str | os.PathLike, out: str | os.PathLike, limit: int = 16,
                   tile: int = 160, columns: int = 4) -> Path:
    """Write a contact sheet of a generation folder (manifest or images/ + masks/) or any image folder."""
    root = Path(folder)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise FileNotFoundError(f"{root} {what}: preview takes a folder (generate's --out, or a folder of images)")
    records = read_manifest(root)
    weak: list[bool] = []
    if records:
        pairs = [(root / r["image"], root / (r["mask"] or "")) for _, r in sorted(records.items())]
        weak = [r["mask"] is None for _, r in sorted(records.items())][:limit]
    else:
        images_dir = root / "images" if (root / "images").is_dir() else root
        sheet = Path(out).resolve()
        try:
            found = list_images(images_dir)
        except FileNotFoundError:
            raise FileNotFoundError(f"{root} holds no images to preview: give generate's --out folder, or a folder "
                                    "of images") from None
        shown = [p for p in found if p.resolve() != sheet and p.parent.name != "masks"]
        pairs = [(p, root / "masks" / p.name) for p in shown]
    pairs = pairs[:limit]
    images = [read_image(image) for image, _ in pairs]
    masks = [read_image(mask)[0] >= 128 if mask.is_file() else None for _, mask in pairs]
    out = Path(out)
    write_png(contact_sheet(images, masks, tile=tile, columns=columns, weak=weak), out)
    return out
