"""``check_augmenter``: the augmenter contract in executable form, for the tests of built-ins and plugins.

A plugin's test suite calls it with a factory of its augmenter::

    from functools import partial
    from inout_aug.testing import check_augmenter

    def test_contract():
        check_augmenter(partial(MyAugmenter, strength=0.5))

On the first failure it raises a :class:`ContractViolation` (an AssertionError) naming the augmenter class, the
check and what went wrong.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import PIL.Image
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from inout_aug.core.augmenter import Augmented, Augmenter, Outcome

#: Builds a fresh augmenter: called as ``factory(seed=..., p=...)``.
Factory = Callable[..., Augmenter]

_BATCH = 4
#: Seconds a DataLoader waits for a worker's sample before the check fails (spawn workers import torch first).
_WORKER_TIMEOUT_S = 300
_ABSENT = object()  # an item a sample structure does not hold (a bare image has no label)


class ContractViolation(AssertionError):
    """What :func:`check_augmenter` raises: the augmenter class, the check and what broke (an error the augmenter
    itself raised comes wrapped in one, naming the check that made it)."""


@dataclass(frozen=True)
class ContractReport:
    """What :func:`check_augmenter` ran: the checks passed, the DataLoader start methods tried and the outcomes the
    augmenter reported along the way (a part of a check that needs an outcome, e.g. boxes on a replaced image, ran
    only if that outcome came up)."""

    augmenter: str
    checks: tuple[str, ...]
    outcomes: frozenset[Outcome]
    start_methods: tuple[str, ...]


def check_augmenter(factory: Factory, *, channels: Sequence[int] = (1, 3), size: tuple[int, int] = (32, 48),
                    device: str | torch.device = "cpu",
                    start_methods: Sequence[str] = ("fork", "spawn", "forkserver")) -> ContractReport:
    """Check that the augmenters ``factory`` builds keep the augmenter contract; raise ContractViolation if not.

    ``factory(seed=..., p=...)`` must return a fresh augmenter: the class itself, ``functools.partial(Cls,
    **settings)`` or a function (the checks need several instances with chosen seeds, and ``p=0``). The checks
    run on small random images of ``size`` (H, W) with each of ``channels`` (1: grey, 3: RGB) on ``device``:

    * ``pickle``: the augmenter pickles (torchvision's ``check_transform``);
    * ``seeds``: the same seed gives the same bytes, another seed other ones, the stream advances from call to
      call, and ``reseed(s)`` restarts it whatever came before;
    * ``pixels``: ``augment`` keeps the input's dtype, shape and device and leaves the input alone; untouched
      samples come back exactly, a DEFECT sample's pixels outside its mask are unchanged and its mask is the
      defect OR-ed with the input mask, a REPLACED sample's mask is its new one only; parameters are JSON-ready;
    * ``forms``: every accepted sample structure (bare image, ``(image, label)``, ``(image, mask)``, ``(image,
      mask, label)``, ``(image, target_dict)``, dicts; single images, batches and PIL images; uint8 and float32)
      comes back in the same structure, types and dtypes, with a binary ``tv_tensors.Mask`` of the image's size,
      label 1 exactly where ``augment`` reports a defect, the same bytes as ``augment`` and every other item
      passed through as the same object;
    * ``p=0``: everything comes back untouched;
    * ``batch``: a batch of one image repeated gets per-sample defects;
    * ``copies``: a pickled and a deep-copied augmenter continue the original's random stream;
    * ``module``: a torch module that holds the augmenter (as anomalib's and kornia's models do) can be moved and
      switched with ``.to(device)``, ``.float()`` and ``.eval()``, and the augmenter then gives the same bytes;
    * ``geometry``: geometric v2 transforms after the augmenter keep the image, mask and boxes of a dict sample
      aligned; a sample with boxes whose image is replaced raises (``on_replace="error"``) or loses its boxes
      (``"drop"``);
    * ``workers``: in a DataLoader with 2 workers and a seeded generator, under each of ``start_methods`` the
      platform offers, the workers differ on identical images, a second run under the first method reproduces the
      epoch byte for byte and every other method gives the same bytes (an augmenter on a GPU cannot use fork).

    Returns a :class:`ContractReport`.
    """
    return _Contract(factory, channels, size, torch.device(device)).run(start_methods)


class _RepeatedImage(Dataset):
    """``length`` copies of one image as dict samples through ``augmenter`` (module level: spawn pickles it)."""

    def __init__(self, augmenter: Augmenter, image: torch.Tensor, length: int):
        self.augmenter = augmenter
        self.image = image
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        out = self.augmenter({"image": tv_tensors.Image(self.image), "label": 0})
        return out["image"].as_subclass(torch.Tensor), out["mask"].as_subclass(torch.Tensor), get_worker_info().id


class _Contract:
    """The checks of :func:`check_augmenter` for one factory; ``step`` names the check under way in failures."""

    def __init__(self, factory: Factory, channels: Sequence[int], size: tuple[int, int], device: torch.device):
        if not callable(factory) or isinstance(factory, Augmenter):
            raise TypeError("check_augmenter needs a factory that builds fresh augmenters, e.g. the class or "
                            f"functools.partial(Cls, **settings), got {type(factory).__name__}")
        self.factory, self.channels, self.size, self.device = factory, tuple(channels), size, device
        self.name, self.step = repr(factory), "factory"  # until the factory has built one
        self.name = type(self.build(0)).__name__
        self.outcomes: set[Outcome] = set()

    def run(self, start_methods: Sequence[str]) -> ContractReport:
        available = multiprocessing.get_all_start_methods()
        methods = tuple(method for method in start_methods if method in available)
        checks: dict[str, Callable[[], None]] = {
            "pickle": self.check_pickle, "seeds": self.check_seeds, "pixels": self.check_pixels,
            "forms": self.check_forms, "p=0": self.check_p0, "batch": self.check_batch,
            "copies": self.check_copies, "module": self.check_module, "geometry": self.check_geometry,
        }
        if methods:
            checks["workers"] = lambda: self.check_workers(methods)
        for step, check in checks.items():
            self.step = step
            try:
                check()
            except ContractViolation:
                raise
            except Exception as error:  # the augmenter raised: name the check that made it do so
                self.fail(f"raised {type(error).__name__}: {error}", error)
        return ContractReport(self.name, tuple(checks), frozenset(self.outcomes), methods)

    # -- helpers ------------------------------------------------------------------------------------------
    def fail(self, message: str, cause: BaseException | None = None) -> NoReturn:
        raise ContractViolation(f"{self.name} breaks the augmenter contract [{self.step}]: {message}") from cause

    def expect(self, condition: Any, message: str) -> None:
        if not condition:
            self.fail(message)

    def build(self, seed: int, p: float = 1.0) -> Augmenter:
        augmenter = self.factory(seed=seed, p=p)
        self.expect(isinstance(augmenter, Augmenter),
                    f"the factory returned a {type(augmenter).__name__}, not an inout_aug.Augmenter")
        return augmenter

    def images(self, n: int, channels: int, dtype: torch.dtype = torch.uint8, *, seed: int = 0,
               repeat: bool = False) -> torch.Tensor:
        """(n, channels, H, W) random images on the device (one image ``n`` times with ``repeat``)."""
        generator = torch.Generator().manual_seed(seed * 10 + channels)
        image = torch.randint(0, 256, (1 if repeat else n, channels, *self.size), dtype=torch.uint8,
                              generator=generator)
        image = image.expand(n, -1, -1, -1).clone() if repeat else image
        return (image if dtype == torch.uint8 else image.to(dtype) / 255).to(self.device)

    def input_mask(self, n: int) -> torch.Tensor:
        """(n, H, W) bool: a rectangle in every other sample, as a mask the sample already had."""
        mask = torch.zeros((n, *self.size), dtype=torch.bool, device=self.device)
        mask[::2, 1:5, 2:9] = True
        return mask

    def augment(self, augmenter: Augmenter, image: torch.Tensor, mask: torch.Tensor | None = None) -> Augmented:
        """``augmenter.augment(image, mask)``, its result checked against the contract."""
        before = image.clone()
        result = augmenter.augment(image, mask)
        self.expect(torch.equal(image, before), "augment() modified its input image in place")
        self.check_augmented(augmenter, image, mask, result)
        return result

    def check_augmented(self, augmenter: Augmenter, image: torch.Tensor, mask: torch.Tensor | None,
                        result: Augmented) -> None:
        """The kinds of an ``augment`` result and, per sample, what its outcome promises about the pixels."""
        b, _, h, w = image.shape
        self.expect(isinstance(result, Augmented), f"augment() returned a {type(result).__name__}, not Augmented")
        out, made, outcome = result.image, result.mask, result.outcome
        self.expect(isinstance(out, torch.Tensor) and out.shape == image.shape and out.dtype == image.dtype
                    and out.device == image.device,
                    f"augment() on a {_kind(image)} batch returned an image {_kind(out)}")
        self.expect(isinstance(made, torch.Tensor) and made.dtype == torch.bool and made.shape == (b, h, w)
                    and made.device == image.device,
                    f"augment() must return a ({b}, {h}, {w}) bool mask on {image.device}, got {_kind(made)}")
        self.expect(isinstance(outcome, torch.Tensor) and outcome.dtype == torch.int8 and outcome.shape == (b,)
                    and bool(((outcome >= 0) & (outcome <= 2)).all()),
                    f"augment() must report a ({b},) int8 tensor of Outcome values, got {outcome!r}")
        self.expect(len(result.params) == b, f"augment() gave {len(result.params)} parameter dicts for {b} samples")
        try:
            json.dumps(result.params)
        except (TypeError, ValueError) as error:
            self.fail(f"augment() parameters are not JSON-ready ({error}): {result.params!r}", error)
        before = torch.zeros_like(made) if mask is None else mask.to(torch.bool)
        for j, kind in enumerate(Outcome(int(value)) for value in outcome):
            self.outcomes.add(kind)
            if kind == Outcome.UNTOUCHED:
                self.expect(torch.equal(out[j], image[j]) and torch.equal(made[j], before[j]),
                            f"sample {j} is reported UNTOUCHED but its image or mask changed")
                self.expect(result.params[j] == {}, f"sample {j} is UNTOUCHED but has parameters {result.params[j]}")
            elif kind == Outcome.DEFECT:
                outside = ~made[j]
                self.expect(made[j].any(), f"sample {j} is reported DEFECT with an empty mask")
                self.expect(bool((made[j] | ~before[j]).all()), f"sample {j}: the input mask was not OR-ed in")
                self.expect(torch.equal(out[j][:, outside], image[j][:, outside]),
                            f"sample {j} (DEFECT) changed pixels outside its mask "
                            f"(keeps_outside={augmenter.keeps_outside})")

    def same(self, first: Augmented, second: Augmented) -> bool:
        return (torch.equal(first.image, second.image) and torch.equal(first.mask, second.mask)
                and torch.equal(first.outcome, second.outcome))

    # -- checks -------------------------------------------------------------------------------------------
    def check_pickle(self) -> None:
        augmenter = self.build(0)
        copied = pickle.loads(pickle.dumps(augmenter))
        self.expect(type(copied) is type(augmenter), f"unpickled as a {type(copied).__name__}")

    def check_seeds(self) -> None:
        # Plain augment() calls: what a result promises is the pixels check's, which comes next.
        image = self.images(_BATCH, self.channels[-1])
        first, second = self.build(11), self.build(11)
        runs = [(first.augment(image), second.augment(image)) for _ in range(2)]
        self.expect(all(self.same(a, b) for a, b in runs), "two instances built with seed=11 gave different bytes "
                    "(draw randomness only from self.generator, never from torch's global generator)")
        self.expect(not self.same(*(a for a, _ in runs)),
                    "two calls on the same batch gave the same defects: the random stream must advance")
        self.expect(not self.same(runs[0][0], self.build(12).augment(image)), "seeds 11 and 12 gave the same bytes")
        used, fresh = self.build(11), self.build(11)
        used.augment(image)
        used.reseed(99)
        fresh.reseed(99)
        self.expect(self.same(used.augment(image), fresh.augment(image)),
                    "reseed(99) after a call and reseed(99) on a fresh instance gave different bytes: reseed must "
                    "restart every random stream")

    def check_pixels(self) -> None:
        for channels in self.channels:
            for dtype in (torch.uint8, torch.float32):
                image, mask = self.images(2 * _BATCH, channels, dtype, seed=1), self.input_mask(2 * _BATCH)
                plain = self.augment(self.build(5, p=0.5), image)
                masked = self.augment(self.build(5, p=0.5), image, mask)
                self.expect(torch.equal(plain.image, masked.image) and torch.equal(plain.outcome, masked.outcome),
                            "an input mask changed the image or the outcomes")
                replaced = (plain.outcome == Outcome.REPLACED).to(self.device)[:, None, None]
                self.expect(torch.equal(masked.mask, torch.where(replaced, plain.mask, plain.mask | mask)),
                            "the mask must be the defect's OR-ed with the input mask, a replaced image's own mask "
                            "only")

    def check_forms(self) -> None:
        for channels in self.channels:
            for dtype in (torch.uint8, torch.float32):
                batch = self.images(_BATCH, channels, dtype, seed=2)
                self.check_samples(_single_samples(batch[0], self.input_mask(1)[0]), f"{dtype} CHW")
                self.check_samples(_batch_samples(batch, self.input_mask(_BATCH)), f"{dtype} BCHW")
            mode = "L" if channels == 1 else "RGB"
            pil = F.to_pil_image(self.images(1, channels, seed=3)[0].cpu(), mode=mode)
            self.check_samples(_single_samples(pil, self.input_mask(1)[0].cpu()), f"PIL {mode}")

    def check_samples(self, samples: dict[str, Any], kind: str) -> None:
        """Each sample through an instance and its input through ``augment`` of a twin with the same seed."""
        augmenter, twin = self.build(7, p=0.5), self.build(7, p=0.5)
        for form, sample in samples.items():
            where = f"a {kind} {form} sample"
            image, mask, label, _ = _read(sample, sample)
            tensor = _as_batch(image)
            flat_mask = None if mask is None else mask.as_subclass(torch.Tensor).reshape(-1, *self.size).bool()
            expected = self.augment(twin, tensor, flat_mask)
            items = _items(sample)
            out = augmenter(sample)
            self.expect(_items(sample) == items, f"{where}: the call changed the sample it was given")
            self.check_structure(where, sample, out)
            out_image, out_mask, out_label, passed = _read(sample, out)
            self.check_image(where, image, out_image)
            self.expect(torch.equal(_as_batch(out_image), expected.image),
                        f"{where} came out other than augment() makes of its image with the same seed")
            self.check_mask(where, mask, out_mask, expected.mask)
            self.check_label(where, label, out_label, expected.defect)
            for key, (before, after) in passed.items():
                self.expect(after is before, f"{where}: item {key!r} was not passed through as the same object")

    def check_structure(self, where: str, sample: Any, out: Any) -> None:
        """``out`` has ``sample``'s type, length and keys (plus "mask" and "label" in dicts)."""
        self.expect(type(out) is type(sample), f"{where} came back as a {type(out).__name__}")
        if isinstance(sample, (tuple, list)):
            self.expect(len(out) == len(sample), f"{where} came back with {len(out)} items")
            if isinstance(sample[-1], dict):
                sample, out = sample[-1], out[-1]
                self.expect(type(out) is dict, f"{where}: the target came back as a {type(out).__name__}")
        if isinstance(sample, dict):
            keys = set(sample) | {"mask", "label"}
            self.expect(set(out) == keys, f"{where} came back with keys {sorted(out)}, expected {sorted(keys)}")

    def check_image(self, where: str, image: Any, out: Any) -> None:
        if isinstance(image, PIL.Image.Image):
            self.expect(isinstance(out, PIL.Image.Image) and out.mode == image.mode and out.size == image.size,
                        f"{where}: a PIL {image.mode} {image.size} image came back as {out!r}")
            return
        self.expect(type(out) is type(image) and out.dtype == image.dtype and out.shape == image.shape
                    and out.device == image.device,
                    f"{where}: a {_kind(image)} image came back as {_kind(out)}")

    def check_mask(self, where: str, mask: Any, out: Any, expected: torch.Tensor) -> None:
        if out is None:
            return
        self.expect(isinstance(out, tv_tensors.Mask), f"{where}: the mask came back as {type(out).__name__}, "
                    "not a tv_tensors.Mask (geometric transforms would not move it with the image)")
        if mask is not None:
            self.expect(out.shape == mask.shape and out.dtype == mask.dtype,
                        f"{where}: a {mask.dtype} {tuple(mask.shape)} mask came back as {out.dtype} {tuple(out.shape)}")
        self.expect(out.shape[-2:] == self.size and out.numel() == expected.numel()
                    and out.device == expected.device,
                    f"{where}: mask of shape {tuple(out.shape)} on {out.device} for images of size {self.size}")
        self.expect(bool(((out == 0) | (out == 1)).all()), f"{where}: the mask is not binary")
        self.expect(torch.equal(out.as_subclass(torch.Tensor).reshape(expected.shape).bool(), expected),
                    f"{where}: the mask differs from the one augment() reports")

    def check_label(self, where: str, label: Any, out: Any, defect: torch.Tensor) -> None:
        if label is _ABSENT:
            return
        if isinstance(label, torch.Tensor) and label.ndim == 1:  # a batch's labels
            self.expect(isinstance(out, torch.Tensor) and out.shape == label.shape and out.dtype == label.dtype,
                        f"{where}: {label.dtype} labels {tuple(label.shape)} came back as {out!r}")
            expected = torch.where(defect.to(label.device), torch.ones_like(label), label)
            self.expect(torch.equal(out, expected), f"{where}: labels {out.tolist()} where augment() reports "
                        f"defects {defect.tolist()}")
            return
        self.expect(type(out) is type(label), f"{where}: a {type(label).__name__} label came back as {out!r}")
        expected = 1 if bool(defect[0]) else int(label)
        self.expect(int(out) == expected, f"{where}: label {out} where augment() reports defect={bool(defect[0])}")

    def check_p0(self) -> None:
        for channels in self.channels:
            image = self.images(_BATCH, channels, seed=4)
            mask = self.input_mask(_BATCH)
            result = self.augment(self.build(3, p=0.0), image, mask)
            self.expect(not result.defect.any(), "p=0 still made defects")
            sample = {"image": tv_tensors.Image(image[0]), "label": 0, "path": "normal.png"}
            out = self.build(3, p=0.0)(sample)
            self.expect(torch.equal(out["image"], image[0]) and out["label"] == 0 and not out["mask"].any(),
                        "p=0 changed a dict sample's image, label or mask")

    def check_batch(self) -> None:
        image = self.images(_BATCH, self.channels[-1], seed=5, repeat=True)
        result = self.augment(self.build(13), image)
        first = (result.image[0], result.mask[0])
        self.expect(any(not (torch.equal(result.image[j], first[0]) and torch.equal(result.mask[j], first[1]))
                        for j in range(1, _BATCH)),
                    f"a batch of {_BATCH} copies of one image got {_BATCH} identical samples: draw parameters per "
                    "sample")

    def check_copies(self) -> None:
        image = self.images(_BATCH, self.channels[-1], seed=6)
        augmenter = self.build(21)
        self.augment(augmenter, image)
        pickled, deep = pickle.loads(pickle.dumps(augmenter)), copy.deepcopy(augmenter)
        expected = self.augment(augmenter, image)
        self.expect(self.same(self.augment(pickled, image), expected),
                    "a pickled copy does not continue the original's random stream")
        self.expect(self.same(self.augment(deep, image), expected),
                    "a deep copy does not continue the original's random stream")

    def check_module(self) -> None:
        image = self.images(_BATCH, self.channels[-1], seed=7)
        augmenter, untouched = self.build(31), self.build(31)
        torch.nn.Sequential(augmenter).to(self.device).float().eval()  # torch calls _apply, train() on every child
        self.expect(self.same(self.augment(augmenter, image), self.augment(untouched, image)),
                    "moving a module that holds the augmenter (.to(), .float(), .eval()) changed its output")

    def check_geometry(self) -> None:
        h, w = self.size
        image = tv_tensors.Image(self.images(1, self.channels[-1], seed=7)[0])
        boxes = tv_tensors.BoundingBoxes([[2, 3, w // 2, h // 2], [w // 3, h // 4, w - 3, h - 2]], format="XYXY",
                                         canvas_size=self.size, device=self.device)
        sample = {"image": image, "boxes": boxes, "label": 0}
        geometric = [v2.RandomHorizontalFlip(p=1.0), v2.RandomRotation(30),
                     v2.RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.9, 1.1))]
        for seed in range(4):
            outcome = self.augment(self.build(seed), image[None].as_subclass(torch.Tensor)).outcome[0]
            if outcome == Outcome.REPLACED:
                self.check_replaced_boxes(seed, sample)
                continue
            plain = self.build(seed)(sample)
            self.expect(plain["boxes"] is boxes, "the boxes of a sample whose image was not replaced were not "
                        "passed through as the same object")
            flipped = v2.Compose([self.build(seed), geometric[0]])(sample)
            self.expect(torch.equal(flipped["image"], plain["image"].flip(-1))
                        and torch.equal(flipped["mask"], plain["mask"].flip(-1))
                        and torch.equal(flipped["boxes"], F.horizontal_flip(boxes)),
                        "a horizontal flip after the augmenter did not flip image, mask and boxes together")
            for transform in geometric[1:]:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    composed = v2.Compose([self.build(seed), transform])(sample)
                    torch.manual_seed(seed)
                    expected = transform(plain)
                self.expect(all(torch.equal(composed[key], expected[key]) for key in ("image", "mask", "boxes")),
                            f"{type(transform).__name__} after the augmenter moved image, mask and boxes other than "
                            "it moves them on the augmenter's output")

    def check_replaced_boxes(self, seed: int, sample: dict) -> None:
        augmenter = self.build(seed)
        if augmenter.on_replace == "error":
            try:
                augmenter(sample)
            except ValueError:
                pass
            else:
                self.fail("replacing the image of a sample with boxes must raise ValueError (on_replace='error')")
        augmenter = self.build(seed)
        augmenter.on_replace = "drop"
        out = augmenter(sample)
        self.expect("boxes" not in out and out["label"] == 1,
                    "with on_replace='drop' a replaced sample must lose its boxes and get label 1")

    def check_workers(self, methods: tuple[str, ...]) -> None:
        image = self.images(1, self.channels[-1], dtype=torch.uint8, seed=8)[0].cpu()
        dataset = _RepeatedImage(self.build(31), image, 8)
        reference = self.epoch(dataset, methods[0])
        by_worker = [[(im, mask) for im, mask, worker in reference if worker == k] for k in (0, 1)]
        self.expect(all(by_worker), f"one of 2 workers produced no samples under {methods[0]}")
        self.expect(any(not (torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])) for a, b in zip(*by_worker)),
                    f"the 2 DataLoader workers ({methods[0]}) produced the same defects on the same image: the "
                    "augmenter must be re-seeded per worker (draw only from self.generator)")
        for method in methods:
            self.expect(_same_epoch(self.epoch(dataset, method), reference),
                        f"a DataLoader epoch under {method} differs from one under {methods[0]} with the same seed")

    def epoch(self, dataset: Dataset, method: str) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        loader = DataLoader(dataset, batch_size=None, num_workers=2, generator=torch.Generator().manual_seed(41),
                            multiprocessing_context=method, timeout=_WORKER_TIMEOUT_S)
        try:
            return list(loader)
        except Exception as error:  # a worker died (its traceback went to stderr) or could not start
            self.fail(f"DataLoader workers under {method} failed: {type(error).__name__}: {error} (see the workers' "
                      "stderr: the augmenter must pickle into a fresh process)", error)


def _same_epoch(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        a[2] == b[2] and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))


def _read(sample: Any, out: Any) -> tuple[Any, Any, Any, dict[str, tuple[Any, Any]]]:
    """(image, mask or None, label or _ABSENT, other items as (in, out) pairs) of ``out``, read the way ``sample``
    is built."""
    if isinstance(sample, dict):
        passed = {key: (sample[key], out[key]) for key in sample if key not in ("image", "mask", "label")}
        return out.get("image"), out.get("mask"), out.get("label", _ABSENT), passed
    if not isinstance(sample, (tuple, list)):
        return out, None, _ABSENT, {}
    if isinstance(sample[1], dict):
        return (out[0], *_read({"image": None, **sample[1]}, {"image": None, **out[1]})[1:])
    if len(sample) == 3:
        return out[0], out[1], out[2], {}
    if isinstance(sample[1], tv_tensors.Mask):
        return out[0], out[1], _ABSENT, {}
    return out[0], None, out[1], {}


def _items(sample: Any) -> list[tuple[Any, int]]:
    """(key, id) of every item of a sample and of its target dict: what a call must leave as it found it."""
    if isinstance(sample, dict):
        return [(key, id(value)) for key, value in sample.items()]
    if isinstance(sample, (tuple, list)):
        return [(index, id(value)) for index, value in enumerate(sample)] + _items(sample[-1])
    return []


def _kind(value: Any) -> str:
    """A tensor's type, dtype, shape and device (for messages); another value's type."""
    if isinstance(value, torch.Tensor):
        return f"{type(value).__name__} {value.dtype} {tuple(value.shape)} on {value.device}"
    return type(value).__name__


def _as_batch(image: Any) -> torch.Tensor:
    """A PIL image or a CHW/BCHW tensor as a plain (B, C, H, W) tensor."""
    if isinstance(image, PIL.Image.Image):
        return F.pil_to_tensor(image)[None]
    plain = image.as_subclass(torch.Tensor)
    return plain if plain.ndim == 4 else plain[None]


def _single_samples(image: Any, mask: torch.Tensor) -> dict[str, Any]:
    """Every accepted structure around one image (a tensor becomes a tv_tensors.Image in dicts)."""
    wrapped = tv_tensors.Image(image) if isinstance(image, torch.Tensor) else image
    other = object()  # a non-image item: must come back as the same object
    as_mask = tv_tensors.Mask(mask.to(torch.uint8))
    return {
        "bare image": image,
        "(image, label)": (image, 0),
        "[image, label]": [image, 0],
        "(image, mask)": (image, as_mask),
        "(image, mask, label)": (image, as_mask, torch.tensor(0)),
        "(image, target)": (wrapped, {"label": 0, "id": other}),
        "dict": {"image": wrapped, "label": 0, "path": "normal.png", "meta": other, "score": torch.zeros(3)},
        "dict with mask": {"image": wrapped, "mask": tv_tensors.Mask(mask), "label": False, "meta": other},
    }


def _batch_samples(batch: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """Every accepted structure around a (B, C, H, W) batch."""
    labels = torch.zeros(len(batch), dtype=torch.long)
    wrapped = tv_tensors.Image(batch)
    return {
        "bare batch": batch,
        "batch Image": wrapped,
        "(batch, labels)": (wrapped, labels.to(batch.device)),
        "(batch, mask, labels)": (batch, tv_tensors.Mask(mask[:, None]), labels.to(batch.device)),
        "batch dict": {"image": wrapped, "mask": tv_tensors.Mask(mask), "label": labels,
                       "paths": [f"{j}.png" for j in range(len(batch))]},
    }
