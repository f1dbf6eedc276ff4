"""Make docs/ddpm-preview.png: the ddpm backend trained few-shot on procedural surfaces with 5 procedural pits.

Nothing comes from a real dataset: the surfaces are ``inout_aug.tools.surfaces`` (brushed steel, ceramic,
copper) and the "real" defects are pit clusters drawn here from a seed. Run from the repository root:
``.venv/bin/python docs/ddpm_preview.py``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_segmentation_masks, make_grid

from inout_aug.core.io import write_png
from inout_aug.core.sample import as_bytes
from inout_aug.models.ddpm import DDPMDefectModel
from inout_aug.models.finetune import finetune
from inout_aug.tools.surfaces import make_surfaces

SIZE, NORMALS, SHOTS, HELD_OUT = 128, 48, 5, 6
#: The ddpm "default" preset with these changed; on the command line: --set patch_size=32 --set steps=3000.
OVERRIDES = {"patch_size": 32, "steps": 3000}
ZOOM, TILE = 40, 160  # pixels around a mask shown at 4x; whole 128-pixel images shown at 1.25x
SHEET = Path(__file__).with_name("ddpm-preview.png")


def _smoothstep(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    t = ((x - low) / (high - low)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def draw_pits(image: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (3, H, W) uint8 with a cluster of 1-3 pits drawn from ``seed``, and the pits' (H, W) bool mask.

    A pit is a dark disc (radius 3-6 px) with a soft edge, a darker core and a highlight on the inner wall
    facing a light from the top left; the mask covers each disc and its soft edge.
    """
    g = torch.Generator().manual_seed(seed)
    h, w = image.shape[-2:]

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=g))

    cy, cx = uniform(16, h - 16), uniform(16, w - 16)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    shade, light = torch.ones(h, w), torch.zeros(h, w)
    mask = torch.zeros(h, w, dtype=torch.bool)
    for _ in range(int(torch.randint(1, 4, (), generator=g))):
        r, py, px = uniform(3, 6), cy + uniform(-5, 5), cx + uniform(-5, 5)
        dy, dx = ys - py, xs - px
        d = (dy ** 2 + dx ** 2).sqrt() / r
        shade = torch.minimum(shade, 0.3 + 0.5 * _smoothstep(d, 0.3, 0.75) + 0.2 * _smoothstep(d, 0.75, 1.1))
        facing = ((dy + dx) / (d * r * 2 ** 0.5 + 1e-6)).clamp(min=0)  # the lower right inner wall
        light = torch.maximum(light, facing * torch.exp(-(((d - 0.8) / 0.15) ** 2)))
        mask |= d <= 1.15
    out = image.float() / 255 * shade + 0.35 * light
    return as_bytes(out.clamp(0, 1)), mask


def write_dataset(root: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A ``folder`` dataset in ``root``: normal surfaces and ``SHOTS`` pitted ones with masks; returns the pits."""
    for i, image in enumerate(make_surfaces(NORMALS, (SIZE, SIZE), seed=0)):
        write_png(image, root / "normal" / f"{i:03d}.png")
    shots = [draw_pits(image, seed=100 + i) for i, image in enumerate(make_surfaces(SHOTS, (SIZE, SIZE), seed=1))]
    for i, (image, mask) in enumerate(shots):
        write_png(image, root / "defect" / "pit" / f"{i:03d}.png")
        write_png(mask.to(torch.uint8) * 255, root / "masks" / "pit" / f"{i:03d}.png")
    return shots


def zoom(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The ``ZOOM`` pixels around the mask, enlarged to ``TILE`` (nearest)."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    top = min(max(0, int(rows[0] + rows[-1]) // 2 - ZOOM // 2), SIZE - ZOOM)
    left = min(max(0, int(cols[0] + cols[-1]) // 2 - ZOOM // 2), SIZE - ZOOM)
    return F.resize(image[..., top:top + ZOOM, left:left + ZOOM], [TILE, TILE],
                    interpolation=F.InterpolationMode.NEAREST)


def whole(image: torch.Tensor) -> torch.Tensor:
    """A whole image enlarged to ``TILE``."""
    return F.resize(image, [TILE, TILE], antialias=True)


def main() -> None:
    """Build the dataset, train, inpaint held-out surfaces and write the sheet; print the timings."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        shots = write_dataset(Path(tmp) / "data")
        begin = time.perf_counter()
        finetune("ddpm", Path(tmp) / "data", Path(tmp) / "model", setting="few", shots=SHOTS, layout="folder",
                 split="all", preset="default", overrides=OVERRIDES, progress=False)
        print(f"trained ({OVERRIDES}) in {time.perf_counter() - begin:.0f} s", flush=True)
        model = DDPMDefectModel.load(Path(tmp) / "model")
    # Held-out surfaces, each with the mask of a held-out pit cluster (drawn there too, for comparison).
    surfaces = make_surfaces(HELD_OUT, (SIZE, SIZE), seed=2)
    references, masks = zip(*(draw_pits(image, seed=200 + i) for i, image in enumerate(surfaces)))
    masks = torch.stack(masks)
    begin = time.perf_counter()
    generators = [torch.Generator().manual_seed(i) for i in range(HELD_OUT)]
    results = as_bytes(model.inpaint(surfaces.float() / 255, masks, generator=generators))
    print(f"inpainted {HELD_OUT} surfaces in {time.perf_counter() - begin:.1f} s "
          "(50 ddim steps, 2 resampling jumps, guidance 3)")
    tiles = []
    for surface, mask, result, reference in zip(surfaces, masks, results, references):
        red = zoom(mask[None].to(torch.uint8), mask)[0].bool()
        placed = draw_segmentation_masks(zoom(surface, mask), red, alpha=0.45, colors="red")
        tiles += [whole(surface), placed, zoom(result, mask), zoom(reference, mask), whole(result)]
    tiles += [zoom(image, mask) for image, mask in shots]  # last row: the 5 training defects
    write_png(make_grid(tiles, nrow=5, padding=4, pad_value=255), SHEET)
    print(f"wrote {SHEET} ({SHEET.stat().st_size // 1024} KB); whole script {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
