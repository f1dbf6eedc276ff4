"""Transplant: real defects copied, warped and blended into normal images (an in-distribution control)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf

from inout_aug.augmenters.memseg.region import foreground_region
from inout_aug.core.augmenter import Augmenter
from inout_aug.core.io import read_image
from inout_aug.core.sample import as_float, match_channels
from inout_aug.data.layouts import FolderLayout, LayoutError, Record, open_dataset, read_mask
from inout_aug.data.masks import bounding_box, fit_size, resize_with_mask
from inout_aug.data.training import choose_defects

MATCHES = ("relative", "gain", "mean")
#: Limits of the factor of ``match="gain"``: a near-black source ring must not blow a defect up.
GAIN = (0.25, 4.0)
#: Alpha below this is cut to 0, so the blended region is exact on every device (a blur leaves tiny tails).
ALPHA_FLOOR = 1e-3
_ZERO_SHOT = "zero-shot has none: use memseg or diffusion (backend='sd') for zero-shot defects"


@dataclass(frozen=True)
class _Defect:
    """One real defect: a (C, h, w) uint8 crop of its image, ``margin`` px around its mask's bounding box on every
    side (replicated where the image ends), and the (h, w) bool mask crop."""

    name: str
    defect_type: str
    image: torch.Tensor
    mask: torch.Tensor


class _DefectFolder(FolderLayout):
    """The folder layout without ``normal/``: ``defect/`` images with their ``masks/``."""

    @classmethod
    def matches(cls, root: Path) -> bool:
        return (root / "defect").is_dir()


class Transplant(Augmenter):
    """Real-defect transplant: a real defect copied, warped and blended into a normal image (in-distribution control).

    The real defects come from ``defects``: a dataset of any layout (its defective images with a mask, of
    ``defect_type`` when given) or a folder with ``defect/`` and ``masks/``; ``shots`` restricts them to a list
    of image paths, or to N picked as a few-shot setup picks them (``choose_defects(..., "few", N, shots_seed)``
    over the defects of ``split``). Each is decoded once and kept as a crop around its mask. ``fit=(H, W)``: the
    targets are images like the sources resized to fit (H, W) keeping their aspect ratio (as ``inout-aug bench``
    resizes them), so each source is resized by the same factor, min(H / h, W / w), before its defect is cut:
    defects keep their size relative to their image.

    Per sample: a defect, a horizontal flip (``flip``), 0-3 quarter turns (``turns``), a scale uniform in
    ``scale``, an angle uniform in ±``rotation`` degrees and a centre on a random pixel of the target's
    ``foreground`` (None: anywhere; a grey level: brighter pixels; "otsu": the per-image Otsu level; anywhere
    when the foreground has no room) such that the defect lies fully inside the image (shrunk when it is too
    big). Crop and mask are warped by one batched kornia ``warp_affine`` (bilinear, the mask thresholded).

    Intensity is matched on the defect's ring (its mask dilated by ``feather + 2`` px, minus the mask), per
    channel: ``match="relative"`` multiplies the target's own pixels by the defect's ratio to its ring mean (the
    target's texture shows through, its ring keeps its mean: the most seamless, right for shading defects such as
    pits, cracks, scratches); ``"gain"`` pastes the defect's pixels scaled, ``"mean"`` shifted, so that their ring
    mean is the target's (an opaque defect hides what lies below). The blend weight is 1 on the defect and falls
    smoothly to 0 within ``feather`` px around it (a disc dilation, then a Gaussian blur).

    Mask contract: the returned mask is the blended region, the warped defect mask dilated by up to ``feather`` px
    (alpha > 0), not the defect alone: the feathered ring changes pixels there, and every pixel outside the
    returned mask is bit-for-bit unchanged. ``feather=0`` returns the warped defect mask itself.

    Zero-shot has no real defect to copy: use ``memseg`` or ``diffusion`` (sd backend) there.

    Recorded per sample (``describe``): ``defect`` (file name), ``defect_type``, ``flip``, ``turns``, ``scale``
    (after any shrinking), ``angle`` (degrees) and ``centre`` (y, x pixels).
    """

    name = "transplant"
    keeps_outside = True

    def __init__(
        self,
        p: float = 1.0,
        *,
        defects: str | os.PathLike,
        defect_type: str | None = None,
        shots: int | Sequence[str | os.PathLike] | None = None,
        shots_seed: int = 0,
        split: str = "all",
        fit: tuple[int, int] | None = None,
        scale: tuple[float, float] = (0.75, 1.33),
        rotation: float = 15.0,
        flip: bool = True,
        turns: bool = True,
        foreground: float | str | None = None,
        feather: int = 3,
        match: str = "relative",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(p=p, seed=seed, generator=generator)
        _require_kornia()
        low, high = (float(v) for v in scale)
        if not 0 < low <= high:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        if int(feather) < 0:
            raise ValueError(f"feather must be a non-negative number of pixels, got {feather}")
        if fit is not None and (len(fit) != 2 or min(fit) < 1):
            raise ValueError(f"fit must be (H, W) of the resized targets, got {fit!r}")
        if match not in MATCHES:
            raise ValueError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")
        if isinstance(foreground, str) and foreground != "otsu":
            raise ValueError(f"foreground string must be 'otsu', got {foreground!r}")
        self.source = Path(defects)
        self.scale = (low, high)
        self.rotation = abs(float(rotation))
        self.flip, self.turns = bool(flip), bool(turns)
        self.foreground = foreground
        self.feather = int(feather)
        self.match = match
        self.ring = self.feather + 2
        # Source pixels the warp must carry around a mask: feather and ring, at the smallest scale.
        self.margin = math.ceil((self.feather + self.ring + 1) / min(low, 1.0))
        records, threshold = _records(self.source, defect_type, shots, shots_seed, split)
        self.fit = None if fit is None else (int(fit[0]), int(fit[1]))
        self.defects = [d for d in (_cut(r, threshold, self.margin, self.fit) for r in records) if d is not None]
        if not self.defects:
            raise ValueError(f"Transplant found no masked defect pixels in {self.source} (defect_type="
                             f"{defect_type!r}, shots={shots!r}): it copies real defects, so {_ZERO_SHOT}")

    # -- parameters ---------------------------------------------------------------------------------------------
    def make_params(self, image: torch.Tensor) -> dict[str, Any]:  # type: ignore[override]
        n, _, h, w = image.shape
        u = self._rand(n, 6)
        pick = (u[:, 0] * len(self.defects)).long().clamp_max(len(self.defects) - 1)
        flip = (u[:, 1] < 0.5) & self.flip
        turns = (u[:, 2] * 4).long().clamp_max(3) * self.turns
        scale = self.scale[0] + u[:, 3] * (self.scale[1] - self.scale[0])
        angle = (2 * u[:, 4] - 1) * self.rotation
        # Half extents (y, x) of each mask's bounding box, turned, rotated and scaled; shrunk to fit the image.
        size = torch.tensor([list(self.defects[k].mask.shape) for k in pick.tolist()], dtype=torch.float)
        size = size - 2 * self.margin
        size = torch.where((turns % 2 == 1)[:, None], size.flip(1), size)
        phi = torch.deg2rad(angle)
        cos, sin = phi.cos().abs(), phi.sin().abs()
        half = torch.stack([cos * size[:, 0] + sin * size[:, 1], sin * size[:, 0] + cos * size[:, 1]], 1) / 2
        room = torch.tensor([h, w]) / 2 - self.feather - 1  # 1 px kept free for the bilinear edge
        scale = scale * (room / (half * scale[:, None])).amin(1).clamp(1e-3, 1.0)
        half = half * scale[:, None]
        low = (half + self.feather + 0.5).ceil()  # the first centre row and column that fit
        high = torch.tensor([h - 1, w - 1]) - low
        low, high = torch.minimum(low, high), torch.maximum(low, high)  # an image too small: its middle
        centre = self._centres(image, low, high, u[:, 5])
        return {"pick": pick, "flip": flip, "turns": turns, "scale": scale, "angle": angle, "centre": centre,
                "half": half}

    def _centres(self, image: torch.Tensor, low: torch.Tensor, high: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(N, 2) float (y, x) centres: the pixel a share ``u`` into the foreground pixels within [low, high]."""
        _, _, h, w = image.shape
        device = image.device
        ys = torch.arange(h, device=device).view(1, h, 1)
        xs = torch.arange(w, device=device).view(1, 1, w)
        low, high = low.to(device)[:, :, None, None], high.to(device)[:, :, None, None]
        allowed = (ys >= low[:, 0]) & (ys <= high[:, 0]) & (xs >= low[:, 1]) & (xs <= high[:, 1])
        region = foreground_region(image.float(), self.foreground)  # None: anywhere
        if region is not None:
            inside = allowed & region
            allowed = torch.where(inside.flatten(1).any(1)[:, None, None], inside, allowed)
        count = allowed.flatten(1).long().cumsum(1)
        wanted = (u.to(device, torch.float64) * count[:, -1]).long().clamp_max(count[:, -1] - 1)
        index = torch.searchsorted(count, wanted[:, None], right=True)[:, 0]
        return torch.stack([index // w, index % w], 1).float().cpu()

    # -- the transplant -----------------------------------------------------------------------------------------
    def transform(self, image: torch.Tensor, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        # All the work happens in a window around each defect (one size for the batch): the cost follows the
        # defects' size, not the images'.
        n, c, h, w = image.shape
        bounds = torch.tensor([h, w])
        size = torch.minimum(2 * (params["half"].ceil().long().amax(0) + self.ring + 2) + 1, bounds)
        origin = (params["centre"].long() - size // 2).clamp_min(0)
        origin = torch.minimum(origin, bounds - size)
        (wh, ww), matrices = size.tolist(), self._matrices(params, origin)
        windows = [(slice(None), slice(y, y + wh), slice(x, x + ww)) for y, x in origin.tolist()]
        source = self._sources(params["pick"].tolist(), c).to(image.device)
        from kornia.geometry.transform import warp_affine

        warped = warp_affine(source, matrices.to(image.device), (wh, ww), mode="bilinear", padding_mode="zeros",
                             align_corners=True)
        patch, defect, valid = warped[:, :c], warped[:, c] > 0.5, warped[:, c + 1:] > 0.999
        dtype = torch.promote_types(image.dtype, torch.float32)
        target = torch.stack([image[i][window] for i, window in enumerate(windows)]).to(dtype)
        ring = (_dilate(defect, self.ring) & ~defect)[:, None] & valid
        ring = torch.where(ring.flatten(1).any(1)[:, None, None, None], ring, valid)  # none: a defect shrunk away
        patch = self._matched(patch, target.float(), ring).clamp_(0, 1)
        alpha = self._alpha(defect) * valid
        alpha = alpha.where(alpha >= ALPHA_FLOOR, 0.0)
        blended = torch.lerp(target, patch.to(dtype), alpha.to(dtype))  # alpha 0: the input bit for bit
        out = image.to(dtype, copy=True)
        mask = torch.zeros((n, h, w), dtype=torch.bool, device=image.device)
        for i, window in enumerate(windows):
            out[i][window] = blended[i]
            mask[i][window[1:]] = alpha[i, 0] > 0
        return out.to(image.dtype), mask

    def _sources(self, picks: list[int], channels: int) -> torch.Tensor:
        """(N, channels + 2, h, w) float: the picked crops, their masks and where they hold pixels (1), zero-padded
        to a common size."""
        crops = [self.defects[k] for k in picks]
        out = torch.zeros((len(picks), channels + 2, max(d.mask.shape[0] for d in crops),
                           max(d.mask.shape[1] for d in crops)))
        for i, defect in enumerate(crops):
            ch, cw = defect.mask.shape
            out[i, :channels, :ch, :cw] = as_float(match_channels(defect.image, channels))
            out[i, channels, :ch, :cw] = defect.mask
            out[i, channels + 1, :ch, :cw] = 1
        return out

    def _matrices(self, params: dict[str, Any], origin: torch.Tensor) -> torch.Tensor:
        """(N, 2, 3) source -> window pixel affines: flip, turns, rotation and scale about the crop's centre pixel,
        which lands on the drawn centre (windows at (y, x) ``origin``)."""
        phi = torch.deg2rad(params["angle"] + 90.0 * params["turns"])
        cos, sin = phi.cos(), phi.sin()
        linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        mirror = torch.stack([1 - 2 * params["flip"].float(), torch.ones(len(phi))], 1)  # x -> -x first
        linear = linear * mirror[:, None, :] * params["scale"].view(-1, 1, 1)
        crop = torch.tensor([list(self.defects[k].mask.shape) for k in params["pick"].tolist()], dtype=torch.float)
        middle = ((crop.flip(1) - 1) / 2).floor()  # (x, y) centre pixel: whole-pixel moves stay exact
        shift = (params["centre"] - origin).flip(1) - (linear @ middle[:, :, None])[:, :, 0]
        return torch.cat([linear, shift[:, :, None]], 2)

    def _matched(self, patch: torch.Tensor, target: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
        """What the target is blended towards: ``patch`` matched to the target on ``ring`` per channel (see
        ``match``)."""
        weight = ring.float()
        count = weight.sum((2, 3), keepdim=True).clamp_min(1)
        mean_s = (patch * weight).sum((2, 3), keepdim=True) / count
        if self.match == "relative":
            return target * (patch / mean_s.clamp_min(1e-3))
        mean_t = (target * weight).sum((2, 3), keepdim=True) / count
        if self.match == "gain":
            return patch * (mean_t / mean_s.clamp_min(1e-3)).clamp(*GAIN)
        return patch - mean_s + mean_t

    def _alpha(self, defect: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) blend weight: 1 on the defect, falling to 0 within ``feather`` px around it (the mask
        dilated by ceil(feather / 2), blurred over floor(feather / 2) px: the support stays within the feather)."""
        grow, blur = (self.feather + 1) // 2, self.feather // 2
        alpha = _dilate(defect, grow)[:, None].float()
        if blur:
            from kornia.filters import gaussian_blur2d

            alpha = gaussian_blur2d(alpha, (2 * blur + 1, 2 * blur + 1), (blur / 2, blur / 2))
        return torch.maximum(alpha, defect[:, None].float())

    def describe(self, params: dict[str, Any], index: int, n: int) -> dict[str, Any]:
        defect = self.defects[int(params["pick"][index])]
        return {"defect": defect.name, "defect_type": defect.defect_type, "flip": bool(params["flip"][index]),
                "turns": int(params["turns"][index]), "scale": float(params["scale"][index]),
                "angle": float(params["angle"][index]), "centre": params["centre"][index].tolist()}

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, defects={str(self.source)!r} ({len(self.defects)}), fit={self.fit}, "
                f"scale={self.scale}, rotation={self.rotation}, flip={self.flip}, turns={self.turns}, "
                f"foreground={self.foreground!r}, feather={self.feather}, match={self.match!r}")


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, H, W) bool mask dilated by a disc of ``radius`` px (a convolution with the disc, thresholded)."""
    if radius == 0:
        return mask
    steps = torch.arange(-radius, radius + 1, dtype=torch.float, device=mask.device)
    disc = (steps[:, None] ** 2 + steps[None] ** 2 <= radius * (radius + 1)).float()
    return nnf.conv2d(mask[:, None].float(), disc[None, None], padding=radius)[:, 0] > 0.5


def _records(path: Path, defect_type: str | None, shots: int | Sequence[str | os.PathLike] | None,
             shots_seed: int, split: str) -> tuple[list[Record], int]:
    """The masked defect records to copy, and the dataset's mask threshold."""
    if isinstance(shots, (str, os.PathLike)):
        shots = [shots]
    if isinstance(shots, int) and shots == 0:
        raise ValueError(f"Transplant got shots=0: it copies real defects, so {_ZERO_SHOT}")
    if not path.is_dir():
        raise FileNotFoundError(f"Transplant: defects folder not found: {path}")
    try:
        dataset = open_dataset(path, split=split)
    except LayoutError as error:
        if not _DefectFolder.matches(path):
            raise LayoutError(f"Transplant: {path} is neither a dataset nor a folder of defect/ (and masks/) "
                              f"images: {error}") from None
        dataset = _DefectFolder(path, split)
    pool = dataset.defects(defect_type)
    if isinstance(shots, int):
        pool = choose_defects(pool, "few", shots, shots_seed)
    elif shots is not None:
        wanted = {Path(os.path.abspath(p)) for p in shots}
        missing = wanted - {r.image for r in pool}
        if missing:
            raise ValueError(f"Transplant: shots not among the defects of {path}: {', '.join(map(str, missing))}")
        pool = [r for r in pool if r.image in wanted]
    return [r for r in pool if r.mask is not None], dataset.mask_threshold


def _cut(record: Record, threshold: int, margin: int, fit: tuple[int, int] | None = None) -> _Defect | None:
    """The defect of ``record`` cut out with ``margin`` px around its mask's bounding box (after resizing the
    image to fit ``fit`` keeping its aspect ratio, when given); None for an empty mask."""
    mask = read_mask(record.mask, threshold)
    image = read_image(record.image)
    if mask.shape != image.shape[-2:]:
        raise ValueError(f"Transplant: mask {record.mask} is {tuple(mask.shape)} but its image {record.image} is "
                         f"{tuple(image.shape[-2:])} (H, W)")
    if fit is not None:
        image, mask = resize_with_mask(image, mask, fit_size(tuple(mask.shape), fit))
    top, left, bottom, right = bounding_box(mask)
    if bottom == 0:
        return None
    h, w = mask.shape
    box = (max(top - margin, 0), max(left - margin, 0), min(bottom + margin, h), min(right + margin, w))
    crop, cut = image[:, box[0]:box[2], box[1]:box[3]], mask[box[0]:box[2], box[1]:box[3]]
    # Replicated where the image ends, so that the mask's box sits in the middle of every crop.
    pad = (box[1] - (left - margin), right + margin - box[3], box[0] - (top - margin), bottom + margin - box[2])
    if any(pad):
        crop = nnf.pad(crop[None].float(), pad, mode="replicate")[0].to(torch.uint8)
        cut = nnf.pad(cut[None, None].float(), pad)[0, 0] > 0
    return _Defect(record.image.name, record.defect_type, crop.contiguous(), cut.contiguous())


def _require_kornia() -> None:
    """kornia (the ``kornia`` extra) warps and feathers the pasted defects; imported where used."""
    try:
        import kornia  # noqa: F401
    except ImportError as exc:
        raise ImportError('the transplant augmenter needs kornia: pip install "inout-aug[kornia]"') from exc
