"""The benchmark sweep: one classifier per method x setting x seed, each run's result kept on disk (resumable)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from inout_aug.augmenters.inout import MAX_BLOCK, dealt_exactly
from inout_aug.bench import metrics
from inout_aug.bench.backbones import check_model
from inout_aug.bench.classifier import create_classifier, predict, train_classifier
from inout_aug.bench.config import BASELINE, CLASSIFIER, SEGDEC, UNBALANCED, BenchConfig
from inout_aug.bench.data import BenchData, open_bench_data
from inout_aug.core.augmenter import Augmenter, mix_seed
from inout_aug.core.io import LOCKING, lock, write_png, write_text
from inout_aug.core.registry import create, list_augmenters
from inout_aug.data.layouts import Record, open_dataset, read_mask
from inout_aug.data.manifest import read_manifest
from inout_aug.data.training import TrainingSet, choose_defects

#: Methods without an augmenter.
PLAIN = (BASELINE, UNBALANCED)
NO_POSITIVES = "no positives: without real defects or an augmenter there is no defect to learn"
NOT_FULL = "full-shot runs only full_methods ({}), the reference the few-shot methods are measured against"
NO_REAL_DEFECTS = "transplant copies real defects, and zero-shot has none"
NO_SLOT = ("no made defect: the real defects already fill {share:.0%} of the training set (positive_fraction "
           "{wanted:g}), so it would train exactly as none")
NOT_PADDED = "transplant pastes defects at their size relative to the image, which needs resize='pad'"
NO_SD_WEIGHTS = (
    "needs Stable Diffusion weights: the ddpm backend learns defects from real ones, and zero-shot has none "
    "(give method_params.diffusion.bank, a bank made with the sd backend)"
)
#: Settings that choose which runs there are, not what a run does.
PLAN_FIELDS = ("methods", "settings", "seeds", "in_ratios", "full_methods", "all_folds")
#: What a method's runs do beyond the settings, where that changed after results were stored: part of the digest,
#: so that no older result of the method is reused.
RECIPES = {BASELINE: "real defects oversampled to positive_fraction with dihedral copies"}
VERSIONED = ("inout-aug", "torch", "torchvision", "timm", "numpy", "diffusers", "scikit-learn")
#: A file of the inout-aug source: the git checkout tracking it is the one whose commit a run records.
SOURCE = Path(__file__).resolve()


@dataclass(frozen=True)
class Run:
    """One classifier: ``method`` ("none", an augmenter name, "inout+X" for InOutMix with in side X instead of
    diffusion, "inout@r" or "inout+X@r" for InOutMix at in_ratio r)."""

    method: str
    setting: str
    seed: int

    @property
    def augmenter_name(self) -> str:
        return self.method.split("@")[0].split("+")[0]

    @property
    def in_side(self) -> str:
        """InOutMix's in side: X of "inout+X", else diffusion."""
        return self.method.split("@")[0].partition("+")[2] or "diffusion"

    @property
    def sources(self) -> tuple[str, ...]:
        """The augmenters whose defects the method trains on."""
        if self.augmenter_name != "inout":
            return () if self.method in PLAIN else (self.augmenter_name,)
        ratio = 0.5 if self.in_ratio is None else self.in_ratio
        return tuple(name for name, used in ((self.in_side, ratio > 0), ("memseg", ratio < 1)) if used)

    @property
    def in_ratio(self) -> float | None:
        return float(self.method.split("@")[1]) if "@" in self.method else None

    def name(self, shots: int) -> str:
        return f"{self.method}-{setting_name(self.setting, shots)}-seed{self.seed}"


def setting_name(setting: str, shots: int) -> str:
    """"zero", "few5" or "full": how files and tables name a setting."""
    return f"few{shots}" if setting == "few" else setting


def methods_of(config: BenchConfig) -> list[str]:
    """The configured methods, wildcards expanded over the registry, then one ``inout@r`` per in_ratio."""
    names: list[str] = []
    for pattern in config.methods:
        mixer, at, ratio = pattern.partition("@")
        base, _, in_side = mixer.partition("+")
        if in_side and (base != "inout" or in_side not in list_augmenters()):
            raise ValueError(f"{pattern!r}: only inout+X takes an in side X, a registered augmenter; registered: "
                             f"{', '.join(list_augmenters())}")
        if at:
            try:
                share = float(ratio)
                valid = base == "inout" and 0 <= share <= 1
            except ValueError:
                valid = False
            if not valid:
                raise ValueError(f"{pattern!r}: @r sets InOutMix's in_ratio, a number in [0, 1]: inout@0.25 or "
                                 "inout+X@0.25")
            pattern = f"{mixer}@{share:g}"  # inout@.5 and inout@0.5 are one method
        found = [pattern] if pattern in PLAIN or in_side or at else list_augmenters(pattern)
        if not found:
            raise ValueError(f"no registered augmenter matches {pattern!r}; registered: "
                             f"{', '.join(list_augmenters())} (see `inout-aug list`)")
        names += [n for n in found if n not in names]
    names += [name for name in (f"inout@{r:g}" for r in config.in_ratios) if name not in names]
    for name in names:  # a share InOutMix would round to one side only: refused now, not when its run starts
        if "@" in name and not dealt_exactly(float(name.partition("@")[2])):
            raise ValueError(f"{name!r}: in_ratio {name.partition('@')[2]} rounds to one side only (InOutMix deals "
                             f"sides in blocks of at most {MAX_BLOCK}): give 0, 1, or a share from 1/{MAX_BLOCK}")
    return names


def skip_reason(method: str, setting: str, config: BenchConfig) -> str | None:
    """Why ``method`` cannot or does not run in ``setting`` (None: it runs)."""
    if setting == "full" and not any(fnmatchcase(method, pattern) for pattern in config.full_methods):
        return NOT_FULL.format(", ".join(config.full_methods))
    if method in PLAIN and setting == "zero":
        return NO_POSITIVES
    sources = Run(method, setting, 0).sources
    if "transplant" in sources and config.resize != "pad":
        return NOT_PADDED
    if "transplant" in sources and setting == "zero":
        return NO_REAL_DEFECTS
    given = config.method_params.get("diffusion", {})
    if "diffusion" in sources and setting == "zero" and "bank" not in given and given.get("backend") != "sd":
        return NO_SD_WEIGHTS
    return None


def plan(config: BenchConfig) -> tuple[list[Run], dict[tuple[str, str], str]]:
    """The runs of ``config`` in order (setting, method, seed), and the (method, setting) pairs skipped, why."""
    unknown = sorted(set(config.method_params) - set(list_augmenters()))
    if unknown:
        raise ValueError(f"method_params names {', '.join(map(repr, unknown))}, not a registered augmenter; "
                         f"registered: {', '.join(list_augmenters())}")
    runs, skipped = [], {}
    for setting in config.settings:
        for method in methods_of(config):
            reason = skip_reason(method, setting, config)
            if reason is not None:
                skipped[(method, setting)] = reason
            else:
                runs += [Run(method, setting, seed) for seed in config.seeds]
    return runs, skipped


class Benchmark:
    """A sweep on the dataset at ``data`` writing to ``out``: ``runs/NAME.json`` per run (reused when its
    settings are unchanged, so an interrupted sweep resumes), diffusion banks in ``banks/``."""

    def __init__(self, config: BenchConfig, data: str | Path, out: str | Path,
                 log: Callable[[str], None] | None = None):
        self.config, self.out = config, Path(out)
        self.log = log or _stderr
        check_model(config.model)  # now, not when the first run builds it
        self.data: BenchData = open_bench_data(data, config.image_size, config.val_fraction, config.layout,
                                               config.data_options, resize=config.resize, holdout=config.holdout)
        if not self.data.test.defects():  # checked now, not after the first run has trained
            scored = "the holdout of the training split" if config.holdout else "the test split"
            raise ValueError(f"{scored} of {data} holds no defective image, and AP needs some: give a data set "
                             "whose test images include defects" + (", or no holdout" if config.holdout else ""))
        self.runs, self.skipped = plan(config)
        self._leave_out_runs_without_a_slot()
        given = config.method_params.get("diffusion", {})
        if any("diffusion" in run.sources for run in self.runs) and not {"bank", "model"} & set(given):
            from inout_aug.models.ddpm import DDPMConfig

            DDPMConfig.preset(config.ddpm_preset, **config.ddpm_overrides)  # its errors now, not when a ddpm trains

    def _leave_out_runs_without_a_slot(self) -> None:
        """Move augmenter runs whose training set has no slot for a made defect (the real defects fill the positive
        share already, as at full shot on a data set with many defects) to the skipped pairs: they would be clones of
        ``none``."""
        share = self.config.positive_fraction
        for setting in sorted({run.setting for run in self.runs}):
            plain = TrainingSet(self.data.train, setting, shots=self.config.shots, positive_fraction=share,
                                flip_real=self.config.flip_real)
            if plain.slots or not plain.real:
                continue
            counts = plain.counts()
            reason = NO_SLOT.format(share=counts["real"] / (counts["real"] + counts["normal"]), wanted=share)
            for run in [r for r in self.runs if r.setting == setting and r.method not in PLAIN]:
                self.runs.remove(run)
                self.skipped[(run.method, setting)] = reason

    def run_name(self, run: Run, detector: str | None = None) -> str:
        """How files name ``run`` of ``detector`` (default: the config's): :meth:`Run.name`, after "segdec-" for
        the segmentation–decision network."""
        name, detector = run.name(self.config.shots), detector or self.config.detector
        return name if detector == CLASSIFIER else f"{detector}-{name}"

    def result_path(self, run: Run, detector: str | None = None) -> Path:
        return self.out / "runs" / f"{self.run_name(run, detector)}.json"

    def digest(self, run: Run, detector: str | None = None) -> str:
        """A hash of what a run's result depends on: the settings (less the list of runs; the detector
        ``detector`` if given), the run, the data; a stored result is reused only under the same hash."""
        settings = {k: v for k, v in self.config.to_dict().items() if k not in PLAN_FIELDS}
        settings["detector"] = detector or settings["detector"]
        if settings["detector"] == CLASSIFIER:  # as before the setting existed: stored classifier runs stay valid
            del settings["detector"]
        parts = [settings, run.method, run.setting, run.seed, self.data.record()]
        text = json.dumps(parts + ([RECIPES[run.method]] if run.method in RECIPES else []), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def finished(self, run: Run, detector: str | None = None) -> dict[str, Any] | None:
        """The stored result of ``run`` if it was made with the current settings; ``detector`` asks for that
        detector's run under otherwise the same settings (the classifier's beside a segdec run, say)."""
        try:
            result = json.loads(self.result_path(run, detector).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not (isinstance(result, dict) and result.get("digest") == self.digest(run, detector)):
            return None
        # The files' bytes too (a run stored before they were recorded is taken on its file list, as then).
        same_files = result.get("data_content", self.data.content_digest) == self.data.content_digest
        return result if same_files else None

    def run_all(self, claim: bool = False) -> list[dict[str, Any]]:
        """Every planned run's result, running those not finished yet, each while holding the run's lock
        (``runs/.NAME.lock``): a run that another process is making is waited for, then found finished.
        ``claim``: one of several processes sharing the folder; it takes the longest runs first, leaves the runs
        another process holds instead of waiting, and returns the results it found or made."""
        results = []
        order = sorted(self.runs, key=self.cost, reverse=True) if claim else self.runs
        for i, run in enumerate(order):
            label = f"[{i + 1}/{len(self.runs)}] {self.run_name(run)}"
            flag = self.result_path(run).with_name(f".{self.run_name(run)}.lock")
            held = lock(flag, wait=not claim)
            try:
                if held is None:
                    self.log(f"{label}: running in another process")
                    continue
                result = self.finished(run)
                if result is None:
                    self.log(f"{label}: training")
                    result = self.execute(run, lambda text, label=label: self.log(f"{label}: {text}"))
                    write_text(json.dumps(result) + "\n", self.result_path(run))
                else:
                    self.log(f"{label}: done before, AP {result['metrics']['ap']:.3f}")
                results.append(result)
            finally:
                if held is not None:  # one waiting on this file moves to the file next made at its path (lock)
                    flag.unlink(missing_ok=True)
                    held.close()
        return results

    def cost(self, run: Run) -> int:
        """A rank of how long ``run`` takes: a diffusion run that trains its ddpm first, then full-shot runs."""
        given = self.config.method_params.get("diffusion", {})
        trains_ddpm = "diffusion" in run.sources and not {"bank", "model"} & set(given)
        return 2 if trains_ddpm else 1 if run.setting == "full" else 0

    def training_set(self, run: Run) -> tuple[TrainingSet, Augmenter | None]:
        """The training set of ``run`` (augmented slots flagged for the batch augmenter; for ``none`` the real
        defects oversampled to the same balance) and its augmenter."""
        augmenter = self.augmenter(run)
        dataset = TrainingSet(self.data.train, run.setting, shots=self.config.shots, augmenter=augmenter,
                              positive_fraction=self.config.positive_fraction, flip_real=self.config.flip_real,
                              oversample=run.method == BASELINE, seed=run.seed, online=False)
        return dataset, augmenter

    def execute(self, run: Run, log: Callable[[str], None]) -> dict[str, Any]:
        """Train and score one classifier (or segmentation–decision network); its result record."""
        start = time.perf_counter()
        dataset, augmenter = self.training_set(run)
        if self.config.detector == SEGDEC:
            from inout_aug.bench import segdec

            model = segdec.create_segdec(self.config, run.seed)
            history = segdec.train_segdec(model, dataset, self.config, run.seed, augmenter, log)
            _, val_scores, _ = segdec.predict_segdec(model, self.data.validation)
            labels, scores, maps = segdec.predict_segdec(model, self.data.test)
        else:
            model = create_classifier(self.config, run.seed)
            history = train_classifier(model, dataset, self.config, run.seed, augmenter, log)
            _, val_scores = predict(model, self.data.validation)
            labels, scores = predict(model, self.data.test)
        threshold = metrics.threshold_at_false_alarm_rate(val_scores, self.config.false_alarm_rate)
        found = metrics.scores_at(labels, scores, threshold)
        oracle = metrics.scores_at(labels, scores, metrics.best_f1_threshold(labels, scores))
        result = {
            "run": {"method": run.method, "setting": run.setting, "shots": dataset.shots, "seed": run.seed},
            "digest": self.digest(run), "data_content": self.data.content_digest,
            "metrics": {"ap": metrics.average_precision(labels, scores), "auroc": metrics.auroc(labels, scores),
                        **{k: found[k] for k in ("precision", "recall", "f1")}},
            "threshold": {"value": threshold, "rule": f"exceeded by at most {self.config.false_alarm_rate:.0%} of the "
                          f"{len(val_scores)} validation normals ({int((val_scores >= threshold).sum())} of them)",
                          "test_counts": found},
            "oracle_best_f1_on_test": {"f1": oracle["f1"], "note": "the paper's best-F1 threshold, chosen on the "
                                       "test set: shown for comparison only, never used"},
            "history": history, "seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
            "augmenter": None if augmenter is None else repr(augmenter),
            "config": self.config.to_dict(), "data": self.data.record(), "training_set": dataset.record(),
            "versions": versions(), **git_state(self.out),
            "scores": {"test_labels": labels.tolist(), "test": scores.tolist(), "validation": val_scores.tolist()},
        }
        if self.config.detector == SEGDEC:
            pixel = segdec.pixel_metrics(self.data.test, maps)
            result["run"]["detector"] = SEGDEC
            result["metrics"].update(pixel_ap=pixel.pop("pixel_ap"), aupro=pixel.pop("aupro"))
            result["pixel"] = {**pixel, "measured": "pixel AP (scikit-learn) and AUPRO up to the FPR limit "
                               "(anomalib's per-region overlap curve) of the segmentation map, bilinearly upsampled"}
            write_png(segdec.heatmap_sheet(self.data.test, maps), self.out / f"heatmaps-{self.run_name(run)}.png")
            result["seconds"] = time.perf_counter() - start
            log(f"pixel AP {_format(result['metrics']['pixel_ap'])}, AUPRO {_format(result['metrics']['aupro'])}")
        log(f"AP {result['metrics']['ap']:.3f}, AUROC {result['metrics']['auroc']:.3f}, "
            f"F1 {found['f1']:.3f} ({result['seconds']:.0f} s)")
        return result

    def augmenter(self, run: Run) -> Augmenter | None:
        """The augmenter of ``run``'s method, seeded from the run; None for ``none`` and ``none_unbalanced``."""
        name = run.augmenter_name
        if name in PLAIN:
            return None
        seed = mix_seed(run.seed, run.method)
        if name != "inout":
            return self._side(name, run, mix_seed(seed, name))
        ratio = 0.5 if run.in_ratio is None else run.in_ratio
        sides = {side: self._side(spec, run, mix_seed(seed, side))
                 for side, spec in (("in", run.in_side), ("out", "memseg"))
                 if (ratio > 0 if side == "in" else ratio < 1)}
        return create("inout", in_ratio=ratio, seed=seed, in_augmenter=sides.get("in", run.in_side),
                      out_augmenter=sides.get("out", "memseg"), **self.config.method_params.get("inout", {}))

    def _side(self, name: str, run: Run, seed: int) -> Augmenter:
        params = dict(self.config.method_params.get(name, {}))
        if name == "diffusion":
            if "bank" in params:
                params["bank"] = str(params["bank"]).format(setting=run.setting, seed=run.seed,
                                                            shots=self.config.shots)
            elif "model" not in params:
                params["bank"] = str(self.ddpm_bank(run.setting, run.seed))
        if name == "transplant" and "defects" not in params:  # the run's own real defects, at the run's scale
            params.update(defects=str(self.data.train.root), fit=self.config.image_size,
                          shots=[str(r.image) for r in self.real_defects(run.setting, run.seed)])
        return create(name, seed=seed, **params)

    def real_defects(self, setting: str, seed: int) -> list[Record]:
        """The real training defects of (setting, seed), as the run's training set chooses them."""
        shots = self.config.shots if setting == "few" else None
        return choose_defects(self.data.train.defects(), setting, shots, seed)

    def ddpm_bank(self, setting: str, seed: int) -> Path:
        """A bank of ddpm defects for (setting, seed): the backend trained on that run's real defects and the
        training normals, then sampled into training normals; both kept under ``banks/`` and reused (made by one
        process at a time)."""
        folder = self.out / "banks" / f"{setting_name(setting, self.config.shots)}-seed{seed}"
        with closing(lock(folder / ".lock", wait=True)):  # runs of this (setting, seed) in other processes wait
            return self._ddpm_bank(folder, setting, seed)

    def _ddpm_bank(self, folder: Path, setting: str, seed: int) -> Path:
        from inout_aug.models.finetune import finetune_ddpm
        from inout_aug.tools.generate import GenerationJob

        train = self.data.train
        chosen = self.real_defects(setting, seed)
        masks = [r for r in chosen if r.mask is not None]
        made_with = {"ddpm_preset": self.config.ddpm_preset, "ddpm_overrides": self.config.ddpm_overrides,
                     "normals": train.digest(), "defects": [train.name_of(r) for r in chosen]}
        settings_file = folder / "settings.json"
        trained = (folder / "ddpm" / "config.json").is_file()  # else a run killed while training: begun again
        if trained and settings_file.is_file() and \
                json.loads(settings_file.read_text(encoding="utf-8")) != json.loads(json.dumps(made_with)):
            raise ValueError(f"{folder} holds a ddpm model made with other settings or data ({settings_file}); "
                             "delete the folder to make a new one, or use another --out")
        write_text(json.dumps(made_with, indent=2) + "\n", settings_file)
        if not trained:
            self.log(f"ddpm for {folder.name}: training on {len(train.normals())} normals and {len(chosen)} defects")
            finetune_ddpm(train, chosen, folder / "ddpm", self.config.ddpm_preset, self.config.ddpm_overrides,
                          seed=mix_seed(seed, "ddpm"))
        for i, record in enumerate(masks):  # the inpainting masks: the shapes of this run's real defects only
            mask = read_mask(record.mask, train.mask_threshold)
            if mask.any():  # an empty mask has no shape to paint
                write_png(mask[None].to(torch.uint8) * 255, folder / "masks" / f"{i:02d}-{record.image.stem}.png")
        made = len(read_manifest(folder / "bank")) if (folder / "bank").is_dir() else 0
        if made > self.config.bank_size:
            raise ValueError(f"{folder / 'bank'} holds {made} defects from an earlier sweep, more than bank_size="
                             f"{self.config.bank_size}: give bank_size={made} or more, or another --out")
        params = {**_bank_paths(folder, {"model": "ddpm", "masks": "masks"}), "backend": "ddpm",
                  "steps": self.config.diffusion_steps}
        with GenerationJob("diffusion", train.root, folder / "bank", n=self.config.bank_size,
                           seed=mix_seed(seed, "bank"), params=params,
                           sources=[r.image for r in train.normals()]) as job:
            if job.todo:
                self.log(f"ddpm bank {folder.name}: sampling {len(job.todo)} defects")
                job.run(batch_size=8)
        return folder / "bank"


def _bank_paths(folder: Path, names: dict[str, str]) -> dict[str, str]:
    """The paths of ``folder/name`` for the parameters ``names`` ({parameter: name}) of a bank's run.json: absolute,
    so that a sweep resumes with --out spelled another way, or as an earlier sweep recorded them (relative, before
    paths were made absolute) where they still name the same folders, so that its bank resumes too."""
    try:
        recorded = json.loads((folder / "bank" / "run.json").read_text(encoding="utf-8"))["params"]
    except (OSError, ValueError, KeyError, TypeError):  # no bank yet, or not one this code can read
        recorded = {}
    paths = {}
    for key, name in names.items():
        path = Path(os.path.abspath(folder / name))
        before = recorded.get(key) if isinstance(recorded, dict) else None
        same = isinstance(before, str) and not Path(before).is_absolute() and path.exists() \
            and Path(before).exists() and os.path.samefile(before, path)
        paths[key] = before if same else str(path)
    return paths


def fold_benchmarks(config: BenchConfig, data: str | Path, out: str | Path,
                    log: Callable[[str], None] | None = None) -> list[Benchmark]:
    """The benchmarks of a sweep: with ``all_folds`` one per fold of the layout, fold K the test fold of the one in
    ``out/foldK``; otherwise the one benchmark in ``out``."""
    if not config.all_folds:
        return [Benchmark(config, data, out, log)]
    log = log or _stderr
    dataset = open_dataset(data, config.layout, "train", **config.data_options)
    folds = getattr(dataset, "folds", None)
    if folds is None:
        raise ValueError(f"--folds all (all_folds) needs a layout split by folds, such as ksdd; {dataset.layout} at "
                         f"{dataset.root} has fixed train and test splits")
    return [Benchmark(replace(config, all_folds=False, data_options={**config.data_options, "fold": fold,
                                                                     "folds": folds}),
                      data, Path(out) / f"fold{fold}", lambda text, fold=fold: log(f"fold {fold} {text}"))
            for fold in range(folds)]


def _format(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def run_in_processes(config: BenchConfig, data: str | Path, out: str | Path, jobs: int) -> None:
    """Run the unfinished runs of ``config`` in ``jobs`` processes side by side, sharing ``out``: each takes the
    longest run that no other holds (:meth:`Benchmark.run_all` with ``claim``), on an equal share of torch's
    threads. Returns when every process has ended; raises when one failed (a rerun resumes)."""
    if not LOCKING:
        raise RuntimeError("--jobs needs file locks (flock), which this platform lacks: run one process (--jobs 1)")
    threads = max(1, torch.get_num_threads() // jobs)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    processes = [context.Process(target=_claim_runs, args=(config, str(data), str(out), threads, k + 1))
                 for k in range(jobs)]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
    failed = [(k + 1, p.exitcode) for k, p in enumerate(processes) if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"bench process {failed[0][0]} of {jobs} stopped with exit code {failed[0][1]} (its error "
                           "is above); the runs finished are kept: run the same command again to resume")


def _claim_runs(config: BenchConfig, data: str, out: str, threads: int, number: int) -> None:
    """One process of :func:`run_in_processes`."""
    torch.set_num_threads(threads)
    for bench in fold_benchmarks(config, data, out, lambda text: _stderr(f"(process {number}) {text}")):
        bench.run_all(claim=True)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def versions() -> dict[str, str | None]:
    """Python and the versions of the packages a result depends on."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_state(out: str | Path | None = None, source: Path = SOURCE) -> dict[str, Any]:
    """The commit of the git checkout that tracks ``source`` and whether its tree is dirty (changed or untracked
    files, those under ``out``, a benchmark's own output, aside); both None when no checkout tracks ``source`` (an
    installed package, git missing)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=source.parent, capture_output=True, text=True, check=True).stdout

    try:
        top, commit = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        git("ls-files", "--error-unmatch", "--", source.name)
        where = None if out is None else Path(out).resolve()
        aside = [f":(top,exclude){where.relative_to(top).as_posix()}"] if where and where.is_relative_to(top) else []
        status = git("status", "--porcelain", "--", ":(top)", *aside)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}
