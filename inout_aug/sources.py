"""Anomaly sources: where the pixels of a simulated defect come from.

An :class:`AnomalySource` turns a float (N, C, H, W) batch in [0, 1] into an (N, C, H, W) source image
batch, drawing all its randomness from the torch.Generator it is given. MemSeg uses two: a texture
(:class:`TextureFolder`, or :class:`ProceduralTexture` offline) and :class:`StructuralSource`. A plugin adds
its own by subclassing :class:`AnomalySource`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from inout_aug.io import IMAGE_SUFFIXES, list_images, read_image
from inout_aug.noise import perlin_noise, random_gradients, rotated_view

def uniform(
    shape: Sequence[int], low: float, high: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Floats uniform in [low, high), drawn on ``generator``'s device and moved to ``device``."""
    values = torch.rand(tuple(shape), generator=generator, device=generator.device)
    return values.mul_(high - low).add_(low).to(device)


def randint(
    low: int, high: int, shape: Sequence[int], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Integers uniform in [low, high), drawn on ``generator``'s device and moved to ``device``."""
    return torch.randint(low, high, tuple(shape), generator=generator, device=generator.device).to(device)


def grey(image: torch.Tensor) -> torch.Tensor:
    """(N, H, W) luminance of a float (N, C, H, W) batch (ITU-R 601 weights, as torchvision)."""
    if image.shape[1] == 1:
        return image[:, 0]
    weights = image.new_tensor([0.299, 0.587, 0.114])
    return torch.einsum("nchw,c->nhw", image, weights)


class AnomalySource(ABC):
    """Makes the source image A that MemSeg blends into the defect region."""

    #: False for sources that read only the batch's shape and device (textures): they are then given a
    #: placeholder of that shape that holds no pixels, which saves copying the images.
    uses_pixels: bool = True

    @abstractmethod
    def draw(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """An (N, C, H, W) float source in [0, 1] for a float (N, C, H, W) batch in [0, 1], on its device."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class TextureFolder(AnomalySource):
    """Random texture images from a folder (e.g. DTD), resized to the image size.

    Each file is decoded at most once per process, on first use, and kept as a uint8 tensor; resized
    copies are cached per target (H, W, C, device). Nothing is read from disk per sample. Memory: every
    texture used so far, decoded, plus one resized copy per target size.
    """

    uses_pixels = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(
                f"texture folder {str(self.path)!r} does not exist: give a folder of texture images "
                "(e.g. the DTD images) or textures=None for procedural textures"
            )
        try:
            self.files = list_images(self.path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"texture folder {str(self.path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}): "
                "put texture images there or use textures=None for procedural textures"
            ) from None
        self._decoded: dict[int, torch.Tensor] = {}
        self._resized: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"TextureFolder({str(self.path)!r}, {len(self.files)} images)"

    def draw(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = image.shape
        index = randint(0, len(self.files), (n,), generator, image.device)
        return self._textures((h, w, c), image.device, index).float().div_(255)

    def _textures(
        self, size: tuple[int, int, int], device: torch.device, index: torch.Tensor
    ) -> torch.Tensor:
        """uint8 (N, C, H, W) textures ``index`` at ``size`` (H, W, C), resizing those not cached yet."""
        key = (*size, str(device))
        if key not in self._resized:
            h, w, c = size
            # Uninitialised: rows are filled (and, on CPU, take memory) only as their textures are first used.
            stack = torch.empty((len(self.files), c, h, w), dtype=torch.uint8, device=device)
            self._resized[key] = (stack, torch.zeros(len(self.files), dtype=torch.bool))
        stack, ready = self._resized[key]
        for i in index.unique().cpu().tolist():
            if not ready[i]:
                stack[i] = self._resize(self._decode(i), size).to(device)
                ready[i] = True
        return stack[index]

    def _decode(self, i: int) -> torch.Tensor:
        if i not in self._decoded:
            self._decoded[i] = read_image(self.files[i])
        return self._decoded[i]

    @staticmethod
    def _resize(texture: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        h, w, c = size
        resized = TF.resize(texture, [h, w], antialias=True)
        if resized.shape[0] == c:
            return resized
        return TF.rgb_to_grayscale(resized) if c == 1 else resized.expand(c, h, w)


class ProceduralTexture(AnomalySource):
    """Random textures made in torch, one of four kinds per sample, each in two random colours.

    Kinds: fractal Perlin noise (4 octaves), stripes, checks and blobs (thresholded noise); stripes and
    checks have a random period, orientation and edge sharpness. The offline stand-in for DTD.
    """

    uses_pixels = False

    def draw(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = image.shape
        device = image.device
        kind = randint(0, len(_PATTERNS), (n,), generator, device)
        field = torch.empty((n, h, w), device=device)
        for k, pattern in enumerate(_PATTERNS):
            rows = (kind == k).nonzero().flatten()
            if len(rows):
                field.index_copy_(0, rows, pattern(len(rows), (h, w), generator, device))
        colours = uniform((n, 2, c, 1, 1), 0.0, 1.0, generator, device)
        return torch.lerp(colours[:, 0], colours[:, 1], field[:, None])


def _fractal(n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    octaves = 4
    base = 2 ** randint(0, 3, (n, 1), generator, device)
    total = torch.zeros((n, *size), device=device)
    for octave in range(octaves):
        cells = (base * 2**octave).expand(n, 2)
        lattice = int(cells.max())
        gradients = random_gradients(n, (lattice, lattice), generator).to(device)
        total.add_(perlin_noise(size, cells, gradients), alpha=0.5**octave)
    return _normalise(total)


def _stripes(n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    along, _ = _rotated_coords(n, size, generator, device)
    return _sharpen(torch.sin(along), generator)


def _checks(n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    along, across = _rotated_coords(n, size, generator, device)
    return _sharpen(torch.sin(along) * torch.sin(across), generator)


def _blobs(n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    cells = 2 ** randint(1, 4, (n, 2), generator, device)
    lattice = int(cells.max())
    noise = perlin_noise(size, cells, random_gradients(n, (lattice, lattice), generator).to(device))
    level = uniform((n, 1, 1), -0.3, 0.3, generator, device)
    return _sharpen(noise - level, generator)


def _rotated_coords(
    n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates along and across a random direction, in radians of a random period (3 px..size/2)."""
    h, w = size
    period = uniform((n, 1, 1), 3.0, max(3.0, max(h, w) / 2), generator, device)
    angle = uniform((n, 1, 1), 0.0, math.pi, generator, device)
    phase = uniform((n, 2, 1, 1), 0.0, 2 * math.pi, generator, device)
    y = torch.arange(h, device=device, dtype=torch.float32)[:, None]
    x = torch.arange(w, device=device, dtype=torch.float32)
    scale = 2 * math.pi / period
    cos, sin = angle.cos() * scale, angle.sin() * scale
    return cos * x + sin * y + phase[:, 0], cos * y - sin * x + phase[:, 1]


def _sharpen(signal: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Map a signed field to [0, 1] through a sigmoid of random steepness: from soft waves to hard edges."""
    steepness = uniform((len(signal), 1, 1), 1.0, 20.0, generator, signal.device)
    return torch.sigmoid(signal * steepness)


def _normalise(field: torch.Tensor) -> torch.Tensor:
    low = field.amin((1, 2), keepdim=True)
    high = field.amax((1, 2), keepdim=True)
    return (field - low).div_((high - low).clamp_min_(1e-6))


_PATTERNS: tuple[Callable[..., torch.Tensor], ...] = (_fractal, _stripes, _checks, _blobs)


class StructuralSource(AnomalySource):
    """MemSeg's structural source: ``ops`` random photometric/geometric operations of the image itself, then
    its grid of tiles shuffled.

    The ten operations (``ops`` distinct ones per sample, applied in random order): gamma contrast
    (0.5..2, per channel), brightness (x0.8..1.2, +-30/255), sharpness (factor 0..2), hue (+-70 deg) and
    saturation (x0.8..1.2), solarize (probability 0.5, threshold 32..128/255), posterize (1..8 bits), invert,
    autocontrast, equalize, rotation (+-45 deg, zero fill). The image is then cut into ``grid`` (rows,
    cols) tiles that are shuffled per sample; rows and columns left over when the size does not divide
    stay in place.
    """

    def __init__(self, ops: int = 3, grid: tuple[int, int] = (8, 8)):
        if not 0 <= int(ops) <= len(_OPERATIONS):
            raise ValueError(f"ops must be between 0 and {len(_OPERATIONS)}, got {ops}")
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be (rows, cols) of positive integers, got {grid!r}")
        self.ops = int(ops)
        self.grid = (int(grid[0]), int(grid[1]))

    def __repr__(self) -> str:
        return f"StructuralSource(ops={self.ops}, grid={self.grid})"

    def draw(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(image)
        order = torch.rand((n, len(_OPERATIONS)), generator=generator, device=generator.device).argsort(1)
        order = order[:, : self.ops].to(image.device)
        # Per step, rows are regrouped by operation (one copy), so each operation works on a contiguous view
        # of a buffer of our own; ``origin`` follows which input row each row holds.
        current, origin = image, torch.arange(n, device=image.device)
        for step in range(self.ops):
            kinds = order[origin, step]
            grouped = kinds.argsort(stable=True)
            current, origin = current.index_select(0, grouped), origin[grouped]
            start = 0
            for operation, count in zip(_OPERATIONS, torch.bincount(kinds, minlength=len(_OPERATIONS)).tolist()):
                if count:
                    rows = current[start:start + count]
                    result = operation(rows, generator)
                    if result is not rows:
                        rows.copy_(result)
                    start += count
        return shuffle_tiles(current, self.grid, generator, rows=origin.argsort())


def shuffle_tiles(
    image: torch.Tensor, grid: tuple[int, int], generator: torch.Generator, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Cut each image of an (N, C, H, W) batch into ``grid`` tiles and put them back in a random order.

    ``rows`` (N,) optionally reorders the batch in the same pass: output image i is made from ``image[rows[i]]``.
    """
    n, c, h, w = image.shape
    grid_rows, grid_cols = min(grid[0], h), min(grid[1], w)
    th, tw = h // grid_rows, w // grid_cols
    tiles = grid_rows * grid_cols
    order = torch.rand((n, tiles), generator=generator, device=generator.device).argsort(1).to(image.device)
    rows = torch.arange(n, device=image.device) if rows is None else rows
    # One pass: copy each tile row (tw pixels) of the output from its source, indexed in the (n, c, grid_rows,
    # th, grid_cols, tw) layout, so the result comes out in image layout with no permute.
    src_b = rows[:, None, None, None, None]
    src_tile = order.view(n, 1, grid_rows, 1, grid_cols)
    channel = torch.arange(c, device=image.device).view(1, c, 1, 1, 1)
    line = torch.arange(th, device=image.device).view(1, 1, 1, th, 1)
    src_i, src_j = src_tile // grid_cols, src_tile % grid_cols
    index = (((src_b * c + channel) * grid_rows + src_i) * th + line) * grid_cols + src_j
    body = image[..., : grid_rows * th, : grid_cols * tw].reshape(-1, tw)
    shuffled = body.index_select(0, index.flatten()).view(n, c, grid_rows * th, grid_cols * tw)
    if grid_rows * th == h and grid_cols * tw == w:
        return shuffled
    out = image.index_select(0, rows)
    out[..., : grid_rows * th, : grid_cols * tw] = shuffled
    return out


# -- the ten operations: (n, C, H, W) float in [0, 1] -> the same, with per-sample parameters; ``x`` is a view
# -- of StructuralSource.draw's own buffer, so it may be changed in place (and returned). ---------------------


def _gamma(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x.clamp_(0, 1).pow_(uniform((len(x), x.shape[1], 1, 1), 0.5, 2.0, g, x.device))


def _brightness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    scale = uniform((len(x), 1, 1, 1), 0.8, 1.2, g, x.device)
    shift = uniform((len(x), 1, 1, 1), -30 / 255, 30 / 255, g, x.device)
    return x.mul_(scale).add_(shift).clamp_(0, 1)


def _sharpness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """PIL's sharpness: blend with the image smoothed by 1 1 1 / 1 5 1 / 1 1 1 (borders kept), factor 0..2."""
    factor = uniform((len(x), 1, 1, 1), 0.0, 2.0, g, x.device)
    if min(x.shape[-2:]) < 3:
        return x
    inner = x[..., 1:-1, 1:-1]
    across = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]  # a separable 3x3 box sum
    box = across[..., :-2, :] + across[..., 1:-1, :] + across[..., 2:, :]
    smooth = box.add_(inner, alpha=4).div_(13)
    inner.copy_(smooth.lerp_(inner, factor).clamp_(0, 1))
    return x


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
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


def _solarize(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    applied = uniform((len(x), 1, 1, 1), 0.0, 1.0, g, x.device) < 0.5
    threshold = uniform((len(x), 1, 1, 1), 32 / 255, 128 / 255, g, x.device)
    flip = (applied & (x >= threshold)).to(x.dtype)
    return torch.lerp(x, 1 - x, flip)  # exact on both sides, and faster than torch.where on CPU


def _posterize(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    step = 2.0 ** (8 - randint(1, 9, (len(x), 1, 1, 1), g, x.device))
    return x.mul_(255).round_().div_(step).floor_().mul_(step / 255)


def _invert(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x.neg_().add_(1)


def _autocontrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return TF.autocontrast(x)


def _equalize(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return TF.equalize(x)


def _rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    angle = uniform((len(x),), -45.0, 45.0, g, x.device)
    size = (x.shape[2], x.shape[3])
    return rotated_view(x, angle, size, size, padding_mode="zeros")


_OPERATIONS: tuple[Callable[[torch.Tensor, torch.Generator], torch.Tensor], ...] = (
    _gamma, _brightness, _sharpness, _hue_saturation, _solarize,
    _posterize, _invert, _autocontrast, _equalize, _rotate,
)
