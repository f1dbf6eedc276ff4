"""MemSegRegion: MemSeg's per-region defect simulation (Perlin mask, texture or structural source, blend)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from inout_aug.augmenters.memseg.noise import perlin_masks
from inout_aug.augmenters.memseg.sources import AnomalySource, ProceduralTexture, TextureFolder, uniform
from inout_aug.augmenters.memseg.structural import StructuralSource
from inout_aug.core.augmenter import Augmenter, check_probability
from inout_aug.core.sample import as_bytes, as_float, grey


class MemSegRegion(Augmenter):
    """MemSeg's per-region defect simulation: Perlin-noise regions filled with texture or shuffled structure.

    After Yang et al. 2023, per sample of a batch:

    1. mask ``M = (Perlin(2^ky x 2^kx cells, rotated by a) > threshold) ⊙ foreground``, with ``ky, kx``
       uniform in {perlin_min_exponent, ..., perlin_max_exponent} independently and ``a`` uniform in
       [-rotation, rotation] degrees; an empty mask is redrawn (only the empty ones, at most ``max_tries``
       draws in all; a mask still empty leaves the sample untouched);
    2. anomaly source ``A``: a texture with probability ``texture_prob`` (``textures`` folder, else
       procedural textures), else the structural source (``structural_ops`` random operations of the
       image itself, then its ``grid`` of tiles shuffled); ``sources=`` replaces the pair (chosen with
       ``source_weights``, uniform by default);
    3. blend ``I' = (1 − M) ⊙ I + δ · (M ⊙ A) + (1 − δ) · (M ⊙ I)``, ``δ ~ U(delta_range)``.

    The noise image is not rotated with zero-filled corners as in the reference: the field is computed on
    a canvas covering every rotation of the image, from a periodic gradient lattice, then sampled
    bilinearly along the rotated pixel grid, so rotated coordinates never fall outside the noise
    (see :mod:`inout_aug.augmenters.memseg.noise`).

    ``foreground`` restricts the mask: None (textures: everywhere), a grey level in [0, 1] (foreground is
    brighter), ``"otsu"`` (per-image Otsu level), a fixed (H, W) mask tensor, or a function of the float
    (N, C, H, W) batch returning (N, H, W) masks; ``foreground_invert`` takes the complement.

    Recorded per sample (``describe``): ``exponents`` (ky, kx), ``angle``, ``delta``, ``source`` (class name).
    """

    name = "memseg"
    keeps_outside = True

    def __init__(
        self,
        p: float = 1.0,
        *,
        perlin_min_exponent: int = 0,
        perlin_max_exponent: int = 5,
        rotation: float = 90.0,
        threshold: float = 0.5,
        texture_prob: float = 0.5,
        delta_range: tuple[float, float] = (0.15, 1.0),
        grid: tuple[int, int] = (8, 8),
        structural_ops: int = 3,
        textures: str | None = None,
        sources: Sequence[AnomalySource] | None = None,
        source_weights: tuple[float, ...] | None = None,
        foreground: float | str | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
        foreground_invert: bool = False,
        max_tries: int = 16,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(p=p, seed=seed, generator=generator)
        if not 0 <= int(perlin_min_exponent) <= int(perlin_max_exponent):
            raise ValueError(
                f"need 0 <= perlin_min_exponent <= perlin_max_exponent, got {perlin_min_exponent}, "
                f"{perlin_max_exponent}"
            )
        try:
            low, high = (float(v) for v in delta_range)
            valid = 0.0 <= low <= high <= 1.0
        except (TypeError, ValueError):  # not a pair of numbers
            valid = False
        if not valid:
            raise ValueError(f"delta_range must be (low, high), 0 <= low <= high <= 1, got {delta_range!r}")
        if int(max_tries) < 1:
            raise ValueError(f"max_tries must be at least 1, got {max_tries}")
        if isinstance(foreground, str) and foreground != "otsu":
            raise ValueError(f"foreground string must be 'otsu', got {foreground!r}")
        if foreground_invert and foreground is None:
            raise ValueError("foreground_invert needs a foreground: a grey level, 'otsu', a mask, a function")
        self.perlin_exponents = (int(perlin_min_exponent), int(perlin_max_exponent))
        self.rotation = abs(float(rotation))
        self.threshold = float(threshold)
        self.delta_range = (low, high)
        self.foreground = foreground
        self.foreground_invert = bool(foreground_invert)
        self.max_tries = int(max_tries)
        self.sources, weights = _pick_sources(
            textures, sources, source_weights, texture_prob, grid, structural_ops
        )
        self.source_weights = torch.tensor(weights, dtype=torch.float)

    def make_params(self, image: torch.Tensor) -> dict[str, Any]:  # type: ignore[override]
        image = image.float()  # the sources and the noise work in float32 whatever the float input
        n = len(image)
        mask, exponents, angle = self._draw_masks(image)
        delta = uniform((n,), *self.delta_range, self.generator, image.device)
        weights = self.source_weights.to(self.generator.device)
        source = torch.multinomial(weights, n, replacement=True, generator=self.generator).to(image.device)
        anomaly = self._draw_anomaly(image, source)
        return {
            "mask": mask, "anomaly": anomaly,
            "exponents": exponents, "angle": angle, "delta": delta, "source": source,
        }

    def transform(self, image: torch.Tensor, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        # I' = lerp(I, A, δ·M) = (1 − M)⊙I + δ·(M⊙A) + (1 − δ)·(M⊙I) in one pass, written over A (ours).
        # Outside M the weight is 0 and lerp returns I bit for bit (keeps_outside).
        dtype = torch.promote_types(image.dtype, torch.float32)  # float64 input keeps its precision
        anomaly = as_float(params["anomaly"]).to(dtype)
        mask = params["mask"]
        weight = mask[:, None].to(dtype).mul_(params["delta"].view(-1, 1, 1, 1).to(anomaly))
        return torch.lerp(image.to(dtype), anomaly, weight, out=anomaly), mask

    def describe(self, params: dict[str, Any], index: int, n: int) -> dict[str, Any]:
        out = super().describe(params, index, n)
        out["source"] = type(self.sources[out["source"]]).__name__
        return out

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, perlin_exponents={self.perlin_exponents}, rotation={self.rotation}, "
            f"threshold={self.threshold}, delta_range={self.delta_range}, sources={self.sources}, "
            f"weights={self.source_weights.tolist()}, foreground={self.foreground!r}"
        )

    def _draw_anomaly(self, image: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) anomaly images of our own, row i from ``sources[source[i]]`` (uint8 if all gave uint8)."""
        drawn = []
        for k, maker in enumerate(self.sources):
            rows = (source == k).nonzero().flatten()
            if not len(rows):
                continue
            every = len(rows) == len(image)
            if maker.uses_pixels:
                subset = image if every else image.index_select(0, rows)
            else:
                subset = image.new_empty(()).expand(len(rows), *image.shape[1:])
            made = maker.draw(subset, self.generator)
            if made.shape != subset.shape or not (made.dtype == torch.uint8 or made.is_floating_point()):
                raise ValueError(
                    f"{maker!r}.draw returned {made.dtype} of shape {tuple(made.shape)} for images of shape "
                    f"{tuple(subset.shape)}: an anomaly source must return uint8 or float images of that shape"
                )
            if made.untyped_storage().data_ptr() == image.untyped_storage().data_ptr():
                made = made.clone()  # a source that hands back its input: transform writes over the anomaly
            if every and made.dtype in (torch.uint8, image.dtype) and made.is_contiguous():
                return made
            drawn.append((rows, made))
        as_bytes = all(made.dtype == torch.uint8 for _, made in drawn)
        anomaly = torch.empty(image.shape, dtype=torch.uint8 if as_bytes else image.dtype, device=image.device)
        for rows, made in drawn:
            anomaly.index_copy_(0, rows, made if as_bytes else as_float(made).to(image.dtype))
        return anomaly

    def _draw_masks(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Perlin masks (N, H, W) bool with their exponents (N, 2) and angles (N,), empty ones redrawn."""
        n, _, h, w = image.shape
        return perlin_masks(n, (h, w), self.generator, exponents=self.perlin_exponents, rotation=self.rotation,
                            threshold=self.threshold, region=self._foreground(image), max_tries=self.max_tries,
                            device=image.device)

    def _foreground(self, image: torch.Tensor) -> torch.Tensor | None:
        """(N, H, W) bool region where defects may go, or None for everywhere."""
        return foreground_region(image, self.foreground, self.foreground_invert)


def foreground_region(image: torch.Tensor, option: Any, invert: bool = False) -> torch.Tensor | None:
    """(N, H, W) bool region of a float (N, C, H, W) batch where defects may go, or None for everywhere: ``option``
    is None, a grey level in [0, 1] (brighter pixels), ``"otsu"`` (each image's Otsu level), an (H, W) mask or a
    function of the batch returning (N, H, W) masks; ``invert`` takes the complement."""
    if option is None:
        return None
    if isinstance(option, torch.Tensor):
        region = option
    elif callable(option):
        region = option(image)
    elif option == "otsu":
        values = grey(image)
        region = values > otsu_level(values)
    else:
        region = grey(image) > float(option)
    region = _as_region(region, image)
    return ~region if invert else region


def otsu_level(values: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1) Otsu threshold of each (H, W) image of an (N, H, W) batch in [0, 1] (256 levels)."""
    n = len(values)
    bins = as_bytes(values).long().flatten(1)
    hist = torch.zeros((n, 256), dtype=torch.long, device=values.device)
    hist.scatter_add_(1, bins, bins.new_ones(1).expand_as(bins))
    prob = hist.double() / bins.shape[1]
    levels = torch.arange(256, dtype=torch.float64, device=values.device)
    below = prob.cumsum(1)
    mean_below = (prob * levels).cumsum(1)
    between = (mean_below[:, -1:] * below - mean_below) ** 2 / (below * (1 - below)).clamp_min(1e-12)
    level = between.argmax(1).float()
    return ((level + 0.5) / 255).view(n, 1, 1)


def _as_region(region: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """A foreground mask as (N, H, W) bool on the image's device, from (H, W), (1|N, H, W) or (N, 1, H, W)."""
    n, _, h, w = image.shape
    region = torch.as_tensor(region, device=image.device)
    fits = tuple(region.shape[-2:]) == (h, w) and region.ndim <= 4 and region.numel() // (h * w) in (1, n)
    if not fits:
        raise ValueError(
            f"foreground mask of shape {tuple(region.shape)} does not fit images {tuple(image.shape)}"
            ": give an (H, W) mask, or a function returning (N, H, W) masks for a batch"
        )
    return (region.reshape(-1, h, w) != 0).expand(n, h, w)


def _pick_sources(
    textures: str | Path | None,
    sources: Sequence[AnomalySource] | None,
    weights: Sequence[float] | None,
    texture_prob: float,
    grid: tuple[int, int],
    structural_ops: int,
) -> tuple[tuple[AnomalySource, ...], tuple[float, ...]]:
    """The anomaly sources and their probabilities: ``sources``, else MemSeg's texture/structural pair."""
    if sources is None:
        if weights is not None:
            raise ValueError("source_weights needs sources=; the default pair is weighted by texture_prob")
        texture_prob = check_probability("texture_prob", texture_prob)
        texture = ProceduralTexture() if textures is None else TextureFolder(textures)
        pair = (texture, StructuralSource(ops=structural_ops, grid=tuple(grid)))
        return pair, (texture_prob, 1.0 - texture_prob)
    if textures is not None:
        raise ValueError("give either textures= or sources=, not both (put a TextureFolder in sources)")
    sources = tuple(sources)
    if not sources or not all(isinstance(s, AnomalySource) for s in sources):
        raise TypeError(f"sources must be a non-empty sequence of AnomalySource objects, got {sources!r}")
    weights = tuple(float(v) for v in weights) if weights is not None else (1.0,) * len(sources)
    if len(weights) != len(sources) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(
            f"source_weights must be {len(sources)} non-negative numbers with a positive sum, got {weights!r}"
        )
    return sources, weights
