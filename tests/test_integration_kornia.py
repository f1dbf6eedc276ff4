"""KorniaDefect inside kornia.augmentation.AugmentationSequential."""

from __future__ import annotations

import importlib
import sys

import kornia.augmentation as K
import pytest
import torch

from helpers import SquareDefect, import_without
from inout_aug import create
from inout_aug.integrations.kornia import KorniaDefect

B, H, W = 4, 24, 28
GREY = 0.5
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def flat(device="cpu", b: int = B) -> torch.Tensor:
    """A grey batch: a painted square is exactly the pixels that are not grey."""
    return torch.full((b, 3, H, W), GREY, device=device)


def painted(image: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: pixels that are neither grey nor the zero fill of a geometric transform."""
    return ((image != GREY) & (image != 0)).any(1, keepdim=True)


def sequential(*children, p: float = 1.0, size: int = 6, **kwargs) -> K.AugmentationSequential:
    defect = KorniaDefect(SquareDefect(size=size), p=p, **kwargs)
    return K.AugmentationSequential(defect, *children, data_keys=["input", "mask"])


@pytest.mark.parametrize("device", DEVICES)
def test_square_coincides_with_mask_after_flips(device):
    seq = sequential(K.RandomHorizontalFlip(p=1), K.RandomVerticalFlip(p=1))
    torch.manual_seed(0)
    image, mask = seq(flat(device), torch.zeros(B, 1, H, W, device=device))
    assert image.shape == (B, 3, H, W) and image.dtype == torch.float32 and image.device.type == device
    assert mask.shape == (B, 1, H, W) and mask.dtype == torch.float32 and mask.device.type == device
    assert (mask.sum((1, 2, 3)) == 36).all()
    assert torch.equal(painted(image), mask.bool())
    assert seq[0].defect.all()


def test_square_coincides_with_mask_after_nearest_affine():
    affine = K.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.8, 1.2), resample="nearest", p=1)
    seq = sequential(K.RandomHorizontalFlip(p=0.5), affine, size=8)
    torch.manual_seed(1)
    image, mask = seq(flat(b=8), torch.zeros(8, 1, H, W))
    assert mask.bool().any((1, 2, 3)).sum() >= 6  # most squares stay in view
    assert torch.equal(painted(image), mask.bool())


def test_memseg_mask_follows_bilinear_affine_within_two_pixels_for_99_percent():
    size = 64
    torch.manual_seed(2)
    image = torch.rand(1, 3, size, size).expand(B, 3, size, size).contiguous()
    empty = torch.zeros(B, 1, size, size)
    seq = K.AugmentationSequential(KorniaDefect(create("memseg")), K.RandomAffine(degrees=20, p=1),
                                   data_keys=["input", "mask"])
    plain = K.AugmentationSequential(K.RandomAffine(degrees=20, p=1), data_keys=["input", "mask"])
    torch.manual_seed(3)
    out, mask = seq(image, empty)
    # The same affine on the defect-free batch: skip the one seed KorniaDefect draws first.
    torch.manual_seed(3)
    torch.randint(2**62, (), dtype=torch.int64)
    reference, _ = plain(image, empty)
    moved = (out - reference).abs().amax(1, keepdim=True) > 1e-4
    near = torch.nn.functional.max_pool2d(mask, 5, stride=1, padding=2).bool()  # the mask grown by 2 pixels
    inside = -torch.nn.functional.max_pool2d(-mask, 3, stride=1, padding=1)  # the mask shrunk by a pixel
    assert mask.bool().any((1, 2, 3)).all() and inside.sum() > 50
    # Nearest sampling may skip a one-pixel sliver of the defect that bilinear sampling still shows.
    assert (moved & ~near).sum() <= 0.01 * moved.sum()  # the changes lie within 2 pixels of the mask
    assert moved[inside.bool()].float().mean() > 0.9


def test_defect_is_ored_into_the_input_mask_bool_or_float():
    stripe = torch.zeros(B, H, W, dtype=torch.bool)
    stripe[:, :, :3] = True
    seq = sequential(K.RandomHorizontalFlip(p=1))
    torch.manual_seed(4)
    image, mask = seq(flat(), stripe)
    assert mask.dtype == torch.bool and mask.shape == (B, 1, H, W)
    assert torch.equal(mask, painted(image) | stripe.flip(-1)[:, None])
    torch.manual_seed(4)
    _, float_mask = seq(flat(), stripe.float())
    assert torch.equal(float_mask, mask.float())


def test_p0_leaves_everything_untouched():
    seq = sequential(p=0.0)
    image = torch.rand(B, 3, H, W)
    mask = (torch.rand(B, 1, H, W) > 0.5).float()
    out, out_mask = seq(image, mask)
    assert torch.equal(out, image) and torch.equal(out_mask, mask)
    assert not seq[0].defect.any()


def test_per_sample_probability_leaves_skipped_samples_untouched():
    seq = sequential(p=0.5)
    torch.manual_seed(5)
    image, mask = seq(flat(b=16), torch.zeros(16, 1, H, W))
    made = seq[0].defect
    assert 0 < made.sum() < 16
    assert torch.equal(painted(image).flatten(1).any(1), made)
    assert torch.equal(mask.flatten(1).any(1), made)


def test_torch_manual_seed_reproduces_and_augmenter_seed_does_not_matter():
    def run(seed: int, augmenter_seed: int) -> torch.Tensor:
        defect = KorniaDefect(create("memseg", seed=augmenter_seed))
        seq = K.AugmentationSequential(defect, K.RandomHorizontalFlip(), data_keys=["input", "mask"])
        torch.manual_seed(seed)
        return torch.cat(seq(torch.rand(B, 3, H, W), torch.zeros(B, 1, H, W)), 1)

    assert torch.equal(run(6, augmenter_seed=1), run(6, augmenter_seed=2))
    assert not torch.equal(run(6, augmenter_seed=1), run(7, augmenter_seed=1))


def test_stored_params_replay_the_same_defect():
    seq = sequential(K.RandomHorizontalFlip(), K.RandomAffine(degrees=15, resample="nearest", p=1), p=0.7)
    image = torch.rand(8, 3, H, W)
    first = seq(image, torch.zeros(8, 1, H, W))
    params = seq._params
    seq(image, torch.zeros(8, 1, H, W))  # another draw in between
    again = seq(image, torch.zeros(8, 1, H, W), params=params)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    alone = KorniaDefect(SquareDefect(), p=0.7)
    once = alone(image)
    assert torch.equal(alone(image, params=alone._params), once)


def test_same_on_batch_paints_one_square_on_every_sample():
    seq = sequential(same_on_batch=True)
    torch.manual_seed(8)
    image, mask = seq(flat(), torch.zeros(B, 1, H, W))
    assert mask.any() and (mask == mask[:1]).all() and (image == image[:1]).all()


def test_mask_without_its_image_call_is_refused():
    defect = KorniaDefect(SquareDefect())
    params = defect.forward_parameters((B, 3, H, W))
    with pytest.raises(RuntimeError, match="transform the image"):
        defect.transform_masks(torch.zeros(B, 1, H, W), params=params, flags=defect.flags)


def test_refuses_an_augmenter_with_its_own_probability():
    with pytest.raises(ValueError, match="p=1"):
        KorniaDefect(create("memseg", p=0.5))


def test_keepdim_keeps_a_bhw_mask_bhw():
    seq = K.AugmentationSequential(KorniaDefect(SquareDefect(), keepdim=True), data_keys=["input", "mask"])
    image, mask = seq(flat(), torch.zeros(B, H, W, dtype=torch.bool))
    assert mask.shape == (B, H, W) and mask.dtype == torch.bool
    assert torch.equal(mask, painted(image)[:, 0])


def test_missing_kornia_names_the_extra(monkeypatch):
    with pytest.raises(ImportError, match=r'pip install "inout-aug\[kornia\]"'):
        import_without(monkeypatch, "kornia", "inout_aug.integrations.kornia")


def test_old_kornia_names_the_extra(monkeypatch):
    import kornia
    monkeypatch.setattr(kornia, "__version__", "0.8.1")
    monkeypatch.delitem(sys.modules, "inout_aug.integrations.kornia")
    with pytest.raises(ImportError, match=r'needs kornia 0.9 or newer, found 0.8.1: pip install "inout-aug\[kornia\]"'):
        importlib.import_module("inout_aug.integrations.kornia")
