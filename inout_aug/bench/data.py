"""The benchmark's images: training, validation and test views of a dataset, decoded once at one size."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision import tv_tensors

from inout_aug.core.io import digest
from inout_aug.data.layouts import Layout, Record, open_dataset, stratified_split
from inout_aug.data.masks import fit_size, resize_with_mask
from inout_aug.data.training import digest_paths

#: The validation normals are drawn with this seed whatever the run's seed: every run is judged alike.
VALIDATION_SEED = 0
#: The held-out share of the training split that stands in for the test split when choosing settings.
HOLDOUT_SEED = 1
#: How an image meets the benchmark's size: keeping its aspect ratio, with reflected margins, or stretched.
RESIZE_MODES = ("pad", "squash")


class ResizedView:
    """Some records of a dataset split, read at ``size`` (H, W) and kept in memory (``cache``, shared by views).

    It answers what :class:`~inout_aug.data.TrainingSet` asks of a layout (normals, defects, read, ...), so a
    training set built on it never decodes an image twice. ``resize`` is how an image meets ``size``: "pad"
    scales it to fit inside, keeping its aspect ratio, and fills the margins by reflecting it (they look like
    surface; masks get 0 there), "squash" stretches it (see :func:`fit`). Masks are resized with nearest
    neighbours.
    """

    def __init__(self, dataset: Layout, records: list[Record], size: tuple[int, int],
                 cache: dict[str, dict[str, Any]] | None = None, resize: str = "pad"):
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        self.dataset, self.records, self.size = dataset, list(records), (int(size[0]), int(size[1]))
        self.resize = resize
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
        key = f"{record.image}@{self.size}:{self.resize}"
        if key not in self._cache:
            sample = self.dataset.read(record)
            image, mask = fit(sample["image"].as_subclass(torch.Tensor), sample["mask"].as_subclass(torch.Tensor),
                              self.size, self.resize)
            sample["image"], sample["mask"] = tv_tensors.Image(image), tv_tensors.Mask(mask)
            self._cache[key] = sample
        return dict(self._cache[key])

    def name_of(self, record: Record) -> str:
        """``record``'s image file relative to the dataset's folder, with "/": the same wherever the data lives."""
        return Path(os.path.relpath(record.image, self.root)).as_posix()

    def digest(self) -> str:
        """A hash of this view's file list (with labels, names as :meth:`name_of` gives them): the same data read
        from another place has the same hash."""
        return digest_paths([f"{self.name_of(r)}:{r.label}" for r in self.records])

    def __repr__(self) -> str:
        return (f"ResizedView({self.dataset!r}, {len(self)} images at {self.size[0]}x{self.size[1]}, "
                f"{self.resize})")


def fit(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int],
        resize: str = "pad") -> tuple[torch.Tensor, torch.Tensor]:
    """A (C, h, w) image and its (h, w) bool mask at ``size`` (H, W).

    "squash": both resized to ``size``. "pad": both resized to the largest size of their aspect ratio that fits
    inside ``size`` and centred; the image's margins mirror it (repeatedly where a margin is wider than the
    image), the mask's are False.
    """
    height, width = size
    inner = fit_size(tuple(image.shape[-2:]), size) if resize == "pad" else size
    image, mask = resize_with_mask(image, mask, inner)
    top, left = (height - inner[0]) // 2, (width - inner[1]) // 2
    margins = [left, width - inner[1] - left, top, height - inner[0] - top]  # as torch's pad takes them
    while any(margins):  # one reflection adds at most the image's size less one
        h, w = image.shape[-2:]
        step = [min(m, w - 1) for m in margins[:2]] + [min(m, h - 1) for m in margins[2:]]
        if not any(step):  # a line 1 pixel thick cannot be reflected: repeat it
            image, step = torch.nn.functional.pad(image, margins, mode="replicate"), margins
        else:
            image = torch.nn.functional.pad(image, step, mode="reflect")
        margins = [m - s for m, s in zip(margins, step)]
    padded = torch.zeros(size, dtype=torch.bool)
    padded[top:top + inner[0], left:left + inner[1]] = mask
    return image, padded


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

    @functools.cached_property
    def content_digest(self) -> str:
        """A SHA-256 of the bytes of every image and mask file of the three views, in order: what the file-list
        hashes of :meth:`record` cannot see, a file edited in place (a mask corrected, say)."""
        total = hashlib.sha256()
        for view in (self.train, self.validation, self.test):
            for record in view.records:
                for path in (record.image, record.mask):
                    if path is not None:
                        total.update(bytes.fromhex(digest(path)))
        return total.hexdigest()


def open_bench_data(root: str | Path, size: tuple[int, int], val_fraction: float, layout: str | None = None,
                    options: dict[str, Any] | None = None, resize: str = "pad", holdout: float = 0.0) -> BenchData:
    """The train/validation/test views of the dataset at ``root`` (see :class:`BenchData`), resized by ``resize``
    (see :class:`ResizedView`). With ``holdout`` > 0 the test split is never read: a seeded share ``holdout`` of
    the training split (of each defect type and of the normals) is scored instead, for choosing settings."""
    train = open_dataset(root, layout, "train", **(options or {}))
    if holdout:
        records, scored = stratified_split(train.records, holdout, HOLDOUT_SEED)
        test, test_records = train, scored
    else:
        records = train.records
        test = open_dataset(root, train.layout, "test", **(options or {}))
        test_records = test.records
    normals = [r for r in records if r.label == 0]
    if len(normals) < 2:
        raise ValueError(f"{train!r} holds {len(normals)} normal images: a benchmark needs some to train on and "
                         "some to hold out for the decision threshold")
    kept, held_out = stratified_split(normals, val_fraction, VALIDATION_SEED)
    if not kept or not held_out:
        raise ValueError(f"val_fraction {val_fraction} of the {len(normals)} normal images of the training split "
                         f"leaves {len(kept)} to train on and {len(held_out)} to set the threshold: both need some")
    cache: dict[str, dict[str, Any]] = {}
    return BenchData(
        train=ResizedView(train, kept + [r for r in records if r.label == 1], size, cache, resize),
        validation=ResizedView(train, held_out, size, cache, resize),
        test=ResizedView(test, test_records, size, cache, resize),
    )
