"""Dataset layouts: tiny trees of each layout built here, plus one check of the real magnetic tile data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import default_collate
from torchvision import tv_tensors

from helpers import SquareDefect
from inout_aug.core.io import ImageReadError
from inout_aug.data import (
    LAYOUTS,
    FolderLayout,
    KolektorSDD,
    KolektorSDD2,
    LayoutError,
    MagneticTile,
    MVTecAD,
    detect_layout,
    format_summary,
    open_dataset,
    stratified_split,
)
from inout_aug.data.layouts import read_mask

W, H = 8, 6


def write_image(path: Path, size: tuple[int, int] = (W, H), mode: str = "L") -> None:
    """A small image whose pixels vary (size is PIL's (W, H))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def write_mask(path: Path, defect: bool = True, size: tuple[int, int] = (W, H), value: int = 255) -> None:
    """A mask with a 2x3 block of ``value`` at rows 1-2, columns 2-4 (or nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    if defect:
        pixels[1:3, 2:5] = value
    PIL.Image.fromarray(pixels, "L").save(path)


def make_ksdd2(root: Path) -> Path:
    """train: 3 normal + 2 defective (+ a "(copy)" duplicate); test: 2 normal + 1 defective."""
    for part, positives, negatives in (("train", 2, 3), ("test", 1, 2)):
        for i in range(positives + negatives):
            write_image(root / part / f"{part}{i}.png")
            write_mask(root / part / f"{part}{i}_GT.png", defect=i < positives)
    write_image(root / "train" / "train0 (copy).png")
    write_mask(root / "train" / "train0_GT (copy).png")
    return root


def make_ksdd(root: Path, items: int = 6) -> Path:
    """``items`` item folders of 2 parts each; Part0 of every odd item is defective."""
    for n in range(1, items + 1):
        for k in range(2):
            write_image(root / f"kos{n:02d}" / f"Part{k}.jpg")
            write_mask(root / f"kos{n:02d}" / f"Part{k}_label.bmp", defect=n % 2 == 1 and k == 0)
    return root


def make_mvtec_category(folder: Path) -> Path:
    """train/good: 3; test/good: 1; test/broken: 2 with masks (RGB images)."""
    for i in range(3):
        write_image(folder / "train" / "good" / f"{i:03d}.png", mode="RGB")
    write_image(folder / "test" / "good" / "000.png", mode="RGB")
    for i in range(2):
        write_image(folder / "test" / "broken" / f"{i:03d}.png", mode="RGB")
        write_mask(folder / "ground_truth" / "broken" / f"{i:03d}_mask.png")
    return folder


def make_mvtec(root: Path) -> Path:
    make_mvtec_category(root / "bottle")
    make_mvtec_category(root / "screw")
    return root


MAGNETIC_CLASSES = {"MT_Free": 20, "MT_Blowhole": 10, "MT_Uneven": 6}


def make_magnetic_tile(root: Path) -> Path:
    """Classes of MAGNETIC_CLASSES; masks anti-aliased (an edge of 100, below the 128 threshold); one empty."""
    for cls, count in MAGNETIC_CLASSES.items():
        for i in range(count):
            write_image(root / cls / "Imgs" / f"exp{i}.jpg")
            mask = root / cls / "Imgs" / f"exp{i}.png"
            write_mask(mask, defect=cls != "MT_Free" and not (cls == "MT_Uneven" and i == 0), value=200)
            pixels = np.array(PIL.Image.open(mask))
            pixels[4, :] = 100
            PIL.Image.fromarray(pixels).save(mask)
    return root


def make_folder(root: Path, masks: bool = False) -> Path:
    """normal/: 4; defect/: a.png, b.png and scratch/c.png; with ``masks``, masks/a.png and masks/b_mask.png..."""
    for i in range(4):
        write_image(root / "normal" / f"n{i}.png")
    for name in ("a", "b", "scratch/c"):
        write_image(root / "defect" / f"{name}.png")
    if masks:
        write_mask(root / "masks" / "a.png")
        write_mask(root / "masks" / "b_mask.png", defect=False)
        write_mask(root / "masks" / "scratch" / "c_mask.bmp")
    return root


BUILDERS = {"ksdd2": make_ksdd2, "ksdd": make_ksdd, "mvtec": make_mvtec, "magnetic_tile": make_magnetic_tile,
            "folder": make_folder}


def check_sample(sample: dict, channels: int = 1) -> None:
    image, mask = sample["image"], sample["mask"]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert image.shape == (channels, H, W)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.bool
    assert mask.shape == image.shape[-2:]
    assert Path(sample["path"]).is_absolute() and Path(sample["path"]).is_file()


def test_every_layout_has_a_builder():
    assert set(BUILDERS) == set(LAYOUTS)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_detects_each_layout(tmp_path, name):
    root = BUILDERS[name](tmp_path / name)
    assert detect_layout(root) == name
    dataset = open_dataset(root, category="bottle") if name == "mvtec" else open_dataset(root)
    assert dataset.layout == name and dataset.split == "all"
    assert type(dataset) is LAYOUTS[name]


def test_ksdd2_splits_labels_and_copies(tmp_path):
    root = make_ksdd2(tmp_path)
    train, test = KolektorSDD2(root, "train"), KolektorSDD2(root, "test")
    assert (len(train), len(test), len(open_dataset(root))) == (5, 3, 8)
    assert sorted(train.labels) == [0, 0, 0, 1, 1] and sorted(test.labels) == [0, 0, 1]
    assert not any("(copy)" in str(r.image) or "(copy)" in str(r.mask) for r in train.records)
    assert {r.image.name for r in train.defects()} == {"train0.png", "train1.png"}
    sample = train[train.records.index(train.defects()[0])]
    check_sample(sample)
    assert sample["label"] == 1 and sample["defect_type"] == "defect" and sample["has_mask"]
    assert sample["mask"].sum() == 6 and sample["mask"][1:3, 2:5].all()
    assert not train[train.records.index(train.normals()[0])]["mask"].any()


def test_ksdd_splits_by_item_and_folds_partition_items(tmp_path):
    root = make_ksdd(tmp_path)
    items = {f"kos{n:02d}" for n in range(1, 7)}
    test_items = []
    for fold in range(3):
        train = KolektorSDD(root, "train", fold=fold, folds=3, seed=1)
        test = KolektorSDD(root, "test", fold=fold, folds=3, seed=1)
        train_groups, test_groups = {r.group for r in train.records}, {r.group for r in test.records}
        assert not train_groups & test_groups
        assert train_groups | test_groups == items
        assert len(test) == 2 * len(test_groups)  # both parts of an item go together
        test_items.append(test_groups)
    assert sorted(i for fold in test_items for i in fold) == sorted(items)
    everything = KolektorSDD(root)
    assert len(everything) == 12 and sum(everything.labels) == 3
    check_sample(everything[0])
    assert KolektorSDD(root, "test", seed=1).records == KolektorSDD(root, "test", seed=1).records
    with pytest.raises(ValueError, match="fold"):
        KolektorSDD(root, "test", fold=3, folds=3)
    with pytest.raises(LayoutError, match="6 items, too few for 7 folds"):
        KolektorSDD(root, "test", folds=7)


def test_mvtec_categories_and_splits(tmp_path):
    root = make_mvtec(tmp_path)
    with pytest.raises(LayoutError, match="bottle, screw: pass category"):
        MVTecAD(root)
    with pytest.raises(LayoutError, match="no category 'cable'"):
        MVTecAD(root, category="cable")
    train = MVTecAD(root, "train", category="bottle")
    assert len(train) == 3 and train.labels == [0, 0, 0] and {r.defect_type for r in train.records} == {"good"}
    sample = train[0]
    check_sample(sample, channels=3)
    assert sample["has_mask"] and not sample["mask"].any()
    test = MVTecAD(root / "screw", "test")  # pointed at the category folder itself
    assert test.category == "screw" and sorted(test.labels) == [0, 1, 1]
    broken = test[test.records.index(test.defects()[0])]
    assert broken["defect_type"] == "broken" and broken["mask"].sum() == 6
    assert len(MVTecAD(root / "screw")) == 6
    with pytest.raises(LayoutError, match="category 'screw', not 'bottle'"):
        MVTecAD(root / "screw", category="bottle")


def test_mvtec_missing_ground_truth_names_the_file(tmp_path):
    root = make_mvtec_category(tmp_path / "bottle")
    (root / "ground_truth" / "broken" / "001_mask.png").unlink()
    with pytest.raises(LayoutError, match="001_mask.png"):
        MVTecAD(root, "test")


def test_magnetic_tile_labels_and_threshold(tmp_path):
    dataset = MagneticTile(make_magnetic_tile(tmp_path))
    assert len(dataset) == 36 and len(dataset.normals()) == 20 and len(dataset.defects()) == 16
    empty_uneven = [i for i, r in enumerate(dataset.records) if r.image.name == "exp0.jpg" and "Uneven" in str(r.image)]
    sample = dataset[empty_uneven[0]]
    assert sample["label"] == 1 and sample["defect_type"] == "Uneven" and not sample["mask"].any()
    blowhole = dataset[[r.defect_type for r in dataset.records].index("Blowhole")]
    check_sample(blowhole)
    assert blowhole["mask"].sum() == 6  # the 100-valued row stays below the 128 threshold


def test_magnetic_tile_split_is_stratified_and_seeded(tmp_path):
    root = make_magnetic_tile(tmp_path)
    train, test = MagneticTile(root, "train"), MagneticTile(root, "test")
    counts = {t: sum(r.defect_type == t for r in test.records) for t in ("normal", "Blowhole", "Uneven")}
    assert counts == {"normal": 6, "Blowhole": 3, "Uneven": 2}
    assert not {r.image for r in train.records} & {r.image for r in test.records}
    assert len(train) + len(test) == 36
    assert MagneticTile(root, "test", seed=0).records == test.records
    assert MagneticTile(root, "test", seed=1).records != test.records
    assert len(MagneticTile(root, "test", test_fraction=0.5)) == 18
    with pytest.raises(ValueError, match="test_fraction"):
        MagneticTile(root, "test", test_fraction=1.0)


def test_stratified_split_keeps_order_and_every_record(tmp_path):
    records = MagneticTile(make_magnetic_tile(tmp_path)).records
    train, test = stratified_split(records, 0.3, seed=3)
    assert sorted(train + test, key=records.index) == records
    assert train == sorted(train, key=records.index) and test == sorted(test, key=records.index)


def test_with_one_image_per_group_the_split_is_the_per_image_shuffle_it_was(tmp_path):
    import random

    records = MagneticTile(make_magnetic_tile(tmp_path)).records  # every image its own group
    for fraction, seed in ((0.3, 3), (0.25, 1234)):
        rng, chosen = random.Random(seed), set()  # the split before groups were kept whole
        for kind in sorted({r.defect_type for r in records}):
            members = [i for i, r in enumerate(records) if r.defect_type == kind]
            rng.shuffle(members)
            chosen.update(members[:round(len(members) * fraction)])
        assert stratified_split(records, fraction, seed)[1] == [r for i, r in enumerate(records) if i in chosen]


def test_folder_without_masks_marks_defects_unmasked(tmp_path):
    dataset = FolderLayout(make_folder(tmp_path))
    assert len(dataset) == 7 and dataset.labels.count(1) == 3
    assert {r.defect_type for r in dataset.defects()} == {"defect", "scratch"}
    defect = dataset[dataset.records.index(dataset.defects()[0])]
    check_sample(defect)
    assert defect["label"] == 1 and not defect["has_mask"] and not defect["mask"].any()
    normal = dataset[0]
    assert normal["label"] == 0 and normal["has_mask"] and normal["defect_type"] == "normal"
    assert dataset.summary()["defects_without_mask"] == 3


def test_folder_masks_match_by_stem(tmp_path):
    dataset = FolderLayout(make_folder(tmp_path, masks=True))
    masks = {r.image.stem: r.mask.name for r in dataset.defects()}
    assert masks == {"a": "a.png", "b": "b_mask.png", "c": "c_mask.bmp"}
    sums = {dataset[i]["path"].rsplit("/", 1)[1]: int(dataset[i]["mask"].sum()) for i in range(len(dataset))
            if dataset.records[i].label}
    assert sums == {"a.png": 6, "b.png": 0, "c.png": 6}
    assert all(dataset[i]["has_mask"] for i in range(len(dataset)))
    (tmp_path / "masks" / "a.png").unlink()
    with pytest.raises(LayoutError, match=r"no mask for .*a\.png"):
        FolderLayout(tmp_path)


def test_a_mask_folder_under_another_name_is_pointed_out(tmp_path):
    root = make_folder(tmp_path)
    (root / "mask").mkdir()
    with pytest.warns(UserWarning, match=r"has mask/ but no masks/, so its defect images have no pixel masks; "
                                         r"rename mask/ to masks/"):
        FolderLayout(root)


def test_a_jpeg_mask_is_read_at_half_level_where_its_compression_smears_the_edges(tmp_path):
    pixels = np.zeros((64, 64), np.uint8)
    for y in range(4, 60, 12):
        for x in range(4, 60, 12):
            pixels[y:y + 5, x:x + 5] = 255  # 25 small defects, 625 pixels
    PIL.Image.fromarray(pixels).save(tmp_path / "m.jpg", quality=75)
    PIL.Image.fromarray(pixels).save(tmp_path / "m.png")
    assert (np.asarray(PIL.Image.open(tmp_path / "m.jpg")) >= 1).sum() > 3 * 625  # what a threshold of 1 made of it
    assert abs(int(read_mask(tmp_path / "m.jpg", 1).sum()) - 625) <= 25
    assert int(read_mask(tmp_path / "m.png", 1).sum()) == 625  # a lossless mask keeps the layout's threshold


def test_an_empty_kolektorsdd_item_folder_shifts_no_fold(tmp_path):
    root = make_ksdd(tmp_path)
    before = KolektorSDD(root).item_folds()
    (root / "kos99").mkdir()
    assert KolektorSDD(root).item_folds() == before
    write_image(root / "kos98" / "Part0.jpg")  # a half-copied item: its image but no label file
    with pytest.raises(LayoutError, match=r"kos98"):
        KolektorSDD(root)


def test_a_magnetic_tile_class_without_jpeg_images_is_pointed_out(tmp_path):
    root = make_magnetic_tile(tmp_path)
    write_image(root / "MT_Crack" / "Imgs" / "c0.png")  # a class whose images are not .jpg
    with pytest.warns(UserWarning, match="magnetic_tile: MT_Crack is left out: it holds no .jpg image in an Imgs/"):
        MagneticTile(root)


def test_a_layout_option_it_does_not_take_or_of_another_kind_is_refused(tmp_path):
    root = make_ksdd(tmp_path)
    assert len(open_dataset(root, split="test", folds=2, fold=1)) < len(open_dataset(root))  # options taken
    for options, text in [({"foo": 1}, "the ksdd layout takes no option foo (its options: fold, folds, seed, "
                                       "transform)"),
                          ({"folds": "x"}, "the ksdd layout's option folds must be an integer, got 'x'"),
                          ({"folds": 2.5}, "option folds must be an integer, got 2.5")]:
        with pytest.raises(LayoutError, match=text.replace("(", r"\(").replace(")", r"\)")):
            open_dataset(root, **options)


def test_folder_split_shares_the_stratified_split(tmp_path):
    root = make_folder(tmp_path)
    train, test = FolderLayout(root, "train", seed=2), FolderLayout(root, "test", seed=2)
    assert sorted(train.records + test.records, key=str) == sorted(FolderLayout(root).records, key=str)
    assert test.labels.count(0) == 1 and test.labels.count(1) == 1  # round(0.3 * 4), round(0.3 * 2) and 0 of 1


def test_mismatched_mask_size_names_both_files(tmp_path):
    root = make_ksdd2(tmp_path)
    write_mask(root / "test" / "test0_GT.png", size=(W + 2, H))
    dataset = KolektorSDD2(root, "test")
    index = [r.image.name for r in dataset.records].index("test0.png")
    with pytest.raises(ValueError) as error:
        dataset[index]
    message = str(error.value)
    assert "test0_GT.png is 6x10" in message and f"test0.png is {H}x{W}" in message


def test_corrupt_image_names_the_file(tmp_path):
    root = make_folder(tmp_path)
    (root / "normal" / "n0.png").write_bytes(b"not a png")
    dataset = FolderLayout(root)
    with pytest.raises(ImageReadError, match="n0.png"):
        dataset[0]
    with pytest.raises(ImageReadError, match="n0.png"):
        dataset.summary()


def test_empty_folder_error_lists_expected_layouts(tmp_path):
    with pytest.raises(LayoutError) as error:
        open_dataset(tmp_path)
    message = str(error.value)
    assert f"no known layout in {tmp_path}" in message and "an empty folder" in message
    for name in LAYOUTS:
        assert f"{name} (" in message


def test_wrong_folder_error_says_what_was_found(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    for name in ("x.txt", "y.png", "z.csv"):
        (tmp_path / name).write_text("")
    with pytest.raises(LayoutError, match=r"found: 3 files \(x.txt, y.png, z.csv\), folders a, b"):
        detect_layout(tmp_path)


def test_named_layout_that_does_not_match_says_what_it_expects(tmp_path):
    root = make_folder(tmp_path)
    with pytest.raises(LayoutError) as error:
        open_dataset(root, layout="ksdd2")
    message = str(error.value)
    assert "is not a ksdd2 folder" in message and "train/ and test/ with <id>.png and <id>_GT.png" in message
    assert "folders defect, normal" in message
    with pytest.raises(LayoutError, match="unknown layout 'coco'"):
        open_dataset(root, layout="coco")
    with pytest.raises(FileNotFoundError):
        open_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no split 'val'"):
        open_dataset(root, split="val")


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "train").mkdir()
    write_mask(tmp_path / "train" / "1_GT.png")
    (tmp_path / "test").mkdir()
    with pytest.raises(LayoutError, match="split 'test' of ksdd2 folder .* holds no images"):
        KolektorSDD2(tmp_path, "test")


def test_summary_counts_and_sizes(tmp_path):
    root = make_folder(tmp_path)
    write_image(root / "normal" / "wide.png", size=(12, 5))
    summary = FolderLayout(root).summary()
    assert summary["layout"] == "folder" and summary["root"] == str(root) and summary["split"] == "all"
    assert summary["images"] == 8 and summary["labels"] == {0: 5, 1: 3}
    assert summary["defect_types"] == {"normal": 5, "defect": 2, "scratch": 1}
    assert summary["height"] == {"min": 5, "max": H} and summary["width"] == {"min": W, "max": 12}
    assert summary["modes"] == {"L": 8}
    json.dumps(summary)  # the CLI may print it as JSON
    text = format_summary(summary)
    assert "8: 5 normal (label 0), 3 defective (label 1), 3 defective without a mask" in text
    assert f"H 5-{H}, W {W}-12 px" in text and "scratch" in text


def test_transform_is_applied_and_samples_collate(tmp_path):
    dataset = open_dataset(make_folder(tmp_path), transform=SquareDefect(p=1.0, size=2, seed=0))
    sample = dataset[0]
    assert sample["label"] == 1 and sample["mask"].dtype == torch.bool and sample["mask"].sum() == 4
    batch = default_collate([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 1, H, W) and batch["mask"].shape == (2, H, W)
    assert batch["label"].tolist() == [1, 1] and len(batch["path"]) == 2


@pytest.mark.realdata
def test_real_magnetic_tile(magnetic_tile):
    dataset = open_dataset(magnetic_tile)
    assert dataset.layout == "magnetic_tile"
    assert len(dataset.normals()) == 952 and len(dataset.defects()) == 392
    summary = dataset.summary()
    assert summary["defect_types"] == {"normal": 952, "Blowhole": 115, "Break": 85, "Crack": 57, "Fray": 32,
                                       "Uneven": 103}
    for record in (dataset.normals()[0], dataset.defects()[0]):
        sample = dataset[dataset.records.index(record)]
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape[0] == 1
        assert sample["mask"].shape == sample["image"].shape[-2:]
        assert sample["mask"].any() == bool(record.label)
    uneven = [r for r in dataset.defects() if r.defect_type == "Uneven"]
    assert sum(not read_mask(r.mask, MagneticTile.mask_threshold).any() for r in uneven) == 4  # as SOURCE.txt says
