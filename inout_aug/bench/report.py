"""The benchmark's report: mean ± std per method and setting, a markdown table, PR curves and positives as PNG."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inout_aug.bench import metrics
from inout_aug.bench.config import BASELINE, CLASSIFIER, BenchConfig
from inout_aug.bench.plots import write_positives, write_pr_curves
from inout_aug.bench.runner import Benchmark, Run, setting_name
from inout_aug.core.io import write_text
from inout_aug.data.loading import augment_batch, collate

MEASURES = ("ap", "auroc", "precision", "recall", "f1")
#: Pixel-level measures of the segmentation–decision network, where the test split has masks: name and column title.
PIXEL_MEASURES = {"pixel_ap": "pixel AP", "aupro": "AUPRO@0.3"}
#: The methods every other one is compared with, paired by seed.
COMPARED = (BASELINE, "memseg")
#: Further paired comparisons (method, reference), where both ran: the in sides against each other, and each in
#: side with MemSeg (InOutMix) against the in side alone.
CONTRASTS = (("diffusion", "transplant"), ("inout", "inout+transplant"), ("inout", "diffusion"),
             ("inout+transplant", "transplant"))
#: The confidence of every interval.
CONFIDENCE = 0.95
SETTING_TITLES = {"zero": "zero-shot", "few": "few-shot", "full": "full-shot"}
#: Positives shown per method in the positives figure.
SHOWN = 8
#: How summary.md describes a run's source tree, by the ``dirty`` of its record (None: recorded before dirty was).
TREE = {True: "**dirty**: uncommitted changes", False: "clean", None: "clean or dirty: not recorded"}


def t_quantile(seeds: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``seeds`` − 1 degrees of freedom (scipy)."""
    try:
        from scipy import stats
    except ImportError:
        raise ImportError("benchmark statistics need scipy (comes with scikit-learn): pip install "
                          "'inout-aug[bench]'") from None
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, seeds - 1))


def paired_difference(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any] | None:
    """The mean of ``values[s] − reference[s]`` over the seeds s both have, with its 95 % paired t interval
    (mean ± t · sd / √n; None bounds with one seed); ``resolved`` when the interval excludes 0. None without a
    common seed."""
    seeds = sorted(values.keys() & reference.keys())
    if not seeds:
        return None
    differences = np.array([values[s] - reference[s] for s in seeds])
    mean, low, high = float(differences.mean()), None, None
    if len(seeds) > 1:
        half = t_quantile(len(seeds)) * float(differences.std(ddof=1)) / float(np.sqrt(len(seeds)))
        low, high = mean - half, mean + half
    return {"mean": mean, "low": low, "high": high, "seeds": seeds,
            "resolved": bool(low is not None and (low > 0 or high < 0))}


def gap_share(values: dict[int, float], few: dict[int, float], full: dict[int, float]) -> dict[str, Any] | None:
    """The share of the baseline's few-shot → full-shot AP gap that a few-shot method closes, over the seeds all
    three have: mean(values − few) / mean(full − few), with its 95 % Fieller interval (the ratios R that a paired
    t test of values − few − R (full − few) does not reject; None bounds when that set is unbounded, i.e. the gap
    itself is not resolved, or with one seed). None without a common seed."""
    seeds = sorted(values.keys() & few.keys() & full.keys())
    if not seeds:
        return None
    gained = np.array([values[s] - few[s] for s in seeds])
    gap = np.array([full[s] - few[s] for s in seeds])
    share = float(gained.mean() / gap.mean()) if gap.mean() else None
    low = high = None
    if len(seeds) > 1:
        q = t_quantile(len(seeds)) ** 2 / len(seeds)
        cov = np.cov(gained, gap)
        a = gap.mean() ** 2 - q * cov[1, 1]
        b = gained.mean() * gap.mean() - q * cov[0, 1]
        c = gained.mean() ** 2 - q * cov[0, 0]
        if a > 0:
            root = float(np.sqrt(max(b * b - a * c, 0.0)))
            low, high = float((b - root) / a), float((b + root) / a)
    return {"share": share, "low": low, "high": high, "seeds": seeds, "gap": float(gap.mean())}


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (setting, method), in run order: mean and std over seeds of every measure; the AP difference
    from ``none`` and from ``memseg`` of the same setting, paired by seed (the same seed trains on the same real
    defects), with 95 % t intervals (``vs``; also from the references :data:`CONTRASTS` give the method); for
    few-shot methods the share of none's few → full-shot gap they close (``gap_share``); per-fold AP (``fold_ap``)
    for records pooled over folds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault((result["run"]["setting"], result["run"]["method"]), []).append(result)
    ap = _ap_by_seed(results)
    rows = []
    for (setting, method), members in groups.items():
        row: dict[str, Any] = {"setting": setting, "method": method, "shots": members[0]["run"]["shots"],
                               "seeds": [m["run"]["seed"] for m in members]}
        for measure in MEASURES:
            row[measure] = metrics.mean_std([m["metrics"][measure] for m in members])
        for measure in PIXEL_MEASURES:
            values = [m["metrics"].get(measure) for m in members]
            if all(v is not None for v in values):
                row[measure] = metrics.mean_std(values)
        references = [*COMPARED, *(ref for name, ref in CONTRASTS if name == method)]
        row["vs"] = {ref: paired_difference(ap[(setting, method)], ap[(setting, ref)]) for ref in references
                     if ref != method and (setting, ref) in ap}
        references = ("few", BASELINE) in ap and ("full", BASELINE) in ap
        row["gap_share"] = gap_share(ap[(setting, method)], ap[("few", BASELINE)], ap[("full", BASELINE)]) \
            if setting == "few" and method != BASELINE and references else None
        if "fold_ap" in members[0]:
            row["fold_ap"] = [metrics.mean_std(aps) for aps in zip(*(m["fold_ap"] for m in members))]
        row["seconds"] = float(np.mean([m["seconds"] for m in members]))
        rows.append(row)
    return rows


def _ap_by_seed(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, float]]:
    """AP per (setting, method), per seed, in the order the results come."""
    ap: dict[tuple[str, str], dict[int, float]] = {}
    for result in results:
        ap.setdefault((result["run"]["setting"], result["run"]["method"]), {})[result["run"]["seed"]] = \
            result["metrics"]["ap"]
    return ap


def ratio_sweeps(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting and in side X that ran InOutMix at an in_ratio other than the default ("inout+X@r", "inout@r"
    for diffusion): AP at each ratio, and each ratio against the one of highest mean AP (paired by seed, 95 % t
    interval, "vs_best"). 0.5 is "inout+X"; the ends are the plain methods' runs, memseg at 0 and X at 1: InOutMix
    with no share for a side never builds it (:class:`~inout_aug.augmenters.inout.InOutMix`), so at 0 or 1 it is
    the other side alone, on the same training set and classifier seed; only the augmenter's seed differs."""
    ap = _ap_by_seed(results)
    runs = [Run(method, setting, 0) for setting, method in ap]
    sweeps = []
    for setting, side in dict.fromkeys((r.setting, r.in_side) for r in runs
                                       if r.augmenter_name == "inout" and r.in_ratio is not None):
        mix = "inout" if side == "diffusion" else f"inout+{side}"
        points = {0.0: "memseg", 0.5: mix, 1.0: side}
        points.update({r.in_ratio: r.method for r in runs if r.setting == setting and r.method.startswith(f"{mix}@")})
        points = {ratio: method for ratio, method in sorted(points.items()) if (setting, method) in ap}
        best = max(points.values(), key=lambda method: np.mean(list(ap[(setting, method)].values())))
        sweeps.append({"setting": setting, "in_side": side, "best": best, "points": [
            {"in_ratio": ratio, "method": method, "seeds": sorted(ap[(setting, method)]),
             "ap": metrics.mean_std(list(ap[(setting, method)].values())),
             "vs_best": None if method == best else paired_difference(ap[(setting, method)], ap[(setting, best)])}
            for ratio, method in points.items()]})
    return sweeps


def mask_supervision(results: list[dict[str, Any]], classifier: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Per (setting, method), in run order: image AP of the segmentation–decision network (``results``) against
    the classifier's run of the same method, setting and seed (``classifier``, None where there is none), over
    the seeds both have: their mean ± std and segdec − classifier paired by seed with its 95 % t interval."""
    segdec = _ap_by_seed(results)
    plain = _ap_by_seed([r for r in classifier if r is not None])
    rows = []
    for (setting, method), ap in segdec.items():
        seeds = sorted(set(ap) & set(plain.get((setting, method), {})))
        if not seeds:
            continue
        mine, theirs = {s: ap[s] for s in seeds}, {s: plain[(setting, method)][s] for s in seeds}
        rows.append({"setting": setting, "method": method, "seeds": seeds,
                     "classifier": metrics.mean_std(list(theirs.values())),
                     "segdec": metrics.mean_std(list(mine.values())),
                     "segdec_minus_classifier": paired_difference(mine, theirs)})
    return rows


def markdown(rows: list[dict[str, Any]], skipped: dict[tuple[str, str], str], settings: tuple[str, ...],
             shots: int, header: str = "", sweeps: list[dict[str, Any]] | None = None,
             supervision: list[dict[str, Any]] | None = None) -> str:
    """The summary table, one section per setting; skipped (method, setting) pairs are listed with the reason;
    the in_ratio sweeps of the setting (:func:`ratio_sweeps`); per-fold AP where the rows have it; then the
    segdec runs against the classifier's (:func:`mask_supervision`)."""
    lines = [header] if header else []
    pixel = [m for m in PIXEL_MEASURES if any(m in r for r in rows)]
    columns = ["method", "seeds", "AP", "AUROC", "precision", "recall", "F1", *(PIXEL_MEASURES[m] for m in pixel),
               *(f"AP − {ref} (paired, 95 % CI)" for ref in COMPARED), "gap closed (95 % CI)", "s / run"]
    for setting in settings:
        title = SETTING_TITLES[setting] + (f" (N = {shots})" if setting == "few" else "")
        lines += [f"### {title}", "", _cells(columns), _cells(["---"] * len(columns))]
        for row in (r for r in rows if r["setting"] == setting):
            lines.append(_cells([row["method"], str(len(row["seeds"])), *(_pm(row[m]) for m in MEASURES),
                                 *(_pm(row[m]) if m in row else "—" for m in pixel),
                                 *(_difference(row["vs"].get(ref)) for ref in COMPARED), _share(row["gap_share"]),
                                 f"{row['seconds']:.0f}"]))
        for (method, where), reason in skipped.items():
            if where == setting:
                lines.append(_cells([method, "—", f"not run: {reason}"] + [""] * (len(columns) - 3)))
        lines.append("")
        others = [(row["method"], ref, found) for row in rows if row["setting"] == setting
                  for ref, found in row["vs"].items() if ref not in COMPARED]
        if others:
            lines += ["In sides against each other, and what MemSeg adds to each:", "",
                      _cells(["difference", "AP (paired, 95 % CI)"]), _cells(["---"] * 2)]
            lines += [_cells([f"{method} − {ref}", _difference(found)]) for method, ref, found in others] + [""]
        for sweep in (w for w in sweeps or [] if w["setting"] == setting):
            lines += [f"InOutMix's in_ratio with {sweep['in_side']} as its in side (0: memseg alone, 1: "
                      f"{sweep['in_side']} alone; the highest mean AP is {sweep['best']}):", "",
                      _cells(["in_ratio", "method", "seeds", "AP", f"AP − {sweep['best']} (paired, 95 % CI)"]),
                      _cells(["---"] * 5)]
            lines += [_cells([f"{p['in_ratio']:g}", p["method"], str(len(p["seeds"])), _pm(p["ap"]),
                              "—" if p["vs_best"] is None else _difference(p["vs_best"])]) for p in sweep["points"]]
            lines.append("")
    folds = [r for r in rows if "fold_ap" in r]
    if folds:
        count = len(folds[0]["fold_ap"])
        lines += ["### AP per test fold (mean ± std over seeds)", "",
                  _cells(["setting", "method", *(f"fold {k}" for k in range(count)), "pooled"]),
                  _cells(["---"] * (count + 3))]
        lines += [_cells([setting_name(r["setting"], shots), r["method"], *map(_pm, r["fold_ap"]), _pm(r["ap"])])
                  for r in folds]
        lines.append("")
    if supervision:
        lines += ["### With and without mask supervision: image AP, segdec against the classifier", "",
                  "The classifier's runs of the same method, setting and seed in this folder, same data and settings "
                  "but the detector; paired by seed.", "",
                  _cells(["setting", "method", "seeds", "classifier AP", "segdec AP",
                          "segdec − classifier (paired, 95 % CI)"]), _cells(["---"] * 6)]
        lines += [_cells([setting_name(r["setting"], shots), r["method"], str(len(r["seeds"])), _pm(r["classifier"]),
                          _pm(r["segdec"]), _difference(r["segdec_minus_classifier"])]) for r in supervision]
        lines.append("")
    return "\n".join(lines)


def _cells(values: list[str]) -> str:
    return "| " + " | ".join(values) + " |"


def _pm(value: tuple[float, float]) -> str:
    return f"{value[0]:.3f} ± {value[1]:.3f}"


def _difference(found: dict[str, Any] | None) -> str:
    """A paired difference as "+0.150 [+0.050, +0.250]", marked not resolved when its interval holds 0."""
    if found is None:
        return "—"
    if found["low"] is None:
        return f"{found['mean']:+.3f} (1 seed, not resolved)"
    text = f"{found['mean']:+.3f} [{found['low']:+.3f}, {found['high']:+.3f}]"
    return text if found["resolved"] else f"{text} not resolved"


def _share(found: dict[str, Any] | None) -> str:
    """A gap share as "0.40 [0.10, 0.70]", saying why where it has no interval."""
    if found is None:
        return "—"
    if found["share"] is None:
        return "— (none: full-shot AP = few-shot AP)"
    if found["low"] is not None:
        return f"{found['share']:.2f} [{found['low']:.2f}, {found['high']:.2f}]"
    why = "1 seed" if len(found["seeds"]) == 1 else "unbounded: the few → full gap is not resolved"
    return f"{found['share']:.2f} ({why})"


def positives(bench: Benchmark, run: Run, count: int = SHOWN) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Positives ``run`` trained on (first epoch): its augmented ones, or its real defects when it has no
    augmenter; as (image, mask) pairs, the mask None where a positive has no pixel mask."""
    dataset, augmenter = bench.training_set(run)
    kind = "real" if augmenter is None else "augmented"
    indices = [i for i, item in enumerate(dataset.items) if item.kind == kind and item.flip is None][:count]
    if not indices:
        return []
    dataset.set_epoch(0)
    batch = collate([dataset[i] for i in indices])
    if augmenter is not None:
        batch = augment_batch(batch, augmenter)
    masks = [m if m.any() else None for m in batch["mask"].as_subclass(torch.Tensor)]
    return list(zip(batch["image"].as_subclass(torch.Tensor), masks))


def write_report(bench: Benchmark, results: list[dict[str, Any]], command: str | None = None) -> list[Path]:
    """Write ``summary.json``, ``summary.md``, ``pr-SETTING.png`` and ``positives-SETTING.png`` (their names
    after the config's ``report_prefix``) to the benchmark's folder; returns their paths."""
    config, out = bench.config, bench.out
    prefix = config.report_prefix
    supervision = None
    if config.detector != CLASSIFIER:
        supervision = mask_supervision(results, [bench.finished(Run(r["run"]["method"], r["run"]["setting"],
                                                                    r["run"]["seed"]), CLASSIFIER) for r in results])
    written = _write_summary(config, [bench], results, results, out, command, supervision)
    for setting in config.settings:
        curves = _curves(results, setting)
        if not curves:
            continue
        name = setting_name(setting, config.shots)
        title = f"{SETTING_TITLES[setting]}: precision-recall on the test split, one line per seed"
        written.append(write_pr_curves(curves, title, out / f"{prefix}pr-{name}.png"))
        seed = next(r["run"]["seed"] for r in results if r["run"]["setting"] == setting)
        shown = {method: positives(bench, Run(method, setting, seed)) for method in curves}
        written.append(write_positives(shown, out / f"{prefix}positives-{name}.png"))
    return written


def pool_folds(results: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per run (method, setting, seed) that every fold made (``results``: each fold's), over the test
    images of all folds, so each is tested once: AP and AUROC of all their scores together, precision, recall and
    F1 of each fold's decisions at its own threshold; each fold's AP in ``fold_ap``, the seconds summed."""
    keyed = [{(r["run"]["method"], r["run"]["setting"], r["run"]["seed"]): r for r in fold} for fold in results]
    pooled = []
    for key in keyed[0]:
        members = [fold.get(key) for fold in keyed]
        if any(m is None for m in members):
            continue
        labels = np.concatenate([m["scores"]["test_labels"] for m in members])
        scores = np.concatenate([m["scores"]["test"] for m in members])
        decided = np.concatenate([np.asarray(m["scores"]["test"]) >= m["threshold"]["value"] for m in members])
        found = metrics.scores_at(labels, decided.astype(np.float64), 0.5)
        pooled.append({
            "run": members[0]["run"], "seconds": sum(m["seconds"] for m in members),
            "metrics": {"ap": metrics.average_precision(labels, scores), "auroc": metrics.auroc(labels, scores),
                        **{k: found[k] for k in ("precision", "recall", "f1")}},
            "fold_ap": [m["metrics"]["ap"] for m in members],
            "scores": {"test_labels": labels.tolist(), "test": scores.tolist()},
        })
    return pooled


def write_fold_report(config: BenchConfig, benches: list[Benchmark], results: list[list[dict[str, Any]]],
                      out: Path, command: str | None = None) -> list[Path]:
    """Write the report pooled over folds (:func:`pool_folds`) to ``out``: ``summary.json``, ``summary.md`` (with
    per-fold AP) and ``pr-SETTING.png``; each fold's own report is in its folder. Returns the paths."""
    pooled = pool_folds(results)
    written = _write_summary(config, benches, [r for fold in results for r in fold], pooled, out, command)
    for setting in config.settings:
        curves = _curves(pooled, setting)
        if curves:
            title = f"{SETTING_TITLES[setting]}: precision-recall over all test folds, one line per seed"
            written.append(write_pr_curves(curves, title, out / f"pr-{setting_name(setting, config.shots)}.png"))
    return written


def _curves(results: list[dict[str, Any]], setting: str) -> dict[str, list[tuple[Any, Any]]]:
    """Per method, the (test labels, test scores) of each of its runs in ``setting``."""
    curves: dict[str, list[tuple[Any, Any]]] = {}
    for result in (r for r in results if r["run"]["setting"] == setting):
        scores = result["scores"]
        curves.setdefault(result["run"]["method"], []).append((scores["test_labels"], scores["test"]))
    return curves


def _write_summary(config: BenchConfig, benches: list[Benchmark], results: list[dict[str, Any]],
                   summarized: list[dict[str, Any]], out: Path, command: str | None,
                   supervision: list[dict[str, Any]] | None = None) -> list[Path]:
    """``summary.json`` and ``summary.md`` in ``out`` of the results ``summarized`` (the runs, or the runs pooled
    over folds); ``results`` are the runs behind them; ``supervision`` the segdec runs against the classifier's."""
    rows, sweeps = summarize(summarized), ratio_sweeps(summarized)
    written = [out / f"{config.report_prefix}summary.json", out / f"{config.report_prefix}summary.md"]
    skipped = benches[0].skipped
    data = {"data": benches[0].data.record()} if len(benches) == 1 else \
        {"folds": [{"data_options": b.config.data_options, "data": b.data.record()} for b in benches]}
    write_text(json.dumps({"config": config.to_dict(), "command": command, "confidence": CONFIDENCE, "rows": rows,
                           "in_ratio_sweeps": sweeps,
                           **({"mask_supervision": supervision} if supervision is not None else {}),
                           "skipped": [{"method": m, "setting": s, "reason": r} for (m, s), r in skipped.items()],
                           **data}, indent=2) + "\n", written[0])
    header = _header(config, benches, results, command)
    write_text(markdown(rows, skipped, config.settings, config.shots, header, sweeps, supervision), written[1])
    return written


def provenance(results: list[dict[str, Any]]) -> str:
    """The commits the runs came from, each with its number of runs, flagged where the tree was dirty."""
    counts = Counter((r.get("commit"), r.get("dirty")) for r in results)
    parts = [("no git checkout" if commit is None else f"commit {commit} ({TREE[dirty]})") +
             f": {count} run{'s' if count > 1 else ''}" for (commit, dirty), count in counts.items()]
    return "; ".join(parts) or "no runs"


def _header(config: BenchConfig, benches: list[Benchmark], results: list[dict[str, Any]],
            command: str | None) -> str:
    first, train = (results[0] if results else {}), benches[0].data.train
    lines = [
        f"# Benchmark: {config.model} on {train.layout} ({train.root.name})", "",
        f"Command: `{command}`" if command else "",
        _model_line(config),
        _data_line(benches),
        f"Balance and steps are equal for every method: positives fill {config.positive_fraction:.0%} of each "
        "training set (made defects, or for none copies of its real defects under random flips and 90° rotations), "
        "so every run takes the same optimiser steps per epoch (none_unbalanced, where run, has its real defects "
        "alone).",
        f"Threshold for precision/recall/F1: the score exceeded by {config.false_alarm_rate:.0%} of the validation "
        "normals (no test data, no positives). AP and AUROC need no threshold. Mean ± std over seeds.",
        "Differences are paired by seed (a seed trains on the same real defects for every method): their mean with "
        "a 95 % paired t interval, mean ± t(0.975, n − 1) · sd / √n over n seeds (scipy.stats.t.ppf); "
        "one whose interval contains 0 is marked *not resolved* and ranks nothing. Gap closed: mean over seeds of "
        "(AP − AP of none few-shot) / mean of (AP of none full-shot − AP of none few-shot), the seeds all three "
        "have, with a 95 % Fieller interval.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in first.get('versions', {}).items())}; the runs' times "
        f"add up to {sum(r['seconds'] for r in results) / 60:.1f} min (a diffusion run's time includes training its "
        "ddpm and sampling its bank; runs in parallel processes overlap in wall time).",
        f"Source: {provenance(results)}.", "",
    ]
    return "\n".join(lines)


def _model_line(config: BenchConfig) -> str:
    """What was trained: the classifier, or the segmentation–decision network and how its pixels are scored."""
    training = (f"{config.image_size[0]}x{config.image_size[1]} px, {config.epochs} epochs, batch {config.batch_size}, "
                f"Adam lr {config.learning_rate}, {config.frozen_blocks} frozen blocks; the last epoch's model is "
                "tested.")
    if config.detector == CLASSIFIER:
        return f"Classifier: {config.model} (weights: {config.weights}), {training}"
    return (f"Detector: segmentation–decision network (Božič et al. 2021, arXiv 2104.06064; departures in "
            f"inout_aug/bench/segdec.py) on {config.model} (weights: {config.weights}), {training} Pixel loss "
            "where a mask is known, image loss on every sample, the image score from the decision head. Pixel AP "
            "(scikit-learn) and AUPRO up to FPR 0.3 (anomalib's per-region overlap curve): every content pixel of "
            "the test images with masks at the image size, the map upsampled bilinearly.")


def _data_line(benches: list[Benchmark]) -> str:
    """The sizes of the data views: one benchmark's, or the folds' together."""
    data = [b.data.record() for b in benches]
    images, defects = (sum(d["test"][key] for d in data) for key in ("images", "defects"))
    if len(data) == 1:
        return (f"Data: train {data[0]['train']['images']} images ({data[0]['train']['defects']} defective), "
                f"validation {data[0]['validation']['images']} held-out normals, test {images} ({defects} defective): "
                f"a classifier that guesses has AP {defects / images:.3f}.")
    trains = sorted({d["train"]["images"] for d in data})
    train = f"{trains[0]}" if len(trains) == 1 else f"{trains[0]}-{trains[-1]}"
    return (f"Data: {len(data)} folds, each the test split once, so every image is tested once: {images} test images "
            f"({defects} defective) in all, a classifier that guesses has AP {defects / images:.3f}; per fold "
            f"{train} training images. AP and AUROC are over the test scores of all folds "
            "together, per seed (pooled); precision, recall and F1 over each fold's decisions at its own threshold; "
            "per-fold AP at the end.")
