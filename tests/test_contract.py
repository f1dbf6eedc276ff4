"""check_augmenter: every built-in augmenter and the toy one keep the contract; broken augmenters fail it."""

from __future__ import annotations

import copy
import json
from functools import partial

import pytest
import torch

from helpers import SquareDefect, gradient_image
from inout_aug import DiffusionDefect, InOutMix, MemSegRegion, Outcome
from inout_aug.core.io import write_png
from inout_aug.testing import ContractViolation, check_augmenter
from inout_aug.tools.generate import GenerationJob

PAINTED = {Outcome.UNTOUCHED, Outcome.DEFECT}


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """A bank with masks (made by `generate` with memseg: any generation folder is a bank)."""
    root = tmp_path_factory.mktemp("contract")
    for i in range(3):
        write_png(gradient_image(1, 40, 60).roll(9 * i, -1), root / "normals" / f"n{i}.png")
    with GenerationJob("memseg", root / "normals", root / "bank", n=6, seed=1) as job:
        for index in job.todo:
            job.make(index)
    return str(root / "bank")


@pytest.fixture(scope="module")
def weak_bank(tmp_path_factory):
    """A txt2img-style bank: whole images without masks (weak labels)."""
    root = tmp_path_factory.mktemp("weak")
    lines = []
    for i in range(4):
        write_png(torch.full((3, 32, 32), 40 * i, dtype=torch.uint8), root / "images" / f"{i:06d}.png")
        lines.append(json.dumps({"index": i, "image": f"images/{i:06d}.png", "mask": None, "drawn": {}}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return str(root)


def test_memseg_keeps_the_contract():
    assert check_augmenter(MemSegRegion).outcomes == PAINTED


def test_in_out_mix_with_two_memseg_sides_keeps_the_contract():
    mix = partial(InOutMix, in_augmenter="memseg", in_params={"texture_prob": 0.0, "perlin_max_exponent": 3})
    assert check_augmenter(mix).outcomes == PAINTED


def test_diffusion_from_a_bank_keeps_the_contract(bank):
    report = check_augmenter(partial(DiffusionDefect, bank=bank))
    assert report.outcomes == {Outcome.UNTOUCHED, Outcome.REPLACED} and "workers" in report.checks


def test_in_out_mix_with_a_bank_replaces_some_images_and_keeps_the_contract(bank):
    report = check_augmenter(partial(InOutMix, bank=bank), start_methods=("fork",))
    assert report.outcomes == set(Outcome)


def test_weak_label_bank_keeps_the_contract(weak_bank):
    report = check_augmenter(partial(DiffusionDefect, bank=weak_bank, fit="crop"), start_methods=("fork",))
    assert Outcome.REPLACED in report.outcomes


def test_toy_augmenter_keeps_the_contract():
    report = check_augmenter(SquareDefect)
    assert report.augmenter == "SquareDefect" and "workers" in report.checks


class _ClaimsToKeepOutside(SquareDefect):
    """Repaints the whole image but says it keeps the pixels outside its mask."""

    keeps_outside = True


class _GlobalRandom(SquareDefect):
    """Draws its square's place from torch's global generator instead of self.generator."""

    def make_params(self, image):
        params = super().make_params(image)
        params["top"] = torch.randint(0, image.shape[2] - self.size + 1, (len(image),))
        return params


class _CopiesItsInput(SquareDefect):
    """Deep-copies every sample before augmenting it: the dict's other items are not passed through."""

    def forward(self, *inputs):
        return super().forward(*copy.deepcopy(inputs))


class _SkipsWorkerReseed(SquareDefect):
    """Never re-seeds inside DataLoader workers: every worker repeats the same defects."""

    def _reseed_for_worker(self):
        pass


@pytest.mark.parametrize(("broken", "text"), [
    (_ClaimsToKeepOutside, r"\[pixels\]: sample \d \(DEFECT\) changed pixels outside its mask \(keeps_outside=True\)"),
    (_GlobalRandom, r"\[seeds\]: two instances built with seed=11 gave different bytes"),
    (_CopiesItsInput, r"\[forms\]: .* item 'id' was not passed through as the same object"),
    (_SkipsWorkerReseed, r"\[workers\]: the 2 DataLoader workers \(fork\) produced the same defects"),
])
def test_broken_augmenters_fail_naming_the_problem(broken, text):
    with pytest.raises(ContractViolation, match=rf"^{broken.__name__} breaks the augmenter contract {text}"):
        check_augmenter(broken, start_methods=("fork",))


def test_the_check_needs_a_factory_not_an_instance():
    with pytest.raises(TypeError, match="needs a factory"):
        check_augmenter(SquareDefect(seed=0))


class _Fragile(SquareDefect):
    """Refuses every sample."""

    def forward(self, *inputs):
        raise RuntimeError("no samples here")


def test_an_augmenter_that_raises_fails_the_check_naming_it():
    with pytest.raises(ContractViolation, match=r"^_Fragile .* \[forms\]: raised RuntimeError: no samples here"):
        check_augmenter(_Fragile, start_methods=())


def test_a_factory_must_build_augmenters():
    with pytest.raises(ContractViolation, match="the factory returned a Module, not an inout_aug.Augmenter"):
        check_augmenter(lambda **kwargs: torch.nn.Module())
