"""Dataset layouts on disk: KolektorSDD2, KolektorSDD, MVTec AD, magnetic tile and a plain folder.

Each layout is a torch ``Dataset`` that lists :class:`Record` s for one split and reads them into samples of
the project's dict convention::

    {"image": tv_tensors.Image (C, H, W) uint8, "mask": tv_tensors.Mask (H, W) bool, "label": int,
     "has_mask": bool, "path": str, "defect_type": str}

``label`` is 1 for a defective image. ``has_mask`` is False only for a defective image that comes without a
mask file (a folder layout without ``masks/``): its mask is then all False, a placeholder rather than a
statement that no pixel is defective. Normal images have an all-False mask and ``has_mask`` True.
"""

from __future__ import annotations

import inspect
import os
import random
import re
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import PIL.Image
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from inout_aug.core.io import IMAGE_SUFFIXES, ImageReadError, list_images, read_image
from inout_aug.core.settings import kind_mismatch


class LayoutError(ValueError):
    """A folder that does not hold the expected dataset layout."""


@dataclass(frozen=True)
class Record:
    """One image of a dataset: its mask file (if any), label (1 = defective), defect type and group.

    ``group`` is what splits keep together: the physical item for KolektorSDD (``kosNN``), otherwise the image.
    """

    image: Path
    mask: Path | None
    label: int
    defect_type: str
    group: str


Sample = dict[str, Any]


class Layout(Dataset, ABC):
    """Base class: holds the records of one split and reads them; a layout only lists its records.

    ``split`` picks the records (each layout says what its splits hold); ``transform``, when given, is applied
    to every sample dict, torchvision v2 style (e.g. a ``Compose`` of augmenters).
    """

    #: The layout's name, as ``open_dataset`` and ``detect_layout`` spell it.
    layout: ClassVar[str]
    #: What the layout looks like on disk, for error messages.
    expects: ClassVar[str]
    splits: ClassVar[tuple[str, ...]] = ("all", "train", "test")
    #: Mask pixels at or above this 8-bit value are defective.
    mask_threshold: ClassVar[int] = 1

    def __init__(self, root: str | Path, split: str = "all", transform: Callable[[Sample], Any] | None = None):
        self.root = Path(os.path.abspath(root))
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}" if not self.root.exists() else
                                    f"{self.root} is a file, not a dataset folder: give the folder that holds it")
        if split not in self.splits:
            raise ValueError(f"{self.layout} has no split {split!r}; choose one of {', '.join(self.splits)}")
        if not self.matches(self.root):
            raise LayoutError(
                f"{self.root} is not a {self.layout} folder: expected {self.expects}; found: {describe(self.root)}"
            )
        self.split = split
        self.transform = transform
        self.records: list[Record] = self._list_records()
        if not self.records:
            raise LayoutError(
                f"split {split!r} of {self.layout} folder {self.root} holds no images; expected {self.expects}"
            )

    @classmethod
    @abstractmethod
    def matches(cls, root: Path) -> bool:
        """Whether ``root`` looks like this layout (a cheap check of folder names)."""

    @abstractmethod
    def _list_records(self) -> list[Record]:
        """The records of ``self.split``, in a fixed order."""

    def options(self) -> dict[str, Any]:
        """The layout's own settings that choose the split (shown by :meth:`summary`)."""
        return {}

    @property
    def labels(self) -> list[int]:
        """The label of every record, 1 = defective."""
        return [record.label for record in self.records]

    def normals(self) -> list[Record]:
        """The normal (label 0) records of this split."""
        return [record for record in self.records if record.label == 0]

    def defects(self, defect_type: str | None = None) -> list[Record]:
        """The defective (label 1) records of this split, only those of ``defect_type`` when given (a type with no
        defect here is a ValueError naming the types there are)."""
        found = [r for r in self.records if r.label == 1 and defect_type in (None, r.defect_type)]
        if defect_type is not None and not found:
            types = sorted({r.defect_type for r in self.records if r.label == 1})
            raise ValueError(f"no defects of type {defect_type!r} in {self!r}; types: {', '.join(types)}")
        return found

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        """The sample dict of record ``index`` (see the module docstring), through ``transform`` if any."""
        sample = self.read(self.records[index])
        return self.transform(sample) if self.transform is not None else sample

    def read(self, record: Record) -> Sample:
        """The sample dict of ``record`` (see the module docstring), without ``transform``."""
        image = read_image(record.image)
        if record.mask is None:
            mask = torch.zeros(image.shape[-2:], dtype=torch.bool)
        else:
            mask = read_mask(record.mask, self.mask_threshold)
            if mask.shape != image.shape[-2:]:
                raise ValueError(
                    f"mask {record.mask} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image {record.image} is "
                    f"{image.shape[-2]}x{image.shape[-1]}; a mask must have its image's size"
                )
        return {
            "image": tv_tensors.Image(image),
            "mask": tv_tensors.Mask(mask),
            "label": record.label,
            "has_mask": record.mask is not None or record.label == 0,
            "path": str(record.image),
            "defect_type": record.defect_type,
        }

    def summary(self) -> dict[str, Any]:
        """Counts and image sizes of this split; sizes come from the file headers, nothing is decoded."""
        types = Counter(record.defect_type for record in self.records)
        normal_types = {record.defect_type for record in self.normals()}
        sizes, modes = [], Counter()
        for record in self.records:
            size, mode = image_header(record.image)
            sizes.append(size)
            modes[mode] += 1
        widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
        return {
            "layout": self.layout,
            "root": str(self.root),
            "split": self.split,
            "options": self.options(),
            "images": len(self.records),
            "labels": {0: len(self.normals()), 1: len(self.defects())},
            "defects_without_mask": sum(1 for record in self.defects() if record.mask is None),
            "defect_types": {name: types[name] for name in sorted(types, key=lambda t: (t not in normal_types, t))},
            "height": {"min": min(heights), "max": max(heights)},
            "width": {"min": min(widths), "max": max(widths)},
            "modes": dict(modes.most_common()),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, split={self.split!r}, images={len(self)})"


def read_mask(path: Path, threshold: int) -> torch.Tensor:
    """An (H, W) bool mask: the pixels where any channel of the 8-bit mask file is at or above ``threshold``, or
    at least 128 for a JPEG file, whose compression smears grey levels around every edge of the mask."""
    lossy = Path(path).suffix.lower() in (".jpg", ".jpeg")
    return read_image(path).amax(0) >= (max(threshold, 128) if lossy else threshold)


def image_header(path: Path) -> tuple[tuple[int, int], str]:
    """``((width, height), mode)`` of an image file, read from its header only."""
    try:
        with PIL.Image.open(path) as img:
            return img.size, img.mode
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
        raise ImageReadError(path, exc) from exc


def describe(folder: Path) -> str:
    """What a folder holds, briefly: its files and sub-folders (a few names of each)."""
    entries = sorted(folder.iterdir())
    if not entries:
        return "an empty folder"
    folders = [p.name for p in entries if p.is_dir()]
    files = [p.name for p in entries if not p.is_dir()]
    parts = []
    if files:
        parts.append(f"{len(files)} file{'s' * (len(files) != 1)} ({_some(files)})")
    if folders:
        parts.append(f"folder{'s' * (len(folders) != 1)} {_some(folders)}")
    return ", ".join(parts)


def _some(names: list[str], shown: int = 8) -> str:
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _images(folder: Path) -> list[Path]:
    """Image files below ``folder``, sorted; none, or no folder, gives an empty list."""
    try:
        return list_images(folder)
    except FileNotFoundError:
        return []


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _labelled_by_mask(image: Path, mask: Path, threshold: int, group: str) -> Record:
    """A record whose label says whether its mask has any defect pixel (the mask is decoded once here)."""
    label = int(read_mask(mask, threshold).any())
    return Record(image, mask, label, "defect" if label else "normal", group)


def _mask_beside(image: Path, suffix: str, layout: str) -> Path:
    """The mask file ``<stem><suffix>.<image suffix>`` next to ``image``; a missing one raises."""
    candidates = [image.with_name(image.stem + suffix + ext) for ext in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise LayoutError(f"{layout}: no mask for {image} (expected {image.stem}{suffix}.<image suffix> beside it)")


def stratified_split(records: list[Record], test_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Split records into (train, test), a seeded ``test_fraction`` of each defect type going to test, whole
    groups at a time (a KolektorSDD item's images stay together; a group of one image each elsewhere).

    Groups are stratified by the defect types they hold. Both parts keep the records' order; the same records,
    fraction and seed always give the same split.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie between 0 and 1, got {test_fraction}")
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record.group, []).append(i)
    kinds = {group: tuple(sorted({records[i].defect_type for i in members})) for group, members in groups.items()}
    rng = random.Random(seed)
    test: set[int] = set()
    for kind in sorted(set(kinds.values())):
        members = [group for group in groups if kinds[group] == kind]
        rng.shuffle(members)
        for group in members[:round(len(members) * test_fraction)]:
            test.update(groups[group])
    return ([r for i, r in enumerate(records) if i not in test], [r for i, r in enumerate(records) if i in test])


class StratifiedLayout(Layout):
    """A layout without a split of its own: "train" and "test" come from a seeded split stratified by type.

    Splits: "all" holds every image; "test" a ``test_fraction`` of the images of each defect type (normals
    included), drawn with ``seed``; "train" the rest.
    """

    def __init__(self, root: str | Path, split: str = "all", *, test_fraction: float = 0.3, seed: int = 0,
                 transform: Callable[[Sample], Any] | None = None):
        self.test_fraction = test_fraction
        self.seed = seed
        super().__init__(root, split, transform)

    @abstractmethod
    def _list_all(self) -> list[Record]:
        """Every record of the dataset, in a fixed order."""

    def _list_records(self) -> list[Record]:
        records = self._list_all()
        if self.split == "all":
            return records
        train, test = stratified_split(records, self.test_fraction, self.seed)
        return train if self.split == "train" else test

    def options(self) -> dict[str, Any]:
        return {} if self.split == "all" else {"test_fraction": self.test_fraction, "seed": self.seed}


class KolektorSDD2(Layout):
    """KolektorSDD2: ``train/`` and ``test/``, each with ``<id>.png`` and its mask ``<id>_GT.png``.

    Splits: "train" (246 defective + 2085 normal), "test" (110 + 894) and "all" (both). The label comes from
    the mask (any non-zero pixel is a defect); masks are decoded once, when the dataset is made. Files whose
    name holds "(copy)" are known duplicates and are skipped.
    """

    layout = "ksdd2"
    expects = "train/ and test/ with <id>.png and <id>_GT.png"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return (root / "test").is_dir() and any((root / "train").glob("*_GT.png"))

    def _list_records(self) -> list[Record]:
        parts = ("train", "test") if self.split == "all" else (self.split,)
        records = []
        for part in parts:
            for image in _images(self.root / part):
                if "(copy)" in image.name or image.stem.endswith("_GT"):
                    continue
                mask = _mask_beside(image, "_GT", self.layout)
                records.append(_labelled_by_mask(image, mask, self.mask_threshold, f"{part}/{image.stem}"))
        return records


class KolektorSDD(Layout):
    """KolektorSDD (v1): one folder per item, ``kosNN/PartK.jpg`` with the mask ``kosNN/PartK_label.bmp``.

    Images of one item are never split apart: the items are shuffled with ``seed`` and dealt into ``folds``
    folds. Splits: "test" holds the items of fold ``fold``, "train" the items of the other folds, "all" every
    item. The label comes from the mask (any non-zero pixel is a defect), decoded when the dataset is made.
    """

    layout = "ksdd"
    expects = "item folders kosNN/ with PartK.jpg and PartK_label.bmp"
    _ITEM = re.compile(r"kos\d+")

    def __init__(self, root: str | Path, split: str = "all", *, fold: int = 0, folds: int = 3, seed: int = 0,
                 transform: Callable[[Sample], Any] | None = None):
        if folds < 2 or not 0 <= fold < folds:
            raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got fold={fold}, folds={folds}")
        self.fold = fold
        self.folds = folds
        self.seed = seed
        super().__init__(root, split, transform)

    @classmethod
    def _items(cls, root: Path) -> list[Path]:
        """The item folders that hold an image (an empty one would shift every other item's fold)."""
        return [d for d in _subfolders(root) if cls._ITEM.fullmatch(d.name) and _images(d)]

    @classmethod
    def matches(cls, root: Path) -> bool:
        return any(any(item.glob("*_label.bmp")) for item in cls._items(root))

    def item_folds(self) -> dict[str, int]:
        """The fold of every item (``kosNN``), from the seeded shuffle."""
        items = [item.name for item in self._items(self.root)]
        if len(items) < self.folds:
            raise LayoutError(f"{self.root} holds {len(items)} items, too few for {self.folds} folds")
        random.Random(self.seed).shuffle(items)
        return {item: i % self.folds for i, item in enumerate(items)}

    def _list_records(self) -> list[Record]:
        folds = self.item_folds()
        records = []
        for item in self._items(self.root):
            if self.split != "all" and (folds[item.name] == self.fold) != (self.split == "test"):
                continue
            for image in _images(item):
                if image.stem.endswith("_label"):
                    continue
                mask = _mask_beside(image, "_label", self.layout)
                records.append(_labelled_by_mask(image, mask, self.mask_threshold, item.name))
        return records

    def options(self) -> dict[str, Any]:
        return {} if self.split == "all" else {"fold": self.fold, "folds": self.folds, "seed": self.seed}


class MVTecAD(Layout):
    """MVTec AD: ``<category>/train/good/``, ``<category>/test/<type>/`` and ``<category>/ground_truth/<type>/``.

    ``root`` is either one category folder or the folder of all categories; then ``category`` names one
    (needed only when there are several). Splits: "train" holds the normal training images
    (``train/good``), "test" the test images (``test/good`` normal, every other type defective with its
    mask ``ground_truth/<type>/<name>_mask.png``), "all" both.
    """

    layout = "mvtec"
    expects = "<category>/train/good/, <category>/test/<type>/ and <category>/ground_truth/<type>/"

    def __init__(self, root: str | Path, split: str = "all", *, category: str | None = None,
                 transform: Callable[[Sample], Any] | None = None):
        self.category = category
        super().__init__(root, split, transform)

    @staticmethod
    def _is_category(folder: Path) -> bool:
        return (folder / "train" / "good").is_dir() and (folder / "test").is_dir()

    @classmethod
    def matches(cls, root: Path) -> bool:
        return cls._is_category(root) or any(cls._is_category(d) for d in _subfolders(root))

    def _category_folder(self) -> Path:
        if self._is_category(self.root):
            if self.category not in (None, self.root.name):
                raise LayoutError(f"{self.root} is the MVTec AD category {self.root.name!r}, not {self.category!r}")
            return self.root
        categories = {d.name: d for d in _subfolders(self.root) if self._is_category(d)}
        if self.category is None and len(categories) == 1:
            return next(iter(categories.values()))
        if self.category not in categories:
            asked = "pass category=<name>" if self.category is None else f"no category {self.category!r}"
            raise LayoutError(f"{self.root} holds the MVTec AD categories {', '.join(categories)}: {asked}")
        return categories[self.category]

    def _list_records(self) -> list[Record]:
        folder = self._category_folder()
        self.category = folder.name  # the category opened, also when found by itself
        records = []
        if self.split in ("train", "all"):
            records += [Record(p, None, 0, "good", f"train/good/{p.stem}") for p in _images(folder / "train" / "good")]
        if self.split in ("test", "all"):
            for type_folder in _subfolders(folder / "test"):
                kind = type_folder.name
                for image in _images(type_folder):
                    mask = None
                    if kind != "good":
                        mask = folder / "ground_truth" / kind / f"{image.stem}_mask.png"
                        if not mask.is_file():
                            raise LayoutError(f"mvtec: no mask for {image} (expected {mask})")
                    records.append(Record(image, mask, int(kind != "good"), kind, f"test/{kind}/{image.stem}"))
        return records

    def options(self) -> dict[str, Any]:
        return {"category": self.category}


class MagneticTile(StratifiedLayout):
    """Magnetic tile: ``MT_<class>/Imgs/<name>.jpg`` with its mask ``<name>.png`` (>= 128 is defect).

    ``MT_Free`` is normal (label 0, type "normal"); every other class is defective (label 1, type = the class
    without ``MT_``) even where its mask is empty, as 4 masks of ``MT_Uneven`` are. Splits: see
    :class:`StratifiedLayout`, stratified by class.
    """

    layout = "magnetic_tile"
    expects = "MT_<class>/Imgs/ folders of <name>.jpg with <name>.png masks"
    mask_threshold = 128
    normal_class = "MT_Free"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return any(d.name.startswith("MT_") and (d / "Imgs").is_dir() for d in _subfolders(root))

    def _list_all(self) -> list[Record]:
        records = []
        for folder in _subfolders(self.root):
            if not folder.name.startswith("MT_"):
                continue
            normal = folder.name == self.normal_class
            defect_type = "normal" if normal else folder.name.removeprefix("MT_")
            found = len(records)
            for image in _images(folder / "Imgs") if (folder / "Imgs").is_dir() else []:
                if image.suffix.lower() not in (".jpg", ".jpeg"):
                    continue
                mask = image.with_suffix(".png")
                if not mask.is_file():
                    if not normal:
                        raise LayoutError(f"magnetic_tile: no mask for {image} (expected {mask})")
                    mask = None
                records.append(Record(image, mask, int(not normal), defect_type, f"{folder.name}/{image.stem}"))
            if len(records) == found:
                warnings.warn(f"magnetic_tile: {folder.name} is left out: it holds no .jpg image in an Imgs/ folder",
                              stacklevel=3)
        return records


class FolderLayout(StratifiedLayout):
    """A plain folder: ``normal/`` images, optional ``defect/`` images and optional ``masks/``.

    Images may sit in sub-folders; the first sub-folder under ``defect/`` names the defect type ("defect"
    when there is none). With ``masks/``, every defect image needs a mask ``masks/<path>.<ext>`` or
    ``masks/<path>_mask.<ext>`` (``<path>`` = its path under ``defect/`` without suffix, e.g. its stem);
    without ``masks/``, defect images have no mask (``has_mask`` False). Splits: see
    :class:`StratifiedLayout`.
    """

    layout = "folder"
    expects = "normal/ (and optionally defect/ and masks/) with images"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return (root / "normal").is_dir()

    def _list_all(self) -> list[Record]:
        normal, defect, masks = self.root / "normal", self.root / "defect", self.root / "masks"
        look_alike = [d.name for d in _subfolders(self.root) if d.name.lower() in MASK_FOLDER_NAMES]
        if defect.is_dir() and not masks.is_dir() and look_alike:
            warnings.warn(f"folder: {self.root} has {look_alike[0]}/ but no masks/, so its defect images have no "
                          f"pixel masks; rename {look_alike[0]}/ to masks/ to use them", stacklevel=3)
        records = [Record(p, None, 0, "normal", f"normal/{_key(p, normal)}") for p in _images(normal)]
        mask_of = {_key(p, masks): p for p in _images(masks)}
        for image in _images(defect):
            key = _key(image, defect)
            mask = None
            if masks.is_dir():
                mask = mask_of.get(key) or mask_of.get(f"{key}_mask")
                if mask is None:
                    raise LayoutError(
                        f"folder: no mask for {image} (expected masks/{key}.png or masks/{key}_mask.png)"
                    )
            nested = image.relative_to(defect).parts
            records.append(Record(image, mask, 1, nested[0] if len(nested) > 1 else "defect", f"defect/{key}"))
        return records


#: Folder names that mean masks but are not the folder layout's ``masks/``.
MASK_FOLDER_NAMES = ("mask", "gt", "ground_truth", "groundtruth", "labels", "annotations")


def _key(path: Path, folder: Path) -> str:
    """``path`` under ``folder`` without its suffix, e.g. ``scratch/001``."""
    return path.relative_to(folder).with_suffix("").as_posix()


#: Every layout by name, in the order ``detect_layout`` tries them.
LAYOUTS: dict[str, type[Layout]] = {
    cls.layout: cls for cls in (KolektorSDD2, KolektorSDD, MVTecAD, MagneticTile, FolderLayout)
}


def detect_layout(root: str | Path) -> str:
    """The name of the layout ``root`` holds; a folder of no known layout raises :class:`LayoutError`."""
    folder = Path(os.path.abspath(root))
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}" if not folder.exists() else
                                f"{folder} is a file, not a dataset folder: give the folder that holds it")
    for name, cls in LAYOUTS.items():
        if cls.matches(folder):
            return name
    expected = "; ".join(f"{name} ({cls.expects})" for name, cls in LAYOUTS.items())
    raise LayoutError(f"no known layout in {folder}: expected one of {expected}; found: {describe(folder)}")


def open_dataset(root: str | Path, layout: str | None = None, split: str = "all", **options: Any) -> Layout:
    """The dataset at ``root`` in ``layout`` (detected when None); ``options`` go to the layout's class."""
    name = layout if layout is not None else detect_layout(root)
    if name not in LAYOUTS:
        raise LayoutError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    _check_options(name, options)
    return LAYOUTS[name](root, split, **options)


def _check_options(name: str, options: dict[str, Any]) -> None:
    """Raise a :class:`LayoutError` for an option the layout ``name`` does not take, or a value of another kind
    than its default's (an integer, a number, a flag)."""
    taken = {p.name: p.default for p in inspect.signature(LAYOUTS[name].__init__).parameters.values()
             if p.name not in ("self", "root", "split")}
    unknown = sorted(set(options) - set(taken))
    if unknown:
        valid = ", ".join(sorted(taken)) or "none"
        raise LayoutError(f"the {name} layout takes no option {', '.join(unknown)} (its options: {valid})")
    for key, value in options.items():
        wanted = kind_mismatch(value, type(taken[key]))
        if wanted:
            raise LayoutError(f"the {name} layout's option {key} must be {wanted}, got {value!r}")


def format_summary(summary: dict[str, Any]) -> str:
    """A :meth:`Layout.summary` as a few lines of text."""
    options = ", ".join(f"{k}={v}" for k, v in summary["options"].items())
    labels = summary["labels"]
    lines = [
        f"layout  {summary['layout']}",
        f"root    {summary['root']}",
        f"split   {summary['split']}" + (f" ({options})" if options else ""),
        f"images  {summary['images']}: {labels[0]} normal (label 0), {labels[1]} defective (label 1)"
        + (f", {summary['defects_without_mask']} defective without a mask" if summary["defects_without_mask"] else ""),
        f"size    H {summary['height']['min']}-{summary['height']['max']}, "
        f"W {summary['width']['min']}-{summary['width']['max']} px",
        "modes   " + ", ".join(f"{mode} {n}" for mode, n in summary["modes"].items()),
        "types",
    ]
    width = max(len(name) for name in summary["defect_types"])
    lines += [f"  {name:<{width}}  {n:>6}" for name, n in summary["defect_types"].items()]
    return "\n".join(lines)
