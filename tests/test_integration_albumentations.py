"""AlbumentationsDefect inside real albumentations pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

A = pytest.importorskip("albumentations")

import cv2  # noqa: E402  (albumentations depends on it)

from helpers import SquareDefect, gradient_image, import_without  # noqa: E402
from inout_aug import Augmenter, create  # noqa: E402
from inout_aug.core.augmenter import Made, Outcome  # noqa: E402
from inout_aug.integrations.albumentations import AlbumentationsDefect  # noqa: E402

H, W = 32, 40


def photo(dtype=np.uint8) -> np.ndarray:
    """An HWC image whose pixels differ from each other."""
    return gradient_image(3, H, W, torch.uint8 if dtype == np.uint8 else torch.float32).permute(1, 2, 0).numpy()


def memseg(seed: int = 0) -> Augmenter:
    return create("memseg", seed=seed)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels where any channel differs."""
    diff = before != after
    return diff if diff.ndim == 2 else diff.any(-1)


class Replacer(Augmenter):
    """Replaces the whole image with grey 0.25 and reports a square as its defect (test augmenter)."""

    def make_params(self, image):
        return {}

    def transform(self, image, params):
        mask = torch.zeros((image.shape[0], *image.shape[2:]), dtype=torch.bool)
        mask[:, :4, :4] = True
        outcome = torch.full((image.shape[0],), Outcome.REPLACED, dtype=torch.int8)
        return Made(torch.full_like(image, 0.25), mask, outcome)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_defect_changes_pixels_only_inside_its_mask(dtype):
    image = photo(dtype)
    out = A.Compose([AlbumentationsDefect(memseg())], seed=0)(image=image, mask=np.zeros((H, W), np.uint8))
    assert out["image"].shape == image.shape and out["image"].dtype == image.dtype
    assert out["mask"].shape == (H, W) and out["mask"].dtype == np.uint8
    assert set(np.unique(out["mask"])) == {0, 1}
    moved = changed(image, out["image"])
    assert moved.any()
    assert not (moved & (out["mask"] == 0)).any()
    if dtype == np.float32:
        assert 0 <= out["image"].min() and out["image"].max() <= 1


def test_grayscale_hw_image_keeps_its_shape_and_gets_a_defect():
    image = photo()[..., 0].copy()
    out = A.Compose([AlbumentationsDefect(memseg())], seed=1)(image=image, mask=np.zeros((H, W), np.uint8))
    assert out["image"].shape == (H, W) and out["image"].dtype == np.uint8
    moved = changed(image, out["image"])
    assert moved.any() and not (moved & (out["mask"] == 0)).any()


def test_flip_after_the_adapter_moves_image_and_mask_together():
    image, empty = photo(), np.zeros((H, W), np.uint8)
    alone = A.Compose([AlbumentationsDefect(memseg())], seed=3)(image=image, mask=empty)
    flipped = A.Compose([AlbumentationsDefect(memseg()), A.HorizontalFlip(p=1)], seed=3)(image=image, mask=empty)
    assert alone["mask"].any()
    np.testing.assert_array_equal(flipped["image"], alone["image"][:, ::-1])
    np.testing.assert_array_equal(flipped["mask"], alone["mask"][:, ::-1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_square_on_flat_image_coincides_with_mask_after_flip_transpose_affine_and_crop(seed):
    image = np.zeros((H, W, 3), np.uint8)
    pipeline = A.Compose([
        AlbumentationsDefect(SquareDefect(size=8)),
        A.HorizontalFlip(p=1),
        A.Transpose(p=1),
        A.Affine(rotate=(-15, 15), translate_px=(-2, 2), interpolation=cv2.INTER_NEAREST,
                 mask_interpolation=cv2.INTER_NEAREST, fill=0, fill_mask=0, p=1),
        A.RandomCrop(36, 28),
    ], seed=seed)
    out = pipeline(image=image, mask=np.zeros((H, W), np.uint8))
    assert out["image"].shape == (36, 28, 3) and out["mask"].shape == (36, 28)
    assert out["mask"].any()
    np.testing.assert_array_equal(out["image"].any(-1), out["mask"] == 1)


def test_defect_is_ored_into_an_existing_mask_of_any_dtype():
    image = photo()
    existing = np.zeros((H, W), bool)
    existing[:, :5] = True
    alone = A.Compose([AlbumentationsDefect(memseg())], seed=4)(image=image, mask=np.zeros((H, W), bool))
    both = A.Compose([AlbumentationsDefect(memseg())], seed=4)(image=image, mask=existing)
    assert both["mask"].dtype == bool
    assert (alone["mask"] & ~existing).any()
    np.testing.assert_array_equal(both["mask"], alone["mask"] | existing)
    wide = A.Compose([AlbumentationsDefect(memseg(), mask_value=255)], seed=4)(
        image=image, mask=existing.astype(np.uint8) * 255)
    np.testing.assert_array_equal(wide["mask"], (alone["mask"] | existing).astype(np.uint8) * 255)


def test_masks_get_the_defect_appended_and_keep_their_own():
    image = photo()
    first = np.zeros((H, W), np.uint8)
    first[:3] = 1
    second = np.zeros((H, W), np.uint8)
    second[-3:] = 1
    out = A.Compose([AlbumentationsDefect(memseg())], seed=5)(image=image, mask=np.zeros((H, W), np.uint8),
                                                                masks=[first, second])
    assert isinstance(out["masks"], list) and len(out["masks"]) == 3
    np.testing.assert_array_equal(out["masks"][0], first)
    np.testing.assert_array_equal(out["masks"][1], second)
    np.testing.assert_array_equal(out["masks"][2], out["mask"])
    assert out["mask"].any()
    empty = A.Compose([AlbumentationsDefect(memseg())], seed=5)(image=image, masks=[])
    assert len(empty["masks"]) == 1
    np.testing.assert_array_equal(empty["masks"][0], out["mask"])


@pytest.mark.parametrize("label", [0, np.int64(0), np.zeros(1, np.int64), torch.zeros((), dtype=torch.long)])
def test_label_key_sets_the_label_to_one_in_its_own_type(label):
    out = A.Compose([AlbumentationsDefect(memseg(), label_key="label")], seed=0, strict=True)(
        image=photo(), label=label)
    assert type(out["label"]) is type(label)
    assert int(np.asarray(out["label"]).sum()) == 1


def test_label_key_must_be_passed():
    with pytest.raises(ValueError, match="label"):
        A.Compose([AlbumentationsDefect(memseg(), label_key="label")])(image=photo())


def test_p0_leaves_image_mask_masks_and_label_untouched():
    image, mask = photo(), np.zeros((H, W), np.uint8)
    out = A.Compose([AlbumentationsDefect(memseg(), p=0, label_key="label")], seed=0)(
        image=image, mask=mask, masks=[mask], label=0)
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["mask"], mask)
    assert len(out["masks"]) == 1 and out["label"] == 0


def test_compose_seed_alone_decides_the_bytes():
    image, mask = photo(), np.zeros((H, W), np.uint8)

    def run(compose_seed: int, augmenter_seed: int) -> list[np.ndarray]:
        pipeline = A.Compose([AlbumentationsDefect(memseg(augmenter_seed)), A.HorizontalFlip(p=0.5)],
                             seed=compose_seed)
        return [pipeline(image=image, mask=mask)["image"] for _ in range(3)]

    first, again = run(7, augmenter_seed=1), run(7, augmenter_seed=2)
    for a, b in zip(first, again):
        assert a.tobytes() == b.tobytes()
    assert any(a.tobytes() != b.tobytes() for a, b in zip(first, run(8, augmenter_seed=1)))
    assert first[0].tobytes() != first[1].tobytes()  # each call draws a new seed


def test_replay_compose_replays_the_defect():
    image = photo()
    pipeline = A.ReplayCompose([AlbumentationsDefect(memseg())])
    first = pipeline(image=image, mask=np.zeros((H, W), np.uint8))
    again = A.ReplayCompose.replay(first["replay"], image=image, mask=np.zeros((H, W), np.uint8))
    assert changed(image, first["image"]).any()
    np.testing.assert_array_equal(again["image"], first["image"])
    np.testing.assert_array_equal(again["mask"], first["mask"])


def test_replaced_image_replaces_the_mask_and_refuses_other_masks():
    image, mask = photo(), np.ones((H, W), np.uint8)
    out = A.Compose([AlbumentationsDefect(Replacer())])(image=image, mask=mask)
    assert (out["image"] == 64).all()
    assert out["mask"].sum() == 16 and out["mask"][:4, :4].all()
    with pytest.raises(ValueError, match="masks"):
        A.Compose([AlbumentationsDefect(Replacer())])(image=image, masks=[mask])


def test_refuses_an_augmenter_with_its_own_probability():
    with pytest.raises(ValueError, match="p=1"):
        AlbumentationsDefect(create("memseg", p=0.5))
    with pytest.raises(TypeError, match="Augmenter or a registry name"):
        AlbumentationsDefect(A.HorizontalFlip())


def test_a_registry_name_builds_the_augmenter_and_bad_images_say_what_to_give():
    by_name = A.Compose([AlbumentationsDefect("memseg")], seed=3)(image=photo())
    assert by_name["image"].shape == photo().shape and (by_name["image"] != photo()).any()
    with pytest.raises(ValueError, match=r"1 or 3 channels, got shape \(32, 40, 4\); drop an alpha channel"):
        A.Compose([AlbumentationsDefect("memseg")])(image=np.zeros((32, 40, 4), np.uint8))
    with pytest.raises(TypeError, match=r"uint8 \(0-255\) or float \(0-1\) images, got uint16; e.g. \(image / "
                                        r"65535\)"):
        A.Compose([AlbumentationsDefect("memseg")])(image=np.zeros((32, 40, 3), np.uint16))


def test_missing_albumentations_names_the_extra(monkeypatch):
    with pytest.raises(ImportError, match=r'pip install "inout-aug\[albumentations\]"'):
        import_without(monkeypatch, "albumentations", "inout_aug.integrations.albumentations")


class _Defects(Dataset):
    """The same image each time, through one pipeline: only the defect varies."""

    def __init__(self):
        self.pipeline = A.Compose([AlbumentationsDefect(memseg())], seed=0)
        self.image = photo()

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.pipeline(image=self.image, mask=np.zeros((H, W), np.uint8))["mask"]


def test_dataloader_workers_make_different_defects_and_a_seeded_loader_repeats_them():
    def masks(seed: int) -> torch.Tensor:
        loader = DataLoader(_Defects(), batch_size=None, num_workers=2, multiprocessing_context="fork",
                            generator=torch.Generator().manual_seed(seed))
        return torch.stack([torch.as_tensor(m) for m in loader])

    first = masks(0)
    assert not torch.equal(first[0], first[1])  # the first sample of worker 0 and of worker 1
    assert torch.equal(first, masks(0))
