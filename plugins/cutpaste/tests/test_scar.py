"""Tests of the CutPaste scar plugin (small images made here, CPU; CUDA when available)."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from inout_aug.testing import check_augmenter
from inout_aug_cutpaste import CutPasteScar

SIZES = [(8, 8), (9, 13), (40, 64), (64, 40), (256, 256)]


def noise(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def gradient(h: int, w: int) -> torch.Tensor:
    """A uint8 RGB image whose pixels are all different: R encodes x, G encodes y."""
    assert h <= 128 and w <= 128
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs * 2, ys * 2, (xs + ys) % 7], 0).to(torch.uint8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_mask_binary_non_empty_and_scar_inside(size: tuple[int, int], channels: int) -> None:
    h, w = size
    result = CutPasteScar(seed=1).augment(noise(8, channels, h, w))
    mask, params = result.mask, result.params
    assert mask.dtype == torch.bool and mask.shape == (8, h, w)
    assert mask.flatten(1).any(1).all() and result.defect.all()
    for i in range(8):
        ys, xs = mask[i].nonzero(as_tuple=True)
        dx, dy = (torch.tensor(params[i]["source"]) - torch.tensor(params[i]["target"])).tolist()
        # the cut region (the pasted one shifted back) lies inside the image too
        assert 0 <= (xs + dx).min() and (xs + dx).max() < w
        assert 0 <= (ys + dy).min() and (ys + dy).max() < h
        # the scar stays within its rotated rectangle's reach of the target centre
        tx, ty = params[i]["target"]
        reach = (params[i]["length"] + params[i]["width"]) / 2 + 1e-4
        assert ((xs - tx) ** 2 + (ys - ty) ** 2).float().sqrt().max() <= reach


def test_dict_sample_outside_mask_bit_exact_and_label_set() -> None:
    image = tv_tensors.Image(noise(1, 3, 40, 64)[0])
    out = CutPasteScar(seed=3)({"image": image, "label": 0, "name": "a.png"})
    assert out["label"] == 1 and out["name"] == "a.png"
    assert isinstance(out["image"], tv_tensors.Image) and out["image"].dtype == torch.uint8
    mask = out["mask"]
    assert isinstance(mask, tv_tensors.Mask) and mask.shape == (40, 64)
    assert set(mask.unique().tolist()) == {0, 1}
    inside = mask.bool()
    assert torch.equal(out["image"][:, ~inside], image[:, ~inside])
    assert not torch.equal(out["image"][:, inside], image[:, inside])


def test_pasted_pixels_come_from_the_offset_location() -> None:
    h, w = 96, 128
    image = gradient(h, w)
    result = CutPasteScar(seed=5, jitter=0.0).augment(image.expand(8, -1, -1, -1).contiguous())
    moved = 0
    for i in range(8):
        ys, xs = result.mask[i].nonzero(as_tuple=True)
        dx, dy = (torch.tensor(result.params[i]["source"]) - torch.tensor(result.params[i]["target"])).tolist()
        pasted = result.image[i][:, ys, xs]
        assert torch.equal(pasted, image[:, ys + dy, xs + dx])
        # every pixel is unique, so decoding the pasted colours recovers the same offset everywhere
        assert torch.equal(pasted[0] // 2 - xs, torch.full_like(xs, dx))
        assert torch.equal(pasted[1] // 2 - ys, torch.full_like(ys, dy))
        moved += (dx, dy) != (0, 0)
    assert moved >= 7


def test_jitter_changes_pasted_pixels_within_range() -> None:
    image = torch.full((8, 3, 64, 64), 0.5)
    result = CutPasteScar(seed=2, jitter=0.1).augment(image)
    for i in range(8):
        b = result.params[i]["brightness"]
        assert 0.9 <= b <= 1.1 and 0.9 <= result.params[i]["contrast"] <= 1.1
        # a flat patch keeps its mean through contrast, so only brightness shows
        assert torch.allclose(result.image[i][:, result.mask[i]], torch.tensor(0.5 * b), atol=1e-6)


def test_same_seed_same_bytes_different_seeds_differ() -> None:
    image = noise(4, 3, 64, 80)
    a, b, c = (CutPasteScar(seed=s).augment(image) for s in (7, 7, 8))
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(CutPasteScar(generator=gen).augment(image).image, a.image)


def test_batch_gets_per_sample_masks() -> None:
    mask = CutPasteScar(seed=4).augment(noise(8, 3, 128, 128)).mask
    flat = mask.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))
    assert len(set(flat.sum(1).tolist())) > 1


def test_scar_size_scales_with_image_size() -> None:
    def run(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        aug = CutPasteScar(seed=6)
        params = aug.make_params(torch.zeros(64, 1, h, w))
        _, mask = aug.transform(torch.zeros(64, 1, h, w), params)
        return params["width"], params["length"], mask.flatten(1).sum(1).float()

    w256, l256, _ = run(256, 256)
    assert 2 <= w256.min() and w256.max() <= 16 and 10 <= l256.min() and l256.max() <= 25
    w64, l64, area64 = run(64, 64)
    w512, l512, area512 = run(512, 512)
    assert torch.allclose(w512, 8 * w64) and torch.allclose(l512, 8 * l64)
    assert 40 < area512.mean() / area64.mean() < 90
    w_wide, l_wide, _ = run(64, 512)  # the shorter side sets the scale
    assert torch.allclose(w_wide, w64) and torch.allclose(l_wide, l64)
    w_big = CutPasteScar(seed=6, width=(4.0, 32.0)).make_params(torch.zeros(64, 1, 256, 256))["width"]
    assert torch.allclose(w_big, 2 * w256)


def test_rectangle_too_large_is_shrunk_to_fit() -> None:
    # at 48x32 the scar would be 50 x 12.5 px; it must shrink (keeping its shape) to span 47 columns at most
    aug = CutPasteScar(seed=0, width=(100.0, 100.0), length=(400.0, 400.0), angle=0.0)
    result = aug.augment(noise(4, 1, 32, 48))
    for i, params in enumerate(result.params):
        assert params["length"] == pytest.approx(46.0) and params["width"] == pytest.approx(11.5)
        assert result.mask[i].any(0).sum() == 47 and result.mask[i].any(1).sum() == 11


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"width": (0.0, 3.0)}, "width"),
        ({"width": (5.0, 2.0)}, "width"),
        ({"width": 3.0}, "width"),
        ({"length": (-1.0, 2.0)}, "length"),
        ({"length": ("a", "b")}, "length"),
        ({"angle": -1.0}, "angle"),
        ({"angle": 200.0}, "angle"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
        ({"p": 2.0}, "p"),
    ],
)
def test_invalid_params_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        CutPasteScar(**kwargs)


def test_keeps_the_augmenter_contract() -> None:
    report = check_augmenter(CutPasteScar)
    assert report.augmenter == "CutPasteScar" and "workers" in report.checks


def test_docstring_and_name() -> None:
    assert CutPasteScar.name == "cutpaste_scar"
    assert CutPasteScar.__doc__.splitlines()[0].startswith("CutPaste scar:")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    image = noise(8, 3, 40, 64)
    cpu = CutPasteScar(seed=9).augment(image)
    gpu = CutPasteScar(seed=9).augment(image.cuda())
    assert gpu.image.is_cuda and gpu.mask.is_cuda
    assert torch.equal(gpu.mask.cpu(), cpu.mask)
    assert (gpu.image.cpu().int() - cpu.image.int()).abs().max() <= 1
