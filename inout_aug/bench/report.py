"""The benchmark's report: mean ± std per method and setting, a markdown table, PR curves and positives as PNG."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inout_aug.bench import metrics
from inout_aug.bench.config import BASELINE
from inout_aug.bench.plots import write_positives, write_pr_curves
from inout_aug.bench.runner import Benchmark, Run, setting_name
from inout_aug.core.io import write_text
from inout_aug.data.loading import augment_batch, collate

MEASURES = ("ap", "auroc", "precision", "recall", "f1")
SETTING_TITLES = {"zero": "zero-shot", "few": "few-shot", "full": "full-shot"}
#: Positives shown per method in the positives figure.
SHOWN = 8
#: How summary.md describes a run's source tree, by the ``dirty`` of its record (None: recorded before dirty was).
TREE = {True: "**dirty**: uncommitted changes", False: "clean", None: "clean or dirty: not recorded"}


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (setting, method), in run order: mean and std over seeds of every measure, and the AP gain
    over the baseline ``none`` paired by seed (the same seed trains on the same real defects)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault((result["run"]["setting"], result["run"]["method"]), []).append(result)
    rows = []
    for (setting, method), members in groups.items():
        row: dict[str, Any] = {"setting": setting, "method": method, "shots": members[0]["run"]["shots"],
                               "seeds": [m["run"]["seed"] for m in members]}
        for measure in MEASURES:
            row[measure] = metrics.mean_std([m["metrics"][measure] for m in members])
        baseline = {r["run"]["seed"]: r["metrics"]["ap"] for r in groups.get((setting, BASELINE), [])}
        paired = [m["metrics"]["ap"] - baseline[m["run"]["seed"]] for m in members if m["run"]["seed"] in baseline]
        row["ap_gain"] = metrics.mean_std(paired) if paired and method != BASELINE else None
        row["seconds"] = float(np.mean([m["seconds"] for m in members]))
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], skipped: dict[tuple[str, str], str], settings: tuple[str, ...],
             shots: int, header: str = "") -> str:
    """The summary table, one section per setting; skipped (method, setting) pairs are listed with the reason."""
    lines = [header] if header else []
    for setting in settings:
        title = SETTING_TITLES[setting] + (f" (N = {shots})" if setting == "few" else "")
        lines += [f"### {title}", "",
                  "| method | seeds | AP | AUROC | precision | recall | F1 | AP − none (paired) | s / run |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in (r for r in rows if r["setting"] == setting):
            cells = [_pm(row[m]) for m in MEASURES]
            gain = "—" if row["ap_gain"] is None else _pm(row["ap_gain"], signed=True)
            lines.append(f"| {row['method']} | {len(row['seeds'])} | {' | '.join(cells)} | {gain} | "
                         f"{row['seconds']:.0f} |")
        for (method, where), reason in skipped.items():
            if where == setting:
                lines.append(f"| {method} | — | not run: {reason} | | | | | | |")
        lines.append("")
    return "\n".join(lines)


def _pm(value: tuple[float, float], signed: bool = False) -> str:
    mean, std = value
    return f"{mean:+.3f} ± {std:.3f}" if signed else f"{mean:.3f} ± {std:.3f}"


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
    """Write ``summary.json``, ``summary.md``, ``pr-SETTING.png`` and ``positives-SETTING.png`` to the
    benchmark's folder; returns their paths."""
    config, out = bench.config, bench.out
    rows = summarize(results)
    written = [out / "summary.json", out / "summary.md"]
    write_text(json.dumps({"config": config.to_dict(), "command": command, "rows": rows,
                           "skipped": [{"method": m, "setting": s, "reason": r} for (m, s), r in bench.skipped.items()],
                           "data": bench.data.record()}, indent=2) + "\n", written[0])
    header = _header(bench, results, command)
    write_text(markdown(rows, bench.skipped, config.settings, config.shots, header), written[1])
    for setting in config.settings:
        done = [r for r in results if r["run"]["setting"] == setting]
        if not done:
            continue
        curves: dict[str, list[tuple[Any, Any]]] = {}
        for result in done:
            scores = result["scores"]
            curves.setdefault(result["run"]["method"], []).append((scores["test_labels"], scores["test"]))
        name = setting_name(setting, config.shots)
        title = f"{SETTING_TITLES[setting]}: precision-recall on the test split, one line per seed"
        written.append(write_pr_curves(curves, title, out / f"pr-{name}.png"))
        seed = done[0]["run"]["seed"]
        shown = {method: positives(bench, Run(method, setting, seed)) for method in curves}
        written.append(write_positives(shown, out / f"positives-{name}.png"))
    return written


def provenance(results: list[dict[str, Any]]) -> str:
    """The commits the runs came from, each with its number of runs, flagged where the tree was dirty."""
    counts = Counter((r.get("commit"), r.get("dirty")) for r in results)
    parts = [("no git checkout" if commit is None else f"commit {commit} ({TREE[dirty]})") +
             f": {count} run{'s' if count > 1 else ''}" for (commit, dirty), count in counts.items()]
    return "; ".join(parts) or "no runs"


def _header(bench: Benchmark, results: list[dict[str, Any]], command: str | None) -> str:
    config, data = bench.config, bench.data.record()
    first = results[0] if results else {}
    lines = [
        f"# Benchmark: {config.model} on {bench.data.train.layout} ({bench.data.train.root.name})", "",
        f"Command: `{command}`" if command else "",
        f"Classifier: {config.model} (weights: {config.weights}), {config.image_size[0]}x{config.image_size[1]} px, "
        f"{config.epochs} epochs, batch {config.batch_size}, Adam lr {config.learning_rate}, "
        f"{config.frozen_blocks} frozen blocks; the last epoch's model is tested.",
        f"Data: train {data['train']['images']} images ({data['train']['defects']} defective), validation "
        f"{data['validation']['images']} held-out normals, test {data['test']['images']} "
        f"({data['test']['defects']} defective): a classifier that guesses has AP "
        f"{data['test']['defects'] / data['test']['images']:.3f}.",
        f"Threshold for precision/recall/F1: the score exceeded by {config.false_alarm_rate:.0%} of the validation "
        "normals (no test data, no positives). AP and AUROC need no threshold. Mean ± std over seeds.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in first.get('versions', {}).items())}; the runs took "
        f"{sum(r['seconds'] for r in results) / 60:.1f} min in all (a diffusion run's time includes training its ddpm "
        "and sampling its bank).",
        f"Source: {provenance(results)}.", "",
    ]
    return "\n".join(lines)
