"""Image features from a pretrained backbone and the kernel inception distance (KID) between two sets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

from inout_aug.core.sample import as_float, match_channels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@torch.no_grad()
def image_features(model: nn.Module, images: Sequence[torch.Tensor], size: int = 224,
                   batch_size: int = 32) -> torch.Tensor:
    """(N, D) features of uint8 (C, H, W) images (any sizes; grey made RGB), resized to ``size`` and
    normalised as for ImageNet, from ``model`` (a backbone without classifier, e.g. num_classes=0)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        chunk = [F.resize(match_channels(im, 3), [size, size], antialias=True)
                 for im in images[start:start + batch_size]]
        x = F.normalize(as_float(torch.stack(chunk)), IMAGENET_MEAN, IMAGENET_STD)
        out.append(model(x.to(device)).flatten(1).float().cpu())
    return torch.cat(out)


def kid(a: torch.Tensor, b: torch.Tensor, subsets: int = 100, subset_size: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance between feature sets ``a`` (N, D) and ``b`` (M, D): mean and standard deviation
    over ``subsets`` random subsets of ``subset_size`` (at most the smaller set) of the unbiased MMD² with the
    cubic polynomial kernel ``(x·y / D + 1)^3`` (Bińkowski et al. 2018). 0 for one distribution."""
    n = min(subset_size, len(a), len(b))
    if n < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(a)} and {len(b)}")
    g = torch.Generator().manual_seed(seed)
    a, b = a.double(), b.double()
    dim = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:n]]
        y = b[torch.randperm(len(b), generator=g)[:n]]
        kxx, kyy, kxy = ((p @ q.T / dim + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        off = n * (n - 1)
        mmd = (kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off - 2 * kxy.mean()
        values.append(mmd.item())
    values_t = torch.tensor(values)
    return values_t.mean().item(), values_t.std().item() if subsets > 1 else 0.0
