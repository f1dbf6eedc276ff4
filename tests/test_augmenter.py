"""The Augmenter base class: sample structures, types, masks, labels, p, seeds, workers, errors."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from helpers import SquareDefect, gradient_image
from inout_aug import Outcome, create
from inout_aug.core.augmenter import Made


def test_bare_tensor_keeps_type_dtype_and_shape():
    for dtype in (torch.uint8, torch.float32, torch.float64):
        image = gradient_image(dtype=dtype)
        out = SquareDefect(seed=0)(image)
        assert type(out) is torch.Tensor and out.dtype == dtype and out.shape == image.shape
        assert not torch.equal(out, image)


def test_tv_image_and_batch_keep_their_types():
    image = tv_tensors.Image(gradient_image())
    out = SquareDefect(seed=0)(image)
    assert isinstance(out, tv_tensors.Image) and out.shape == image.shape
    batch = tv_tensors.Image(torch.stack([gradient_image()] * 5))
    out = SquareDefect(seed=0)(batch)
    assert isinstance(out, tv_tensors.Image) and out.shape == (5, 3, 32, 40)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_pil_in_pil_out(mode):
    image = PIL.Image.new(mode, (40, 32), color=0 if mode == "L" else (0, 0, 0))
    out, mask, label = SquareDefect(seed=1)(image, tv_tensors.Mask(torch.zeros(32, 40, dtype=torch.uint8)), 0)
    assert isinstance(out, PIL.Image.Image) and out.mode == mode and out.size == (40, 32)
    assert label == 1 and mask.sum() == 16


def test_pixels_outside_the_mask_are_bit_exact():
    for dtype in (torch.uint8, torch.float32):
        image = gradient_image(dtype=dtype)
        sample = SquareDefect(seed=3)({"image": tv_tensors.Image(image), "label": 0})
        outside = ~sample["mask"].bool()
        assert torch.equal(sample["image"][:, outside], image[:, outside])
        assert not torch.equal(sample["image"][:, ~outside], image[:, ~outside])


def test_dict_sample_gets_binary_mask_and_label_and_keeps_other_keys():
    sample = {"image": tv_tensors.Image(gradient_image()), "label": 0, "path": "a.png"}
    out = SquareDefect(seed=0)(sample)
    assert out["path"] == "a.png" and out["label"] == 1 and isinstance(out["label"], int)
    assert isinstance(out["mask"], tv_tensors.Mask) and out["mask"].shape == (32, 40)
    assert out["mask"].dtype == torch.uint8 and set(out["mask"].unique().tolist()) == {0, 1}
    assert out["mask"].sum() == 16
    assert sample["label"] == 0 and "mask" not in sample, "the input sample must not be mutated"


def test_existing_mask_is_ored_and_keeps_its_dtype_and_shape():
    old = torch.zeros(1, 32, 40, dtype=torch.bool)
    old[0, 0, 0] = True
    image, mask, label = SquareDefect(seed=0)(gradient_image(), tv_tensors.Mask(old), torch.tensor(0))
    assert mask.dtype == torch.bool and mask.shape == (1, 32, 40)
    assert mask[0, 0, 0] and mask.sum() in (16, 17)
    assert isinstance(label, torch.Tensor) and label.item() == 1


def test_tuple_structures():
    image = gradient_image()
    out_image, label = SquareDefect(seed=0)((image, 0))
    assert label == 1 and out_image.shape == image.shape
    out_image, target = SquareDefect(seed=0)((image, {"label": False, "boxes": "kept"}))
    assert target["label"] is True and target["boxes"] == "kept" and target["mask"].sum() == 16
    out_image, mask = SquareDefect(seed=0)(image, tv_tensors.Mask(torch.zeros(32, 40, dtype=torch.uint8)))
    assert mask.sum() == 16
    as_list = SquareDefect(seed=0)([image, 0])
    assert isinstance(as_list, list) and as_list[1] == 1


def test_batch_has_per_sample_parameters_and_label_tensor():
    batch = torch.stack([gradient_image()] * 8)
    out = SquareDefect(seed=0)({"image": batch, "label": torch.zeros(8, dtype=torch.long)})
    assert out["mask"].shape == (8, 1, 32, 40) and out["label"].tolist() == [1] * 8
    positions = {tuple(m[0].nonzero()[0].tolist()) for m in out["mask"]}
    assert len(positions) > 1, "every batch element must draw its own parameters"


def test_p_zero_returns_input_and_p_half_is_about_half():
    image = gradient_image()
    out = SquareDefect(p=0.0, seed=0)({"image": image, "label": 0})
    assert torch.equal(out["image"], image) and out["label"] == 0 and out["mask"].sum() == 0
    result = SquareDefect(p=0.5, seed=0).augment(torch.stack([image] * 400))
    assert 160 < int(result.defect.sum()) < 240
    untouched = ~result.defect
    assert torch.equal(result.image[untouched], torch.stack([image] * int(untouched.sum())))


def test_empty_defect_mask_leaves_sample_untouched():
    image = gradient_image()
    out = SquareDefect(seed=0, empty=True)({"image": image, "label": 0})
    assert torch.equal(out["image"], image) and out["label"] == 0 and out["mask"].sum() == 0


def test_same_seed_same_bytes_other_seed_other_bytes():
    image = gradient_image()
    a = [SquareDefect(seed=5)(image) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    gen = torch.Generator().manual_seed(5)
    assert torch.equal(SquareDefect(generator=gen)(image), a[0])
    assert not torch.equal(SquareDefect(seed=6)(image), a[0])


def test_augment_reports_params_per_sample():
    result = SquareDefect(seed=0, p=0.5).augment(torch.stack([gradient_image()] * 6))
    for made, params in zip(result.defect.tolist(), result.params):
        assert (set(params) == {"top", "left", "level"}) == made
        if made:
            assert 0 <= params["level"] <= 1 and isinstance(params["top"], int)


def test_composes_with_geometric_transform_moving_the_mask():
    image = tv_tensors.Image(gradient_image())
    plain = SquareDefect(seed=7)({"image": image, "label": 0})
    flipped = v2.Compose([SquareDefect(seed=7), v2.RandomHorizontalFlip(p=1.0)])({"image": image, "label": 0})
    assert torch.equal(flipped["mask"], plain["mask"].flip(-1))
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    assert flipped["label"] == 1


class _Normals(Dataset):
    def __init__(self, augmenter):
        self.augmenter = augmenter

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return self.augmenter({"image": tv_tensors.Image(gradient_image()), "label": 0})


def _epoch(dataset, seed):
    loader = DataLoader(dataset, batch_size=None, num_workers=2, generator=torch.Generator().manual_seed(seed))
    return [tuple(s["mask"].nonzero()[0].tolist()) + (round(float(s["image"][0, 0, 0]), 4),) for s in loader]


def test_dataloader_workers_differ_and_a_seed_reproduces_the_epoch():
    dataset = _Normals(SquareDefect(seed=0))
    first = _epoch(dataset, seed=1)
    assert len(set(first)) == len(first), "two workers (or two samples) repeated a defect"
    assert _epoch(dataset, seed=1) == first
    assert _epoch(dataset, seed=2) != first


@pytest.mark.parametrize(
    ("sample", "error", "text"),
    [
        (gradient_image().int(), TypeError, "dtype torch.int32 is not supported"),
        (torch.zeros(32, 40, dtype=torch.uint8), ValueError, "must be CHW or BCHW"),
        (torch.zeros(32, 40, 3, dtype=torch.uint8), ValueError, "1 (grey) or 3 (RGB) channels in CHW order, got "
                                                                 "shape (32, 40, 3);"),
        (torch.zeros(2, 4, 8, 8), ValueError, "1 (grey) or 3 (RGB) channels in CHW order, got shape (2, 4, 8, 8);"),
        (torch.zeros(3, 0, 8), ValueError, "image is empty: shape (3, 0, 8)"),
        ((gradient_image(), 0, "a.png"), TypeError, "a 3-tuple sample is (image, mask, label), but item 2 is int, "
                                                    "not a mask"),
        (gradient_image(dtype=torch.float32) * 255, ValueError, "must lie in [0, 1]"),
        ((gradient_image(), tv_tensors.Mask(torch.zeros(30, 40)), 0), ValueError, "does not match image size"),
        ((gradient_image(), torch.full((32, 40), 255, dtype=torch.uint8), 0), ValueError, "must be binary"),
        ({"img": gradient_image()}, TypeError, "needs an 'image' key"),
        ((gradient_image(), 0, 0, 0), TypeError, "got 4 items"),
        (PIL.Image.new("RGBA", (4, 4)), TypeError, "mode 'RGBA' is not supported"),
        ("not an image", TypeError, "got str"),
    ],
)
def test_bad_input_gives_a_clear_error(sample, error, text):
    with pytest.raises(error) as info:
        SquareDefect(seed=0)(sample)
    assert text in str(info.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="p must be a probability"):
        SquareDefect(p=1.5)
    with pytest.raises(ValueError, match="either seed or generator"):
        SquareDefect(seed=1, generator=torch.Generator())


@pytest.mark.parametrize(
    ("sample", "error", "text"),
    [
        (torch.full((3, 8, 8), float("nan")), ValueError, "must lie in [0, 1]"),
        ((gradient_image(), torch.zeros(32, 40, dtype=torch.uint8)), TypeError, "must be a tv_tensors.Mask"),
        ({"image": torch.stack([gradient_image()] * 2), "label": 0}, TypeError, "tensor of shape (2,)"),
    ],
)
def test_more_bad_input(sample, error, text):
    augmenter = SquareDefect(seed=0)
    state = augmenter.generator.get_state()
    with pytest.raises(error) as info:
        augmenter(sample)
    assert text in str(info.value)
    assert torch.equal(augmenter.generator.get_state(), state), "nothing may be drawn for a rejected sample"


def test_numpy_labels_are_accepted():
    out = SquareDefect(seed=0)({"image": gradient_image(), "label": np.int64(0)})
    assert out["label"] == 1 and isinstance(out["label"], np.int64)


def test_no_sample_and_bad_constructor_arguments():
    with pytest.raises(TypeError, match="needs a sample"):
        SquareDefect(seed=0)()
    with pytest.raises(TypeError, match="must be a torch.Generator"):
        SquareDefect(generator=1)
    with pytest.raises(TypeError, match="seed must be an integer, got float 1.5"):
        SquareDefect(seed=1.5)
    for seed in (2**64, -(2**63) - 1):
        with pytest.raises(ValueError, match=r"seed must be an integer from -2\*\*63 to 2\*\*64 - 1 .*got "):
            SquareDefect(seed=seed)
    with pytest.raises(ValueError, match="seed must be an integer from"):
        SquareDefect(seed=0).reseed(2**70)
    assert SquareDefect(seed=2**64 - 1).generator.initial_seed() == 2**64 - 1  # the ends of the range are taken
    assert SquareDefect(seed=-(2**63)).generator.initial_seed() == 2**63


def test_a_dict_sample_keeps_its_other_keys():
    out = SquareDefect(seed=0)({"image": gradient_image(), "label": 0, "path": "a.png"})
    assert out["path"] == "a.png" and out["label"] == 1 and out["mask"].any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_other_float_dtypes_keep_outside_pixels(dtype):
    image = gradient_image(h=256, w=256, dtype=dtype)  # large enough for a float16 sum to overflow
    out = SquareDefect(seed=2)({"image": image, "label": 0})
    outside = ~out["mask"].bool()
    assert out["image"].dtype == dtype and torch.equal(out["image"][:, outside], image[:, outside])


class _Broken(SquareDefect):
    def __init__(self, fault, **kwargs):
        super().__init__(**kwargs)
        self.fault = fault

    def transform(self, image, params):
        made, mask = super().transform(image, params)
        if self.fault == "outcome_disagrees":
            return Made(made, mask, torch.zeros(len(image), dtype=torch.int8))
        if self.fault == "returns_input":
            return image, mask
        if self.fault == "uint8_mask":
            return made, mask.to(torch.uint8)
        if self.fault == "nan":
            return made.fill_(float("nan")), mask
        return made[:, :, :-1], mask


def test_transform_that_returns_its_input_leaves_the_caller_tensor_alone():
    image = gradient_image(dtype=torch.float32)
    before = image.clone()
    out = _Broken("returns_input", seed=0)(image)
    assert torch.equal(out, before) and torch.equal(image, before)


@pytest.mark.parametrize(("fault", "text"), [("uint8_mask", "bool mask"), ("nan", "NaN or infinite"),
                                             ("shape", "an image of shape"),
                                             ("outcome_disagrees", "mask that disagrees with its outcome")])
def test_transform_contract_violations_name_the_augmenter(fault, text):
    with pytest.raises(ValueError, match=rf"_Broken\.transform .*{text}"):
        _Broken(fault, seed=0)(gradient_image(dtype=torch.float32))


class _Replacer(SquareDefect):
    """Replaces every chosen image with a flat grey one; odd rows get a weak label (an empty mask)."""

    def transform(self, image, params):
        made, mask = super().transform(image, params)
        mask[1::2] = False
        return Made(made, mask, torch.full((len(image),), Outcome.REPLACED, dtype=torch.int8))


def test_outcome_says_what_happened_to_each_sample():
    image = gradient_image()[None].repeat(64, 1, 1, 1)
    out = SquareDefect(p=0.5, seed=0).augment(image)
    assert out.outcome.dtype == torch.int8 and set(out.outcome.tolist()) == {Outcome.UNTOUCHED, Outcome.DEFECT}
    assert torch.equal(out.defect, out.outcome == Outcome.DEFECT) and not out.replaced.any()
    assert not out.mask[~out.defect].any() and torch.equal(out.image[~out.defect], image[~out.defect])


def test_a_replaced_image_keeps_only_its_own_mask_and_a_weak_label_is_still_label_1():
    image = gradient_image()[None].repeat(4, 1, 1, 1)
    old = torch.ones(4, 32, 40, dtype=torch.bool)
    out = _Replacer(seed=0).augment(image, old)
    assert out.replaced.all() and out.defect.all()
    assert out.mask[0::2].flatten(1).sum(1).tolist() == [16, 16] and not out.mask[1::2].any()
    assert all(len(torch.unique(row)) == 1 for row in out.image)  # the whole image, not pasted inside a mask
    labels = _Replacer(seed=0)({"image": image, "label": torch.zeros(4, dtype=torch.long)})["label"]
    assert labels.tolist() == [1, 1, 1, 1]


def test_spatial_annotations_pass_through_a_painted_defect_as_the_same_objects():
    boxes = tv_tensors.BoundingBoxes([[1, 1, 5, 5]], format="XYXY", canvas_size=(32, 40))
    sample = {"image": tv_tensors.Image(gradient_image()), "boxes": boxes}
    out = SquareDefect(seed=0)(sample)
    assert out["boxes"] is boxes and out["label"] == 1


def test_torch_manual_seed_reproduces_augmenters_built_without_a_seed():
    image = gradient_image()[None].repeat(4, 1, 1, 1)
    torch.manual_seed(0)
    first = [SquareDefect().augment(image).image, create("memseg").augment(image).image]
    torch.manual_seed(0)
    again = [SquareDefect().augment(image).image, create("memseg").augment(image).image]
    torch.manual_seed(1)
    other = SquareDefect().augment(image).image
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and not torch.equal(other, first[0])


def test_pickle_and_deepcopy_continue_the_same_stream():
    import copy
    import pickle

    image = gradient_image()[None].repeat(4, 1, 1, 1)
    augmenter = create("memseg", seed=3)
    augmenter.augment(image)
    for clone in (pickle.loads(pickle.dumps(augmenter)), copy.deepcopy(augmenter)):
        assert torch.equal(clone.augment(image).image, copy.deepcopy(augmenter).augment(image).image)
    assert torch.equal(pickle.loads(pickle.dumps(augmenter)).augment(image).image, augmenter.augment(image).image)


@pytest.mark.parametrize(
    ("sample", "text"),
    [
        ((gradient_image(), tv_tensors.BoundingBoxes([[1, 1, 5, 5]], format="XYXY", canvas_size=(32, 40))),
         "BoundingBoxes as item 2 of a 2-tuple sample is not supported"),
        ((gradient_image(), tv_tensors.BoundingBoxes([[1, 1, 5, 5]], format="XYXY", canvas_size=(32, 40)),
          torch.tensor([1])), "BoundingBoxes as item 2 of a 3-tuple sample is not supported"),
        (gradient_image(dtype=torch.float32).requires_grad_(), "image requires grad"),
        (tv_tensors.Video(torch.stack([gradient_image()] * 3)), "tv_tensors.Video is not supported"),
    ],
)
def test_unsupported_samples_are_refused_with_what_to_do(sample, text):
    with pytest.raises(TypeError) as info:
        SquareDefect(seed=0)(sample)
    assert text in str(info.value)
