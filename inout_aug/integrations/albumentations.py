"""Any inout-aug augmenter as an albumentations 2.x transform: ``A.Compose([AlbumentationsDefect(augmenter), ...])``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from inout_aug.core.augmenter import Augmenter, Outcome, mix_seed
from inout_aug.integrations import checked_augmenter

try:
    from albumentations.core.transforms_interface import BaseTransformInitSchema, DualTransform
    from albumentations.core.type_definitions import Targets
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'inout_aug.integrations.albumentations needs albumentations: pip install "inout-aug[albumentations]"'
    ) from exc

__all__ = ["AlbumentationsDefect"]

#: Spatial annotations that describe the pixels of an image the augmenter may replace.
_ANNOTATIONS = ("masks", "bboxes", "keypoints")


class AlbumentationsDefect(DualTransform):
    """Run an inout-aug ``augmenter`` on ``image`` inside an ``A.Compose`` pipeline.

    ``image`` is HWC (1 or 3 channels) or HW, uint8 or float in [0, 1]; it keeps its shape, dtype and, outside
    the defect, its exact values. Other image targets (``additional_targets``) are left as they are.

    * ``mask``: the defect's pixels are set to ``mask_value`` (in every channel of an HWC mask), the others kept,
      in the mask's dtype: an OR for a binary mask. A replaced image (``Outcome.REPLACED``) gets its new mask only.
    * ``masks``: the defect is appended as one more mask (``mask_value`` inside, 0 outside) when one was made:
      ``masks`` holds one mask per object or class, and OR-ing the defect into each would make it part of all.
    * ``label_key``: a label passed with every call (``pipeline(image=..., label=0)``), a target of this
      transform (so ``strict=True`` accepts it); it becomes 1, in its own type, when a defect was made.

    It applies with albumentations' ``p``; the augmenter must have ``p=1``. Each call draws a seed from
    ``self.random_generator`` (seeded by ``A.Compose(seed=...)``) and reseeds the augmenter with it, so a seeded
    ``Compose`` reproduces the bytes and ``ReplayCompose`` replays the defect. In a DataLoader worker the seed is
    mixed with the worker's torch seed: albumentations 2.0 gives every worker a copy of one state. The augmenter
    runs on the CPU.
    """

    _targets = (Targets.IMAGE, Targets.MASK)

    class InitSchema(BaseTransformInitSchema):
        augmenter: Any
        label_key: str | None
        mask_value: float

    def __init__(self, augmenter: Augmenter, p: float = 1.0, label_key: str | None = None, mask_value: float = 1):
        self.augmenter = checked_augmenter(augmenter, "AlbumentationsDefect")
        self.label_key = label_key
        self.mask_value = mask_value
        super().__init__(p=p)

    @property
    def targets(self) -> dict[str, Callable[..., Any]]:
        targets = {"image": self.apply, "mask": self.apply_to_mask, "masks": self.apply_to_masks}
        if self.label_key is not None:
            targets[self.label_key] = self.apply_to_label
        return targets

    def get_params(self) -> dict[str, Any]:
        seed = int(self.random_generator.integers(2**63 - 1))
        info = get_worker_info()
        return {"seed": seed if info is None else mix_seed(seed, info.seed)}

    def apply_with_params(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        missing = [key for key in ("image", self.label_key) if key is not None and kwargs.get(key) is None]
        if missing:
            raise ValueError(f"AlbumentationsDefect needs {' and '.join(missing)} with the data")
        made = self._make(kwargs["image"], params["seed"])
        if made["outcome"] == Outcome.REPLACED:
            carried = [key for key in _ANNOTATIONS if kwargs.get(key) is not None and len(kwargs[key])]
            if carried:
                raise ValueError(f"{type(self.augmenter).__name__} replaced the image, so its {', '.join(carried)} "
                                 "would describe an image that is gone: apply AlbumentationsDefect before they exist")
        out = super().apply_with_params({**params, **made}, *args, **kwargs)
        out["image"] = made["defect_image"]
        masks = kwargs.get("masks")
        if isinstance(masks, (list, tuple)) and not masks and made["outcome"] != Outcome.UNTOUCHED:
            out["masks"] = [self._paint(np.zeros(made["defect_mask"].shape, np.uint8), made["defect_mask"])]
        return out

    def _make(self, image: np.ndarray, seed: int) -> dict[str, Any]:
        """The defect made on ``image`` from ``seed``: the image, its (H, W) bool mask and the outcome."""
        if image.ndim == 3 and image.shape[2] not in (1, 3):
            raise ValueError(f"AlbumentationsDefect takes HW or HWC images with 1 or 3 channels, got shape "
                             f"{image.shape}; drop an alpha channel with image[..., :3]")
        if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"AlbumentationsDefect takes uint8 (0-255) or float (0-1) images, got {image.dtype}; "
                            "e.g. (image / 65535).astype(np.float32) for 16-bit images")
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        batch = tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]
        self.augmenter.reseed(seed)
        made = self.augmenter.augment(batch, describe=False)
        out = made.image[0, 0] if tensor.ndim == 2 else made.image[0].permute(1, 2, 0)
        return {"defect_image": out.numpy(), "defect_mask": made.mask[0].numpy(), "outcome": int(made.outcome[0])}

    def _paint(self, mask: np.ndarray, defect: np.ndarray) -> np.ndarray:
        """``mask`` with ``mask_value`` where ``defect`` is set (every channel of an HWC mask), in its dtype."""
        inside = defect if mask.ndim == 2 else defect[..., None]
        return np.where(inside, np.asarray(self.mask_value).astype(mask.dtype), mask)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        """Image targets other than ``image`` stay as they are (``apply_with_params`` sets ``image``)."""
        return img

    def apply_to_mask(self, mask: np.ndarray, defect_mask: np.ndarray, outcome: int, **params: Any) -> np.ndarray:
        return self._paint(np.zeros_like(mask) if outcome == Outcome.REPLACED else mask, defect_mask)

    def apply_to_masks(self, masks: np.ndarray, defect_mask: np.ndarray, outcome: int, **params: Any) -> np.ndarray:
        if outcome == Outcome.UNTOUCHED:
            return masks
        return np.concatenate([masks, self._paint(np.zeros(masks.shape[1:], masks.dtype), defect_mask)[None]])

    def apply_to_label(self, label: Any, outcome: int, **params: Any) -> Any:
        if outcome == Outcome.UNTOUCHED:
            return label
        if isinstance(label, np.ndarray):
            return np.ones_like(label)
        if isinstance(label, torch.Tensor):
            return torch.ones_like(label)
        return type(label)(1)
