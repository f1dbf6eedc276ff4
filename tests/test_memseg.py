"""MemSegRegion: the MemSeg defect simulation as an Augmenter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scipy.stats import ks_2samp
from torchvision import tv_tensors
from torchvision.transforms import v2

from helpers import memseg_draws
from inout_aug import create
from inout_aug.augmenters.memseg.region import MemSegRegion, otsu_level
from inout_aug.augmenters.memseg.sources import AnomalySource
from inout_aug.augmenters.memseg.structural import StructuralSource


def photo(n: int = 8, c: int = 3, h: int = 64, w: int = 48, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """(n, c, h, w) smooth, distinct images made here."""
    g = torch.Generator().manual_seed(100)
    ramp = torch.linspace(0, 1, h)[:, None] * torch.linspace(0.2, 0.8, w)[None]
    image = (ramp + 0.3 * torch.rand(n, c, 1, 1, generator=g)).clamp(0, 1)
    return (image * 255).round().to(torch.uint8) if dtype == torch.uint8 else image.to(dtype)


def bright_square(n: int = 16, h: int = 64, w: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark (0.2) uint8 images with a bright (0.8) square, and the square as an (h, w) bool mask."""
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[16:48, 8:40] = True
    image = torch.where(inside, 204, 51).to(torch.uint8).expand(n, 3, h, w).clone()
    return image, inside


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.float16])
def test_pixels_outside_the_mask_are_unchanged(dtype):
    image = photo(dtype=dtype)
    if dtype == torch.float64:
        image = image * (1 - 1e-12)  # values that float32 cannot hold
    out = MemSegRegion(seed=0).augment(image)
    assert out.image.dtype == dtype and out.defect.all()
    outside = ~out.mask[:, None].expand_as(image)
    assert torch.equal(out.image[outside], image[outside])
    assert (out.image != image).any((1, 2, 3)).all()


def test_mask_is_binary_and_not_empty_when_labelled():
    aug = MemSegRegion(seed=1)
    for i, image in enumerate(photo(6)):
        sample = aug({"image": tv_tensors.Image(image), "label": 0})
        assert sample["label"] == 1, i
        mask = sample["mask"]
        assert isinstance(mask, tv_tensors.Mask) and set(mask.unique().tolist()) == {0, 1}
        changed = (sample["image"] != image).any(0)
        assert not (changed & (mask == 0)).any()


def test_same_seed_same_bytes_different_seed_different_bytes():
    image = photo()
    a = MemSegRegion(seed=5).augment(image)
    b = MemSegRegion(seed=5).augment(image)
    c = MemSegRegion(seed=6).augment(image)
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and a.params == b.params
    assert not torch.equal(a.mask, c.mask)


def test_p_zero_returns_the_input_unchanged():
    image = photo()
    out = MemSegRegion(p=0.0, seed=0)(image)
    assert torch.equal(out, image)
    sample = MemSegRegion(p=0.0, seed=0)((image[0], 0))
    assert torch.equal(sample[0], image[0]) and sample[1] == 0


def test_works_inside_a_torchvision_compose():
    pipeline = v2.Compose(
        [MemSegRegion(seed=2), v2.RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32, scale=True)]
    )
    image = photo(1)[0]
    out = pipeline({"image": tv_tensors.Image(image), "label": 0})
    assert out["label"] == 1 and isinstance(out["image"], tv_tensors.Image)
    assert out["image"].dtype == torch.float32
    assert out["mask"].shape == (64, 48) and out["mask"].any()
    changed = (out["image"] != v2.functional.to_dtype(image.flip(-1), torch.float32, scale=True)).any(0)
    assert not (changed & (out["mask"] == 0)).any()  # the flip moved the mask with the image


def test_drawn_parameters_follow_the_paper():
    aug = MemSegRegion(seed=3)
    images = [torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    params = [aug.make_params(image) for image in images]
    delta = torch.cat([p["delta"] for p in params])
    exponents = torch.cat([p["exponents"] for p in params])
    angle = torch.cat([p["angle"] for p in params])
    source = torch.cat([p["source"] for p in params]).float()
    assert 0.15 <= delta.min() and delta.max() <= 1.0
    assert abs(delta.mean().item() - 0.575) < 0.02
    for axis in range(2):
        assert set(exponents[:, axis].tolist()) == set(range(6))
    assert -90 <= angle.min() < -80 and 80 < angle.max() <= 90
    assert abs(source.mean().item() - 0.5) < 0.05


def test_parameters_are_recorded_per_sample():
    out = MemSegRegion(seed=4).augment(photo(4))
    for record in out.params:
        assert set(record) == {"exponents", "angle", "delta", "source"}
        assert record["source"] in {"ProceduralTexture", "StructuralSource"}
        assert all(0 <= k <= 5 for k in record["exponents"]) and 0.15 <= record["delta"] <= 1


def test_empty_masks_are_redrawn_only_up_to_max_tries():
    # Two lattice cells per axis give an empty mask about a quarter of the time.
    image = photo(64, h=32, w=32)
    once = MemSegRegion(seed=7, perlin_min_exponent=1, perlin_max_exponent=1, max_tries=1).augment(image)
    retried = MemSegRegion(seed=7, perlin_min_exponent=1, perlin_max_exponent=1).augment(image)
    assert 5 < (~once.defect).sum() < 30
    assert retried.defect.all()
    assert torch.equal(once.mask.flatten(1).any(1), once.defect)


def test_an_empty_foreground_leaves_samples_untouched():
    image = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
    out = MemSegRegion(seed=0, foreground=0.5).augment(image)
    assert not out.defect.any() and not out.mask.any() and torch.equal(out.image, image)
    assert out.params == [{}] * 4


@pytest.mark.parametrize("foreground", [0.5, "otsu", "tensor", "callable"])
def test_foreground_restricts_the_mask(foreground):
    image, inside = bright_square()
    if foreground == "tensor":
        foreground = inside
    elif foreground == "callable":
        foreground = lambda batch: batch.mean(1) > 0.5  # noqa: E731
    out = MemSegRegion(seed=8, foreground=foreground).augment(image)
    assert out.defect.sum() >= 12 and not (out.mask & ~inside).any()
    inverted = MemSegRegion(seed=8, foreground=foreground, foreground_invert=True).augment(image)
    assert inverted.defect.sum() >= 12 and not (inverted.mask & inside).any()


def test_otsu_level_separates_two_populations():
    values = torch.cat([torch.full((1, 10, 10), 0.2), torch.full((1, 10, 10), 0.7)], dim=2)
    assert 0.2 < otsu_level(values).item() < 0.7


@pytest.mark.parametrize("shape", [(3, 100, 37), (1, 100, 37), (1, 37, 100), (3, 1, 1), (3, 5, 200)])
def test_non_square_and_odd_sizes(shape):
    image = photo(4, *shape)
    out = MemSegRegion(seed=9).augment(image)
    assert out.image.shape == image.shape and out.mask.shape == (4, *shape[1:])
    outside = ~out.mask[:, None].expand_as(image)
    assert torch.equal(out.image[outside], image[outside])
    if shape[1] > 1:
        assert out.defect.all()


def test_a_batch_gets_a_different_mask_per_sample():
    out = MemSegRegion(seed=10).augment(photo(8))
    masks = out.mask.flatten(1)
    assert all(not torch.equal(masks[i], masks[j]) for i in range(8) for j in range(i))
    assert len({round(p["delta"], 6) for p in out.params}) == 8


class Recording(MemSegRegion):
    """MemSegRegion that keeps a copy of the parameters it drew."""

    def make_params(self, image):
        params = super().make_params(image)
        self.seen = {key: value.clone() for key, value in params.items()}
        return params


def test_blend_follows_the_formula():
    image = photo(4, dtype=torch.float32)
    aug = Recording(seed=11)
    result = aug.augment(image)
    m, d, a = result.mask[:, None].float(), aug.seen["delta"].view(-1, 1, 1, 1), aug.seen["anomaly"]
    expected = (1 - m) * image + d * (m * a) + (1 - d) * (m * image)
    torch.testing.assert_close(result.image, expected)


class Constant(AnomalySource):
    """A plugin-style source: a constant grey."""

    def draw(self, image, generator):
        return torch.full_like(image, 0.5)


def test_custom_sources_and_weights():
    image = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    aug = MemSegRegion(seed=12, sources=[Constant(), StructuralSource()], source_weights=(1.0, 0.0),
                       delta_range=(1.0, 1.0))
    out = aug.augment(image)
    assert (out.image[out.mask[:, None].expand_as(image)] == 128).all()
    assert {p["source"] for p in out.params} == {"Constant"}


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="perlin"):
        MemSegRegion(perlin_min_exponent=3, perlin_max_exponent=2)
    with pytest.raises(ValueError, match="delta_range"):
        MemSegRegion(delta_range=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"delta_range must be \(low, high\), 0 <= low <= high <= 1, got 0.5"):
        MemSegRegion(delta_range=0.5)
    with pytest.raises(ValueError, match="otsu"):
        MemSegRegion(foreground="triangle")
    with pytest.raises(ValueError, match="foreground_invert needs a foreground"):
        MemSegRegion(foreground_invert=True)
    with pytest.raises(ValueError, match="either textures= or sources="):
        MemSegRegion(textures="somewhere", sources=[Constant()])
    with pytest.raises(ValueError, match="source_weights"):
        MemSegRegion(sources=[Constant()], source_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="foreground mask of shape"):
        MemSegRegion(foreground=torch.ones(5, 5, dtype=torch.bool)).augment(photo(1))


def test_registry_and_cli_style_parameters():
    aug = create("memseg", grid=(4, 8), delta_range=(0.2, 0.9), foreground="otsu", texture_prob=1.0, seed=0)
    assert isinstance(aug, MemSegRegion) and aug.name == "memseg"
    out = aug.augment(photo(4))
    assert {p["source"] for p in out.params if p} == {"ProceduralTexture"}


def test_texture_folder_as_source(textures):
    image = torch.zeros(8, 3, 48, 64, dtype=torch.uint8)
    aug = MemSegRegion(seed=13, textures=str(textures), texture_prob=1.0, delta_range=(1.0, 1.0))
    out = aug.augment(image)
    inside = out.image[out.mask[:, None].expand_as(image)].view(-1)
    assert out.defect.all() and inside.float().std() > 5  # real texture pixels, not a flat colour


def test_mask_area_and_delta_distributions_match_the_recorded_draws():
    """Speed work must not change what MemSeg draws: mask areas and δ against tests/data/memseg_draws.json, drawn by
    the commit it names (two-sample Kolmogorov-Smirnov); a threshold of 0.6 instead of 0.5 is caught."""
    record = json.loads((Path(__file__).parent / "data" / "memseg_draws.json").read_text())
    areas, deltas = memseg_draws(**record["settings"])
    assert ks_2samp(areas, record["mask_area"]).pvalue > 0.01
    assert ks_2samp(deltas, record["delta"]).pvalue > 0.01
    smaller, _ = memseg_draws(**record["settings"], threshold=0.6)
    assert ks_2samp(smaller, record["mask_area"]).pvalue < 1e-6
