"""Export a bank (``inout-aug generate``'s output) for training or testing elsewhere.

Formats (one function each, :func:`export` dispatches):

- ``mvtec``: the MVTec AD layout that anomalib's ``MVTecAD`` and ``Folder`` datamodules read:
  ``CATEGORY/test/TYPE/NNNNNN.png`` and ``CATEGORY/ground_truth/TYPE/NNNNNN_mask.png`` (0/255), normal images in
  ``train/good/`` and ``test/good/``.
- ``yolo-seg``: ``images/``, ``labels/*.txt`` (``class x1 y1 x2 y2 ...``, coordinates divided by the image width
  and height) and ``data.yaml``: one polygon per connected component, its outer boundary (holes are filled).
- ``coco``: ``images/`` and ``annotations.json``: one instance annotation per connected component, its mask as
  compressed RLE (exact), with ``area``, ``bbox`` and ``iscrowd`` 0.

An entry's defect type (mvtec folder, yolo-seg and coco class) is its augmenter unless ``defect_type`` names one
for all. Weak-label entries (no pixel mask) are skipped and counted: none of the formats can hold a defect without
its pixels. Normal images given are written as PNG: mvtec train/good (a share in test/good), otherwise images
without annotations (negatives). Everything is written into a hidden folder beside the target and renamed into
place when complete, so the target is either absent or whole. ``cv2`` and ``pycocotools`` (the ``export`` extra)
are imported on first use.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from inout_aug.core.io import read_image, write_png, write_text
from inout_aug.data.bank import Bank

FORMATS = ("mvtec", "yolo-seg", "coco")
DEFAULT_TEST_NORMALS = 0.2
#: Import name -> the package of the ``export`` extra that provides it.
PACKAGES = {"cv2": "opencv-python-headless", "pycocotools.mask": "pycocotools"}

Tick = Callable[[int], None]


@dataclass(frozen=True)
class Exported:
    """What an export wrote: defect images, their objects (masks for mvtec, connected components otherwise),
    normal images, and the weak-label entries skipped."""

    folder: Path
    format: str
    defects: int
    objects: int
    normals: int
    weak: int


def export(bank: Bank | str | os.PathLike, out: str | os.PathLike, format: str, *, normals: Sequence[Path] = (),
           defect_type: str | None = None, category: str | None = None, test_normals: float | None = None,
           progress: Tick | None = None) -> Exported:
    """Write ``bank`` to ``out`` in ``format`` (mvtec: to ``out/category``, by default the bank folder's name).

    The folder written must be absent or empty. ``category`` and ``test_normals`` (the share of ``normals`` put
    in test/good, default 0.2) apply to mvtec only. ``progress(k)`` hears of every k entries and normals done.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: choose from {', '.join(FORMATS)}")
    if format != "mvtec" and (category is not None or test_normals is not None):
        raise ValueError(f"category and test_normals (--category, --test-normals) apply to mvtec, not to {format}")
    bank = bank if isinstance(bank, Bank) else Bank(bank, cache=False)
    marked = [record for i, record in enumerate(bank.records) if record["mask"] is not None and bank.mask(i).any()]
    types = sorted({_defect_type(record, defect_type) for record in marked})
    if not types:
        raise ValueError(f"the bank {bank.path} holds only weak labels (no pixel marked): nothing to export as "
                         f"{format}")
    target = Path(os.path.abspath(out))
    if format == "mvtec":
        category = _folder_name(category or Path(os.path.abspath(bank.path)).name, "category")
        for name in types:
            if _folder_name(name, "defect type") == "good":
                raise ValueError("defect type 'good' is the MVTec name of normal images; give --defect-type")
        target = target / category
    blocked = next((p for p in (target, *target.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise FileExistsError(f"{blocked} is a file: --out must name a folder (new or empty) to export to")
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty: export to a new or empty folder (another --out"
                              f"{' or --category' if format == 'mvtec' else ''}), or delete {target} first")
    tick = progress or (lambda k: None)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"
    partial.mkdir()
    try:
        if format == "mvtec":
            share = DEFAULT_TEST_NORMALS if test_normals is None else test_normals
            defects, objects = export_mvtec(bank, partial, normals, defect_type, share, tick)
        elif format == "yolo-seg":
            defects, objects = export_yolo_seg(bank, partial, normals, defect_type, types, tick)
        else:
            defects, objects = export_coco(bank, partial, normals, defect_type, types, tick)
        if target.is_dir():
            target.rmdir()
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Exported(target, format, defects, objects, len(normals), len(bank.records) - defects)


def export_mvtec(bank: Bank, folder: Path, normals: Sequence[Path], defect_type: str | None, test_normals: float,
                 tick: Tick) -> tuple[int, int]:
    """MVTec AD layout in ``folder`` (a category); ``test_normals`` is the share of normals in test/good (evenly
    spread over their order). Returns (defect images, masks)."""
    if not 0 <= test_normals <= 1:
        raise ValueError(f"test_normals must be a share between 0 and 1, got {test_normals}")
    count = 0
    for record, mask in _defects(bank, tick):
        kind, stem = _defect_type(record, defect_type), f"{record['index']:06d}"
        _copy(bank.path / record["image"], folder / "test" / kind / f"{stem}.png")
        write_png(mask.to(torch.uint8) * 255, folder / "ground_truth" / kind / f"{stem}_mask.png")
        count += 1
    n_test = round(len(normals) * test_normals)
    tested = {k * len(normals) // n_test for k in range(n_test)}
    for i, path in enumerate(normals):
        write_png(read_image(path), folder / ("test" if i in tested else "train") / "good" / f"{i:06d}.png")
        tick(1)
    return count, count


def export_yolo_seg(bank: Bank, folder: Path, normals: Sequence[Path], defect_type: str | None,
                    types: Sequence[str], tick: Tick) -> tuple[int, int]:
    """YOLO segmentation labels in ``folder`` (class k is ``types[k]``). Returns (defect images, polygons)."""
    classes = {name: k for k, name in enumerate(types)}
    images = objects = 0
    for record, mask in _defects(bank, tick):
        stem, (h, w) = f"{record['index']:06d}", mask.shape
        _copy(bank.path / record["image"], folder / "images" / f"{stem}.png")
        polygons = mask_polygons(mask)
        lines = [" ".join([str(classes[_defect_type(record, defect_type)]),
                           *(f"{x / w:.6f} {y / h:.6f}" for x, y in polygon.tolist())]) for polygon in polygons]
        write_text("".join(line + "\n" for line in lines), folder / "labels" / f"{stem}.txt")
        images, objects = images + 1, objects + len(polygons)
    for i, path in enumerate(normals):
        write_png(read_image(path), folder / "images" / f"normal_{i:06d}.png")
        write_text("", folder / "labels" / f"normal_{i:06d}.txt")
        tick(1)
    names = "".join(f"  {k}: {json.dumps(name)}\n" for k, name in enumerate(types))
    write_text(f"# YOLO segmentation data exported by inout-aug from {bank.path}: synthetic defects, and normal "
               "images with empty labels.\n# One split: point val at real validation images before training.\n"
               f"train: images\nval: images\nnames:\n{names}", folder / "data.yaml")
    return images, objects


def export_coco(bank: Bank, folder: Path, normals: Sequence[Path], defect_type: str | None,
                types: Sequence[str], tick: Tick) -> tuple[int, int]:
    """COCO instance annotations (RLE masks) in ``folder``: ``annotations.json`` and ``images/`` (the image root
    of ``file_name``); category ids count from 1 in ``types`` order. Returns (defect images, annotations)."""
    coco_mask = _require("pycocotools.mask")
    category_ids = {name: k + 1 for k, name in enumerate(types)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for record, mask in _defects(bank, tick):
        name, (h, w) = f"{record['index']:06d}.png", mask.shape
        _copy(bank.path / record["image"], folder / "images" / name)
        images.append({"id": len(images) + 1, "file_name": name, "height": h, "width": w})
        for component in mask_components(mask):
            rle = mask_rle(component)
            annotations.append({
                "id": len(annotations) + 1, "image_id": len(images),
                "category_id": category_ids[_defect_type(record, defect_type)], "segmentation": rle,
                "area": int(coco_mask.area(rle)), "bbox": coco_mask.toBbox(rle).tolist(), "iscrowd": 0,
            })
    defects = len(images)
    for i, path in enumerate(normals):
        image = read_image(path)
        name = f"normal_{i:06d}.png"
        write_png(image, folder / "images" / name)
        images.append({"id": len(images) + 1, "file_name": name, "height": image.shape[1], "width": image.shape[2]})
        tick(1)
    coco = {"info": {"description": f"inout-aug export of {bank.path}"}, "images": images,
            "annotations": annotations,
            "categories": [{"id": k, "name": name, "supercategory": "defect"} for name, k in category_ids.items()]}
    write_text(json.dumps(coco) + "\n", folder / "annotations.json")
    return defects, len(annotations)


def mask_polygons(mask: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    """One polygon per 8-connected component of a bool (H, W) mask: the (K, 2) int x, y pixels of its outer
    boundary (``cv2.findContours``, holes filled). A dot or a one-pixel line repeats its points to K = 3, so that
    ``cv2.fillPoly`` still paints its pixels."""
    cv2 = _require("cv2")
    contours, _ = cv2.findContours(np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [np.resize(contour[:, 0], (max(len(contour), 3), 2)) for contour in contours]


def mask_components(mask: torch.Tensor | np.ndarray) -> Iterator[np.ndarray]:
    """The 8-connected components of a bool (H, W) mask, each as a bool (H, W) array."""
    cv2 = _require("cv2")
    count, labels = cv2.connectedComponents(np.asarray(mask, dtype=np.uint8), connectivity=8)
    return (labels == k for k in range(1, count))


def mask_rle(mask: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """A bool (H, W) mask as COCO compressed RLE: ``{"size": [H, W], "counts": str}``."""
    rle = _require("pycocotools.mask").encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _defects(bank: Bank, tick: Tick) -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
    """The bank's entries with a pixel mask that marks a pixel, (record, (H, W) bool mask); ``tick(1)`` after each
    entry. An empty mask file is a weak label too: a defect somewhere, no pixel known."""
    for i, record in enumerate(bank.records):
        mask = bank.mask(i)
        if mask is not None and mask.any():
            yield record, mask
        tick(1)


def _defect_type(record: dict[str, Any], defect_type: str | None) -> str:
    return defect_type or record.get("augmenter") or "defect"


def _folder_name(name: str, what: str) -> str:
    """``name`` if it can name one folder, else a ValueError."""
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{what} {name!r} cannot name a folder: give a plain name such as 'scratch'")
    return name


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _require(name: str) -> ModuleType:
    """Module ``name``, imported on first use (the ``export`` extra)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(f"this export needs {PACKAGES[name]}: pip install \"inout-aug[export]\"") from None
