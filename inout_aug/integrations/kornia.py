"""Any inout-aug augmenter as a kornia augmentation: ``AugmentationSequential(KorniaDefect(augmenter), ...)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

try:
    import kornia
    from kornia.augmentation import IntensityAugmentationBase2D
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError('inout_aug.integrations.kornia needs kornia: pip install "inout-aug[kornia]"') from exc

from inout_aug.core.augmenter import Augmented, Augmenter, Outcome
from inout_aug.integrations import checked_augmenter

__all__ = ["KorniaDefect"]

# The adapter follows kornia 0.9's augmentation base (the whole batch reaches ``apply_transform``, ``_gate`` picks
# the samples); the transplant augmenter works with ``kornia>=0.7``.
if tuple(int(part) for part in kornia.__version__.split(".")[:2]) < (0, 9):
    raise ImportError(f"inout_aug.integrations.kornia needs kornia 0.9 or newer, found {kornia.__version__}: "
                      'pip install "inout-aug[kornia]"')


@dataclass
class _Made:
    """What the last image call made: its seed and gate (the key), each sample's defect mask and outcome."""

    seed: int
    gate: torch.Tensor
    mask: torch.Tensor
    outcome: torch.Tensor


class KorniaDefect(IntensityAugmentationBase2D):
    """Paint an inout-aug ``augmenter``'s defect into a (B, C, H, W) float batch in [0, 1], on its device.

    Inside ``kornia.augmentation.AugmentationSequential`` the defect mask is OR-ed (a maximum, in every channel)
    into the ``"mask"`` data key, float or bool, (B, 1, H, W) or (B, H, W) (returned (B, 1, H, W) unless
    ``keepdim=True``, as by any kornia augmentation); the geometric augmentations after it move it with the image.
    A replaced image (``Outcome.REPLACED``) gets its new mask only, and boxes or keypoints with it raise. After a
    call, :attr:`defect` says which samples got a defect (label 1).

    Each sample is augmented with kornia's probability ``p`` (the augmenter must be built with ``p=1``).
    Randomness follows kornia's convention: one seed per batch is drawn from torch's global generator into the
    parameters (``torch.manual_seed`` reproduces a call), and the augmenter is reseeded from it, so replaying
    ``params`` reproduces the defect. ``same_on_batch=True`` reseeds the augmenter from that seed for every
    sample: the same draws, so the same defect wherever the augmenter's draws do not depend on the image.

    The mask handler uses the defect made by the latest image call with the same parameters, so the image must
    be transformed before its masks, as ``AugmentationSequential`` does; per-sample mask lists are not supported.
    """

    def __init__(self, augmenter: Augmenter, p: float = 1.0, same_on_batch: bool = False, keepdim: bool = False):
        super().__init__(p=p, same_on_batch=same_on_batch, keepdim=keepdim)
        self.augmenter = checked_augmenter(augmenter, "KorniaDefect")
        self._made: _Made | None = None

    @property
    def defect(self) -> torch.Tensor:
        """(B,) bool: which samples of the latest call got a defect or a new image (their label is 1)."""
        if self._made is None:
            raise RuntimeError("KorniaDefect has not been called yet")
        return self._made.outcome != Outcome.UNTOUCHED

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return {"seed": torch.randint(2**62, (), dtype=torch.int64)}

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        seed = int(params["seed"])
        gate = self._gate(params).cpu()
        rows = gate.nonzero().flatten()
        mask = torch.zeros((input.shape[0], *input.shape[2:]), dtype=torch.bool, device=input.device)
        outcome = torch.zeros(input.shape[0], dtype=torch.int8)
        output = input
        if len(rows):
            on_device = rows.to(input.device)
            picked = input if len(rows) == len(gate) else input[on_device]
            if self.same_on_batch:
                made = [self._augment(picked[j:j + 1], seed) for j in range(len(picked))]
            else:
                made = [self._augment(picked, seed)]
            output = input.clone()
            output[on_device] = torch.cat([m.image for m in made])
            mask[on_device] = torch.cat([m.mask for m in made])
            outcome[rows] = torch.cat([m.outcome for m in made])
        self._made = _Made(seed, gate, mask, outcome)
        return output

    def _augment(self, image: torch.Tensor, seed: int) -> Augmented:
        self.augmenter.reseed(seed)
        return self.augmenter.augment(image, describe=False)

    def _lookup(self, params: dict[str, torch.Tensor]) -> _Made:
        """The defect the latest image call made with ``params``."""
        made = self._made
        if made is None or made.seed != int(params["seed"]) or not torch.equal(made.gate, self._gate(params).cpu()):
            raise RuntimeError("KorniaDefect made no defect with these parameters: transform the image before its "
                               "masks, boxes or keypoints (AugmentationSequential with an 'input' data key does); "
                               "per-sample mask lists are not supported")
        return made

    def apply_transform_mask(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                             transform: torch.Tensor | None = None) -> torch.Tensor:
        made = self._lookup(params)
        defect = made.mask.to(input.device, input.dtype)[:, None]
        replaced = (made.outcome == Outcome.REPLACED).to(input.device)[:, None, None, None]
        return torch.maximum(input.masked_fill(replaced, 0), defect)

    def apply_transform_box(self, input: Any, params: dict[str, torch.Tensor], flags: dict[str, Any],
                            transform: torch.Tensor | None = None) -> Any:
        return self._keep_annotations(input, params, "boxes")

    def apply_transform_keypoint(self, input: Any, params: dict[str, torch.Tensor], flags: dict[str, Any],
                                 transform: torch.Tensor | None = None) -> Any:
        return self._keep_annotations(input, params, "keypoints")

    def _keep_annotations(self, input: Any, params: dict[str, torch.Tensor], what: str) -> Any:
        """``input`` unchanged (a painted defect moves nothing), unless the augmenter replaced an image."""
        if (self._lookup(params).outcome == Outcome.REPLACED).any():
            raise ValueError(f"{type(self.augmenter).__name__} replaced an image, so its {what} would describe an "
                             "image that is gone: apply KorniaDefect before they exist")
        return input
