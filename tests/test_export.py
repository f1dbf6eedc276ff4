"""``inout-aug export``: a bank as MVTec AD (read back by anomalib), YOLO segmentation and COCO (round trips)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers import gradient_image
from inout_aug.core.io import read_image, write_png
from inout_aug.data.bank import Bank
from inout_aug.tools.export import export, mask_polygons
from inout_aug_cli.main import cli

cv2 = pytest.importorskip("cv2")
H, W = 64, 80
YY, XX = np.mgrid[:H, :W]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def disk(cy: int, cx: int, r: int) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r


#: Masks with known polygons: blobs, a dot, one-pixel lines, a concave shape, two components, and a ring (a hole).
SHAPES = {
    "disk": disk(20, 30, 10),
    "square": (YY >= 5) & (YY < 17) & (XX >= 40) & (XX < 52),
    "dot": (YY == 30) & (XX == 7),
    "diagonal": (YY - XX == 10) & (XX >= 3) & (XX < 9),
    "line": (YY == 50) & (XX >= 10) & (XX < 30),
    "concave": ((YY >= 30) & (YY < 50) & (XX >= 50) & (XX < 55)) | ((YY >= 45) & (YY < 50) & (XX >= 50) & (XX < 70)),
    "two": disk(10, 10, 4) | disk(40, 60, 6) | ((YY == 60) & (XX == 79)),
    "ring": disk(32, 40, 14) & ~disk(32, 40, 5),
}


def write_bank(folder: Path, masks: list[np.ndarray], weak: int = 0, augmenter: str = "shapes") -> Path:
    """A bank made here: one entry per mask, then ``weak`` entries without a mask (as txt2img makes)."""
    records = []
    for i, mask in enumerate([*masks, *[None] * weak]):
        name = f"{i:06d}.png"
        write_png(gradient_image(h=H, w=W).roll(i, -1), folder / "images" / name)
        if mask is not None:
            write_png(torch.from_numpy(mask.astype(np.uint8) * 255), folder / "masks" / name)
        records.append({"index": i, "image": f"images/{name}", "mask": None if mask is None else f"masks/{name}",
                        "source": "made here", "augmenter": augmenter if mask is not None else "diffusion",
                        "params": {}, "seed": i, "drawn": {}})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def shapes_bank(tmp_path) -> Path:
    return write_bank(tmp_path / "shapes", list(SHAPES.values()), weak=1)


@pytest.fixture
def normals(tmp_path) -> Path:
    folder = tmp_path / "normal"
    for i in range(4):
        write_png(gradient_image(h=48, w=64).roll(i * 7, -1), folder / f"n{i}.png")
    write_png(gradient_image(c=1, h=48, w=64), folder / "sub" / "grey.png")
    return folder


@pytest.fixture
def memseg_bank(normals, tmp_path) -> Path:
    """A bank made by `inout-aug generate -a memseg`, plus one weak-label entry."""
    bank = tmp_path / "bank"
    result = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(bank), "-n", "6", "--seed", "1")
    assert result.exit_code == 0, result.output
    write_png(gradient_image(h=48, w=64), bank / "images" / "000006.png")
    with open(bank / "manifest.jsonl", "a") as manifest:
        manifest.write(json.dumps({"index": 6, "image": "images/000006.png", "mask": None, "source": "txt2img",
                                   "augmenter": "diffusion", "params": {}, "seed": 6, "drawn": {}}) + "\n")
    return bank


def yolo_masks(folder: Path, stem: str, shape: tuple[int, int]) -> list[tuple[int, np.ndarray]]:
    """The (class, rasterised polygon) of each line of a YOLO segmentation label file."""
    h, w = shape
    objects = []
    for line in (folder / "labels" / f"{stem}.txt").read_text().splitlines():
        cls, *coords = line.split()
        points = np.round(np.array(coords, dtype=np.float64).reshape(-1, 2) * [w, h]).astype(np.int32)
        canvas = np.zeros(shape, np.uint8)
        cv2.fillPoly(canvas, [points], 1)
        objects.append((int(cls), canvas.astype(bool)))
    return objects


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_mvtec_export_loads_in_anomalib(memseg_bank, normals, tmp_path):
    datasets = pytest.importorskip("anomalib.data.datasets")
    out = tmp_path / "mvtec"
    result = run("export", str(memseg_bank), "--format", "mvtec", "--out", str(out), "--normals", str(normals))
    assert result.exit_code == 0, result.output
    assert "6 defect images (6 masks) and 5 normal images in" in result.output
    assert "skipped 1 weak-label entries" in result.output
    root = out / "bank"  # the category defaults to the bank folder's name
    assert sorted(p.name for p in (root / "ground_truth" / "memseg").iterdir())[0] == "000000_mask.png"
    bank = Bank(memseg_bank)
    by_stem = {f"{r['index']:06d}": i for i, r in enumerate(bank.records)}

    test = datasets.MVTecADDataset(root=out, category="bank", split="test")
    train = datasets.MVTecADDataset(root=out, category="bank", split="train")
    assert len(test) == 7 and len(train) == 4  # 6 defects and 1 of 5 normals (--test-normals 0.2) in test
    assert sorted(test.samples.label) == ["good"] + ["memseg"] * 6 and set(train.samples.label_index) == {0}
    folder = datasets.FolderDataset(name="bank", root=root, normal_dir="train/good", abnormal_dir="test/memseg",
                                    normal_test_dir="test/good", mask_dir="ground_truth/memseg", split="test")
    assert len(folder) == 7
    for dataset in (test, folder):
        for k in range(len(dataset)):
            item = dataset[k]
            stem = Path(item.image_path).stem
            if int(item.gt_label) == 0:
                assert "/test/good/" in item.image_path and not item.gt_mask.any()
                continue
            assert torch.equal(item.gt_mask.bool(), bank.mask(by_stem[stem]))
            assert torch.equal(read_image(item.image_path), bank.entry(by_stem[stem])[0])


def test_mvtec_categories_share_a_root_and_a_used_folder_is_refused(shapes_bank, tmp_path):
    out = tmp_path / "mvtec"
    assert run("export", str(shapes_bank), "-f", "mvtec", "-o", str(out), "--category", "a").exit_code == 0
    again = run("export", str(shapes_bank), "-f", "mvtec", "-o", str(out), "--category", "a")
    assert again.exit_code == 1
    assert again.output.splitlines()[-1] == (f"Error: {out / 'a'} is not empty: export to a new or empty folder "
                                             f"(another --out or --category), or delete {out / 'a'} first")
    other = run("export", str(shapes_bank), "-f", "mvtec", "-o", str(out), "--category", "b", "--defect-type", "dent")
    assert other.exit_code == 0, other.output
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    assert sorted(p.name for p in (out / "b" / "test").iterdir()) == ["dent"]
    refused = run("export", str(shapes_bank), "-f", "mvtec", "-o", str(out), "--defect-type", "good")
    assert refused.exit_code == 1 and "good" in refused.output


def test_yolo_seg_polygons_round_trip(shapes_bank, normals, tmp_path):
    out = tmp_path / "yolo"
    result = run("export", str(shapes_bank), "-f", "yolo-seg", "-o", str(out), "--normals", str(normals))
    assert result.exit_code == 0, result.output
    assert f"8 defect images (10 objects) and 5 normal images in {out}" in result.output
    for i, (name, mask) in enumerate(SHAPES.items()):
        objects = yolo_masks(out, f"{i:06d}", (H, W))
        assert {cls for cls, _ in objects} == {0}
        painted = np.logical_or.reduce([m for _, m in objects])
        if name == "ring":  # holes are filled: the outer boundary only
            assert (painted == disk(32, 40, 14)).all() and iou(painted, mask) > 0.85
        else:  # exact without holes, one polygon per connected component
            assert (painted == mask).all(), name
            assert len(objects) == cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
    assert (out / "labels" / "normal_000000.txt").read_text() == ""
    assert len(list((out / "images").iterdir())) == 13 and not (out / "images" / "000008.png").exists()
    data = (out / "data.yaml").read_text()
    assert "train: images\nval: images\nnames:\n  0: \"shapes\"\n" in data


def test_yolo_seg_polygons_of_memseg_masks_within_tolerance(memseg_bank, tmp_path):
    """Generated masks (noise blobs, possibly with holes): the rasterised polygons hold every mask pixel and have
    IoU >= 0.9 with the mask (holes are filled)."""
    out = tmp_path / "yolo"
    assert run("export", str(memseg_bank), "-f", "yolo-seg", "-o", str(out)).exit_code == 0
    bank = Bank(memseg_bank)
    for i, record in enumerate(bank.records[:6]):
        mask = bank.mask(i).numpy()
        painted = np.logical_or.reduce([m for _, m in yolo_masks(out, f"{record['index']:06d}", mask.shape)])
        assert not (mask & ~painted).any() and iou(painted, mask) >= 0.9


def test_coco_rle_round_trip_is_exact(shapes_bank, normals, tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco")
    out = tmp_path / "coco"
    result = run("export", str(shapes_bank), "-f", "coco", "-o", str(out), "--normals", str(normals))
    assert result.exit_code == 0, result.output
    assert "skipped 1 weak-label entries" in result.output
    coco = coco_api.COCO(str(out / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["shapes"]
    assert len(coco.getImgIds()) == 8 + 5
    for i, mask in enumerate(SHAPES.values()):
        image = coco.loadImgs(i + 1)[0]
        assert image["file_name"] == f"{i:06d}.png" and (image["height"], image["width"]) == (H, W)
        assert (out / "images" / image["file_name"]).is_file()
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
        assert len(annotations) == components  # one annotation per connected component
        decoded = [coco.annToMask(a).astype(bool) for a in annotations]
        assert (np.logical_or.reduce(decoded) == mask).all() and sum(m.sum() for m in decoded) == mask.sum()
        for annotation, part in zip(annotations, decoded):
            ys, xs = np.nonzero(part)
            assert annotation["iscrowd"] == 0 and annotation["area"] == part.sum()
            assert annotation["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert isinstance(annotation["segmentation"]["counts"], str)
    normal = coco.loadImgs(9)[0]
    assert normal["file_name"] == "normal_000000.png" and not coco.getAnnIds(imgIds=9)


def test_a_missing_extra_is_named_and_nothing_is_left(shapes_bank, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now fails
    with pytest.raises(ImportError, match=r'needs opencv-python-headless: pip install "inout-aug\[export\]"'):
        export(shapes_bank, tmp_path / "yolo", "yolo-seg")
    result = run("export", str(shapes_bank), "-f", "coco", "-o", str(tmp_path / "coco"))
    assert result.exit_code == 1 and result.output.splitlines()[-1].endswith('pip install "inout-aug[export]"')
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no partial folders
    assert run("export", str(shapes_bank), "-f", "mvtec", "-o", str(tmp_path / "mvtec")).exit_code == 0


def test_bad_exports_are_refused(shapes_bank, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "file.txt").write_text("x")
    result = run("export", str(shapes_bank), "-f", "coco", "-o", str(used))
    assert result.exit_code == 1 and f"{used} is not empty" in result.output and "--out" in result.output
    for out in (used / "file.txt", used / "file.txt" / "sub"):
        result = run("export", str(shapes_bank), "-f", "coco", "-o", str(out))
        assert result.exit_code == 1 and f"{used / 'file.txt'} is a file: --out must name a folder" in result.output
    result = run("export", str(shapes_bank), "-f", "coco", "-o", str(tmp_path / "c"), "--category", "x")
    assert result.exit_code == 1 and "apply to mvtec, not to coco" in result.output
    weak = write_bank(tmp_path / "weak", [], weak=2)
    result = run("export", str(weak), "-f", "mvtec", "-o", str(tmp_path / "m"))
    assert result.exit_code == 1 and "holds only weak labels" in result.output
    assert "no defect bank at" in run("export", str(tmp_path / "nope"), "-f", "coco", "-o", str(tmp_path / "c")).output
    assert not (tmp_path / "c").exists() and not (tmp_path / "m").exists()


def test_mask_polygons_pad_dots_and_lines_to_three_points():
    assert mask_polygons(SHAPES["dot"])[0].tolist() == [[7, 30]] * 3
    assert len(mask_polygons(SHAPES["line"])[0]) == 3


def test_an_entry_whose_mask_marks_no_pixel_is_a_weak_label(tmp_path):
    masks = list(SHAPES.values())
    bank = write_bank(tmp_path / "bank", [*masks, np.zeros_like(masks[0])], weak=1)
    result = run("export", str(bank), "-f", "coco", "-o", str(tmp_path / "coco"))
    assert result.exit_code == 0, result.output
    assert f"{len(masks)} defect images" in result.output and "skipped 2 weak-label entries" in result.output
    names = {image["file_name"] for image in json.loads((tmp_path / "coco" / "annotations.json").read_text())["images"]}
    assert f"{len(masks):06d}.png" not in names  # not a defect image without a defect, nor a negative


def test_normals_leave_out_generate_runs_inside_their_folder(shapes_bank, normals, tmp_path):
    made = run("generate", "-a", "memseg", "-i", str(normals), "-o", str(normals / "defects"), "-n", "3")
    assert made.exit_code == 0, made.output
    result = run("export", str(shapes_bank), "-f", "coco", "-o", str(tmp_path / "coco"), "--normals", str(normals))
    assert result.exit_code == 0, result.output
    assert f"and 5 normal images in {tmp_path / 'coco'}" in result.output  # not the run's 3 defects and 3 masks
