"""InOutMix: In&Out's mixer of in-distribution and out-of-distribution defects."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import torch

from inout_aug.core.augmenter import Augmenter, Made, check_probability, mix_seed
from inout_aug.core.registry import create, list_augmenters

SIDES = ("in", "out")
#: Largest block over which the in/out split is dealt exactly (in_ratio is rounded to a fraction this fine).
MAX_BLOCK = 100


def dealt_exactly(in_ratio: float) -> bool:
    """Whether InOutMix can deal ``in_ratio`` without rounding it to one side only (0 or 1 when it is neither)."""
    share = Fraction(float(in_ratio)).limit_denominator(MAX_BLOCK)
    return share not in (0, 1) or share == float(in_ratio)


class InOutMix(Augmenter):
    """In&Out: each chosen sample gets its defect from an in-distribution or an out-of-distribution augmenter.

    A share ``in_ratio`` of the samples goes to ``in_augmenter`` (default ``"diffusion"``: defects like the
    real ones), the rest to ``out_augmenter`` (default ``"memseg"``: simulated foreign defects). A side is a
    registry name, built with ``in_params`` / ``out_params`` and a seed derived from this mixer's, or an
    Augmenter instance. A side that gets no share (``in_ratio`` 0 or 1) is never built. The default in side
    needs its source: ``InOutMix(bank="bank/")`` or ``InOutMix(model="models/mt-ddpm")`` (shorthands for
    ``in_params``). Sides are used only through their public ``augment``/``reseed``, so any plugin composes.
    A side that replaces images (a bank) makes the mixer replace them too: see ``on_replace``.

    The split is exact, not right on average: sides are dealt from shuffled blocks that hold exactly
    ``in_ratio`` in-distribution samples (a block of 2 for 0.5, 4 for 0.25; ``in_ratio`` is taken as a fraction
    with a denominator of at most 100). Over any run of samples this instance makes (in a DataLoader, each
    worker's copy) the in-distribution count is ``in_ratio`` times the count, to within one block.

    Recorded per sample (``describe``): ``side`` ("in" or "out"), ``augmenter`` (its name) and that
    augmenter's own parameters.
    """

    name = "inout"
    keeps_outside = True  # each side's augment() keeps the pixels outside its own defect's mask

    def __init__(
        self,
        p: float = 1.0,
        *,
        in_ratio: float = 0.5,
        in_augmenter: str | Augmenter = "diffusion",
        out_augmenter: str | Augmenter = "memseg",
        in_params: dict[str, Any] | None = None,
        out_params: dict[str, Any] | None = None,
        bank: str | None = None,
        model: str | None = None,
        on_replace: str = "error",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(p=p, seed=seed, generator=generator)
        check_probability("in_ratio", in_ratio)
        self.on_replace = self._check_on_replace(on_replace)
        source = {key: value for key, value in (("bank", bank), ("model", model)) if value is not None}
        if source:
            if not isinstance(in_augmenter, str):
                raise ValueError("InOutMix: bank= and model= build the in side by name; give them to your "
                                 "in_augmenter instance instead")
            clash = sorted(set(source) & set(in_params or {}))
            if clash:
                raise ValueError(f"InOutMix: {', '.join(clash)} given both directly and in in_params; give it once")
            in_params = {**(in_params or {}), **source}
        share = Fraction(float(in_ratio)).limit_denominator(MAX_BLOCK)
        if not dealt_exactly(in_ratio):
            left_out, kept = ("in-distribution", "out-of-distribution") if share == 0 else \
                ("out-of-distribution", "in-distribution")
            raise ValueError(
                f"InOutMix: in_ratio={in_ratio} rounds to {share} (sides are dealt in blocks of at most {MAX_BLOCK} "
                f"samples), which leaves out the {left_out} side: give a share from 1/{MAX_BLOCK} to "
                f"1 - 1/{MAX_BLOCK}, or in_ratio={share} for {kept} defects only"
            )
        self.in_ratio = float(in_ratio)
        self.block = (share.numerator, share.denominator)  # in-samples per block, block size
        self.sides: dict[str, Augmenter] = {}
        specs = {"in": (in_augmenter, in_params), "out": (out_augmenter, out_params)}
        for side, (spec, params) in specs.items():
            if (share > 0) if side == "in" else (share < 1):
                self.sides[side] = self._build_side(side, spec, params)
        self._deck: list[bool] = []  # the rest of the current block: True = in-distribution

    def _build_side(self, side: str, spec: str | Augmenter, params: dict[str, Any] | None) -> Augmenter:
        if isinstance(spec, Augmenter):
            if params:
                raise ValueError(f"{side}_params apply to an augmenter given by name, not to an instance")
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"{side}_augmenter must be a registry name or an Augmenter, got {type(spec).__name__}")
        params = {"seed": mix_seed(self._base_seed, side), **(params or {})}
        if side == "in" and spec == "diffusion" and "bank" not in params and "model" not in params:
            raise ValueError(
                "InOutMix: its in-distribution side, 'diffusion', needs a source of defects like the real ones: "
                "InOutMix(bank=PATH) (a bank from `inout-aug generate -a diffusion`), InOutMix(model=PATH) (a model "
                "from `inout-aug finetune`), another in_augmenter (e.g. in_augmenter='transplant', "
                "in_params={'defects': DATASET}: the real defects copied), or "
                "in_ratio=0 for out-of-distribution defects only"
            )
        if spec not in list_augmenters():
            other = "in_ratio=1" if side == "out" else "in_ratio=0"
            raise ValueError(
                f"InOutMix: the {side}-distribution augmenter {spec!r} is not installed; pass "
                f"{side}_augmenter=<name> (registered: {', '.join(list_augmenters())}) or {other}"
            )
        return create(spec, **params)

    def reseed(self, seed: int, index: int | None = None) -> None:
        """Restart this mixer and both sides from ``seed``; a new block of sides begins.

        With ``index`` (an output's place in a run, as ``inout-aug generate`` passes it) the next side is the
        one at that place in blocks dealt from this mixer's own seed: a run's outputs 0..n-1 are split exactly,
        however the run was interrupted and resumed.
        """
        super().reseed(seed)
        for side, augmenter in self.sides.items():
            augmenter.reseed(mix_seed(seed, side))
        self._deck = []
        if index is not None:
            count, size = self.block
            block = torch.Generator().manual_seed(mix_seed(self._base_seed, "block", index // size))
            self._deck = (torch.randperm(size, generator=block) < count).tolist()[index % size:]

    def _deal(self, n: int) -> torch.Tensor:
        """(n,) bool: True where the sample goes to the in-distribution side, dealt from exact blocks."""
        dealt: list[bool] = []
        while len(dealt) < n:
            if not self._deck:
                count, size = self.block
                order = torch.randperm(size, generator=self.generator, device=self.generator.device)
                self._deck = (order < count).tolist()
            take = n - len(dealt)
            dealt += self._deck[:take]
            self._deck = self._deck[take:]
        return torch.tensor(dealt, dtype=torch.bool)

    def make_params(self, image: torch.Tensor) -> dict[str, Any]:  # type: ignore[override]
        inside = self._deal(len(image))
        return {"rows": {"in": inside.nonzero().flatten(), "out": (~inside).nonzero().flatten()}}

    def transform(self, image: torch.Tensor, params: dict[str, Any]) -> Made:
        n, _, h, w = image.shape
        made_image = image.clone()
        made_mask = torch.zeros((n, h, w), dtype=torch.bool, device=image.device)
        outcome = torch.zeros(n, dtype=torch.int8)
        made_params: list[dict[str, Any]] = [{} for _ in range(n)]
        for side in SIDES:
            rows = params["rows"][side]
            if not len(rows):
                continue
            augmenter = self.sides[side]
            on_device = rows.to(image.device)
            result = augmenter.augment(image.index_select(0, on_device), describe=True)  # the public contract only
            made_image.index_copy_(0, on_device, result.image.to(made_image.dtype))
            made_mask.index_copy_(0, on_device, result.mask)
            outcome[rows] = result.outcome
            for row, drawn in zip(rows.tolist(), result.params):
                made_params[row] = {"side": side, "augmenter": augmenter.name or type(augmenter).__name__, **drawn}
        params["made"] = made_params
        return Made(made_image, made_mask, outcome)

    def file_hashes(self) -> dict[str, str]:
        return {f"{side}.{key}": value for side, augmenter in self.sides.items()
                for key, value in augmenter.file_hashes().items()}

    def describe(self, params: dict[str, Any], index: int, n: int) -> dict[str, Any]:
        return params["made"][index]

    def extra_repr(self) -> str:
        sides = ", ".join(f"{side}={augmenter!r}" for side, augmenter in self.sides.items())
        return f"{super().extra_repr()}, in_ratio={self.in_ratio}, {sides}"
