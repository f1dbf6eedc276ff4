"""MemSeg's structural anomaly source: random photometric and geometric operations of the image itself,
then its grid of tiles shuffled.

The image is quantised to uint8 once, as in the reference (imgaug works on uint8 images). The seven
pointwise operations act on a 256-entry lookup table per image and channel instead of the pixels, so a
run of them costs a few table updates and one final lookup; autocontrast and equalize read the image's
histogram pushed through the table. The three spatial operations (sharpness, hue/saturation, rotation)
apply the table, work in float and quantise again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch

from inout_aug.augmenters.memseg.noise import rotated_view
from inout_aug.augmenters.memseg.sources import AnomalySource, randint, uniform
from inout_aug.core.sample import LUMA, as_bytes


class StructuralSource(AnomalySource):
    """MemSeg's structural source: ``ops`` random operations of the image, then its ``grid`` of tiles shuffled.

    Operations (``ops`` distinct ones per sample, applied in random order, chosen from ``operations``,
    by default all ten): gamma contrast (0.5..2, per channel), brightness (x0.8..1.2, +-30 levels),
    sharpness (factor 0..2), hue (+-70 deg) and saturation (x0.8..1.2), solarize (probability 0.5,
    threshold 32..128), posterize (1..8 bits), invert, autocontrast, equalize (both per channel, as
    PIL's ImageOps), rotation (+-45 deg, zero fill). The image is then cut into ``grid`` (rows, cols)
    tiles that are shuffled per sample; rows and columns left over when the size does not divide stay in
    place. Returns uint8.
    """

    def __init__(self, ops: int = 3, grid: tuple[int, int] = (8, 8), operations: Sequence[str] | None = None):
        names = tuple(OPERATIONS) if operations is None else tuple(operations)
        unknown = sorted(set(names) - set(OPERATIONS))
        if unknown or not names:
            raise ValueError(f"unknown structural operations {unknown or names}: choose from {', '.join(OPERATIONS)}")
        if not 0 <= int(ops) <= len(names):
            raise ValueError(f"ops must be between 0 and {len(names)} (the operations given), got {ops}")
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be (rows, cols) of positive integers, got {grid!r}")
        self.ops = int(ops)
        self.grid = (int(grid[0]), int(grid[1]))
        self.operations = names

    def __repr__(self) -> str:
        return f"StructuralSource(ops={self.ops}, grid={self.grid}, operations={self.operations})"

    def draw(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c = image.shape[:2]
        device = image.device
        pixels = as_bytes(image) if image.is_floating_point() else image
        order = torch.rand((n, len(self.operations)), generator=generator, device=generator.device).argsort(1)
        order = order[:, : self.ops].to(device)
        identity = torch.arange(256, dtype=torch.float64, device=device)
        table = identity.expand(n, c, 256).clone()  # values 0..255: pixel value v becomes table[v]
        plain = torch.ones(n, dtype=torch.bool, device=device)  # rows whose table is still the identity
        for step in range(self.ops):
            kinds = order[:, step]
            for k, count in enumerate(torch.bincount(kinds, minlength=len(self.operations)).tolist()):
                if not count:
                    continue
                rows = (kinds == k).nonzero().flatten()
                operation = OPERATIONS[self.operations[k]]
                if operation.on == "pixels":
                    picked = pixels.index_select(0, rows)
                    levels = picked.float() if plain[rows].all() else _look_up(picked, table[rows])
                    spatial = operation.apply(levels.div_(255), generator)
                    if pixels is image:
                        pixels = image.clone()
                    pixels.index_copy_(0, rows, as_bytes(spatial, inplace=True))
                    table[rows] = identity
                    plain[rows] = True
                else:
                    counts = _histogram(pixels.index_select(0, rows)) if operation.on == "histogram" else None
                    table[rows] = operation.apply(table[rows], counts, generator)
                    plain[rows] = False
        shuffled = shuffle_tiles(pixels, self.grid, generator)
        return shuffled if plain.all() else _look_up(shuffled, table.to(torch.uint8))


def shuffle_tiles(image: torch.Tensor, grid: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Cut each image of an (N, C, H, W) batch into ``grid`` tiles and put them back in a random order."""
    n, c, h, w = image.shape
    grid_rows, grid_cols = min(grid[0], h), min(grid[1], w)
    th, tw = h // grid_rows, w // grid_cols
    tiles = grid_rows * grid_cols
    order = torch.rand((n, tiles), generator=generator, device=generator.device).argsort(1).to(image.device)
    # One pass: copy each tile row (tw pixels) of the output from its source, indexed in the (n, c, grid_rows,
    # th, grid_cols, tw) layout, so the result comes out in image layout with no permute.
    src_b = torch.arange(n, device=image.device).view(n, 1, 1, 1, 1)
    src_tile = order.view(n, 1, grid_rows, 1, grid_cols)
    channel = torch.arange(c, device=image.device).view(1, c, 1, 1, 1)
    line = torch.arange(th, device=image.device).view(1, 1, 1, th, 1)
    src_i, src_j = src_tile // grid_cols, src_tile % grid_cols
    index = (((src_b * c + channel) * grid_rows + src_i) * th + line) * grid_cols + src_j
    body = image[..., : grid_rows * th, : grid_cols * tw].reshape(-1, tw)
    shuffled = body.index_select(0, index.flatten()).view(n, c, grid_rows * th, grid_cols * tw)
    if grid_rows * th == h and grid_cols * tw == w:
        return shuffled
    out = image.clone()
    out[..., : grid_rows * th, : grid_cols * tw] = shuffled
    return out


#: Pixels per chunk of the int64 index that ``gather`` and ``scatter_add_`` need: 8 bytes per uint8 pixel, so a
#: whole batch's index would be a large temporary; a chunk of 1 MiB is reused and stays in cache.
INDEX_CHUNK = 2**17


def _index_chunks(pixels: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The (N * C, H * W) planes of a uint8 batch as int64, a few planes at a time: yields (start, stop, index)."""
    planes = pixels.reshape(-1, pixels.shape[-2] * pixels.shape[-1])
    step = max(1, INDEX_CHUNK // max(1, planes.shape[1]))
    buffer = torch.empty((min(step, len(planes)), planes.shape[1]), dtype=torch.long, device=pixels.device)
    for start in range(0, len(planes), step):
        stop = min(start + step, len(planes))
        yield start, stop, buffer[: stop - start].copy_(planes[start:stop])


def _look_up(pixels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``table[n, c, pixels[n, c, ...]]`` for uint8 (N, C, H, W) pixels and (N, C, 256) tables, in the table's dtype
    (float32 for a float table)."""
    table = table.reshape(-1, 256).to(torch.float32 if table.is_floating_point() else table.dtype)
    out = torch.empty(pixels.shape, dtype=table.dtype, device=pixels.device)
    flat = out.view(len(table), -1)
    for start, stop, index in _index_chunks(pixels):
        torch.gather(table[start:stop], 1, index, out=flat[start:stop])
    return out


def _histogram(pixels: torch.Tensor) -> torch.Tensor:
    """(N, C, 256) int64 pixel counts per image and channel of a uint8 (N, C, H, W) batch."""
    n, c = pixels.shape[:2]
    counts = torch.zeros((n * c, 256), dtype=torch.long, device=pixels.device)
    for start, stop, index in _index_chunks(pixels):
        counts[start:stop].scatter_add_(1, index, counts.new_ones(()).expand_as(index))
    return counts.view(n, c, 256)


# -- pointwise operations: (N, C, 256) float64 table of levels 0..255 -> the table composed with the operation.
# -- ``counts`` (N, C, 256) is the histogram of the pixels the table maps (only for operations on="histogram").


def _gamma(table: torch.Tensor, counts: None, g: torch.Generator) -> torch.Tensor:
    gamma = uniform((len(table), table.shape[1], 1), 0.5, 2.0, g, table.device).double()
    return table.div(255).pow_(gamma).mul_(255).round_()


def _brightness(table: torch.Tensor, counts: None, g: torch.Generator) -> torch.Tensor:
    scale = uniform((len(table), 1, 1), 0.8, 1.2, g, table.device).double()
    shift = uniform((len(table), 1, 1), -30.0, 30.0, g, table.device).double()
    return table.mul(scale).add_(shift).round_().clamp_(0, 255)


def _solarize(table: torch.Tensor, counts: None, g: torch.Generator) -> torch.Tensor:
    applied = uniform((len(table), 1, 1), 0.0, 1.0, g, table.device) < 0.5
    threshold = randint(32, 129, (len(table), 1, 1), g, table.device)
    return torch.where(applied & (table >= threshold), 255 - table, table)


def _posterize(table: torch.Tensor, counts: None, g: torch.Generator) -> torch.Tensor:
    step = 2.0 ** (8 - randint(1, 9, (len(table), 1, 1), g, table.device))
    return table.div(step).floor_().mul_(step)


def _invert(table: torch.Tensor, counts: None, g: torch.Generator) -> torch.Tensor:
    return 255 - table


def _current_counts(table: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Histogram of the pixels after the table: ``counts`` moved to the levels the table maps them to."""
    return torch.zeros_like(counts).scatter_add_(2, table.long(), counts)


def _autocontrast(table: torch.Tensor, counts: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """PIL's ImageOps.autocontrast: levels stretched so that the darkest becomes 0 and the brightest 255."""
    present = counts > 0
    low = table.masked_fill(~present, math.inf).amin(2, keepdim=True)
    high = table.masked_fill(~present, -math.inf).amax(2, keepdim=True)
    stretch = high > low
    scale = 255 / torch.where(stretch, high - low, 1.0)
    return torch.where(stretch, (table * scale - low * scale).floor_().clamp_(0, 255), table)


def _equalize(table: torch.Tensor, counts: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """PIL's ImageOps.equalize: levels remapped by the cumulative histogram."""
    current = _current_counts(table, counts)
    levels = torch.arange(256, device=table.device)
    last = torch.where(current > 0, levels, -1).amax(2, keepdim=True)
    step = (current.sum(2, keepdim=True) - current.gather(2, last.clamp_min(0))) // 255
    below = current.cumsum(2) - current
    equalised = ((step // 2 + below) // step.clamp_min(1)).clamp_(max=255)
    keep = (step == 0) | ((current > 0).sum(2, keepdim=True) <= 1)
    return torch.where(keep, table, equalised.gather(2, table.long()).double())


# -- spatial operations: (N, C, H, W) float in [0, 1] -> the same, with per-sample parameters; ``x`` is a
# -- buffer of the caller's own, so it may be changed in place (and returned). --------------------------------


def _sharpness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """PIL's sharpness: blend with the image smoothed by 1 1 1 / 1 5 1 / 1 1 1 (borders kept), factor 0..2."""
    factor = uniform((len(x), 1, 1, 1), 0.0, 2.0, g, x.device)
    h, w = x.shape[-2:]
    if min(h, w) < 3:
        return x
    # The separable 3x3 box sum runs along the flattened batch, where a pixel's neighbours lie 1 and w places
    # away: every pass is contiguous rather than over the interior's strided views (the same sums, in the same
    # order, so the same bytes). Sums that wrap round a row or an image land on border pixels, kept from x.
    flat = x.reshape(-1)
    across = torch.add(flat[:-2], flat[1:-1]).add_(flat[2:])  # across[j] is centred on pixel j + 1
    smooth = torch.zeros(x.shape, dtype=x.dtype, device=x.device)  # contiguous whatever x's layout
    box = smooth.view(-1)[w + 1: -w - 1]
    torch.add(across[: -2 * w], across[w: -w], out=box).add_(across[2 * w:])
    smooth.add_(x, alpha=4).div_(13).lerp_(x, factor).clamp_(0, 1)
    x[..., 1:-1, 1:-1] = smooth[..., 1:-1, 1:-1]
    return x


_RGB_TO_YIQ = torch.tensor([LUMA, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _hue_saturation(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rotate the chroma plane (YIQ) by a hue angle and scale it by a saturation factor."""
    if x.shape[1] == 1:
        return x
    angle = uniform((len(x),), -70.0, 70.0, g, x.device).mul_(math.pi / 180)
    saturation = uniform((len(x),), 0.8, 1.2, g, x.device)
    chroma = torch.zeros((len(x), 3, 3), device=x.device)
    chroma[:, 0, 0] = 1
    chroma[:, 1, 1] = chroma[:, 2, 2] = angle.cos() * saturation
    chroma[:, 1, 2] = -angle.sin() * saturation
    chroma[:, 2, 1] = angle.sin() * saturation
    matrix = _YIQ_TO_RGB.to(x.device) @ chroma @ _RGB_TO_YIQ.to(x.device)
    return torch.einsum("nij,njhw->nihw", matrix, x).clamp_(0, 1)


def _rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    angle = uniform((len(x),), -45.0, 45.0, g, x.device)
    size = (x.shape[2], x.shape[3])
    return rotated_view(x, angle, size, size, padding_mode="zeros")


class Operation(NamedTuple):
    """A structural operation and what it acts on: "table" (pointwise), "histogram" (pointwise, reading the
    histogram) or "pixels" (spatial)."""

    apply: Callable[..., torch.Tensor]
    on: str


OPERATIONS: dict[str, Operation] = {
    "gamma": Operation(_gamma, "table"),
    "brightness": Operation(_brightness, "table"),
    "sharpness": Operation(_sharpness, "pixels"),
    "hue_saturation": Operation(_hue_saturation, "pixels"),
    "solarize": Operation(_solarize, "table"),
    "posterize": Operation(_posterize, "table"),
    "invert": Operation(_invert, "table"),
    "autocontrast": Operation(_autocontrast, "histogram"),
    "equalize": Operation(_equalize, "histogram"),
    "rotate": Operation(_rotate, "pixels"),
}
