"""The defect classifier of a benchmark: a timm backbone with one logit, trained with BCE, scored per image."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from inout_aug.bench.backbones import create_backbone
from inout_aug.bench.config import REQUIRED, BenchConfig
from inout_aug.bench.features import IMAGENET_MEAN, IMAGENET_STD
from inout_aug.core.augmenter import Augmenter, mix_seed
from inout_aug.core.sample import as_float, match_channels
from inout_aug.data.loading import augment_batch, collate, make_loader


def create_classifier(config: BenchConfig, seed: int) -> nn.Module:
    """``config.model`` with its weights and one output, the new head initialised from ``seed``; the stem and
    the first ``config.frozen_blocks`` blocks frozen."""
    require_weights(config)
    torch.manual_seed(mix_seed(seed, "classifier"))
    model = create_backbone(config.model, config.weights, num_classes=1)
    for part in frozen_parts(model, config.frozen_blocks):
        part.requires_grad_(False)
    return model


def require_weights(config: BenchConfig) -> None:
    """Raise, saying what to pass, where ``config`` needs a weights file that the user has not given."""
    if config.weights == REQUIRED:
        raise ValueError(
            f"this benchmark trains {config.model} from ImageNet weights, which cannot be downloaded here: pass "
            f"--weights PATH (a state dict of timm's or torchvision's {config.model}, .pth or .safetensors)"
        )


def frozen_parts(model: nn.Module, blocks: int) -> list[nn.Module]:
    """The stem and the first ``blocks`` blocks of a timm EfficientNet/MobileNet (``blocks``) or ResNet
    (``layer1``..``layer4``); nothing when ``blocks`` is 0."""
    if blocks == 0:
        return []
    if hasattr(model, "blocks"):
        stem, stages = [model.conv_stem, model.bn1], list(model.blocks)
    elif hasattr(model, "layer1"):
        stem, stages = [model.conv1, model.bn1], [getattr(model, f"layer{i}") for i in range(1, 5)]
    else:
        raise ValueError(f"frozen_blocks works for timm EfficientNet/MobileNet and ResNet models, not "
                         f"{type(model).__name__}: set frozen_blocks=0")
    if blocks > len(stages):
        raise ValueError(f"frozen_blocks={blocks}, but {type(model).__name__} has {len(stages)} blocks")
    return stem + stages[:blocks]


def model_input(images: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) image batch (uint8 or float, 1 or 3 channels) as the ImageNet-normalised RGB floats the
    backbone takes."""
    x = match_channels(as_float(images.as_subclass(torch.Tensor)), 3)
    return F.normalize(x, IMAGENET_MEAN, IMAGENET_STD).contiguous(memory_format=torch.channels_last)


def train_classifier(model: nn.Module, dataset: Dataset, config: BenchConfig, seed: int,
                     augmenter: Augmenter | None = None,
                     log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train ``model`` for ``config.epochs`` epochs on ``dataset`` (a TrainingSet, ``online=False``), the flagged
    samples of each batch augmented by ``augmenter``; returns per epoch: mean loss, seconds, positives seen."""
    model.to(memory_format=torch.channels_last)
    frozen = frozen_parts(model, config.frozen_blocks)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    history = []
    for epoch in range(config.epochs):
        model.train()
        for part in frozen:  # frozen batch norms keep their ImageNet statistics
            part.eval()
        start, losses, positives, seen = time.perf_counter(), [], 0, 0
        loader = make_loader(dataset, config.batch_size, epoch=epoch, seed=mix_seed(seed, "batches"))
        for batch in loader:
            if augmenter is not None:
                batch = augment_batch(batch, augmenter)
            target = batch["label"].float()[:, None]
            loss = nn.functional.binary_cross_entropy_with_logits(model(model_input(batch["image"])), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            positives, seen = positives + int(target.sum()), seen + len(target)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - start,
                        "images": seen, "positives": positives})
        if log is not None:
            log(f"epoch {epoch + 1}/{config.epochs}: loss {history[-1]['loss']:.4f}, {seen} images "
                f"({positives} positive), {history[-1]['seconds']:.0f} s")
    return history


@torch.inference_mode()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Labels and defect scores (the logit: ranks like the probability, without its ties at 0 and 1) of every
    sample of ``dataset``, in order. In eval mode a score depends on its own image only, not on ``batch_size``."""
    model.eval()
    labels, scores = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        scores.append(model(model_input(batch["image"])).float().flatten())
        labels.append(batch["label"])
    return torch.cat(labels).numpy().astype(np.int64), torch.cat(scores).numpy().astype(np.float64)
