"""Anomaly sources: where the pixels of a simulated defect come from.

An :class:`AnomalySource` turns a float (N, C, H, W) batch in [0, 1] into an (N, C, H, W) source image
batch, drawing all its randomness from the torch.Generator it is given. MemSeg uses two: a texture
(:class:`TextureFolder`, or :class:`ProceduralTexture` offline) and the structural source
(:mod:`inout_aug.augmenters.memseg.structural`). A plugin adds its own by subclassing :class:`AnomalySource`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from inout_aug.augmenters.memseg.noise import perlin_noise, random_gradients
from inout_aug.core.io import IMAGE_SUFFIXES, list_images, read_image
from inout_aug.core.sample import match_channels


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


class AnomalySource(ABC):
    """Makes the source image A that MemSeg blends into the defect region."""

    #: False for sources that read only the batch's shape and device (textures): they are then given a
    #: placeholder of that shape that holds no pixels, which saves copying the images.
    uses_pixels: bool = True

    @abstractmethod
    def draw(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """An (N, C, H, W) source, uint8 (0-255) or float in [0, 1], for a float (N, C, H, W) batch in [0, 1],
        on its device: a new tensor, which the caller may overwrite."""

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
        return self._textures((h, w, c), image.device, index)

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
        return stack.index_select(0, index)  # ten times faster than stack[index] on CPU, the same bytes

    def _decode(self, i: int) -> torch.Tensor:
        if i not in self._decoded:
            self._decoded[i] = read_image(self.files[i])
        return self._decoded[i]

    @staticmethod
    def _resize(texture: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        h, w, c = size
        texture = TF.resize(texture, [h, w], antialias=True)
        # RGB textures of grey images: torchvision's grey (0.2989 R, truncated), not match_channels' (LUMA,
        # rounded), so that MemSeg's bytes stay as they were.
        return TF.rgb_to_grayscale(texture) if c == 1 else match_channels(texture, c)


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
