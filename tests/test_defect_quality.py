"""benchmarks/bench_defect_quality.py on a tiny procedural folder dataset with smoke-preset ddpm models."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from inout_aug.core.io import write_png
from inout_aug.data.masks import bounding_box
from inout_aug.models.ddpm import DDPMDefectModel
from inout_aug.models.finetune import finetune

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_defect_quality.py"
_spec = importlib.util.spec_from_file_location("bench_defect_quality", SCRIPT)
bdq = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(bdq)


@pytest.fixture(scope="module")
def typed_data(tmp_path_factory) -> Path:
    """A folder layout of 40 normal surfaces and 16 pits and 16 scratches (dark, with masks), grey, 48 to 56 px."""
    root = tmp_path_factory.mktemp("typed")
    g = torch.Generator().manual_seed(0)
    for i in range(72):
        width = 48 + 2 * (i % 5)
        base = 120 + 20 * torch.rand((1, 12, 12), generator=g)
        image = nn.functional.interpolate(base[None], size=(48, width), mode="bilinear")[0].to(torch.uint8)
        if i < 40:
            write_png(image, root / "normal" / f"n{i:02d}.png")
            continue
        kind = "pit" if i % 2 else "scratch"
        y, x = (int(v) for v in torch.randint(6, 34, (2,), generator=g))
        mask = torch.zeros((48, width), dtype=torch.bool)
        if kind == "pit":
            mask[y:y + 6, x:x + 6] = True
        else:
            mask[y:y + 3, 4:width - 4] = True
        write_png(torch.where(mask, torch.tensor(30, dtype=torch.uint8), image), root / "defect" / kind / f"d{i}.png")
        write_png(mask[None].to(torch.uint8) * 255, root / "masks" / kind / f"d{i}.png")
    return root


@pytest.fixture(scope="module")
def models(typed_data, tmp_path_factory, one_thread) -> dict[str, DDPMDefectModel]:
    """Smoke-preset v1 and v2 models trained on the few-shot N=5 choice of seed 0, as the script trains them."""
    out = tmp_path_factory.mktemp("models")
    return {name: DDPMDefectModel.load(finetune("ddpm", typed_data, out / name.replace(" ", "-"), shots=bdq.SHOTS,
                                                preset=preset, progress=False))
            for name, preset in (("ddpm v1", "smoke"), ("ddpm v2", "inpaint-smoke"))}


def tiny_backbone() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_crops_are_centred_on_the_mask_box_by_one_rule():
    mask = torch.zeros((200, 300), dtype=torch.bool)
    mask[80:100, 120:150] = True  # a 20 x 30 box: crop side 60, centred on (90, 135)
    y, x, side = bdq.crop_window(mask)
    assert side == 60 and (y + side / 2, x + side / 2) == (90, 135)
    small = torch.zeros((200, 300), dtype=torch.bool)
    small[50:55, 60:61] = True  # a 5-pixel box: at least MIN_SIDE
    y, x, side = bdq.crop_window(small)
    assert side == bdq.MIN_SIDE and abs(y + side / 2 - 52.5) <= 0.5 and abs(x + side / 2 - 60.5) <= 0.5
    edge = torch.zeros((200, 300), dtype=torch.bool)
    edge[0:10, 290:300] = True  # at a corner: shifted inside
    assert bdq.crop_window(edge) == (0, 300 - 32, 32)
    huge = torch.zeros((200, 300), dtype=torch.bool)
    huge[10:190, 20:280] = True  # larger than the image: its shorter side
    assert bdq.crop_window(huge)[2] == 200
    image = torch.arange(200 * 300, dtype=torch.float).view(1, 200, 300)
    assert torch.equal(bdq.crop(image, mask), image[:, 60:120, 105:165])


def test_masks_keep_their_pixels_and_relative_place_in_a_normal_of_the_nearest_size():
    mask = torch.zeros((100, 200), dtype=torch.bool)
    mask[40:50, 100:104] = True
    mask[45, 110] = True
    placed = bdq.place_mask(mask, (120, 180))
    top, left, bottom, right = bounding_box(placed)
    assert placed.sum() == mask.sum() and (bottom - top, right - left) == (10, 11)
    assert abs((top + bottom) / 2 / 120 - 0.45) < 0.01 and abs((left + right) / 2 / 180 - 0.525) < 0.01
    normals = [(100, 100), (300, 300), (110, 190), (100, 400)]
    pairs = bdq.pair_normals([(100, 200), (300, 280)], [(10, 30), (200, 150)], normals)
    assert pairs == [2, 1]  # nearest in size; the big box chooses first


def test_measure_gives_a_kid_table_per_method_and_type_and_a_sheet(typed_data, models):
    result = bdq.measure(typed_data, models, 0, tiny_backbone(), steps=2, rounds=3, feature_size=32)
    types = sorted(set(result.types))
    assert types == ["pit", "scratch"] and len(result.shot_crops) == bdq.SHOTS
    methods = [bdq.REAL, "ddpm v1", "ddpm v2", "transplant", "memseg", bdq.NONE]
    assert [(r["method"], r["type"]) for r in result.kid] == [(m, t) for m in methods for t in [*types, bdq.POOLED]]
    assert all(r["kid"] is not None and r["std"] >= 0 for r in result.kid)
    assert {r["crops"] for r in result.kid if r["type"] == bdq.POOLED} == {len(result.types)}
    assert [(r["method"], r["type"]) for r in result.memorisation] == \
        [(m, t) for m in methods[:-1] for t in [*types, bdq.POOLED]]
    assert [(r["method"], r["type"]) for r in result.region_memorisation] == \
        [(m, t) for m in methods[:-1] for t in [*types, bdq.POOLED]]
    for items in result.crops.values():  # one crop per slot, square, the same rule for all
        assert len(items) == len(result.types) and all(c.shape[-1] == c.shape[-2] >= bdq.MIN_SIDE for c in items)
    picture = bdq.sheet(result, tile=24)
    assert picture.dtype == torch.uint8 and picture.shape[0] == 3 and picture.shape[2] == 170 + 5 * 24
    assert "paint ddpm v1" in result.seconds and "features" in result.seconds


def test_an_exact_copy_of_a_shot_has_memorisation_ratio_zero():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(8, 16, generator=g)
    shots = torch.randn(3, 16, generator=g)
    types = ["a"] * 4 + ["b"] * 4
    copies = shots[torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])]
    rows, nearest = bdq.memorisation(types, {bdq.REAL: real, "copy": copies}, shots)
    ratio = {(r["method"], r["type"]): r["ratio"] for r in rows}
    assert ratio["copy", "a"] == pytest.approx(0, abs=1e-5) and ratio["copy", bdq.POOLED] == pytest.approx(0, abs=1e-5)
    assert ratio[bdq.REAL, "a"] > 0.1
    assert nearest["copy"][1].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_region_crops_flatten_everything_outside_the_defect():
    image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64).remainder(251).to(torch.uint8)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[20:30, 24:32] = True
    whole, region = bdq.crop(image, mask), bdq.region_crop(image, mask)
    assert region.shape == whole.shape and region.dtype == torch.uint8
    y, x, side = bdq.crop_window(mask)
    inside = mask[y:y + side, x:x + side]
    assert torch.equal(region[:, inside], whole[:, inside])
    assert region[:, ~inside].unique().numel() == 1 and region[:, ~inside][0, 0] == whole[:, ~inside].float().median()


def test_a_flipped_and_turned_copy_is_found_among_the_shots_variants():
    g = torch.Generator().manual_seed(0)
    shots = [torch.rand(1, 6, 6, generator=g) for _ in range(3)]
    variants = torch.stack([v.flatten() for shot in shots for v in bdq.dihedral(shot)])
    assert len(variants) == 24 and len({tuple(v.tolist()) for v in variants}) == 24
    copies = torch.stack([torch.rot90(shots[2].flip(-1), 3, (-2, -1)).flatten(), torch.rot90(shots[0], 1, (-2, -1))
                          .flatten()])
    real = torch.rand(4, 36, generator=g)
    rows, nearest = bdq.memorisation(["a"] * 2 + ["b"] * 2, {bdq.REAL: real, "copy": torch.cat([copies, copies])},
                                     variants, variants=8)
    assert nearest["copy"][1].tolist() == [2, 0, 2, 0]
    assert all(r["ratio"] == pytest.approx(0, abs=1e-5) for r in rows if r["method"] == "copy")


def test_kid_table_marks_a_type_a_method_made_nothing_for():
    g = torch.Generator().manual_seed(0)
    types = ["a"] * 6 + ["b"] * 6 + ["c"] * 3
    real = torch.randn(15, 16, generator=g)
    made = torch.randn(15, 16, generator=g)
    made[6:12] = torch.nan  # nothing of type b
    rows = bdq.kid_table(types, {bdq.REAL: real, "m": made}, rounds=4, seed=0)
    cell = {(r["method"], r["type"]): r for r in rows}
    assert cell["m", "b"]["kid"] is None and cell["m", "b"]["note"] == "no shot of this type"
    assert cell["m", "c"]["kid"] is None and cell["m", "c"]["note"] == "fewer than 4 held-back defects"
    assert cell["m", bdq.POOLED]["note"] == "only a" and cell["m", bdq.POOLED]["crops"] == 6
    assert cell[bdq.REAL, bdq.POOLED]["note"] == "only a, b" and cell[bdq.REAL, bdq.POOLED]["crops"] == 12
