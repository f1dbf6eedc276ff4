"""A mixed-supervision defect detector for the benchmark: the segmentation–decision network of Božič, Tabernik and
Skočaj, "Mixed supervision for surface-defect detection: from weakly to fully supervised learning" (arXiv
2104.06064), written here from the paper's description, on a timm backbone.

A segmentation sub-network gives a 1-channel defect map at 1/8 of the image size; a decision sub-network takes the
segmentation features with that map, three max-pool + conv stages (8, 16, 32 channels), and a linear layer on the
global average and maximum of its features and of the map gives one logit, the image score. The loss of a sample is
λ·δ·L_seg + (1 − λ)·L_cls: δ is 1 where its pixel mask is known (real defects, made defects, normals' empty masks)
and 0 for a weak label (label 1, no pixel marked: a txt2img bank entry), which so trains the decision head only;
λ falls linearly from 1 to 0 over training, so the segmentation learns first; the decision head's gradient is
stopped before the segmentation features and map; positive pixels of the BCE are weighted by their distance to the
defect's edge.

Departures from the paper:

* Backbone: timm's ``config.model`` (EfficientNet-Lite0 with the packaged ImageNet weights by default) instead of
  the paper's 11-layer encoder; its stride-16 features, upsampled, are joined to its stride-8 ones and one 3×3 conv
  (64 channels, batch norm) makes the segmentation features, a 1×1 conv the map. The map keeps the paper's 1/8.
* Decision convs are 3×3 (the paper's 5×5 suit its larger maps) with batch norm; max pools round up so that the
  smallest images (32 px: a 4×4 map) still pool.
* Schedule: λ = 1 − t / epochs with t the epoch plus the share of its batches done, i.e. the paper's per-epoch
  value interpolated within the epoch, so that a 1-epoch run trains the decision head too. No extra weight on the
  classification loss. The gradient stop is always on: every benchmark training set has pixel masks (at least the
  normals' empty ones).
* Training is the benchmark's, so that the two kinds of runs compare: Adam at ``learning_rate``, ``batch_size``
  samples a batch, the same batches and made defects as a classifier run of the seed, the last epoch tested.
* Masks reach the map's size by max pooling (a cell is defective where any of its pixels is): a dilation to the
  cell, not the paper's pixel dilation of coarse annotations (the augmenters' masks are exact). Distance weights are
  computed on that cell mask: (distance to background / its region's maximum) ** :data:`WEIGHT_POWER`, 1 on
  background.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from inout_aug.bench.backbones import create_backbone
from inout_aug.bench.classifier import frozen_parts, model_input, require_weights
from inout_aug.bench.config import BenchConfig
from inout_aug.core.augmenter import Augmenter, mix_seed
from inout_aug.data.loading import augment_batch, collate, make_loader

#: Channels of the segmentation features.
SEG_CHANNELS = 64
#: The exponent p of the distance weights of positive pixels.
WEIGHT_POWER = 2.0
#: AUPRO integrates the per-region overlap up to this false positive rate (MVTec AD's convention).
FPR_LIMIT = 0.3


def _conv(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs),
                         nn.ReLU(inplace=True))


class SegDecNet(nn.Module):
    """Segmentation and decision heads on ``encoder`` (a timm FeatureListNet giving stride-8 and stride-16 maps of
    ``channels``); ``forward`` returns the (B, 1) decision logits and the (B, 1, H/8, W/8) segmentation logits."""

    def __init__(self, encoder: nn.Module, channels: tuple[int, int], frozen: list[nn.Module]):
        super().__init__()
        self.encoder = encoder
        self.frozen = tuple(frozen)  # backbone parts whose batch norms keep their ImageNet statistics
        self.seg_features = _conv(sum(channels), SEG_CHANNELS)
        self.seg_map = nn.Conv2d(SEG_CHANNELS, 1, 1)
        self.decision = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), _conv(SEG_CHANNELS + 1, 8),
                                      nn.MaxPool2d(2, ceil_mode=True), _conv(8, 16),
                                      nn.MaxPool2d(2, ceil_mode=True), _conv(16, 32))
        self.fc = nn.Linear(2 * 32 + 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine, coarse = self.encoder(x)
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        features = self.seg_features(torch.cat([fine, coarse], 1))
        seg = self.seg_map(features)
        # The gradient stop: the image loss trains the decision head only.
        seen = seg.detach()
        decided = self.decision(torch.cat([features.detach(), seen], 1))
        pooled = torch.cat([decided.amax((2, 3)), decided.mean((2, 3)), seen.amax((2, 3)), seen.mean((2, 3))], 1)
        return self.fc(pooled), seg


def create_segdec(config: BenchConfig, seed: int) -> SegDecNet:
    """A :class:`SegDecNet` on ``config.model`` with its weights, the new layers initialised from ``seed``; the stem
    and the first ``config.frozen_blocks`` blocks frozen."""
    from timm.models import FeatureListNet

    require_weights(config)
    try:  # checked before training, not after it: the pixel metrics need AUPRO's curve (anomalib 2.7's)
        from anomalib.metrics.aupro import _AUPRO  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the segdec detector's AUPRO needs anomalib 2.7 ({exc}): "
                          'pip install "inout-aug[bench]"') from exc
    torch.manual_seed(mix_seed(seed, "segdec"))
    backbone = create_backbone(config.model, config.weights, num_classes=0)
    frozen = frozen_parts(backbone, config.frozen_blocks)
    for part in frozen:
        part.requires_grad_(False)
    reductions = [info["reduction"] for info in backbone.feature_info]
    if 8 not in reductions or 16 not in reductions:
        raise ValueError(f"segdec needs stride-8 and stride-16 features; {config.model} has strides {reductions}")
    indices = (reductions.index(8), reductions.index(16))
    encoder = FeatureListNet(backbone, out_indices=indices, flatten_sequential=True)
    channels = tuple(encoder.feature_info.channels())
    return SegDecNet(encoder, (channels[0], channels[1]), frozen)


def seg_weight(progress: float, epochs: int) -> float:
    """λ, the weight of the pixel loss after ``progress`` epochs of ``epochs`` (the image loss gets 1 − λ)."""
    return 1.0 - progress / epochs


def distance_weights(target: np.ndarray, power: float = WEIGHT_POWER) -> np.ndarray:
    """Pixel weights of an (h, w) bool mask: 1 on background; on a defect (distance to background / the largest
    such distance in its 8-connected region) ** ``power``, so 1 at a region's centre, less towards its edge."""
    from scipy import ndimage

    weights = np.ones(target.shape, np.float32)
    regions, count = ndimage.label(target, structure=np.ones((3, 3)))
    if count:
        distance = ndimage.distance_transform_edt(target)
        largest = np.asarray(ndimage.maximum(distance, regions, np.arange(1, count + 1)))
        inside = regions > 0
        weights[inside] = (distance[inside] / largest[regions[inside] - 1]) ** power
    return weights


def mask_known(batch: dict[str, Any]) -> torch.Tensor:
    """(B,) bool: whose pixel mask is known, δ = 1. A defective sample with an empty mask is a weak label."""
    label, mask = batch["label"], batch["mask"].as_subclass(torch.Tensor)
    has_mask = batch.get("has_mask", torch.ones_like(label, dtype=torch.bool))
    return has_mask.bool() & ((label == 0) | mask.flatten(1).any(1))


def pixel_targets(mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, 1, h, w) targets of (B, H, W) masks at the map's ``size`` (max pooled) and their distance weights."""
    target = F.adaptive_max_pool2d(mask.as_subclass(torch.Tensor)[:, None].float(), size)
    weights = np.stack([distance_weights(t[0].numpy() > 0) for t in target])
    return target, torch.from_numpy(weights)[:, None]


def segdec_loss(logits: torch.Tensor, seg: torch.Tensor, label: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor, known: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
    """λ·δ·L_seg + (1 − λ)·L_cls averaged over the batch, δ = ``known``; also the two parts."""
    pixel = F.binary_cross_entropy_with_logits(seg, target, reduction="none") * weights
    seg_loss = (pixel.mean((1, 2, 3)) * known.float()).mean()
    cls_loss = F.binary_cross_entropy_with_logits(logits.flatten(), label.float())
    return lam * seg_loss + (1 - lam) * cls_loss, seg_loss, cls_loss


def train_segdec(model: SegDecNet, dataset: Dataset, config: BenchConfig, seed: int,
                 augmenter: Augmenter | None = None,
                 log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train ``model`` as :func:`~inout_aug.bench.classifier.train_classifier` trains a classifier (the same batches
    and made defects for a seed); returns per epoch: mean loss and its parts, λ at its start, seconds, images."""
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    history = []
    for epoch in range(config.epochs):
        model.train()
        for part in model.frozen:
            part.eval()
        start, totals, positives, seen, weak = time.perf_counter(), [], 0, 0, 0
        loader = make_loader(dataset, config.batch_size, epoch=epoch, seed=mix_seed(seed, "batches"))
        for step, batch in enumerate(loader):
            if augmenter is not None:
                batch = augment_batch(batch, augmenter)
            logits, seg = model(model_input(batch["image"]))
            target, weights = pixel_targets(batch["mask"], tuple(seg.shape[-2:]))
            known = mask_known(batch)
            lam = seg_weight(epoch + step / len(loader), config.epochs)
            loss, seg_loss, cls_loss = segdec_loss(logits, seg, batch["label"], target, weights, known, lam)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals.append((loss.item(), seg_loss.item(), cls_loss.item()))
            positives, seen, weak = positives + int(batch["label"].sum()), seen + len(known), weak + int((~known).sum())
        mean = np.mean(totals, axis=0)
        history.append({"epoch": epoch + 1, "loss": float(mean[0]), "seg_loss": float(mean[1]),
                        "cls_loss": float(mean[2]), "lambda": seg_weight(epoch, config.epochs),
                        "seconds": time.perf_counter() - start, "images": seen, "positives": positives,
                        "weak": weak})
        if log is not None:
            log(f"epoch {epoch + 1}/{config.epochs}: loss {mean[0]:.4f} (pixel {mean[1]:.4f}, image {mean[2]:.4f}), "
                f"{seen} images ({positives} positive, {weak} weak), {history[-1]['seconds']:.0f} s")
    return history


@torch.inference_mode()
def predict_segdec(model: SegDecNet, dataset: Dataset,
                   batch_size: int = 128) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Labels, image scores (the decision logit) and (N, h, w) segmentation logits of every sample, in order."""
    model.eval()
    labels, scores, maps = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        logits, seg = model(model_input(batch["image"]))
        scores.append(logits.float().flatten())
        maps.append(seg.float()[:, 0].contiguous())
        labels.append(batch["label"])
    return (torch.cat(labels).numpy().astype(np.int64), torch.cat(scores).numpy().astype(np.float64),
            torch.cat(maps))


def content_box(view: Any, record: Any) -> tuple[int, int, int, int]:
    """(top, left, height, width) of ``record``'s image inside a :class:`~inout_aug.bench.data.ResizedView`'s
    frame: the margins that ``resize="pad"`` fills by reflection are left out (their mask is empty, their pixels
    mirror the image, defects included)."""
    from inout_aug.data.layouts import image_header
    from inout_aug.data.masks import fit_size

    height, width = view.size
    if view.resize != "pad":
        return 0, 0, height, width
    (w, h), _ = image_header(record.image)
    inner = fit_size((h, w), view.size)
    return (height - inner[0]) // 2, (width - inner[1]) // 2, inner[0], inner[1]


def upsampled(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) segmentation logits bilinearly at the image ``size``."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def pixel_metrics(view: Any, maps: torch.Tensor) -> dict[str, Any]:
    """Pixel AP and AUPRO (up to :data:`FPR_LIMIT`) of the segmentation logits ``maps`` of ``view``'s images, over
    every pixel of their content (padding margins left out) at the benchmark's image size, on the images whose
    mask is known; both None when those hold no defect pixel."""
    from sklearn.metrics import average_precision_score

    scores, masks = [], []
    for record, heat in zip(view.records, upsampled(maps, view.size)):
        sample = view.read(record)
        mask = sample["mask"].as_subclass(torch.Tensor)
        if not sample["has_mask"] or (sample["label"] == 1 and not mask.any()):
            continue
        top, left, height, width = content_box(view, record)
        scores.append(heat[top:top + height, left:left + width])
        masks.append(mask[top:top + height, left:left + width])
    found = {"images": len(masks), "defective_images": sum(bool(m.any()) for m in masks),
             "pixels": sum(m.numel() for m in masks), "defect_pixels": sum(int(m.sum()) for m in masks),
             "resolution": f"{view.size[0]}x{view.size[1]} (image content, margins left out), every pixel",
             "fpr_limit": FPR_LIMIT, "pixel_ap": None, "aupro": None}
    if found["defect_pixels"]:
        flat = torch.cat([s.flatten() for s in scores]).numpy()
        truth = torch.cat([m.flatten() for m in masks]).numpy()
        found["pixel_ap"] = float(average_precision_score(truth, flat))
        found["aupro"] = aupro(scores, masks)
    return found


def aupro(scores: list[torch.Tensor], masks: list[torch.Tensor], fpr_limit: float = FPR_LIMIT) -> float:
    """The area under the per-region overlap curve up to ``fpr_limit``, normalised to [0, 1], of (h, w) score maps
    and bool masks that may differ in size from image to image.

    The curve is anomalib's (``_AUPRO.compute_pro``, anomalib 2.7); its ``update``/``compute`` would stack the maps,
    which needs one size, so the regions (8-connected, scipy) are labelled here per image, numbered uniquely over
    all images, and the pixels of all images are passed flattened: the curve itself only counts pixels.
    """
    from anomalib.metrics.aupro import _AUPRO
    from scipy import ndimage
    from torchmetrics.utilities.compute import auc

    labels, offset = [], 0
    for mask in masks:
        regions, count = ndimage.label(mask.numpy(), structure=np.ones((3, 3)))
        labels.append(torch.from_numpy(np.where(regions > 0, regions + offset, 0)).flatten())
        offset += count
    fpr, pro = _AUPRO(fpr_limit=fpr_limit).compute_pro(torch.cat(labels), torch.cat([s.flatten() for s in scores]))
    return float(auc(fpr, pro, reorder=True) / fpr[-1])


def heatmap_sheet(view: Any, maps: torch.Tensor, defects: int = 6, normals: int = 2, tile: int = 128) -> torch.Tensor:
    """A (3, H, W) uint8 sheet of the first ``defects`` defective images with known masks and the first ``normals``
    normal images of ``view`` (in order, not chosen by score): per column the image, then the predicted defect
    probability in yellow over it; the true mask outlined in red on both."""
    from inout_aug.bench.plots import PAD, _tile

    chosen: list[int] = []
    for want, count in ((1, defects), (0, normals)):
        picked = [i for i, r in enumerate(view.records) if r.label == want and (want == 0 or r.mask is not None)]
        chosen += picked[:count]
    if not chosen:
        raise ValueError("no test image to draw")
    heat = torch.sigmoid(upsampled(maps[chosen], view.size))
    sheet = torch.full((3, PAD + 2 * (tile + PAD), PAD + len(chosen) * (tile + PAD)), 255, dtype=torch.uint8)
    for column, (index, prob) in enumerate(zip(chosen, heat)):
        sample = view.read(view.records[index])
        image = sample["image"].as_subclass(torch.Tensor)
        image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        mask = sample["mask"].as_subclass(torch.Tensor)
        yellow = torch.tensor([255.0, 255.0, 0.0])[:, None, None]
        blended = (image.float() * (1 - 0.7 * prob) + yellow * 0.7 * prob).round().clamp(0, 255).to(torch.uint8)
        left = PAD + column * (tile + PAD)
        for row, shown in enumerate((image, blended)):
            top = PAD + row * (tile + PAD)
            sheet[:, top:top + tile, left:left + tile] = _tile(shown, mask if mask.any() else None, tile)
    return sheet
