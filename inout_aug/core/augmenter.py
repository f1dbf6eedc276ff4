"""The Augmenter base class: one interface for every way of making a defect."""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

import torch
from torch.utils.data import get_worker_info
from torchvision.transforms.v2 import Transform

from inout_aug.core.sample import as_bytes, as_float, check_image, check_mask, parse


class Outcome(IntEnum):
    """What an augmenter did to one sample; the label is 1 for every outcome but ``UNTOUCHED``."""

    #: Left alone (probability ``1 - p``, or no defect could be made): image, mask and label as they came.
    UNTOUCHED = 0
    #: A defect painted into the sample's own image: the mask holds it, pixels outside it are unchanged.
    DEFECT = 1
    #: The image replaced by a new defective one (a bank entry, a generated image): its mask, possibly empty
    #: (a weak label: a defect somewhere, no pixel known), replaces the sample's own mask.
    REPLACED = 2


class Made(NamedTuple):
    """What ``transform`` returns: the (N, C, H, W) image, the (N, H, W) bool mask and, optionally, the (N,)
    :class:`Outcome` of each sample. Without ``outcome`` the augmenter paints: a sample got a defect exactly
    where its mask is non-empty (an empty mask: the defect could not be made, the sample stays untouched)."""

    image: torch.Tensor
    mask: torch.Tensor
    outcome: torch.Tensor | None = None


@dataclass
class Augmented:
    """What :meth:`Augmenter.augment` returns for a (B, C, H, W) batch.

    ``image`` keeps the input's dtype; ``mask`` is (B, H, W) bool (the defect OR-ed with any input mask;
    a replaced image's own mask only); ``outcome`` (B,) int8 holds each sample's :class:`Outcome`;
    ``params`` holds, per sample, the drawn parameters as JSON-ready values (an empty dict for samples left
    untouched).
    """

    image: torch.Tensor
    mask: torch.Tensor
    outcome: torch.Tensor
    params: list[dict[str, Any]] = field(default_factory=list)

    @property
    def defect(self) -> torch.Tensor:
        """(B,) bool: which samples are now defective (label 1): a defect made or the image replaced."""
        return self.outcome != Outcome.UNTOUCHED

    @property
    def replaced(self) -> torch.Tensor:
        """(B,) bool: which samples' images were replaced by new ones."""
        return self.outcome == Outcome.REPLACED


def check_probability(name: str, value: float) -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it lies in [0, 1]."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


#: The seeds torch.Generator.manual_seed takes (a negative one counts from 2**64).
SEED_RANGE = (-(2**63), 2**64)


def check_seed(seed: int) -> int:
    """``seed`` as an int, or a clear error unless it is an integer torch.Generator takes."""
    try:
        value = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}") from None
    if not SEED_RANGE[0] <= value < SEED_RANGE[1]:
        raise ValueError(f"seed must be an integer from -2**63 to 2**64 - 1 (what torch.Generator takes), got {value}")
    return value


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from ``parts``: the same parts give the same seed on every machine."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Augmenter(Transform):
    """Base class of every defect maker: a torchvision.transforms.v2 ``Transform``.

    A call accepts any sample of the DESIGN.md convention (bare image, tuple or dict, single image or
    (B, C, H, W) batch) and returns the same structure and types: a defective image, the defect's binary
    ``tv_tensors.Mask`` (OR-ed with an existing mask; added to dict samples that had none) and label 1.
    Each sample is left untouched with probability ``1 - p``.

    Subclasses implement two methods, as in torchvision v2:

    * ``make_params(image)`` draws per-sample parameters for a float (N, C, H, W) batch, using only
      ``self.generator``;
    * ``transform(image, params)`` applies them and returns ``(image, mask)`` or ``Made(image, mask, outcome)``:
      the mask (N, H, W) bool, ``outcome`` the (N,) :class:`Outcome` of each sample (see :class:`Made`).

    Both treat ``image`` as read-only: it may be the caller's own tensor. The image ``transform`` returns is
    either ``image`` itself or a new tensor that the base class may overwrite.

    The base class guarantees that pixels outside the mask of a painted defect are bit-for-bit unchanged and
    that an untouched sample comes back as it came: it pastes the result into the input inside the mask. A
    subclass whose ``transform`` already keeps every pixel outside its mask bit for bit (and tests it) sets
    ``keeps_outside = True`` to skip that pass over the batch. What happened to each sample is reported, never
    guessed downstream: :attr:`Augmented.outcome`.

    Randomness comes only from ``self.generator``: ``seed=``, ``generator=``, or else a seed drawn from torch's
    global generator at construction (``torch.manual_seed`` before building reproduces it). The same seed gives
    the same bytes. Inside a DataLoader worker the generator is re-seeded from the worker's seed, so workers
    never repeat each other and a fixed DataLoader seed reproduces a whole epoch. Augmenters pickle their
    generator as its state, so DataLoader workers of every start method (fork, spawn, forkserver) get a copy.
    """

    #: Registry name: the default for :func:`inout_aug.core.registry.register`; :func:`create` sets it per instance.
    name: str = ""
    #: True when ``transform`` leaves every pixel outside its mask bit for bit as it was (no paste needed).
    keeps_outside: bool = False
    #: What a call does with a sample's other spatial annotations (boxes, keypoints, other masks) when the
    #: image is replaced: "error" (the default: they would describe an image that is gone) or "drop" them.
    on_replace: str = "error"

    def __init__(self, p: float = 1.0, seed: int | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.p = check_probability("p", p)
        if seed is not None and generator is not None:
            raise ValueError("give either seed or generator, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator is None:
            if seed is None:  # from torch's global generator, so torch.manual_seed reproduces a pipeline
                seed = int(torch.randint(2**62, (), dtype=torch.int64))
            generator = torch.Generator().manual_seed(check_seed(seed))
        self.generator = generator
        self._base_seed = generator.initial_seed()
        self._worker_seed: int | None = None

    # -- to implement -------------------------------------------------------------------------------
    def make_params(self, image: torch.Tensor) -> dict[str, Any]:  # type: ignore[override]
        """Draw the parameters of one defect per sample of a float (N, C, H, W) batch."""
        raise NotImplementedError

    def transform(self, image: torch.Tensor, params: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """Apply ``params`` to a float (N, C, H, W) batch; return (image, (N, H, W) bool mask) or :class:`Made`."""
        raise NotImplementedError

    def file_hashes(self) -> dict[str, str]:
        """Hashes of the files that decide this augmenter's output besides its parameters (a model's weights):
        ``inout-aug generate`` records them, and refuses to resume a run with other files. None by default."""
        return {}

    def describe(self, params: dict[str, Any], index: int, n: int) -> dict[str, Any]:
        """JSON-ready parameters of sample ``index`` of ``n``: small per-sample tensors and plain values."""
        out: dict[str, Any] = {}
        for key, value in params.items():
            if isinstance(value, torch.Tensor):
                if value.ndim and value.shape[0] == n and value[index].numel() <= 16:
                    out[key] = value[index].tolist()
            elif isinstance(value, (bool, int, float, str)):
                out[key] = value
        return out

    # -- pickling: torch.Generator does not pickle reliably (pytorch#146828), its state as bytes does -----------
    # Bytes, not the state tensor: DataLoader workers under spawn/forkserver receive tensors through shared-memory
    # file descriptors, and a tensor made during pickling is freed before the worker opens it.
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # nn.Module's: a copy of __dict__
        generator = state.pop("generator")
        state["_generator_state"] = (str(generator.device), generator.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        device, generator_state = state.pop("_generator_state")
        state["generator"] = torch.Generator(device=device)
        state["generator"].set_state(torch.frombuffer(bytearray(generator_state), dtype=torch.uint8))
        super().__setstate__(state)

    # -- machinery ----------------------------------------------------------------------------------
    def reseed(self, seed: int, index: int | None = None) -> None:
        """Restart the generator from ``seed`` (``inout-aug generate`` gives each output its own seed).

        ``index`` is the output's place in a run (generate passes it), for augmenters that balance their
        draws over a run; this one ignores it. Inside a DataLoader worker an explicit reseed also stands for
        the worker's own reseeding.
        """
        self.generator.manual_seed(check_seed(seed))
        info = get_worker_info()
        self._worker_seed = None if info is None else info.seed

    def _reseed_for_worker(self) -> None:
        info = get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self.reseed(mix_seed(self._base_seed, info.seed))

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.generator.device).cpu()

    def augment(self, image: torch.Tensor, mask: torch.Tensor | None = None, *, describe: bool = True) -> Augmented:
        """Make defects in a (B, C, H, W) uint8 or [0, 1] float batch, on its device.

        ``describe=False`` skips collecting the drawn parameters per sample (``Augmented.params`` stays empty).
        """
        check_image(image)
        mask = None if mask is None else check_mask(mask, image)
        self._reseed_for_worker()
        b = image.shape[0]
        chosen = (self._rand(b) < self.p).nonzero().flatten()
        outcome = torch.zeros(b, dtype=torch.int8)
        params_out: list[dict[str, Any]] = [{} for _ in range(b)] if describe else []
        out_image = image
        new_mask = torch.zeros((b, *image.shape[2:]), dtype=torch.bool, device=image.device)
        if len(chosen):
            every = len(chosen) == b  # the common p=1 case: no row selection, no extra copies
            rows = chosen.to(image.device)
            picked = image if every else image.index_select(0, rows)
            work = as_float(picked)
            merged, made_mask, made, drawn = self._apply_params(work, self.make_params(work), image.dtype, describe)
            outcome[chosen] = made
            for j, params in zip(chosen.tolist(), drawn):
                params_out[j] = params
            if every:
                out_image, new_mask = merged, made_mask
            else:
                out_image = image.clone().index_copy_(0, rows, merged)
                new_mask.index_copy_(0, rows, made_mask)
        if mask is not None:  # a replaced image's old mask no longer applies
            kept = outcome != Outcome.REPLACED
            new_mask = new_mask | (mask.to(image.device) & kept.to(image.device)[:, None, None])
        return Augmented(image=out_image, mask=new_mask, outcome=outcome, params=params_out)

    def _apply_params(self, work: torch.Tensor, params: dict[str, Any], dtype: torch.dtype,
               describe: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
        """Transform a float batch with its drawn ``params``: the result in ``dtype`` (outside a painted defect's
        mask the input's bytes), the (N, H, W) mask, each sample's outcome and (if asked) its drawn parameters."""
        made_image, made_mask, outcome = Made(*self.transform(work, params))
        made_mask = made_mask.to(work.device) if isinstance(made_mask, torch.Tensor) else made_mask
        outcome = self._check_made(work, made_image, made_mask, outcome)
        replaced = outcome == Outcome.REPLACED
        if self.keeps_outside:
            merged = made_image if dtype == torch.float32 else _in_dtype(made_image, dtype)
        else:
            inside = made_mask | replaced.to(work.device)[:, None, None] if replaced.any() else made_mask
            merged = _paste(work, made_image, inside, dtype)
        n = len(work)
        drawn = [self.describe(params, j, n) if outcome[j] else {} for j in range(n)] if describe else []
        return merged, made_mask, outcome, drawn

    def merge_params(self, drawn: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The parameters of one batch from those drawn for single samples, or None when this augmenter cannot
        merge them (then :meth:`augment_each` takes the samples one at a time)."""
        return None

    def augment_each(self, images: list[torch.Tensor], seeds: list[int], indices: list[int]) -> list[Augmented]:
        """Augment (1, C, H, W) images, each exactly as ``reseed(seed, index)`` then ``augment(image)`` would.

        Where the shapes agree and :meth:`merge_params` can merge the samples' parameters, the transform runs
        once for all of them (a diffusion model then samples one batch) with the same draws; only a batched
        network pass may round a pixel differently.
        """
        def one_at_a_time() -> list[Augmented]:
            out = []
            for image, seed, index in zip(images, seeds, indices):
                self.reseed(seed, index)
                out.append(self.augment(image))
            return out

        mergeable = type(self).merge_params is not Augmenter.merge_params
        if len(images) < 2 or not mergeable or len({tuple(image.shape) for image in images}) > 1:
            return one_at_a_time()
        drawn: list[dict[str, Any] | None] = []
        works = []
        for image, seed, index in zip(images, seeds, indices):
            check_image(image)
            self.reseed(seed, index)
            works.append(as_float(image))
            drawn.append(self.make_params(works[-1]) if self._rand(1)[0] < self.p else None)
        rows = [j for j, params in enumerate(drawn) if params is not None]
        merged = self.merge_params([drawn[j] for j in rows]) if rows else None
        if rows and merged is None:
            return one_at_a_time()
        out = [Augmented(image=image, mask=torch.zeros((1, *image.shape[2:]), dtype=torch.bool, device=image.device),
                         outcome=torch.zeros(1, dtype=torch.int8), params=[{}]) for image in images]
        if rows:
            made_image, mask, outcome, params = self._apply_params(torch.cat([works[j] for j in rows]), merged,
                                                            images[0].dtype, True)
            for k, j in enumerate(rows):
                out[j] = Augmented(image=made_image[k:k + 1], mask=mask[k:k + 1], outcome=outcome[k:k + 1],
                                   params=params[k:k + 1])
        return out

    def forward(self, *inputs: Any) -> Any:
        """Augment one sample or batch in any accepted structure and return the same structure."""
        if not inputs:
            raise TypeError(f"{type(self).__name__} needs a sample: an image, a tuple or a dict")
        parsed = parse(inputs if len(inputs) > 1 else inputs[0])
        result = self.augment(parsed.image, parsed.mask, describe=False)
        if result.replaced.any() and parsed.annotations:
            if self.on_replace != "drop":
                raise ValueError(
                    f"{type(self).__name__} replaced the image of a sample that carries other spatial annotations "
                    f"({', '.join(parsed.annotations)}): they would describe an image that is gone; build it with "
                    "on_replace='drop' to drop them, or apply it before the annotations are added"
                )
            return parsed.pack(result.image, result.mask, result.defect, drop=True)
        return parsed.pack(result.image, result.mask, result.defect)

    def _check_made(self, work: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                    outcome: torch.Tensor | None) -> torch.Tensor:
        """Catch a ``transform`` that breaks its contract, naming the augmenter; return the (N,) int8 outcome."""
        where = f"{type(self).__name__}.transform"
        n, _, h, w = work.shape
        if not isinstance(image, torch.Tensor) or tuple(image.shape) != tuple(work.shape):
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"{where} returned an image of shape {shape}, expected {tuple(work.shape)}")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n, h, w):
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{where} must return an ({n}, {h}, {w}) bool mask, got {got}")
        if not torch.isfinite(image.sum(dtype=torch.float32)):  # float32: a float16 sum overflows
            raise ValueError(f"{where} returned NaN or infinite pixel values")
        painted = mask.view(torch.uint8).flatten(1).amax(1).bool().cpu()  # any(), many times faster
        if outcome is None:
            return painted.to(torch.int8)
        outcome = torch.as_tensor(outcome).to("cpu", torch.int8)
        if tuple(outcome.shape) != (n,) or not ((outcome >= 0) & (outcome <= 2)).all():
            raise ValueError(f"{where} must return an ({n},) outcome of inout_aug.Outcome values, got {outcome}")
        if (painted & (outcome == Outcome.UNTOUCHED)).any() or (~painted & (outcome == Outcome.DEFECT)).any():
            raise ValueError(f"{where} returned a mask that disagrees with its outcome: an untouched sample's "
                             "mask must be empty, a painted defect's mask must not be")
        return outcome

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self._base_seed}"

    def _check_on_replace(self, on_replace: str) -> str:
        if on_replace not in ("error", "drop"):
            raise ValueError(f"on_replace must be 'error' or 'drop', got {on_replace!r}")
        return on_replace


def _paste(work: torch.Tensor, made: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``made`` inside ``mask``, ``work`` outside, in ``dtype``; the outside keeps its exact bytes.

    lerp with 0/1 weights is exact on both sides (and on CPU far faster than torch.where); uint8 -> float
    -> uint8 round-trips exactly. For uint8 input ``work`` is a float copy of our own, reused in place; a
    ``made`` that transform created (it shares no memory with ``work``) is reused too.
    """
    inside = mask[:, None].to(work.dtype)
    made = made.to(work.dtype)
    if dtype == torch.uint8:
        return _in_dtype(work.lerp_(made, inside), dtype)
    if made.is_contiguous() and made.untyped_storage().data_ptr() != work.untyped_storage().data_ptr():
        return torch.lerp(work, made, inside, out=made)  # a new tensor from transform: reuse it
    return torch.lerp(work, made, inside)


def _in_dtype(made: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``made`` (float in [0, 1], ours to overwrite) as ``dtype``: uint8 rounds, and round-trips uint8 input exactly."""
    return as_bytes(made, inplace=True) if dtype == torch.uint8 else made.to(dtype)
