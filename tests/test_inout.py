"""InOutMix: exact in/out split, per-sample records, exactness outside the mask, seeds, registry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_transplant import make_defects

from helpers import SquareDefect, gradient_image
from inout_aug import create, list_augmenters
from inout_aug.augmenters.inout import InOutMix
from inout_aug.augmenters.memseg import MemSegRegion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "cutpaste"))
from inout_aug_cutpaste.scar import CutPasteScar  # noqa: E402  (the example plugin, from its source tree)


def mixer(**kwargs) -> InOutMix:
    sides = {"in_augmenter": CutPasteScar(seed=1), "out_augmenter": MemSegRegion(seed=2)}
    return InOutMix(**{**sides, "seed": 0, **kwargs})


def batch(n: int = 8, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    return torch.stack([gradient_image(3, 40, 48, dtype).roll(i, -1) for i in range(n)])


@pytest.mark.parametrize(("in_ratio", "count"), [(0.5, 100), (0.25, 100), (0.3, 37)])
def test_the_split_is_exact_over_an_epoch_of_single_samples(in_ratio, count):
    mix = mixer(in_ratio=in_ratio)
    image = gradient_image(3, 32, 32)
    sides = [mix.augment(image[None]).params[0]["side"] for _ in range(count)]
    block = mix.block[1]
    expected = round(in_ratio * (count - count % block)) + sides[count - count % block:].count("in")
    assert sides.count("in") == expected
    assert abs(sides.count("in") - in_ratio * count) <= block
    assert sides != sorted(sides)  # shuffled, not in runs


def test_a_batch_is_split_exactly_and_each_side_records_its_own_parameters():
    out = mixer().augment(batch(10))
    assert [p["side"] for p in out.params].count("in") == 5
    for p in out.params:
        own = {"in": "cutpaste_scar", "out": "memseg"}[p["side"]]
        assert p["augmenter"] == own
        assert ("delta" in p) == (p["side"] == "out")  # MemSeg's own parameters on the out side only


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_defects_are_labelled_and_pixels_outside_the_mask_are_unchanged(dtype):
    image = batch(12, dtype)
    out = mixer().augment(image)
    assert out.image.dtype == dtype and out.defect.all()
    assert out.mask.flatten(1).any(1).all()
    outside = ~out.mask[:, None].expand_as(image)
    assert torch.equal(out.image[outside], image[outside])
    assert (out.image != image).flatten(1).any(1).all()


def test_same_seed_same_bytes_and_reseed_restarts_both_sides():
    a = create("inout", in_augmenter="memseg", out_augmenter="memseg", in_params={"texture_prob": 1.0}, seed=3)
    b = create("inout", in_augmenter="memseg", out_augmenter="memseg", in_params={"texture_prob": 1.0}, seed=3)
    first = a.augment(batch(6))
    assert torch.equal(first.image, b.augment(batch(6)).image)
    assert {p["source"] for p in first.params if p["side"] == "in"} == {"ProceduralTexture"}
    assert not torch.equal(first.image, a.augment(batch(6)).image)
    a.reseed(11)
    again = a.augment(batch(6)).image
    a.reseed(11)
    assert torch.equal(again, a.augment(batch(6)).image)


def test_a_side_with_no_share_is_never_built():
    mix = InOutMix(in_ratio=0.0, seed=0)  # the default in-side, "diffusion", need not exist
    assert set(mix.sides) == {"out"} and isinstance(mix.sides["out"], MemSegRegion)
    assert {p["side"] for p in mix.augment(batch(4)).params} == {"out"}
    only_in = InOutMix(in_ratio=1.0, in_augmenter=SquareDefect(seed=0), out_augmenter="no-such-thing")
    assert {p["side"] for p in only_in.augment(batch(4)).params} == {"in"}


def test_a_missing_side_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="'no-such' is not installed; pass in_augmenter=<name>.*in_ratio=0"):
        InOutMix(in_augmenter="no-such")
    with pytest.raises(ValueError, match=r"InOutMix: .*'diffusion', needs a source.*InOutMix\(bank=PATH\).*"
                                         r"InOutMix\(model=PATH\).*in_augmenter='transplant', "
                                         r"in_params=\{'defects': DATASET\}.*in_ratio=0"):
        InOutMix()
    suggested = InOutMix(in_augmenter="transplant", in_params={"defects": str(make_defects(tmp_path))}, seed=0)
    assert suggested.augment(torch.full((2, 1, 32, 32), 0.3)).defect.all()  # the hint works as written
    with pytest.raises(ValueError, match="in_ratio"):
        InOutMix(in_ratio=1.5)
    with pytest.raises(ValueError, match=r"in_ratio=0.004 rounds to 0 .* leaves out the in-distribution side: .*"
                                         r"or in_ratio=0 for out-of-distribution defects only"):
        mixer(in_ratio=0.004)
    with pytest.raises(ValueError, match=r"in_ratio=0.996 rounds to 1 .* leaves out the out-of-distribution side"):
        mixer(in_ratio=0.996)
    assert mixer(in_ratio=0.005).block == (1, 100)  # the finest share there is
    with pytest.raises(ValueError, match="in_params apply to an augmenter given by name"):
        InOutMix(in_augmenter=SquareDefect(), in_params={"size": 3})


def test_registered_and_in_a_compose_with_masks_and_labels():
    assert "inout" in list_augmenters()
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    pipeline = v2.Compose([mixer(), v2.RandomHorizontalFlip(p=1.0)])
    image = tv_tensors.Image(gradient_image(3, 32, 40))
    out = pipeline({"image": image, "label": 0})
    assert out["label"] == 1 and isinstance(out["mask"], tv_tensors.Mask)
    assert out["mask"].shape == (32, 40) and out["mask"].any()


def test_outputs_of_a_run_are_split_exactly_in_any_order():
    def side(mix, index):
        mix.reseed(1000 + index, index)  # as `inout-aug generate` does: a seed per output and its place
        return mix.augment(gradient_image(3, 24, 24)[None]).params[0]["side"]

    forward = [side(mixer(in_ratio=0.25), i) for i in range(20)]
    backward = [side(mixer(in_ratio=0.25), i) for i in reversed(range(20))][::-1]
    assert forward == backward and forward.count("in") == 5
    assert all(forward[i:i + 4].count("in") == 1 for i in range(0, 20, 4))
