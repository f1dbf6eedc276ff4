"""Choose the `cpu` preset's image size and training length: full-shot `none` (plain training on every real
training defect) at several sizes and lengths, scored on a held-out quarter of the training split (the test
split is never read), with the seconds each run took. Writes `benchmarks/results/size_sweep.{json,md}`.

    .venv/bin/python benchmarks/size_sweep.py --data ../shared/data/magnetic_tile

Runs are kept under `--work` (default /tmp/inout-size-sweep) and reused, so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from inout_aug.bench import metrics
from inout_aug.bench.config import BenchConfig
from inout_aug.bench.runner import Benchmark, git_state
from inout_aug.core.io import write_text

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/inout-size-sweep"))
    parser.add_argument("--sizes", default="128,192,256")
    parser.add_argument("--epochs", default="5,10")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--holdout", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "size_sweep")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for epochs in (int(e) for e in args.epochs.split(",")):
            config = BenchConfig.preset("cpu", image_size=(size, size), epochs=epochs, methods=("none",),
                                        settings=("full",), seeds=seeds, holdout=args.holdout)
            results = Benchmark(config, args.data, args.work / f"{size}px-{epochs}ep").run_all()
            ap = [r["metrics"]["ap"] for r in results]
            auroc = [r["metrics"]["auroc"] for r in results]
            seconds = [r["seconds"] for r in results]
            rows.append({"size": size, "epochs": epochs, "ap": ap, "auroc": auroc, "seconds": seconds,
                         "scored": results[0]["data"]["test"], "commits": sorted({str(r["commit"]) for r in results}),
                         "dirty": any(r["dirty"] for r in results)})
    write_report(rows, args)


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    """The table (markdown) and the raw figures (JSON), with the machine and the commit."""
    state = git_state()
    header = {"machine": f"{platform.processor() or platform.machine()}, no GPU", "commit": state["commit"],
              "dirty": state["dirty"], "holdout": args.holdout, "command": " ".join(
                  ["benchmarks/size_sweep.py", "--data", str(args.data), "--sizes", args.sizes, "--epochs",
                   args.epochs, "--seeds", args.seeds])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps({**header, "rows": rows}, indent=2) + "\n", args.out.with_suffix(".json"))
    scored = rows[0]["scored"]
    lines = [
        "# Image size and training length of the `cpu` preset",
        "",
        f"Full-shot `none` (EfficientNet-Lite0, ImageNet weights, `cpu` preset otherwise), scored on a held-out "
        f"{args.holdout:.0%} of the magnetic tile training split ({scored['images']} images, {scored['defects']} "
        "defective; the test split is never read). Mean ± std over seeds "
        f"{args.seeds}; seconds per run on this machine ({header['machine']}), commit {header['commit']}"
        f"{' (dirty)' if header['dirty'] else ''}.",
        "",
        f"`{header['command']}`",
        "",
        "| size | epochs | AP | AUROC | s / run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(f"| {row['size']}×{row['size']} | {row['epochs']} | {_mean_std(row['ap'])} | "
                     f"{_mean_std(row['auroc'])} | {np.mean(row['seconds']):.0f} |")
    write_text("\n".join(lines) + "\n", args.out.with_suffix(".md"))
    print("\n".join(lines))


def _mean_std(values: list[float]) -> str:
    mean, std = metrics.mean_std(values)
    return f"{mean:.3f} ± {std:.3f}"


if __name__ == "__main__":
    main()
