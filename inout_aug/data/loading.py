"""DataLoader glue: collate dict samples into batches, augment a collated batch, seeded epochs."""

from __future__ import annotations

import numbers
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from inout_aug.core.augmenter import Augmenter, mix_seed


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack dict samples into one batch dict.

    ``image`` becomes a (B, C, H, W) ``tv_tensors.Image``, ``mask`` a (B, H, W) ``tv_tensors.Mask``, ``label``
    a (B,) int64 tensor; other tensors, booleans and numbers are stacked, anything else (paths) is listed.
    """
    if not samples or not all(isinstance(s, dict) for s in samples):
        raise TypeError("collate expects a non-empty list of dict samples ({'image': ..., 'label': ...})")
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) > 1:
        raise ValueError(
            f"images of different shapes {sorted(sizes)} cannot be batched: add a resize to the dataset's "
            "transform, e.g. torchvision.transforms.v2.Resize((256, 256))"
        )
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "image":
            batch[key] = tv_tensors.Image(torch.stack([v.as_subclass(torch.Tensor) for v in values]))
        elif key == "mask":
            masks = [v.as_subclass(torch.Tensor).reshape(v.shape[-2:]) for v in values]
            batch[key] = tv_tensors.Mask(torch.stack(masks))
        elif key == "label":
            batch[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
        elif all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = torch.stack(values)
        elif all(isinstance(v, (bool, numbers.Number)) for v in values):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


def augment_batch(batch: dict[str, Any], augmenter: Augmenter) -> dict[str, Any]:
    """Augment the rows of a collated batch flagged ``augment`` (every row without that key), on its device.

    Returns a new batch dict of the same kinds as the per-sample path gives: images keep their dtype, masks are
    OR-ed with the defects, labels become 1 where a defect was made and ``augment`` turns False.
    """
    image, mask = batch["image"], batch["mask"]
    flags = batch.get("augment", torch.ones(len(image), dtype=torch.bool))
    rows = flags.nonzero().flatten().to(image.device)
    out = dict(batch)
    if not len(rows):
        return out
    result = augmenter.augment(image.as_subclass(torch.Tensor).index_select(0, rows),
                               mask.as_subclass(torch.Tensor).index_select(0, rows))
    out["image"] = tv_tensors.Image(image.as_subclass(torch.Tensor).index_copy(0, rows, result.image))
    out["mask"] = tv_tensors.Mask(mask.as_subclass(torch.Tensor).index_copy(0, rows, result.mask))
    label = batch["label"].clone()
    label[rows.to(label.device)] |= result.defect.to(label)
    out["label"] = label
    if "augment" in batch:
        out["augment"] = torch.zeros_like(flags)
    return out


def make_loader(dataset: Dataset, batch_size: int, *, epoch: int = 0, seed: int = 0, shuffle: bool = True,
                num_workers: int = 0, augmenter: Augmenter | None = None, **kwargs: Any) -> DataLoader:
    """A DataLoader for epoch ``epoch`` whose order, worker seeds and so defects follow from (seed, epoch).

    The same (seed, epoch) gives the same batches for any run; workers never repeat each other, since each
    augmenter is reseeded from its worker's seed. ``augmenter`` augments each collated batch
    (:func:`augment_batch`) inside the loader: in its workers when ``num_workers`` > 0, so batched augmentation
    runs in parallel. It augments the rows flagged ``augment`` (a :class:`~inout_aug.data.TrainingSet` built
    with ``online=False``), or every row of a dataset without that flag; on a GPU, call :func:`augment_batch`
    on the moved batch instead. The loader is one epoch: make a new one for the next. ``kwargs`` go to
    DataLoader.
    """
    if augmenter is not None and getattr(dataset, "online", False):
        raise ValueError("this training set augments its samples itself (online=True): build it with online=False "
                         "to augment batches in the loader, or leave make_loader's augmenter out")
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if augmenter is not None:
        augmenter.reseed(mix_seed(seed, "batches", epoch))  # the main process's draws (num_workers=0)
    generator = torch.Generator().manual_seed(mix_seed(seed, "loader", epoch))
    collate_fn = collate if augmenter is None else partial(_collate_and_augment, augmenter=augmenter)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate_fn, generator=generator, **kwargs)


def _collate_and_augment(samples: list[dict[str, Any]], augmenter: Augmenter) -> dict[str, Any]:
    return augment_batch(collate(samples), augmenter)
