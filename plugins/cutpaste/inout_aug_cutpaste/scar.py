"""CutPaste "scar" (Li et al., CVPR 2021): a thin rotated rectangle cut from the image and pasted elsewhere."""

from __future__ import annotations

import math
from typing import Any

import torch

from inout_aug.core.augmenter import Augmenter
from inout_aug.core.sample import grey

#: Image side (pixels) at which ``width`` and ``length`` are given; sizes scale with min(H, W) / REFERENCE.
REFERENCE = 256.0


def _size_range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of pixel sizes, got {value!r}") from None
    if not (0 < lo <= hi < math.inf):
        raise ValueError(f"{name} must satisfy 0 < min <= max (pixels at a 256-px image), got {value!r}")
    return lo, hi


class CutPasteScar(Augmenter):
    """CutPaste scar: a thin rotated rectangle cut from the image, colour-jittered and pasted elsewhere.

    Per sample, a rectangle of width ``U(*width)`` and length ``U(*length)`` pixels (given for a 256-px
    image and scaled by ``min(H, W) / 256``), rotated by ``U(-angle, angle)`` degrees, is cut at a random
    position, its brightness and contrast are scaled by factors in ``[1 - jitter, 1 + jitter]``, and it
    is pasted at another random position. Both positions keep the whole rectangle inside the image
    (a rectangle too large for the image is shrunk to fit) and the scar covers at least one pixel.
    The mask is the pasted region.
    """

    name = "cutpaste_scar"

    def __init__(
        self,
        p: float = 1.0,
        *,
        width: tuple[float, float] = (2.0, 16.0),
        length: tuple[float, float] = (10.0, 25.0),
        angle: float = 45.0,
        jitter: float = 0.1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(p=p, seed=seed, generator=generator)
        self.width = _size_range("width", width)
        self.length = _size_range("length", length)
        if not 0.0 <= float(angle) <= 180.0:
            raise ValueError(f"angle must be a maximum rotation in [0, 180] degrees, got {angle!r}")
        if not 0.0 <= float(jitter) <= 1.0:
            raise ValueError(f"jitter must be a brightness/contrast amount in [0, 1], got {jitter!r}")
        self.angle = float(angle)
        self.jitter = float(jitter)

    def make_params(self, image: torch.Tensor) -> dict[str, Any]:  # type: ignore[override]
        """Draw size (px), angle (deg), integer source/target centres (x, y) and jitter factors per sample."""
        n, _, h, w = image.shape
        u = torch.rand((n, 9), generator=self.generator, device=self.generator.device, dtype=torch.float64)
        scale = min(h, w) / REFERENCE
        width = (self.width[0] + u[:, 0] * (self.width[1] - self.width[0])) * scale
        length = (self.length[0] + u[:, 1] * (self.length[1] - self.length[0])) * scale
        angle = (2 * u[:, 2] - 1) * self.angle
        # Half extents (x, y) of the rotated rectangle's bounding box, shrunk where the image is too small.
        cos, sin = torch.cos(torch.deg2rad(angle)).abs(), torch.sin(torch.deg2rad(angle)).abs()
        half = torch.stack([length * cos + width * sin, length * sin + width * cos], 1) / 2
        room = torch.tensor([(w - 1) // 2, (h - 1) // 2], dtype=half.dtype, device=half.device)
        fit = (room / half).amin(1).clamp(max=1.0)
        width, length, half = width * fit, length * fit, half * fit[:, None]
        # Integer centres that keep the rectangle inside the image (the tolerance absorbs rounding in `fit`).
        last = torch.tensor([w - 1, h - 1], dtype=half.dtype, device=half.device)
        lo, hi = (half - 1e-6).ceil(), (last - half + 1e-6).floor()
        span = hi - lo + 1
        source = torch.minimum(lo + (u[:, 3:5] * span).floor(), hi).long()
        target = torch.minimum(lo + (u[:, 5:7] * span).floor(), hi).long()
        factors = 1 + (2 * u[:, 7:9] - 1) * self.jitter
        params = {
            "width": width.float(),
            "length": length.float(),
            "angle": angle.float(),
            "source": source,
            "target": target,
            "brightness": factors[:, 0].float(),
            "contrast": factors[:, 1].float(),
        }
        return {key: value.to(image.device) for key, value in params.items()}

    def transform(self, image: torch.Tensor, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Paste each sample's jittered scar; return (image, (N, H, W) bool mask of the pasted region)."""
        n, c, h, w = image.shape
        target, offset = params["target"], params["source"] - params["target"]
        ys = torch.arange(h, device=image.device)[None, :, None]
        xs = torch.arange(w, device=image.device)[None, None, :]
        dx = (xs - target[:, 0, None, None]).float()
        dy = (ys - target[:, 1, None, None]).float()
        theta = torch.deg2rad(params["angle"])[:, None, None]
        along = dx * torch.cos(theta) + dy * torch.sin(theta)
        across = dy * torch.cos(theta) - dx * torch.sin(theta)
        mask = (along.abs() <= params["length"][:, None, None] / 2) & (
            across.abs() <= params["width"][:, None, None] / 2
        )
        # Source pixels of the whole grid; clamping only touches pixels outside the mask.
        src_y = (ys + offset[:, 1, None, None]).clamp(0, h - 1)
        src_x = (xs + offset[:, 0, None, None]).clamp(0, w - 1)
        index = (src_y * w + src_x).flatten(1)[:, None].expand(n, c, -1)
        patch = image.flatten(2).gather(2, index).view(n, c, h, w)

        brightness = params["brightness"].to(image.dtype)[:, None, None, None]
        contrast = params["contrast"].to(image.dtype)[:, None, None, None]
        patch = (patch * brightness).clamp(0, 1)
        area = mask.sum((1, 2)).clamp(min=1)
        mean = ((grey(patch) * mask).sum((1, 2)) / area)[:, None, None, None]
        patch = (contrast * patch + (1 - contrast) * mean).clamp(0, 1)
        return torch.where(mask[:, None], patch, image), mask

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, width={self.width}, length={self.length}, "
            f"angle={self.angle}, jitter={self.jitter}"
        )
