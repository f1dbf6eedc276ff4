"""The anomalib adapter: PerlinAnomalyGenerator's interface, and DRAEM's real training step running on it."""

from __future__ import annotations

import os

import pytest
import torch
from torchvision import tv_tensors

pytest.importorskip("anomalib")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from anomalib.data import ImageBatch  # noqa: E402
from anomalib.data.utils.generators import PerlinAnomalyGenerator  # noqa: E402
from anomalib.models import Draem, Dsr  # noqa: E402
from anomalib.models.image.glass.torch_model import GlassModel  # noqa: E402

from helpers import SquareDefect  # noqa: E402
from inout_aug import Augmenter, Outcome, create  # noqa: E402
from inout_aug.core.augmenter import Made  # noqa: E402
from inout_aug.integrations.anomalib import AnomalibGenerator  # noqa: E402

BARE = {"pre_processor": False, "post_processor": False, "evaluator": False, "visualizer": False}


class WholeImage(Augmenter):
    """Replaces every image, with no pixel mask (a weak label)."""

    def make_params(self, image):
        return {}

    def transform(self, image, params):
        empty = torch.zeros((len(image), *image.shape[2:]), dtype=torch.bool)
        return Made(1 - image, empty, torch.full((len(image),), Outcome.REPLACED, dtype=torch.int8))


#: Augmenters by name, built from a seed: a toy square and a real one.
BUILD = {"square": lambda seed: SquareDefect(size=16, seed=seed), "memseg": lambda seed: create("memseg", seed=seed)}


@pytest.fixture
def batch():
    """Four 64x64 RGB images in [0, 1], as anomalib's ImageBatch.image holds them."""
    return tv_tensors.Image(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("name", ["square", "memseg"])
@pytest.mark.parametrize("probability", [0.0, 1.0])
@pytest.mark.parametrize("single", [False, True])
def test_outputs_have_perlin_structure_types_shapes_dtypes_and_ranges(batch, name, probability, single):
    img = batch[0] if single else batch
    torch.manual_seed(0)
    expected = PerlinAnomalyGenerator(probability=probability)(img)
    got = AnomalibGenerator(BUILD[name](0), probability=probability)(img)
    assert isinstance(got, tuple) and len(got) == len(expected) == 2
    for ours, theirs in zip(got, expected):
        assert type(ours) is type(theirs) is torch.Tensor
        assert (ours.shape, ours.dtype, ours.device) == (theirs.shape, theirs.dtype, theirs.device)
    for mask in (got[1], expected[1]):
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert 0 <= got[0].min() and got[0].max() <= 1
    if probability == 0:  # a sample left normal: the image as it came and an all-zero mask, in both
        for image, mask in (got, expected):
            assert torch.equal(image, img) and not mask.any()
    else:
        assert got[1].flatten(-3).any(-1).all() and not torch.equal(got[0], img)


@pytest.mark.parametrize("name", ["square", "memseg"])
def test_label_true_exactly_where_mask_non_empty_and_pixels_outside_unchanged(name):
    images = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    image, mask, label, params = AnomalibGenerator(BUILD[name](0), probability=0.5).generate(images)
    assert label.dtype == torch.bool and label.shape == (16,)
    assert 0 < label.sum() < 16  # both kinds present: the probability is applied per sample
    assert torch.equal(label, mask.flatten(1).any(1))
    assert [bool(p) for p in params] == label.tolist()
    outside = (mask == 0).expand_as(images)
    assert torch.equal(image[outside], images[outside])
    assert not torch.equal(image[label], images[label])


def test_single_image_label_is_a_0d_bool(batch):
    _, mask, label, _ = AnomalibGenerator(SquareDefect(seed=0)).generate(batch[0])
    assert label.shape == () and label.dtype == torch.bool and bool(label) == bool(mask.any())


@pytest.mark.parametrize("name", ["square", "memseg"])
def test_same_seed_reproduces_output_and_another_differs(batch, name):
    first, again, other = (AnomalibGenerator(BUILD[name](seed), probability=0.5)(batch) for seed in (3, 3, 4))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_probability_is_the_augmenters_p():
    augmenter = SquareDefect(p=0.3, seed=0)
    assert AnomalibGenerator(augmenter).probability == 0.3
    generator = AnomalibGenerator(augmenter, probability=0.7)
    assert augmenter.p == generator.probability == 0.7
    generator.probability = 0.1
    assert augmenter.p == 0.1
    with pytest.raises(ValueError, match="probability"):
        generator.probability = 1.5


def test_registry_name_with_parameters_builds_the_augmenter():
    generator = AnomalibGenerator("memseg", probability=0.5, seed=7, threshold=0.6)
    assert generator.augmenter.name == "memseg" and generator.augmenter.p == 0.5
    assert generator.augmenter.extra_repr().startswith("p=0.5, seed=7")
    with pytest.raises(TypeError, match="registry name"):
        AnomalibGenerator(SquareDefect(seed=0), seed=1)
    with pytest.raises(TypeError, match="Augmenter"):
        AnomalibGenerator(PerlinAnomalyGenerator())


def test_defect_without_pixel_mask_raises(batch):
    with pytest.raises(ValueError, match="without a pixel mask"):
        AnomalibGenerator(WholeImage(seed=0))(batch)


def test_models_hold_a_perlin_generator_where_the_docs_swap_it(tmp_path):
    draem = Draem(dtd_dir=tmp_path, **BARE)
    glass = GlassModel(input_shape=(64, 64), backbone="resnet18", pre_trained=False, pretrain_embed_dim=64,
                       target_embed_dim=64, discriminator_hidden=32)
    for model, attribute in ((draem, "augmenter"), (Dsr(**BARE), "perlin_generator"), (glass, "augmentor")):
        assert isinstance(getattr(model, attribute), PerlinAnomalyGenerator)
        setattr(model, attribute, AnomalibGenerator(SquareDefect(seed=0)))
        assert isinstance(getattr(model, attribute), AnomalibGenerator)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_draem_training_step_trains_on_the_adapters_images_and_masks(tmp_path, batch):
    torch.manual_seed(0)
    draem = Draem(dtd_dir=tmp_path, **BARE)  # an empty DTD folder: nothing to download
    seen_images, seen_masks = [], []
    draem.model.register_forward_pre_hook(lambda _, args: seen_images.append(args[0].clone()))
    draem.loss.register_forward_pre_hook(lambda _, args: seen_masks.append(args[2].clone()))
    images = ImageBatch(image=batch[:2], gt_label=torch.zeros(2, dtype=torch.bool))
    losses = []
    for probability in (0.0, 1.0):
        draem.augmenter = AnomalibGenerator(create("memseg", seed=0), probability=probability)
        losses.append(draem.training_step(images)["loss"])
    expected = create("memseg", seed=0).augment(images.image.as_subclass(torch.Tensor))  # the augmenter, bare
    assert torch.equal(seen_images[0], images.image) and not seen_masks[0].any()
    assert torch.equal(seen_images[1], expected.image) and not torch.equal(seen_images[1], images.image)
    assert torch.equal(seen_masks[1], expected.mask[:, None].float()) and seen_masks[1].any()
    assert all(torch.isfinite(loss) for loss in losses) and losses[0] != losses[1]
    losses[1].backward()
    grads = [p.grad for p in draem.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
