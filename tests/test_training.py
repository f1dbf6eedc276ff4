"""Training sets (zero/few/full-shot), collation, seeded multi-worker loading and the batched path."""

from __future__ import annotations

import json

import PIL.Image
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from inout_aug.augmenters.memseg import MemSegRegion
from inout_aug.core.augmenter import mix_seed
from inout_aug.data import TrainingSet, augment_batch, collate, make_loader, open_dataset


def make_folder(root, size=(24, 32)):
    """A folder layout: 12 normal images, 3 scratches and 3 dents with masks (grey, ``size`` = (H, W))."""
    g = torch.Generator().manual_seed(0)

    def save(tensor, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(tensor.numpy()).save(path)

    for i in range(12):
        save(torch.randint(60, 200, size, generator=g, dtype=torch.uint8), root / "normal" / f"n{i:02d}.png")
    for kind in ("scratch", "dent"):
        for i in range(3):
            image = torch.randint(60, 200, size, generator=g, dtype=torch.uint8)
            mask = torch.zeros(size, dtype=torch.uint8)
            mask[4 + i: 10 + i, 3:20] = 255
            save(image, root / "defect" / kind / f"{kind}{i}.png")
            save(mask, root / "masks" / kind / f"{kind}{i}.png")
    return open_dataset(root, split="all")


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path)


def test_zero_shot_is_normals_plus_as_many_augmented_positives(folder):
    training = TrainingSet(folder, "zero", augmenter=MemSegRegion(seed=0))
    assert training.counts() == {"normal": 12, "real": 0, "copy": 0, "augmented": 12}
    for sample in training:
        assert sample["image"].dtype == torch.uint8 and sample["mask"].shape == sample["image"].shape[-2:]
        if sample["kind"] == "normal":
            assert sample["label"] == 0 and not sample["mask"].any()
        else:
            assert sample["label"] == 1 and sample["mask"].any()


def test_few_shot_picks_real_defects_with_the_seed_across_types_and_triples_them(folder):
    training = TrainingSet(folder, "few", shots=2, augmenter=MemSegRegion(seed=0), seed=4)
    assert len(training.real) == 2 and {r.defect_type for r in training.real} == {"scratch", "dent"}
    assert training.counts() == {"normal": 12, "real": 6, "copy": 0, "augmented": 6}
    again = TrainingSet(folder, "few", shots=2, seed=4).real
    assert again == training.real
    assert any(TrainingSet(folder, "few", shots=2, seed=s).real != training.real for s in range(5, 12))
    real = [training[i] for i, item in enumerate(training.items) if item.kind == "real"]
    plain, horizontal, vertical = real[:3]
    assert torch.equal(horizontal["image"], plain["image"].flip(-1))
    assert torch.equal(vertical["mask"], plain["mask"].flip(-2))
    assert all(s["label"] == 1 and s["mask"].any() for s in real)


def test_full_shot_and_the_positive_fraction(folder):
    full = TrainingSet(folder, "full", augmenter=MemSegRegion(seed=0))
    assert full.counts() == {"normal": 12, "real": 18, "copy": 0, "augmented": 0}  # more positives than normals
    quarter = TrainingSet(folder, "zero", augmenter=MemSegRegion(seed=0), positive_fraction=0.25)
    assert quarter.counts()["augmented"] == 4
    baseline = TrainingSet(folder, "few", shots=3, flip_real=False)
    assert baseline.counts() == {"normal": 12, "real": 3, "copy": 0, "augmented": 0}
    assert TrainingSet(folder, "full", oversample=True).counts() == full.counts()  # nothing left to fill


def symmetries(x):
    """The 8 flips and 90° rotations of the last two dims, built here from rot90 and one flip."""
    turned = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
    return turned + [t.flip(-1) for t in turned]


def which(x, original):
    """The indices of :func:`symmetries` of ``original`` equal to ``x``, byte for byte."""
    return {i for i, s in enumerate(symmetries(original)) if s.shape == x.shape and torch.equal(s, x)}


def copies(training, number=0):
    training.set_epoch(number)
    return [(training[i], training.dataset.read(item.record)) for i, item in enumerate(training.items)
            if item.kind == "copy"]


@pytest.mark.parametrize("size", [(24, 32), (32, 32)])
def test_the_oversampled_baseline_copies_real_defects_to_the_augmented_sets_balance(tmp_path, size):
    folder = make_folder(tmp_path, size)
    oversampled = TrainingSet(folder, "few", shots=2, seed=4, oversample=True, online=False)
    augmented = TrainingSet(folder, "few", shots=2, seed=4, augmenter=MemSegRegion(seed=0), online=False)
    assert oversampled.counts() == {"normal": 12, "real": 6, "copy": 6, "augmented": 0}
    assert augmented.counts()["augmented"] == 6 and len(oversampled) == len(augmented)
    assert len(make_loader(oversampled, 5)) == len(make_loader(augmented, 5)) == 5  # the same steps per epoch
    assert {item.record for item in oversampled.items if item.kind == "copy"} == set(oversampled.real)
    used = set()
    for epoch_number in range(4):
        for sample, original in copies(oversampled, epoch_number):
            found = which(sample["image"], original["image"]) & which(sample["mask"], original["mask"])
            assert found and sample["label"] == 1 and sample["kind"] == "copy" and not sample["augment"]
            assert isinstance(sample["image"], tv_tensors.Image) and isinstance(sample["mask"], tv_tensors.Mask)
            used |= found
    # A square image takes all 8 transforms (rotations swap no sides); any other only the 4 that keep its shape.
    assert (len(used) > 4) == (size[0] == size[1]) and sample["image"].shape[-2:] == size
    again = TrainingSet(folder, "few", shots=2, seed=4, oversample=True)
    assert all(torch.equal(a["image"], b["image"]) for (a, _), (b, _) in zip(copies(oversampled, 2), copies(again, 2)))
    fresh = [torch.equal(a["image"], b["image"]) for (a, _), (b, _) in zip(copies(again, 0), copies(again, 1))]
    assert not all(fresh)  # like an augmented slot, a copy slot is drawn anew each epoch
    one_process = epoch(oversampled, 7, 1, workers=0)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(one_process, epoch(oversampled, 7, 1)))


def test_oversampling_needs_real_defects_and_no_augmenter(folder):
    with pytest.raises(ValueError, match="give one of them, not both"):
        TrainingSet(folder, "few", augmenter=MemSegRegion(seed=0), oversample=True)
    with pytest.raises(ValueError, match="zero-shot set has none"):
        TrainingSet(folder, "zero", oversample=True)


def test_the_record_lists_exactly_the_real_files(folder, tmp_path):
    training = TrainingSet(folder, "few", shots=3, augmenter=MemSegRegion(seed=0), seed=1)
    path = training.save_record(tmp_path / "run" / "training_set.json")
    record = json.loads(path.read_text())
    assert [r["image"] for r in record["real_defects"]] == [str(r.image) for r in training.real]
    assert record["counts"] == training.counts() and record["setting"] == "few" and record["shots"] == 3
    assert record["normals"]["count"] == 12 and record["layout"] == "folder"


def test_invalid_setups_are_refused(folder):
    with pytest.raises(ValueError, match="shots <= 6"):
        TrainingSet(folder, "few", shots=7)
    with pytest.raises(ValueError, match="setting must be one of zero, few, full"):
        TrainingSet(folder, "some")
    with pytest.raises(ValueError, match="positive_fraction"):
        TrainingSet(folder, "zero", positive_fraction=1.0)


def resized(folder, **kwargs):
    return TrainingSet(folder, "zero", augmenter=MemSegRegion(seed=0), transform=v2.Resize((16, 16)), **kwargs)


def epoch(dataset, seed, number, workers=2, **kwargs):
    return list(make_loader(dataset, batch_size=4, seed=seed, epoch=number, num_workers=workers, **kwargs))


def test_a_forkserver_epoch_equals_the_fork_epoch(folder):
    fork = epoch(resized(folder), 7, 0, multiprocessing_context="fork")
    forkserver = epoch(resized(folder), 7, 0, multiprocessing_context="forkserver")
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]) and a["path"] == b["path"]
               for a, b in zip(fork, forkserver))


def test_multi_worker_epochs_are_reproducible_and_workers_do_not_repeat(folder):
    first, again = epoch(resized(folder), 7, 0), epoch(resized(folder), 7, 0)
    assert all(torch.equal(a["image"], b["image"]) and a["path"] == b["path"] for a, b in zip(first, again))
    other = epoch(resized(folder), 7, 1)
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(first, other))
    masks = torch.cat([b["mask"][b["kind_is_augmented"]] for b in map(_flag, first)])
    assert len(masks) == 12 and len({m.numpy().tobytes() for m in masks}) == 12  # no two defects alike


def _flag(batch):
    batch["kind_is_augmented"] = torch.tensor([k == "augmented" for k in batch["kind"]])
    return batch


def test_one_process_epochs_do_not_depend_on_what_ran_before(folder):
    dataset = resized(folder)
    first = epoch(dataset, 3, 2, workers=0)
    epoch(dataset, 3, 5, workers=0)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, epoch(dataset, 3, 2, workers=0)))


def deferred(folder):
    return TrainingSet(folder, "zero", augmenter=MemSegRegion(seed=0), online=False, transform=v2.Resize((16, 16)))


def test_the_batched_path_gives_what_the_per_sample_path_gives(folder):
    per_sample = next(iter(make_loader(resized(folder), batch_size=24, shuffle=False)))
    batch = next(iter(make_loader(deferred(folder), batch_size=24, shuffle=False)))
    assert batch["augment"].sum() == 12 and (batch["label"] == 0).all()
    batched = augment_batch(batch, MemSegRegion(seed=1))
    for key in ("image", "mask", "label"):
        assert type(batched[key]) is type(per_sample[key]), key
        assert batched[key].dtype == per_sample[key].dtype and batched[key].shape == per_sample[key].shape, key
    assert torch.equal(batched["label"], per_sample["label"])
    assert (batched["mask"].flatten(1).any(1) == batched["label"].bool()).all()
    normal = ~batch["augment"]
    assert torch.equal(batched["image"][normal], batch["image"][normal])
    assert not batched["augment"].any()


def test_a_loader_with_an_augmenter_gives_what_augment_batch_gives_after_it(folder):
    plain = next(iter(make_loader(deferred(folder), batch_size=24, shuffle=False)))
    augmenter = MemSegRegion(seed=5)
    batch = next(iter(make_loader(deferred(folder), batch_size=24, shuffle=False, augmenter=augmenter)))
    augmenter.reseed(mix_seed(0, "batches", 0))  # the draws make_loader starts the epoch from
    expected = augment_batch(plain, augmenter)
    for key in ("image", "mask", "label", "augment"):
        assert type(batch[key]) is type(expected[key]) and torch.equal(batch[key], expected[key]), key
    assert batch["label"].sum() == 12 and not batch["augment"].any()


def test_a_loader_refuses_an_augmenter_for_a_set_that_augments_its_samples_itself(folder):
    with pytest.raises(ValueError, match=r"augments its samples itself \(online=True\): build it with online=False"):
        make_loader(resized(folder), batch_size=4, augmenter=MemSegRegion(seed=0))


def test_batches_augmented_in_workers_are_reproducible_and_do_not_repeat(folder):
    def epoch_of(seed, context="fork"):
        return list(make_loader(deferred(folder), batch_size=4, seed=seed, num_workers=2,
                                augmenter=MemSegRegion(seed=0), multiprocessing_context=context))

    first, again, forkserver = epoch_of(7), epoch_of(7), epoch_of(7, "forkserver")
    for other in (again, forkserver):
        assert all(torch.equal(a["image"], b["image"]) and a["path"] == b["path"] for a, b in zip(first, other))
    masks = torch.cat([b["mask"][b["label"].bool()] for b in first])
    assert len(masks) == 12 and len({m.numpy().tobytes() for m in masks}) == 12  # no two defects alike
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(first, epoch_of(8)))


def test_collate_keeps_masks_and_labels_and_refuses_mixed_sizes():
    samples = [{"image": tv_tensors.Image(torch.zeros(3, 8, 8, dtype=torch.uint8)),
                "mask": tv_tensors.Mask(torch.ones(8, 8, dtype=torch.bool)), "label": 1, "path": f"p{i}"}
               for i in range(3)]
    batch = collate(samples)
    assert isinstance(batch["image"], tv_tensors.Image) and batch["image"].shape == (3, 3, 8, 8)
    assert isinstance(batch["mask"], tv_tensors.Mask) and batch["mask"].shape == (3, 8, 8)
    assert batch["label"].tolist() == [1, 1, 1] and batch["path"] == ["p0", "p1", "p2"]
    samples[1]["image"] = tv_tensors.Image(torch.zeros(3, 9, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="different shapes.*Resize"):
        collate(samples)
