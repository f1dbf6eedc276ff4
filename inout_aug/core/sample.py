"""Sample structures: read an image, mask and label out of whatever a Dataset returns, and put them back.

Accepted samples (see DESIGN.md): a bare image; ``(image, label)``; ``(image, mask)`` with a
``tv_tensors.Mask``; ``(image, mask, label)``; ``(image, target_dict)``; a dict with an ``"image"`` key.
Images are PIL images (mode L or RGB), ``tv_tensors.Image`` or plain tensors, CHW or BCHW, uint8 or
float in [0, 1]. Masks are binary tensors, HxW or 1xHxW (BxHxW or Bx1xHxW for a batch).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

# A float image may overshoot [0, 1] slightly after interpolation; a 0..255 float image may not.
_FLOAT_RANGE_SLACK = 0.01


#: Spatial annotations other than the defect mask: they describe the image's pixels.
_SPATIAL = tuple(getattr(tv_tensors, name) for name in ("BoundingBoxes", "KeyPoints", "Mask")
                 if hasattr(tv_tensors, name))


@dataclass
class Parsed:
    """A sample taken apart: ``image`` is (B, C, H, W), ``mask`` (B, H, W) bool or None; ``annotations`` names the
    sample's other spatial annotations (boxes, keypoints, other masks), which ``pack(..., drop=True)`` leaves out."""

    image: torch.Tensor
    mask: torch.Tensor | None
    pack: Callable[..., Any]
    annotations: list[str] = field(default_factory=list)


def check_image(image: torch.Tensor, shape: tuple[int, ...] | None = None) -> None:
    """Raise a clear error unless ``image`` is a (B, C, H, W) uint8 or [0, 1] float tensor with 1 or 3 channels;
    ``shape`` is the one the caller gave (a CHW image batched here), shown in the errors instead."""
    shape = tuple(image.shape) if shape is None and isinstance(image, torch.Tensor) else shape
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a tensor or PIL image, got {type(image).__name__}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(
            f"image dtype {image.dtype} is not supported: use uint8 (0-255) or float (0-1), "
            "e.g. image.to(torch.uint8) or image.float() / 255"
        )
    if image.ndim != 4:
        raise ValueError(f"image must be CHW or BCHW, got shape {shape}")
    if image.shape[1] not in (1, 3):
        raise ValueError(
            f"image must have 1 (grey) or 3 (RGB) channels in CHW order, got shape {shape}; "
            "a HWC array needs image.permute(2, 0, 1)"
        )
    if image.requires_grad:
        raise TypeError("image requires grad: an augmenter makes training data, not a differentiable operation; "
                        "pass image.detach()")
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ValueError(f"image is empty: shape {shape}")
    if image.is_floating_point() and image.numel():
        lo, hi = torch.aminmax(image)
        if not (lo >= -_FLOAT_RANGE_SLACK and hi <= 1 + _FLOAT_RANGE_SLACK):  # NaN fails too
            raise ValueError(
                f"float image values must lie in [0, 1], got [{lo.item():.3g}, {hi.item():.3g}]; "
                "divide a 0-255 image by 255"
            )


def as_float(image: torch.Tensor) -> torch.Tensor:
    """A float32 copy of a uint8 image, exactly ``image / 255``; a float image as it is.

    ``float().div_()`` rather than ``div()``: one float buffer instead of two (on CPU, large temporaries
    are costly to allocate).
    """
    return image.float().div_(255) if image.dtype == torch.uint8 else image


def as_bytes(image: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """A uint8 copy of a float image in [0, 1]: ``round(image * 255)``, clamped; ``inplace`` computes it in
    ``image``'s own buffer (which it overwrites) instead of a float temporary."""
    return (image.mul_(255) if inplace else image.mul(255)).round_().clamp_(0, 255).to(torch.uint8)


#: Luma weights of R, G and B: ITU-R BT.601, as PIL's ``convert("L")`` (torchvision's rgb_to_grayscale: 0.2989 R).
LUMA = (0.299, 0.587, 0.114)


def grey(image: torch.Tensor) -> torch.Tensor:
    """(..., H, W) luma of a float (..., C, H, W) image: its one channel, or :data:`LUMA` applied to RGB."""
    if image.shape[-3] == 1:
        return image[..., 0, :, :]
    return torch.einsum("...chw,c->...hw", image, image.new_tensor(LUMA))


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """``image`` (..., C, H, W) with ``channels`` channels, dtype kept: grey repeated to RGB (a view), RGB made
    :func:`grey` (in float32; uint8 rounded)."""
    if image.shape[-3] == channels:
        return image
    if channels == 3:
        return image.expand(*image.shape[:-3], 3, *image.shape[-2:])
    luma = grey(image.float()).unsqueeze(-3)
    return luma.round_().clamp_(0, 255).to(torch.uint8) if image.dtype == torch.uint8 else luma.to(image.dtype)


def check_mask(mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Validate a mask against a (B, C, H, W) image; return it as (B, H, W) bool."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"mask must be a tensor (tv_tensors.Mask), got {type(mask).__name__}; "
            "convert a PIL mask with torchvision.transforms.v2.functional.pil_to_tensor"
        )
    b, _, h, w = image.shape
    if tuple(mask.shape[-2:]) != (h, w):
        raise ValueError(
            f"mask size {tuple(mask.shape[-2:])} does not match image size {(h, w)} (H, W); "
            "resize the mask with nearest interpolation to the image size"
        )
    flat = mask.reshape(-1, h, w)
    if flat.shape[0] != b:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not fit an image batch of {b}: "
            "use HxW or 1xHxW per image, BxHxW or Bx1xHxW per batch"
        )
    if flat.dtype != torch.bool:
        if not ((flat == 0) | (flat == 1)).all():
            raise ValueError(
                f"mask must be binary (0/1 or bool), got values up to {flat.max().item():g}; "
                "threshold it first, e.g. mask >= 128 for an 8-bit mask"
            )
        flat = flat != 0
    return flat


def _label_out(label: Any, defect: bool) -> Any:
    """A single label set to 1 where a defect was made, in the type it came in (a missing label is 0)."""
    if label is None:
        return int(defect)
    if not defect:
        return label
    if isinstance(label, torch.Tensor):
        return torch.ones_like(label)
    return type(label)(1)


def _check_label(label: Any, batch: int | None) -> None:
    """A single label (number, numpy scalar, one-element tensor) or, for a batch, a (B,) tensor."""
    if batch is not None:
        if label is not None and (not isinstance(label, torch.Tensor) or tuple(label.shape) != (batch,)):
            raise TypeError(f"labels of a batch of {batch} must be a tensor of shape ({batch},), got {label!r}")
        return
    if label is None or isinstance(label, (numbers.Number, np.generic)):
        return
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        return
    if isinstance(label, torch.Tensor) and label.ndim >= 2:
        raise TypeError(
            f"the second item of the sample has shape {tuple(label.shape)}: a mask must be a "
            "tv_tensors.Mask to be told apart from a label"
        )
    raise TypeError(f"label must be an int, bool or one-element tensor, got {label!r}")


def _batch_labels_out(labels: Any, defect: torch.Tensor, device: torch.device) -> Any:
    if labels is None:
        return defect.long().to(device)
    out = labels.clone()
    out[defect.to(labels.device)] = 1
    return out


def _mask_out(new: torch.Tensor, like: torch.Tensor | None, batched: bool) -> tv_tensors.Mask:
    """The (B, H, W) bool mask in the caller's shape and dtype (uint8, HxW or Bx1xHxW when new)."""
    if like is None:
        shape = (new.shape[0], 1, *new.shape[1:]) if batched else new.shape[1:]
        return tv_tensors.Mask(new.reshape(shape).to(torch.uint8))
    return tv_tensors.Mask(new.reshape(like.shape).to(like.dtype))


def _image_in(image: Any) -> tuple[torch.Tensor, bool, Callable[[torch.Tensor], Any]]:
    """Return (BCHW tensor, batched, function that turns a BCHW result back into the caller's type)."""
    if isinstance(image, PIL.Image.Image):
        if image.mode not in ("L", "RGB"):
            raise TypeError(f"PIL image mode {image.mode!r} is not supported: use image.convert('RGB') or 'L'")
        mode = image.mode
        return F.pil_to_tensor(image)[None], False, lambda out: F.to_pil_image(out[0], mode=mode)
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"image must be a torch tensor, tv_tensors.Image or PIL image, got {type(image).__name__}"
        )
    if isinstance(image, tv_tensors.Video):
        raise TypeError(
            "tv_tensors.Video is not supported: a clip is not a batch of independent samples; augment its frames "
            "as a (T, C, H, W) batch with video.as_subclass(torch.Tensor), one defect per frame"
        )
    if image.ndim not in (3, 4):
        raise ValueError(
            f"image must be CHW or BCHW, got shape {tuple(image.shape)}; a grey HxW image needs image[None]"
        )
    batched = image.ndim == 4
    plain = image.as_subclass(torch.Tensor)
    batch = plain if batched else plain[None]

    def back(out: torch.Tensor) -> Any:
        out = out if batched else out[0]
        return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out

    return batch, batched, back


def parse(sample: Any) -> Parsed:
    """Take a sample apart into a BCHW image, an optional mask and a function that rebuilds the sample."""
    if isinstance(sample, dict):
        if "image" not in sample:
            raise TypeError(f"a dict sample needs an 'image' key, got keys {sorted(sample)}")
        return _parse_parts(sample["image"], sample.get("mask"), sample.get("label"), _dict_packer(sample),
                            _annotations(sample))
    if isinstance(sample, (tuple, list)):
        kind = type(sample)
        for position, item in enumerate(sample[1:], start=2):
            if isinstance(item, _SPATIAL) and not (isinstance(item, tv_tensors.Mask) and len(sample) in (2, 3)
                                                    and position == 2):
                raise TypeError(
                    f"{type(item).__name__} as item {position} of a {len(sample)}-tuple sample is not supported: "
                    "a tuple holds (image, label), (image, mask), (image, mask, label) or (image, target_dict); "
                    "put boxes, keypoints or extra masks in a dict sample or a target dict"
                )
        if len(sample) == 3:
            image, mask, label = sample
            if mask is not None and not isinstance(mask, (torch.Tensor, PIL.Image.Image)):
                raise TypeError(
                    f"a 3-tuple sample is (image, mask, label), but item 2 is {type(mask).__name__}, not a mask: "
                    "keep other values (a path, an index) out of the tuple, e.g. in a dict sample "
                    "{'image': ..., 'label': ..., 'path': ...}, which keeps its other keys"
                )
            return _parse_parts(image, mask, label, lambda im, m, lb, drop=False: kind((im, m, lb)))
        if len(sample) == 2:
            image, second = sample
            if isinstance(second, dict):
                return _parse_parts(image, second.get("mask"), second.get("label"),
                                    lambda im, m, lb, drop=False: kind((im, {**_kept(second, drop), "mask": m,
                                                                             "label": lb})),
                                    _annotations(second))
            if isinstance(second, tv_tensors.Mask):
                return _parse_parts(image, second, None, lambda im, m, lb, drop=False: kind((im, m)))
            return _parse_parts(image, None, second, lambda im, m, lb, drop=False: kind((im, lb)))
        raise TypeError(
            f"a tuple sample must be (image, label), (image, mask), (image, mask, label) or "
            f"(image, target_dict); got {len(sample)} items"
        )
    return _parse_parts(sample, None, None, lambda im, m, lb, drop=False: im)


def _annotations(items: dict) -> list[str]:
    """Keys of ``items`` holding spatial annotations other than the image and the defect mask."""
    return [key for key, value in items.items() if key not in ("image", "mask") and isinstance(value, _SPATIAL)]


def _kept(items: dict, drop: bool) -> dict:
    """``items`` without its spatial annotations when ``drop``."""
    return {k: v for k, v in items.items() if k not in _annotations(items)} if drop else items


def _dict_packer(sample: dict) -> Callable:
    return lambda im, m, lb, drop=False: {**_kept(sample, drop), "image": im, "mask": m, "label": lb}


def _parse_parts(image: Any, mask: Any, label: Any, rebuild: Callable, annotations: list[str] | None = None) -> Parsed:
    batch, batched, image_back = _image_in(image)
    check_image(batch, shape=None if batched else tuple(batch.shape[1:]))
    flat_mask = None if mask is None else check_mask(mask, batch)
    _check_label(label, len(batch) if batched else None)

    def pack(out_image: torch.Tensor, out_mask: torch.Tensor, defect: torch.Tensor, drop: bool = False) -> Any:
        if batched:
            labels = _batch_labels_out(label, defect, out_image.device)
        else:
            labels = _label_out(label, bool(defect[0]))
        return rebuild(image_back(out_image), _mask_out(out_mask, mask, batched), labels, drop=drop)

    return Parsed(image=batch, mask=flat_mask, pack=pack, annotations=annotations or [])
