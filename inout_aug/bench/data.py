"""The benchmark's images: training, validation and test views of a dataset, decoded once at one size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from inout_aug.data.layouts import Layout, Record, open_dataset, stratified_split
from inout_aug.data.training import digest_paths

#: The validation normals are drawn with this seed whatever the run's seed: every run is judged alike.
VALIDATION_SEED = 0


class ResizedView:
    """Some records of a dataset split, read at ``size`` (H, W) and kept in memory (``cache``, shared by views).

    It answers what :class:`~inout_aug.data.TrainingSet` asks of a layout (normals, defects, read, ...), so a
    training set built on it never decodes an image twice. Masks are resized with nearest neighbours.
    """

    def __init__(self, dataset: Layout, records: list[Record], size: tuple[int, int],
                 cache: dict[str, dict[str, Any]] | None = None):
        self.dataset, self.records, self.size = dataset, list(records), (int(size[0]), int(size[1]))
        self.layout, self.root, self.split = dataset.layout, dataset.root, dataset.split
        self.mask_threshold = dataset.mask_threshold
        self._cache = {} if cache is None else cache

    def options(self) -> dict[str, Any]:
        return self.dataset.options()

    def normals(self) -> list[Record]:
        return [r for r in self.records if r.label == 0]

    def defects(self) -> list[Record]:
        return [r for r in self.records if r.label == 1]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.read(self.records[index])

    def read(self, record: Record) -> dict[str, Any]:
        """The layout's sample dict of ``record`` at this view's size (a new dict, the cached tensors)."""
        key = f"{record.image}@{self.size}"
        if key not in self._cache:
            sample = self.dataset.read(record)
            sample["image"] = tv_tensors.Image(F.resize(sample["image"].as_subclass(torch.Tensor), list(self.size),
                                                        antialias=True))
            sample["mask"] = tv_tensors.Mask(F.resize(
                sample["mask"].as_subclass(torch.Tensor)[None].to(torch.uint8), list(self.size),
                interpolation=F.InterpolationMode.NEAREST)[0].bool())
            self._cache[key] = sample
        return dict(self._cache[key])

    def digest(self) -> str:
        """A hash of this view's file list (with labels)."""
        return digest_paths([f"{r.image}:{r.label}" for r in self.records])

    def __repr__(self) -> str:
        return f"ResizedView({self.dataset!r}, {len(self)} images at {self.size[0]}x{self.size[1]})"


@dataclass
class BenchData:
    """The three views of one benchmark: ``train`` (the training split less the validation normals),
    ``validation`` (held-out normals of the training split) and ``test`` (the test split, used only to score)."""

    train: ResizedView
    validation: ResizedView
    test: ResizedView

    def record(self) -> dict[str, Any]:
        """Counts and file-list hashes of the three views."""
        return {name: {"images": len(view), "defects": len(view.defects()), "sha256": view.digest()}
                for name, view in (("train", self.train), ("validation", self.validation), ("test", self.test))}


def open_bench_data(root: str | Path, size: tuple[int, int], val_fraction: float, layout: str | None = None,
                    options: dict[str, Any] | None = None) -> BenchData:
    """The train/validation/test views of the dataset at ``root`` (see :class:`BenchData`)."""
    train = open_dataset(root, layout, "train", **(options or {}))
    test = open_dataset(root, train.layout, "test", **(options or {}))
    normals = train.normals()
    if len(normals) < 2:
        raise ValueError(f"{train!r} holds {len(normals)} normal images: a benchmark needs some to train on and "
                         "some to hold out for the decision threshold")
    kept, held_out = stratified_split(normals, val_fraction, VALIDATION_SEED)
    cache: dict[str, dict[str, Any]] = {}
    return BenchData(
        train=ResizedView(train, kept + train.defects(), size, cache),
        validation=ResizedView(train, held_out, size, cache),
        test=ResizedView(test, test.records, size, cache),
    )
