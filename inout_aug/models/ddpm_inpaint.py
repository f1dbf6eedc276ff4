"""The ``ddpm`` backend's second kind, ``kind="inpaint"`` (v2): a pixel diffusion model that inpaints in context.

As in Stable Diffusion's inpainting UNet, the UNet sees the noisy patch, the patch with its hole zeroed and the
hole itself (2C + 1 input channels), so it fits what it paints to the surroundings by itself, one UNet call per
step: no RePaint resampling jumps (v1, :mod:`inout_aug.models.ddpm`). Its classes are "surface" (0) and the defect
types it was trained on (class k + 1 for ``config.types[k]``), plus the null class of classifier-free guidance:
one model serves every type of a dataset and ``defect_type`` picks one when sampling.

Training (:func:`train_inpaint`): ``defect_share`` of each batch are windows around a real defect with its real
mask as the hole (a flip, 90° turns, place and scale jitter, brightness/contrast), labelled with its type; the
rest are crops of normal images with the hole of a real defect's window, labelled "surface": the holes of both
have the same shapes and places, so the label, not the hole, says what to paint. The loss is on the hole's
pixels only: sampling replaces the known pixels of the noisy patch by the noised input at every step, so the
UNet's prediction there is never used (and it follows from the inputs anyway); a loss there would dilute the
hole's, at most about a quarter of a window.

Sampling (:meth:`InpaintDefectModel.inpaint`): ``steps`` DDIM or DPM-Solver++ steps, one UNet call each (on a
doubled batch with guidance), the known pixels kept by that blending and pasted exactly at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import UNet2DModel

from inout_aug.models.ddpm import (
    DDPMConfig,
    DDPMDefectModel,
    _check_inputs,
    _defect_patch,
    _guided_eps,
    _inference_scheduler,
    _noise,
    _normal_patch,
    _train,
    _training_inputs,
    _window,
)

#: The class of normal surface; defect type ``config.types[k]`` is class k + 1, the null class comes last.
SURFACE = 0


class InpaintDefectModel(DDPMDefectModel):
    """A trained v2 ddpm model: its settings (``kind="inpaint"``, ``types``) and UNet; :meth:`inpaint` paints
    defects of its types into images inside masks. Saved and loaded like v1 (:meth:`DDPMDefectModel.load` returns
    this class for an inpaint model)."""

    def __init__(self, config: DDPMConfig, unet: UNet2DModel):
        if config.kind != "inpaint" or not config.types:
            raise ValueError(f"an inpaint model needs a kind='inpaint' config naming its defect types, got kind "
                             f"{config.kind!r} with types {config.types}")
        super().__init__(config, unet)

    @property
    def types(self) -> tuple[str, ...]:
        """The defect types it paints, in class order."""
        return self.config.types

    def class_of(self, defect_type: str) -> int:
        """The class label of ``defect_type``; one the model does not know raises a ValueError naming its types."""
        if defect_type not in self.types:
            raise ValueError(f"unknown defect type {defect_type!r}: this model paints {', '.join(self.types)}")
        return self.types.index(defect_type) + 1

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, masks: torch.Tensor, *,
                generator: torch.Generator | Sequence[torch.Generator], steps: int = 25,
                guidance: float | None = None, scheduler: str = "ddim",
                defect_type: str | Sequence[str | None] | None = None) -> torch.Tensor:
        """Paint a defect of ``defect_type`` into each (B, C, H, W) float [0, 1] image inside its (B, H, W) bool mask.

        ``defect_type``: one type for every image, or one per image; an image without one (None) gets a type
        drawn uniformly from its generator. ``generator``, windows, ``guidance`` (default
        ``config.guidance_scale``) and the result: as in :meth:`DDPMDefectModel.inpaint`; ``steps`` of
        ``scheduler`` ("ddim" or "dpm++"), no resampling jumps.
        """
        _check_inputs(images, masks, scheduler, steps, 0)
        if defect_type is None or isinstance(defect_type, str):
            defect_type = [defect_type] * len(images)
        elif len(defect_type) != len(images):
            raise ValueError(f"give one defect type, or one per image ({len(images)}), not {len(defect_type)}")
        classes = [None if kind is None else self.class_of(kind) for kind in defect_type]
        scale = self.config.guidance_scale if guidance is None else float(guidance)

        def sample(known: torch.Tensor, holes: torch.Tensor,
                   rows_generator: torch.Generator | list[torch.Generator], rows: list[int]) -> torch.Tensor:
            labels = self._labels([classes[i] for i in rows], rows_generator)
            return self._sample_in_context(known, holes, labels, rows_generator, steps, scale, scheduler)

        return self._in_windows(images, masks, generator, sample)

    def _labels(self, given: list[int | None], generator: torch.Generator | list[torch.Generator]) -> torch.Tensor:
        """The class label of each row: its ``given`` one, else one drawn from its generator. With one generator
        for all rows, any None draws a label for every row (then the given ones are put in); with one per row,
        only the rows without a label draw, so a row's draws do not depend on the batch it is in."""
        classes = len(self.types) + 1
        if isinstance(generator, torch.Generator):
            if all(label is not None for label in given):
                return torch.tensor(given, dtype=torch.long, device=self.device)
            drawn = torch.randint(1, classes, (len(given),), generator=generator, device=generator.device).tolist()
        else:
            drawn = [int(torch.randint(1, classes, (1,), generator=g, device=g.device)) if label is None else None
                     for label, g in zip(given, generator)]
        return torch.tensor([d if label is None else label for d, label in zip(drawn, given)], dtype=torch.long,
                            device=self.device)

    def _sample_in_context(self, known: torch.Tensor, holes: torch.Tensor, labels: torch.Tensor,
                           generator: torch.Generator | list[torch.Generator], steps: int, guidance: float,
                           scheduler: str) -> torch.Tensor:
        """Sampling of (N, C, P, P) patches in [-1, 1] conditioned on ``known`` outside ``holes`` (N, 1, P, P)."""
        device = self.device
        known, holes = known.to(device), holes.to(device)
        context = torch.cat([known.masked_fill(holes, 0), holes.to(known.dtype)], 1)
        sched = _inference_scheduler(self.config, scheduler)
        sched.set_timesteps(steps)
        alphas = sched.alphas_cumprod.to(device)
        null = len(self.types) + 1
        x = _noise(known.shape, generator, device)
        for t in sched.timesteps:
            a = alphas[t]
            x = torch.where(holes, x, a.sqrt() * known + (1 - a).sqrt() * _noise(known.shape, generator, device))
            eps = _guided_eps(self.unet, torch.cat([x, context], 1), t, labels, null, guidance)
            x = sched.step(eps, t, x).prev_sample
        return torch.where(holes, x, known)


def train_inpaint(normals: Sequence[torch.Tensor], defects: Sequence[tuple[torch.Tensor, torch.Tensor, str]],
                  config: DDPMConfig, *, progress: bool = True,
                  device: str | torch.device | None = None) -> InpaintDefectModel:
    """Train a v2 model from scratch on normal images (C, H, W) uint8 and defects (image, (H, W) bool mask, type).

    ``config.kind`` must be "inpaint". Its ``types`` are the classes: the defects' types, sorted, when empty;
    when given, every defect's type must be one of them. Batches: see the module docstring. Seeded by
    ``config.seed``: the same inputs give the same weights on CPU. ``progress`` shows a bar with the loss on stderr.
    Data parallel and ``device``: as :func:`~inout_aug.models.ddpm.train_ddpm`.
    """
    if config.kind != "inpaint":
        raise ValueError(f"train_inpaint trains kind='inpaint' models, got kind {config.kind!r} (use train_ddpm)")
    found = sorted({defect_type for *_, defect_type in defects})
    types = config.types or tuple(found)
    unknown = [name for name in found if name not in types]
    if unknown:
        raise ValueError(f"defect types {', '.join(unknown)} are not among the configured types {', '.join(types)}")
    config = DDPMConfig.from_dict({**config.to_dict(), "types": types})
    config, normals, pairs = _training_inputs(normals, [(image, mask) for image, mask, _ in defects], config)
    classes = [types.index(defect_type) + 1 for *_, defect_type in defects]
    sides = [max(_window(mask, config)[2:]) for _, mask in pairs]

    def draw(generator: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return _window_batch(normals, pairs, classes, sides, round(size * config.defect_share), size, config,
                             generator)

    return InpaintDefectModel(config, _train(config, draw, progress, device))


def _window_batch(normals: list[torch.Tensor], defects: list[tuple[torch.Tensor, torch.Tensor]], classes: list[int],
                  sides: list[int], n_defect: int, size: int, config: DDPMConfig,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch of ``size``: ``n_defect`` windows around real defects (class of their type), then normal
    crops with the hole of a real defect's window (surface). Returns the patches in [-1, 1], the loss weights (the
    holes, (B, 1, P, P)), the labels and the context (patches with their holes zeroed, and the holes)."""
    patches, holes, labels = [], [], []
    for row in range(size):
        pick = int(torch.randint(len(defects), (1,), generator=generator))
        patch, defect = _defect_patch([defects[pick]], config, generator)
        if row >= n_defect:
            patch = _normal_patch(normals, sides, config, generator)
        patches.append(patch)
        holes.append(defect > 0)
        labels.append(classes[pick] if row < n_defect else SURFACE)
    batch, hole = torch.stack(patches), torch.stack(holes)
    weight = hole.to(batch.dtype)
    return batch, weight, torch.tensor(labels), torch.cat([batch.masked_fill(hole, 0), weight], 1)
