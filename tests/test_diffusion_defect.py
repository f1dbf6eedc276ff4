"""DiffusionDefect from a bank (inpainted and weak-label entries), real-mask placement, errors, InOutMix."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision import tv_tensors

from helpers import gradient_image
from inout_aug import create
from inout_aug.augmenters.diffusion import DiffusionDefect
from inout_aug.core.io import write_png
from inout_aug.data.bank import Bank
from inout_aug.data.masks import RealMasks
from inout_aug.tools.generate import GenerationJob


@pytest.fixture
def bank(tmp_path):
    """A bank with masks (made by `generate` with memseg: any generation folder is a bank)."""
    normals = tmp_path / "normals"
    for i in range(3):
        write_png(gradient_image(1, 40, 60).roll(9 * i, -1), normals / f"n{i}.png")
    with GenerationJob("memseg", normals, tmp_path / "bank", n=6, seed=1) as job:
        for index in job.todo:
            job.make(index)
    return tmp_path / "bank"


@pytest.fixture
def weak_bank(tmp_path):
    """A txt2img-style bank: images and records without masks."""
    root = tmp_path / "weak"
    lines = []
    for i in range(4):
        write_png(torch.full((3, 32, 32), 40 * i, dtype=torch.uint8), root / "images" / f"{i:06d}.png")
        record = {"index": i, "image": f"images/{i:06d}.png", "mask": None, "drawn": {"mode": "txt2img"}}
        lines.append(json.dumps(record))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("fit", ["resize", "crop"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_bank_entries_replace_the_sample_with_their_masks(bank, fit, dtype):
    image = gradient_image(3, 24, 30, dtype)[None].repeat(5, 1, 1, 1)
    out = DiffusionDefect(bank=str(bank), fit=fit, seed=0).augment(image)
    assert out.image.shape == image.shape and out.image.dtype == dtype and out.defect.all()
    assert out.mask.shape == (5, 24, 30) and out.mask.flatten(1).any(1).all()
    assert torch.equal(out.image[:, 0], out.image[:, 1])  # grey bank entries spread to RGB
    assert {p["entry"] for p in out.params} <= set(range(6)) and not any(p["weak_label"] for p in out.params)
    if fit == "resize":  # the whole entry, resized: its mask covers the same share of the image
        entry = Bank(bank).entry(out.params[0]["entry"])[1]
        assert abs(out.mask[0].float().mean() - entry.float().mean()) < 0.05


def test_weak_label_entries_give_label_1_and_an_empty_mask(weak_bank):
    sample = {"image": tv_tensors.Image(gradient_image(3, 16, 16)), "label": 0}
    out = DiffusionDefect(bank=str(weak_bank), seed=3)(sample)
    assert out["label"] == 1 and not out["mask"].any() and out["mask"].shape == (16, 16)
    assert len(torch.unique(out["image"])) == 1  # a (resized) bank entry, not the sample


def test_same_seed_same_bytes_and_p(bank):
    image = gradient_image(1, 20, 20)[None].repeat(8, 1, 1, 1)
    a = DiffusionDefect(bank=str(bank), seed=5).augment(image)
    assert torch.equal(a.image, DiffusionDefect(bank=str(bank), seed=5).augment(image).image)
    half = DiffusionDefect(bank=str(bank), p=0.0, seed=5).augment(image)
    assert torch.equal(half.image, image) and not half.defect.any()


def test_in_out_mix_with_a_bank_on_the_in_side(bank):
    mix = create("inout", in_augmenter="diffusion", in_params={"bank": str(bank)}, seed=0)
    out = mix.augment(gradient_image(1, 32, 32)[None].repeat(6, 1, 1, 1))
    assert sorted(p["side"] for p in out.params) == ["in"] * 3 + ["out"] * 3
    assert out.defect.all()


def test_real_masks_are_placed_turned_and_scaled_inside_the_image(tmp_path):
    for i, (h, w) in enumerate([(6, 20), (12, 4)]):
        mask = torch.zeros(1, 30, 30, dtype=torch.uint8)
        mask[:, 5:5 + h, 7:7 + w] = 255
        write_png(mask, tmp_path / "masks" / f"m{i}.png")
    masks = RealMasks(tmp_path / "masks", scale=(1.0, 1.0))
    assert masks.types == [None, None]  # a folder of mask images names no defect type
    drawn = masks.draw(40, (25, 25), torch.Generator().manual_seed(0))
    areas = drawn.flatten(1).sum(1)
    assert set(areas.tolist()) == {120, 48}  # whole shapes, never cut by the border
    assert torch.equal(drawn, masks.draw(40, (25, 25), torch.Generator().manual_seed(0)))
    tall = [(m.any(1).sum().item(), m.any(0).sum().item()) for m in drawn[areas == 120]]
    assert {(6, 20), (20, 6)} <= set(tall)  # turned by 90 degrees at times


def test_errors_say_what_to_give(tmp_path):
    with pytest.raises(ValueError, match="exactly one of bank=PATH.*model=PATH"):
        DiffusionDefect()
    with pytest.raises(FileNotFoundError, match="no defect bank at .*inout-aug generate --augmenter diffusion"):
        DiffusionDefect(bank=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no complete entry"):
        DiffusionDefect(bank=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="ddpm backend only inpaints"):
        DiffusionDefect(model=str(tmp_path), mode="txt2img")
    with pytest.raises(ValueError, match="in-distribution|exactly one of bank"):
        create("inout")  # the default in-side needs a bank or a model


def test_real_masks_from_a_dataset_carry_their_defect_types_and_one_type_can_be_chosen(tmp_path):
    for kind, (h, w) in (("scratch", (2, 20)), ("dent", (8, 8))):
        write_png(gradient_image(1, 30, 30), tmp_path / "defect" / kind / f"{kind}.png")
        mask = torch.zeros(1, 30, 30, dtype=torch.uint8)
        mask[:, 5:5 + h, 5:5 + w] = 255
        write_png(mask, tmp_path / "masks" / kind / f"{kind}.png")
    write_png(gradient_image(1, 30, 30), tmp_path / "normal" / "n.png")
    assert len(RealMasks(tmp_path, split="all").shapes) == 2
    dents = RealMasks(tmp_path, scale=(1.0, 1.0), defect_type="dent", split="all")
    assert set(dents.draw(10, (30, 30), torch.Generator()).flatten(1).sum(1).tolist()) == {64}
    both = RealMasks(tmp_path, scale=(1.0, 1.0), split="all")
    masks, types = both.draw_typed(20, (30, 30), torch.Generator().manual_seed(1))
    assert torch.equal(masks, both.draw(20, (30, 30), torch.Generator().manual_seed(1)))
    assert set(types) == {"dent", "scratch"}
    assert masks.flatten(1).sum(1).tolist() == [{"dent": 64, "scratch": 40}[t] for t in types]
    with pytest.raises(ValueError, match="no defects of type 'hole'.*types: dent, scratch"):
        RealMasks(tmp_path, defect_type="hole", split="all")


def test_real_masks_of_the_training_and_test_splits_share_no_defect(tmp_path):
    for i in range(10):
        mask = torch.zeros(1, 30, 30, dtype=torch.uint8)
        mask[:, 2:3 + i, 2:4] = 255  # a defect i + 1 pixels tall: each one's shape tells which it is
        write_png(gradient_image(1, 30, 30), tmp_path / "defect" / f"d{i}.png")
        write_png(mask, tmp_path / "masks" / f"d{i}.png")
        write_png(gradient_image(1, 30, 30), tmp_path / "normal" / f"n{i}.png")
    heights = {split: sorted(shape.shape[0] for shape in RealMasks(tmp_path, split=split).shapes)
               for split in ("train", "test", "all")}
    assert heights["all"] == list(range(1, 11)) and heights["train"] and heights["test"]
    assert sorted(heights["train"] + heights["test"]) == heights["all"]  # no test defect's shape is drawn
    options = {"test_fraction": 0.5, "seed": 3}  # the split a training run was given decides the masks' split
    mine = {split: sorted(shape.shape[0] for shape in RealMasks(tmp_path, split=split, options=options).shapes)
            for split in ("train", "test")}
    assert mine["train"] != heights["train"] and sorted(mine["train"] + mine["test"]) == heights["all"]
    with pytest.raises(ValueError, match="dataset options need a dataset"):
        RealMasks(tmp_path / "masks", options=options)


def test_the_cards_compose_line_with_a_bank(bank):
    from torchvision.transforms import v2

    from inout_aug import InOutMix

    augment = v2.Compose([InOutMix(bank=str(bank), seed=0), v2.RandomHorizontalFlip(p=1.0)])
    sample = {"image": tv_tensors.Image(gradient_image(3, 32, 32)), "label": 0}
    outs = [augment(sample) for _ in range(4)]
    assert all(out["label"] == 1 and out["mask"].shape == (32, 32) and out["mask"].any() for out in outs)
    with pytest.raises(ValueError, match="bank given both directly and in in_params"):
        InOutMix(bank=str(bank), in_params={"bank": str(bank)})


def test_a_weak_label_entry_comes_out_of_in_out_mix_with_label_1_and_an_empty_mask(weak_bank):
    mix = create("inout", bank=str(weak_bank), in_ratio=1.0, seed=0)
    image = gradient_image(3, 16, 16)
    out = mix.augment(image[None].repeat(4, 1, 1, 1))
    assert out.replaced.all() and out.defect.all() and not out.mask.any()
    sample = mix({"image": tv_tensors.Image(image), "label": 0, "mask": tv_tensors.Mask(torch.ones(16, 16))})
    assert sample["label"] == 1 and not sample["mask"].any()  # the old mask described the replaced image


def test_a_replaced_image_refuses_other_spatial_annotations_unless_told_to_drop_them(bank):
    boxes = tv_tensors.BoundingBoxes([[1, 1, 5, 5]], format="XYXY", canvas_size=(16, 16))
    sample = {"image": tv_tensors.Image(gradient_image(3, 16, 16)), "boxes": boxes, "name": "a"}
    with pytest.raises(ValueError, match="DiffusionDefect replaced the image.*boxes.*on_replace='drop'"):
        DiffusionDefect(bank=str(bank), seed=0)(sample)
    out = DiffusionDefect(bank=str(bank), on_replace="drop", seed=0)(sample)
    assert "boxes" not in out and out["name"] == "a" and out["label"] == 1
    kept = DiffusionDefect(bank=str(bank), p=0.0, seed=0)(sample)  # nothing replaced: the boxes still apply
    assert kept["boxes"] is boxes
    with pytest.raises(ValueError, match="on_replace must be 'error' or 'drop'"):
        DiffusionDefect(bank=str(bank), on_replace="keep")


def test_settings_that_mean_nothing_for_the_source_are_refused(bank, tmp_path):
    with pytest.raises(ValueError, match=r"lora, prompt mean\(s\) nothing with bank="):
        DiffusionDefect(bank=str(bank), prompt="a scratch", lora="x.safetensors")
    with pytest.raises(ValueError, match=r"fit mean\(s\) nothing with model="):
        DiffusionDefect(model=str(tmp_path), fit="crop")
    for setting in ({"mask_type": "Blowhole"}, {"masks_split": "all"}, {"masks_options": {"seed": 1}}):
        with pytest.raises(ValueError, match="mask_type, masks_split and masks_options pick the masks of"):
            DiffusionDefect(model=str(tmp_path), **setting)
    with pytest.raises(ValueError, match="a ddpm model takes no prompt"):
        DiffusionDefect(model=str(tmp_path), prompt="sks defect")
    with pytest.raises(ValueError, match="steps must be an integer, got 2.7"):
        DiffusionDefect(model=str(tmp_path), steps=2.7)
    with pytest.raises(ValueError, match="lora= and lora_scale= apply to the sd backend"):
        DiffusionDefect(model=str(tmp_path), lora_scale=0.5)
    with pytest.raises(ValueError, match="guidance must be a finite number, got 'abc'"):
        DiffusionDefect(model=str(tmp_path), guidance="abc")
    with pytest.raises(ValueError, match="device must be a torch device such as 'cpu' or 'cuda', got 'foo'"):
        DiffusionDefect(model=str(tmp_path), device="foo")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' asks for a GPU, and torch sees none here"):
            DiffusionDefect(model=str(tmp_path), device="cuda")
