"""Training sets of the paper's setups: zero-shot, few-shot and full-shot, filled up with augmented positives."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from inout_aug.core.augmenter import Augmenter, mix_seed
from inout_aug.core.io import write_text
from inout_aug.data.layouts import Layout, Record

SETTINGS = ("zero", "few", "full")
#: How a real defect is used: as it is, and (with ``flip_real``) flipped horizontally and vertically.
FLIPS = (None, "horizontal", "vertical")
_DIHEDRAL_OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x, "horizontal": lambda x: x.flip(-1), "vertical": lambda x: x.flip(-2),
    "rotate180": lambda x: x.flip(-2, -1), "transpose": lambda x: x.transpose(-2, -1),
    "rotate90": lambda x: x.rot90(1, (-2, -1)), "rotate270": lambda x: x.rot90(-1, (-2, -1)),
    "antitranspose": lambda x: x.flip(-2, -1).transpose(-2, -1),
}
#: The 8 flips and 90° rotations of a square (the dihedral group) on the last two dims: the first 4 keep any
#: image's shape.
DIHEDRAL = tuple(_DIHEDRAL_OPS)
#: The kinds of training-set items, as :meth:`TrainingSet.counts` counts them.
KINDS = ("normal", "real", "copy", "augmented")


@dataclass(frozen=True)
class Item:
    """One entry of a training set: a normal image, a real defect (maybe flipped), a copy of a real defect (its
    transform drawn each epoch) or a base for augmentation."""

    record: Record
    kind: str  # one of KINDS
    flip: str | None = None


class TrainingSet(Dataset):
    """The training set of one In&Out setup, from the normal and defective images of a dataset split.

    * ``setting="zero"``: normal images only; every positive is made by ``augmenter``.
    * ``setting="few"``: ``shots`` real defects, chosen with ``seed`` (stratified by defect type).
    * ``setting="full"``: every real defect of the split.

    Real defects are tripled with a horizontal and a vertical flip when ``flip_real`` (as the In&Out authors
    did). Augmented positives then fill the set up to ``positive_fraction`` positives (0.5: balanced): each
    is a normal image (drawn with ``seed``, cycling through all of them) that ``augmenter`` turns into a
    defect when the sample is read, so every epoch sees fresh defects. Without an augmenter, ``oversample``
    fills the same slots with copies of the real defects (cycling through them in a seeded order), each under
    one of the 8 :data:`DIHEDRAL` transforms (only the first 4 when the image is not square), mask alike:
    like an augmented slot, a copy slot keeps its source and draws its transform anew each epoch, from
    (seed, epoch, slot). So the set has the size and balance of an augmented one. Without either there are
    only the real positives: the unbalanced baseline. Every normal image also stays in the set as a negative.

    Samples are the layout's dicts plus ``kind`` (one of :data:`KINDS`). With ``online=False`` the
    augmented slots come back untouched with ``augment`` True, for a batch augmenter after collation
    (:func:`inout_aug.data.loading.augment_batch`); ``transform`` is applied last (e.g. a resize).
    :meth:`record` lists exactly which files went in; :meth:`save_record` writes it beside a run.
    """

    def __init__(
        self,
        dataset: Layout,
        setting: str = "few",
        *,
        shots: int = 5,
        augmenter: Augmenter | None = None,
        positive_fraction: float = 0.5,
        flip_real: bool = True,
        oversample: bool = False,
        seed: int = 0,
        online: bool = True,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ):
        if setting not in SETTINGS:
            raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
        if not 0 < positive_fraction < 1:
            raise ValueError(f"positive_fraction must lie between 0 and 1, got {positive_fraction}")
        if oversample and augmenter is not None:
            raise ValueError("oversample fills the positive slots with copies of real defects and an augmenter with "
                             "made ones: give one of them, not both")
        self.dataset = dataset
        self.setting = setting
        self.shots = int(shots) if setting == "few" else None
        self.augmenter = augmenter
        self.positive_fraction = float(positive_fraction)
        self.flip_real = bool(flip_real)
        self.oversample = bool(oversample)
        self.seed = int(seed)
        self.epoch = 0
        self.online = bool(online)
        self.transform = transform
        normals = dataset.normals()
        if not normals:
            raise ValueError(f"{dataset!r} holds no normal images: a training set needs them")
        self.real = choose_defects(dataset.defects(), setting, self.shots, self.seed)
        if self.oversample and not self.real:
            raise ValueError("oversample copies real defects, and a zero-shot set has none: use an augmenter")
        flips = FLIPS if self.flip_real else FLIPS[:1]
        items = [Item(r, "normal") for r in normals] + [Item(r, "real", f) for r in self.real for f in flips]
        positives = len(items) - len(normals)
        wanted = round(self.positive_fraction * len(normals) / (1 - self.positive_fraction))
        #: Positive slots beyond the real defects: made defects (augmenter), copies (oversample), or none left empty.
        self.slots = max(0, wanted - positives)
        if augmenter is not None:
            items += [Item(r, "augmented") for r in self._cycle(normals, self.slots, "bases")]
        elif self.oversample:
            items += [Item(r, "copy") for r in self._cycle(self.real, self.slots, "copies")]
        self.items = items

    def _cycle(self, records: list[Record], count: int, name: str) -> list[Record]:
        """``count`` of ``records``: seeded shuffles (seed, ``name``) of all of them, one after another."""
        rng = random.Random(mix_seed(self.seed, name))
        chosen: list[Record] = []
        while len(chosen) < count:
            order = list(records)
            rng.shuffle(order)
            chosen += order[: count - len(chosen)]
        return chosen

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: copies draw their transforms from (seed, epoch, slot) and the augmenter restarts
        from (seed, epoch), so in one process epoch e gives the same samples whatever ran before (DataLoader
        workers are reseeded from the loader's seed anyway)."""
        self.epoch = int(epoch)
        if self.augmenter is not None:
            self.augmenter.reseed(mix_seed(self.seed, "epoch", epoch))

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        """Items per kind: normal, real (flipped ones included), copy (oversampled real ones), augmented."""
        kinds = [item.kind for item in self.items]
        return {kind: kinds.count(kind) for kind in KINDS}

    def copy_transform(self, index: int, square: bool) -> str:
        """The :data:`DIHEDRAL` transform of copy slot ``index`` this epoch (one of the first 4 unless ``square``)."""
        drawn = random.Random(mix_seed(self.seed, "copy", self.epoch, index)).randrange(len(DIHEDRAL))
        return DIHEDRAL[drawn if square else drawn % 4]

    def __getitem__(self, index: int) -> Any:
        item = self.items[index]
        sample = self.dataset.read(item.record)
        flip = item.flip
        if item.kind == "copy":
            height, width = sample["image"].shape[-2:]
            flip = self.copy_transform(index, height == width)
        if flip is not None:
            sample["image"], sample["mask"] = dihedral(sample["image"], flip), dihedral(sample["mask"], flip)
        sample["kind"] = item.kind
        sample["augment"] = item.kind == "augmented" and not self.online
        if item.kind == "augmented" and self.online:
            sample = self.augmenter(sample)
        return self.transform(sample) if self.transform is not None else sample

    def record(self) -> dict[str, Any]:
        """Which files went in and with which settings, JSON-ready (real defects listed one by one)."""
        normals = [str(r.image) for r in self.dataset.normals()]
        real = [{"image": str(r.image), "mask": None if r.mask is None else str(r.mask), "type": r.defect_type}
                for r in self.real]
        bases = [str(item.record.image) for item in self.items if item.kind == "augmented"]
        copies = [str(item.record.image) for item in self.items if item.kind == "copy"]
        return {
            "layout": self.dataset.layout, "root": str(self.dataset.root), "split": self.dataset.split,
            "options": self.dataset.options(), "setting": self.setting, "shots": self.shots, "seed": self.seed,
            "positive_fraction": self.positive_fraction, "flip_real": self.flip_real, "oversample": self.oversample,
            "augmenter": None if self.augmenter is None else repr(self.augmenter),
            "counts": self.counts(), "real_defects": real,
            "normals": {"count": len(normals), "sha256": digest_paths(normals)},
            "augmented_bases": {"count": len(bases), "sha256": digest_paths(bases)},
            "copied_defects": {"count": len(copies), "sha256": digest_paths(copies)},
        }

    def save_record(self, path: str | Path) -> Path:
        """Write :meth:`record` as JSON to ``path`` (atomically) and return the path."""
        write_text(json.dumps(self.record(), indent=2) + "\n", Path(path))
        return Path(path)


def dihedral(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """``tensor`` (..., H, W) under the :data:`DIHEDRAL` transform ``name``, its tv_tensor type kept."""
    if name not in DIHEDRAL:
        raise ValueError(f"unknown transform {name!r}; choose one of {', '.join(DIHEDRAL)}")
    result = _DIHEDRAL_OPS[name](tensor.as_subclass(torch.Tensor))
    return tv_tensors.wrap(result, like=tensor) if isinstance(tensor, tv_tensors.TVTensor) else result


def digest_paths(paths: list[str]) -> str:
    """A SHA-256 of a list of file names, in order."""
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()


def choose_defects(defects: list[Record], setting: str, shots: int | None = None, seed: int = 0) -> list[Record]:
    """The real defects a setup trains on: none (zero-shot), ``shots`` of them (few-shot) or all (full-shot).

    Few-shot picks are seeded and spread over the defect types: the types are dealt round-robin in a seeded
    order, so N shots cover min(N, types) types. The result is sorted by file name.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if setting == "zero":
        return []
    if not defects:
        raise ValueError(f"{setting}-shot trains on real defects, and the split holds no defective image (MVTec AD's "
                         "training split has none, for one): use zero-shot, or a split or data set with defects")
    if setting == "full":
        return list(defects)
    if shots is None or not 1 <= shots <= len(defects):
        raise ValueError(
            f"few-shot needs 1 <= shots <= {len(defects)} (the defective images of the split), got {shots}"
        )
    rng = random.Random(mix_seed(seed, "shots"))
    by_type: dict[str, list[Record]] = {}
    for record in defects:
        by_type.setdefault(record.defect_type, []).append(record)
    for members in by_type.values():
        rng.shuffle(members)
    types = sorted(by_type)
    rng.shuffle(types)
    chosen: list[Record] = []
    while len(chosen) < shots:
        for name in types:
            if by_type[name] and len(chosen) < shots:
                chosen.append(by_type[name].pop())
    return sorted(chosen, key=lambda r: str(r.image))
