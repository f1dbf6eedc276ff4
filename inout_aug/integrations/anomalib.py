"""anomalib adapter: any inout-aug augmenter as anomalib's synthetic-anomaly generator.

:class:`AnomalibGenerator` is a drop-in replacement for anomalib's
``anomalib.data.utils.generators.PerlinAnomalyGenerator`` (anomalib 2.7): a torchvision v2 ``Transform`` whose
call takes a float (C, H, W) image or (B, C, H, W) batch in [0, 1] and returns ``(image, mask)``: the image with
the input's shape and dtype, the mask float32 (1, H, W) or (B, 1, H, W) holding 1 inside the defect, 0 elsewhere
(all 0 for a sample left normal, whose image comes back unchanged), both plain tensors on the input's device.
:meth:`AnomalibGenerator.generate` adds the label that anomalib's batches carry (``gt_label``: bool, True for
a defective sample) and the parameters drawn per sample.

The anomalib models that hold a ``PerlinAnomalyGenerator`` as an attribute, and where to swap it in::

    from anomalib.models import Draem, Dsr, Glass
    from inout_aug import create
    from inout_aug.integrations.anomalib import AnomalibGenerator

    draem = Draem(dtd_dir="datasets/dtd")  # downloads DTD there if the folder is missing
    draem.augmenter = AnomalibGenerator(create("memseg", seed=0), probability=0.5)  # used by training_step
    dsr = Dsr()
    dsr.perlin_generator = AnomalibGenerator("memseg", seed=0, probability=0.5)  # its upsampling phase
    glass = Glass()
    glass.model.augmentor = AnomalibGenerator("memseg", seed=0, probability=1.0)  # GlassModel.forward, training

DRAEM and DSR build theirs with ``probability=0.5``, GLASS with ``probability=1`` (and denormalises its images
to [0, 1] before the call). SuperSimpleNet's and DSR's latent-space generators have other interfaces, and
``anomalib.data.utils.synthetic`` builds its generator inside a function: neither is replaced here.

This module needs only torch and torchvision: it imports nothing from anomalib, so it loads without it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torchvision.transforms.v2 import Transform

from inout_aug.core.augmenter import Augmenter, check_probability
from inout_aug.core.registry import create

__all__ = ["AnomalibGenerator", "Generated"]


class Generated(NamedTuple):
    """What :meth:`AnomalibGenerator.generate` returns: ``image`` and ``mask`` as a call returns them, ``label``
    (B,) bool (a 0-d bool for a single image) and ``params``, each sample's drawn parameters (empty dict: normal)."""

    image: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor
    params: list[dict[str, Any]]


class AnomalibGenerator(Transform):
    """An inout-aug augmenter behind anomalib's ``PerlinAnomalyGenerator`` interface.

    ``augmenter`` is an :class:`~inout_aug.Augmenter`, or a registry name built with ``**params``
    (``AnomalibGenerator("memseg", seed=0)``). ``probability`` is each sample's chance of a defect, drawn per
    sample from the augmenter's seeded generator: it is the augmenter's own ``p`` (``None`` keeps it; a value
    sets it, and ``generator.probability`` reads and writes it). Randomness comes from the augmenter alone, so
    its seed reproduces the output; ``PerlinAnomalyGenerator`` draws from torch's global generator instead.

    A sample's mask is the defect's pixel mask. An augmenter that reports a defect without any pixel mask (a
    diffusion image made whole, a weak label) raises ``ValueError``: anomalib would train on it as normal.
    """

    def __init__(self, augmenter: Augmenter | str, probability: float | None = None, **params: Any):
        super().__init__()
        if isinstance(augmenter, str):
            augmenter = create(augmenter, **params)
        elif params:
            raise TypeError(f"parameters {sorted(params)} are for a registry name, not a built augmenter")
        if not isinstance(augmenter, Augmenter):
            raise TypeError(f"augmenter must be an inout_aug.Augmenter or its name, got {type(augmenter).__name__}")
        self.augmenter = augmenter
        if probability is not None:
            self.probability = probability

    @property
    def probability(self) -> float:
        """Each sample's chance of a defect: the augmenter's ``p``."""
        return self.augmenter.p

    @probability.setter
    def probability(self, value: float) -> None:
        self.augmenter.p = check_probability("probability", value)

    def generate(self, img: torch.Tensor) -> Generated:
        """Defects in a float (C, H, W) image or (B, C, H, W) batch in [0, 1]: image, mask, label, params."""
        single = img.ndim == 3
        batch = img.unsqueeze(0) if single else img
        out = self.augmenter.augment(batch.as_subclass(torch.Tensor))
        label = out.defect.to(out.mask.device)
        if (label & ~out.mask.flatten(1).any(1)).any():
            raise ValueError(f"{type(self.augmenter).__name__} made a defect without a pixel mask (a weak label); "
                             "anomalib's generators need one: use an augmenter or mode that paints defects")
        image = out.image.as_subclass(torch.Tensor)
        mask = out.mask.unsqueeze(1).to(torch.float32)
        if single:
            return Generated(image[0], mask[0], label[0], out.params)
        return Generated(image, mask, label, out.params)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, mask)`` for a (C, H, W) image or (B, C, H, W) batch, as ``PerlinAnomalyGenerator`` returns."""
        image, mask, _, _ = self.generate(img)
        return image, mask

    def extra_repr(self) -> str:
        return f"probability={self.probability}"
