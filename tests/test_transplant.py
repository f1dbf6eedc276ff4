"""Transplant: real defects copied, warped and blended into normal images."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from inout_aug.augmenters.inout import InOutMix
from inout_aug.augmenters.transplant import Transplant
from inout_aug.core.augmenter import Outcome
from inout_aug.core.io import read_image, write_png
from inout_aug.data.layouts import open_dataset
from inout_aug.data.masks import bounding_box
from inout_aug.data.training import choose_defects
from inout_aug.testing import check_augmenter

# Small tensors on a busy 2-core machine: one thread is several times faster than two.
pytestmark = pytest.mark.usefixtures("one_thread")

#: The defect of every test image: an L (no symmetry, so flips and turns show), 12 x 8 px.
L_SHAPE = torch.zeros(12, 8, dtype=torch.bool)
L_SHAPE[:, :3] = True
L_SHAPE[-3:, :] = True


def make_defects(root: Path, types: tuple[str, ...] = ("", ), per_type: int = 3, channels: int = 1,
                 masks: bool = True, normals: bool = True) -> Path:
    """A folder dataset: ``per_type`` defect images per type (an L of dark pixels, 0.1, on a 0.3 background with
    a little noise, at a different place each), their masks and (``normals``) two normal images."""
    g = torch.Generator().manual_seed(0)
    for t, kind in enumerate(types):
        for i in range(per_type):
            image = (0.3 + 0.02 * torch.randn(channels, 40, 48, generator=g)).clamp(0, 1)
            mask = torch.zeros(40, 48, dtype=torch.bool)
            top, left = 4 + 6 * i, 6 + 9 * i + 3 * t
            mask[top:top + 12, left:left + 8] = L_SHAPE
            image[:, mask] = 0.1
            name = f"{kind}/d{t}{i}.png" if kind else f"d{t}{i}.png"
            write_png((image * 255).round().to(torch.uint8), root / "defect" / name)
            if masks:
                write_png(mask[None].to(torch.uint8) * 255, root / "masks" / name)
    if normals:
        for i in range(2):
            write_png(torch.full((channels, 40, 48), 77, dtype=torch.uint8), root / "normal" / f"n{i}.png")
    return root


def targets(n: int = 6, c: int = 3, h: int = 64, w: int = 72, dtype: torch.dtype = torch.uint8,
            level: float = 0.8) -> torch.Tensor:
    """(n, c, h, w) bright images with a little texture, all different."""
    g = torch.Generator().manual_seed(1)
    image = (level + 0.03 * torch.randn(n, c, h, w, generator=g)).clamp(0, 1)
    return (image * 255).round().to(torch.uint8) if dtype == torch.uint8 else image.to(dtype)


@pytest.fixture
def defects(tmp_path) -> Path:
    return make_defects(tmp_path / "defects")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_dtypes_and_pixels_outside_the_mask(defects, dtype, channels):
    image = targets(c=channels, dtype=dtype)
    out = Transplant(defects=defects, seed=0).augment(image)
    assert out.image.shape == image.shape and out.image.dtype == dtype and out.mask.shape == (6, 64, 72)
    assert (out.outcome == Outcome.DEFECT).all()
    outside = ~out.mask[:, None].expand_as(image)
    assert torch.equal(out.image[outside], image[outside])
    changed = (out.image != image).any(1)
    assert (changed & out.mask).flatten(1).sum(1).gt(0.5 * L_SHAPE.sum()).all()  # the defect is there
    assert (out.mask.flatten(1).sum(1) < 0.2 * 64 * 72).all()


@pytest.mark.parametrize(("source", "target"), [(1, 3), (3, 1), (3, 3)])
def test_grey_and_rgb_sources_and_targets(tmp_path, source, target):
    root = make_defects(tmp_path / "d", channels=source)
    image = targets(c=target)
    out = Transplant(defects=root, seed=1).augment(image)
    assert out.image.shape == image.shape and out.defect.all()
    if target == 3 and source == 1:  # a grey defect on a grey-ish target stays neutral
        inside = out.mask[:, None].expand_as(image)
        spread = out.image.float().amax(1) - out.image.float().amin(1)
        assert spread[out.mask].mean() < (image.float().amax(1) - image.float().amin(1))[out.mask].mean() + 3
        assert inside.any()


def test_a_sample_gets_label_1_and_its_mask(defects):
    image = targets(1)[0]
    sample = Transplant(defects=defects, seed=2)({"image": tv_tensors.Image(image), "label": 0})
    assert sample["label"] == 1 and isinstance(sample["mask"], tv_tensors.Mask) and sample["mask"].any()
    assert not ((sample["image"] != image).any(0) & ~sample["mask"]).any()


def test_same_seed_same_bytes_other_seed_other_bytes(defects):
    image = targets(8)
    a = Transplant(defects=defects, seed=5).augment(image)
    b = Transplant(defects=defects, seed=5).augment(image)
    c = Transplant(defects=defects, seed=6).augment(image)
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and a.params == b.params
    assert not torch.equal(a.mask, c.mask)


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.3])
def test_pasted_area_is_the_source_area_times_scale_squared(defects, scale):
    out = Transplant(defects=defects, scale=(scale, scale), rotation=0, feather=0, seed=3).augment(targets(8))
    area = out.mask.flatten(1).sum(1).float()
    expected = L_SHAPE.sum() * scale ** 2
    assert ((area - expected).abs() / expected < 0.15).all(), area
    assert all(p["scale"] == pytest.approx(scale) for p in out.params)


def test_fit_resizes_each_source_as_its_targets_were_resized(defects):
    # The 40 x 48 sources fitted into 20 x 30 are halved (min(20/40, 30/48)): the L's area falls by 4 (on
    # average: nearest-neighbour halving of its 3-pixel arms gives 1 or 2 pixels).
    out = Transplant(defects=defects, fit=(20, 30), scale=(1, 1), rotation=0, feather=0, seed=3).augment(targets(8))
    area = out.mask.flatten(1).sum(1).float()
    expected = L_SHAPE.sum() / 4
    assert abs(area.mean() - expected) / expected < 0.15, area
    assert ((area > expected / 2) & (area < expected * 2)).all(), area
    with pytest.raises(ValueError, match=r"fit must be \(H, W\)"):
        Transplant(defects=defects, fit=(0, 30))


def _variants(shape: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and quarter turns of a 2-D mask."""
    return [torch.rot90(s, k) for s in (shape, shape.flip(1)) for k in range(4)]


def test_flips_and_turns_vary_and_map_the_shape_exactly(defects):
    out = Transplant(defects=defects, scale=(1, 1), rotation=0, feather=0, seed=4).augment(targets(16))
    seen = set()
    for mask in out.mask:
        top, left, bottom, right = bounding_box(mask)
        pasted = mask[top:bottom, left:right]
        matches = [i for i, v in enumerate(_variants(L_SHAPE)) if v.shape == pasted.shape and torch.equal(v, pasted)]
        assert len(matches) == 1  # whole-pixel moves: the L comes out exactly, flipped and turned
        seen.add(matches[0])
    assert len(seen) >= 4
    assert {p["flip"] for p in out.params} == {True, False} and len({p["turns"] for p in out.params}) == 4


def test_rotation_varies_the_angle_within_its_range(defects):
    out = Transplant(defects=defects, rotation=30, flip=False, turns=False, seed=5).augment(targets(16))
    angles = torch.tensor([p["angle"] for p in out.params])
    assert angles.abs().max() <= 30 and angles.std() > 5
    assert {p["flip"] for p in out.params} == {False} and {p["turns"] for p in out.params} == {0}
    shapes = {tuple(bounding_box(m)[2:]) for m in out.mask}  # different angles: different footprints
    assert len(shapes) > 4


@pytest.mark.parametrize("foreground", [0.5, "otsu"])
def test_the_defect_centre_lies_on_the_foreground(defects, foreground):
    image = targets(12, level=0.2)
    image[..., :, 36:] = 204  # the right half is bright: the foreground
    out = Transplant(defects=defects, foreground=foreground, feather=1, seed=6).augment(image)
    assert all(p["centre"][1] >= 36 for p in out.params)
    columns = out.mask.nonzero()[:, 2].float()
    assert columns.mean() > 40


def test_a_defect_too_big_for_the_image_is_shrunk_inside_it(defects):
    out = Transplant(defects=defects, scale=(3, 3), rotation=0, feather=0, seed=7).augment(targets(6, h=16, w=18))
    assert out.defect.all()
    for mask, drawn in zip(out.mask, out.params):  # shrunk to fit, not cut by the border
        assert drawn["scale"] < 1.5
        assert mask.sum() == pytest.approx(L_SHAPE.sum() * drawn["scale"] ** 2, rel=0.25)


@pytest.mark.parametrize(("match", "dark"), [("relative", 0.8 / 3), ("gain", 0.8 / 3), ("mean", 0.6)])
def test_a_dark_defect_on_a_bright_target_is_matched_to_its_surroundings(defects, match, dark):
    # Sources: an L of 0.1 on 0.3. Scale 1 without rotation moves whole pixels, so each output pixel in the mask is
    # either the defect (a third of its surroundings, or 0.2 below them with match="mean") or the blended ring.
    image = targets(8, c=1, level=0.8, dtype=torch.float32)
    out = Transplant(defects=defects, match=match, rotation=0, scale=(1, 1), feather=2, seed=8).augment(image)
    pixels = out.image[:, 0]
    core = out.mask & (pixels < (dark + 0.8) / 2)
    ring = out.mask & ~core
    assert pixels[ring].mean() == pytest.approx(0.8, abs=0.01)  # not 0.3: the ring matches the target's
    assert pixels[core].mean() == pytest.approx(dark, abs=0.02)
    assert core.flatten(1).sum(1).float().sub(L_SHAPE.sum()).abs().max() <= 3


def test_zero_shot_has_no_defect_to_copy(tmp_path, defects):
    with pytest.raises(ValueError, match="Transplant.*copies real defects.*zero-shot has none.*memseg.*diffusion"):
        Transplant(defects=defects, shots=0)
    no_masks = make_defects(tmp_path / "no_masks", masks=False)
    with pytest.raises(ValueError, match="Transplant found no masked defect.*zero-shot has none"):
        Transplant(defects=no_masks)


def test_defect_type_picks_the_defects(tmp_path):
    root = make_defects(tmp_path / "typed", types=("crack", "pit"), per_type=2)
    out = Transplant(defects=root, defect_type="pit", seed=9).augment(targets(8))
    assert {p["defect_type"] for p in out.params} == {"pit"}
    assert {p["defect"] for p in out.params} <= {"d10.png", "d11.png"}
    with pytest.raises(ValueError, match="no defects of type 'scratch'.*types: crack, pit"):
        Transplant(defects=root, defect_type="scratch")


def test_shots_restrict_the_defects(tmp_path):
    root = make_defects(tmp_path / "many", types=("crack", "pit"), per_type=3)
    dataset = open_dataset(root)
    chosen = choose_defects(dataset.defects(), "few", 2, 7)
    by_count = Transplant(defects=root, shots=2, shots_seed=7, seed=0)
    assert sorted(d.name for d in by_count.defects) == sorted(r.image.name for r in chosen)
    paths = [str(r.image) for r in dataset.defects()[:1]]
    for shots in (paths, paths[0]):
        by_path = Transplant(defects=root, shots=shots, seed=0)
        assert {p["defect"] for p in by_path.augment(targets(6)).params} == {Path(paths[0]).name}
    with pytest.raises(ValueError, match="shots not among the defects"):
        Transplant(defects=root, shots=[str(tmp_path / "elsewhere.png")])


def test_a_folder_of_defects_without_normals(tmp_path):
    root = make_defects(tmp_path / "only", normals=False)
    assert len(Transplant(defects=root, seed=0).defects) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a dataset nor a folder of defect/"):
        Transplant(defects=tmp_path / "empty")


def test_a_defect_at_the_border_of_its_image(tmp_path):
    root = tmp_path / "edge"
    image = torch.full((1, 30, 30), 77, dtype=torch.uint8)
    mask = torch.zeros(30, 30, dtype=torch.bool)
    mask[:12, :8] = L_SHAPE  # in the corner: the crop is padded by replication
    image[:, mask] = 25
    write_png(image, root / "defect" / "corner.png")
    write_png(mask[None].to(torch.uint8) * 255, root / "masks" / "corner.png")
    out = Transplant(defects=root, scale=(1, 1), rotation=0, feather=0, seed=0).augment(targets(4))
    assert (out.mask.flatten(1).sum(1) == L_SHAPE.sum()).all()


def test_as_the_in_side_of_in_out_mix(defects):
    mix = InOutMix(in_augmenter=Transplant(defects=defects, seed=1), out_params={"texture_prob": 0.0}, seed=0)
    out = mix.augment(targets(6))
    assert sorted(p["side"] for p in out.params) == ["in"] * 3 + ["out"] * 3 and out.defect.all()
    assert all("defect" in p for p in out.params if p["side"] == "in")


def test_by_name_as_in_out_mix_s_in_side(defects):
    mix = InOutMix(in_augmenter="transplant", in_params={"defects": str(defects)}, in_ratio=1.0, seed=0)
    out = mix.augment(targets(4))
    assert out.defect.all() and {p["augmenter"] for p in out.params} == {"transplant"}


def test_keeps_the_augmenter_contract(defects):
    report = check_augmenter(partial(Transplant, defects=defects))
    assert report.outcomes == {Outcome.UNTOUCHED, Outcome.DEFECT}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_nearly_the_bytes_of_cpu(defects):
    image = targets(4)
    cpu = Transplant(defects=defects, seed=3).augment(image)
    gpu = Transplant(defects=defects, seed=3).augment(image.cuda())
    assert gpu.image.is_cuda and gpu.mask.is_cuda and cpu.params == gpu.params
    assert ((gpu.image.cpu().int() - cpu.image.int()).abs() > 2).float().mean() < 1e-3
    assert (gpu.mask.cpu() != cpu.mask).sum() <= 4 * len(image)
    check_augmenter(partial(Transplant, defects=defects), device="cuda", start_methods=())


@pytest.mark.realdata
def test_five_shots_of_magnetic_tile(magnetic_tile):
    augmenter = Transplant(defects=magnetic_tile, shots=5, shots_seed=0, foreground="otsu", seed=0)
    assert len(augmenter.defects) == 5
    normals = sorted((magnetic_tile / "MT_Free" / "Imgs").glob("*.jpg"))[:4]
    image = torch.stack([F.resize(read_image(p), [196, 196], antialias=True) for p in normals])
    out = augmenter.augment(image)
    assert out.defect.all() and out.image.shape == image.shape
    assert torch.equal(out.image[~out.mask[:, None]], image[~out.mask[:, None]])
