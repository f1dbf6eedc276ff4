"""Throughput of a training input pipeline with InOutMix against the same pipeline without augmentation.

The pipeline: a few-shot ``TrainingSet`` (5 real defects, balanced with made defects) read through ``make_loader``
at 256x256, batch 32, with 0, 1 and 2 DataLoader workers. InOutMix's sides: MemSeg and a diffusion bank. Three
ways to augment: per sample, inside the dataset, so in the workers; per batch, ``augment_batch`` after the loader,
in the main process; and per batch inside the loader (``make_loader(augmenter=...)``), so in the workers. Against
it, the same set without an augmenter: its positive slots hold copies of the real
defects, the benchmark's ``none``, so the number and size of the images read are the same. Images/s count every
image delivered (normal and defective) over whole epochs after the first batch (with workers, the batches they
made ahead meanwhile count too: an advantage that every pipeline at that worker count shares, so compare within a
worker count); pipelines run in interleaved rounds, so drifts of the machine hit all alike. Writes a JSON file
and a markdown table with the commit.

The data is procedural (``inout_aug.tools.surfaces``), written once to a scratch folder as PNG: 256 normals and 5
defects with masks. The bank holds 64 entries that ``inout-aug generate`` wrote with memseg: a bank is read the
same way whatever model filled it (decoded once, then kept), so its content does not change the cost measured.

    python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import inout_aug
from inout_aug import InOutMix
from inout_aug.bench.runner import git_state
from inout_aug.core.io import write_png
from inout_aug.data.layouts import open_dataset
from inout_aug.data.loading import augment_batch, make_loader
from inout_aug.data.training import TrainingSet
from inout_aug.tools.generate import GenerationJob
from inout_aug.tools.surfaces import make_surfaces

SIZE, BATCH, SHOTS, NORMALS, BANK = 256, 32, 5, 256, 64
HERE = Path(__file__).resolve().parent
PEER = "no augmentation"


def write_data(root: Path) -> tuple[Path, Path]:
    """A folder layout of procedural surfaces (normals; defects with a dark scratch and its mask) and a bank."""
    surfaces = make_surfaces(NORMALS + SHOTS, (SIZE, SIZE), seed=0)
    for i, image in enumerate(surfaces[:NORMALS]):
        write_png(image, root / "data" / "normal" / f"n{i:03d}.png")
    for i, image in enumerate(surfaces[NORMALS:]):
        mask = torch.zeros((SIZE, SIZE), dtype=torch.bool)
        mask[40 + 30 * i: 52 + 30 * i, 30:220] = True
        write_png(torch.where(mask, torch.tensor(40, dtype=torch.uint8), image), root / "data" / "defect" / f"d{i}.png")
        write_png(mask[None].to(torch.uint8) * 255, root / "data" / "masks" / f"d{i}.png")
    with GenerationJob("memseg", root / "data" / "normal", root / "bank", n=BANK, seed=0, layout="images") as job:
        job.run()
    return root / "data", root / "bank"


def pipelines(data: Path, bank: Path) -> dict[str, tuple[TrainingSet, str]]:
    """Name -> (training set, where its batches are augmented: "" (per sample, or not at all), "main" (after the
    loader, in the main process) or "loader" (by ``make_loader``, in its workers))."""
    train = open_dataset(data, layout="folder")

    def deferred() -> TrainingSet:
        return TrainingSet(train, "few", shots=SHOTS, augmenter=InOutMix(bank=str(bank), seed=0), seed=0,
                           online=False)

    return {
        PEER: (TrainingSet(train, "few", shots=SHOTS, oversample=True, seed=0), ""),
        "InOutMix per sample (in the dataset)": (TrainingSet(train, "few", shots=SHOTS, seed=0,
                                                              augmenter=InOutMix(bank=str(bank), seed=0)), ""),
        "InOutMix per batch, main process (augment_batch)": (deferred(), "main"),
        "InOutMix per batch, in the workers (make_loader)": (deferred(), "loader"),
    }


def epoch_rate(dataset: TrainingSet, batched: str, workers: int, epoch: int) -> float:
    """Images/s of one epoch, from the end of its first batch (worker start-up excluded) to its last."""
    augmenter = dataset.augmenter
    loader = make_loader(dataset, BATCH, epoch=epoch, seed=0, num_workers=workers, drop_last=True,
                         augmenter=augmenter if batched == "loader" else None)
    images, start = 0, None
    for batch in loader:
        if batched == "main":
            batch = augment_batch(batch, augmenter)
        if start is None:
            start = time.perf_counter()
            continue
        images += len(batch["image"])
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved epochs per pipeline and worker count")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pipeline_throughput")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        sets = pipelines(*write_data(Path(scratch)))
        rates: dict[tuple[str, int], list[float]] = {(name, w): [] for name in sets for w in counts}
        for epoch in range(args.rounds):
            for (name, workers), found in rates.items():
                dataset, batched = sets[name]
                found.append(epoch_rate(dataset, batched, workers, epoch))
                print(f"round {epoch + 1}/{args.rounds}  {workers} workers  {name:<50} {found[-1]:8.1f} img/s",
                      flush=True)
        dataset = sets[PEER][0]
        counts_per_kind = dataset.counts()
    rows = []
    for (name, workers), found in rates.items():
        rate, peer = statistics.median(found), statistics.median(rates[(PEER, workers)])
        rows.append({"pipeline": name, "workers": workers, "images_per_s": round(rate, 1),
                     "vs_no_augmentation": round(rate / peer, 2), "s_per_1000_images": round(1000 / rate, 2)})
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "inout_aug": inout_aug.__version__, **git_state(args.out.parent)}
    setup = {"size": SIZE, "batch": BATCH, "shots": SHOTS, "normals": NORMALS, "bank": BANK, "rounds": args.rounds,
             "items_per_epoch": counts_per_kind}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "setup": setup, "rows": rows},
                                                        indent=2) + "\n")
    table = ["| workers | pipeline | images/s | × no augmentation | s per 1,000 images |",
             "| --- | --- | --- | --- | --- |"]
    table += [f"| {r['workers']} | {r['pipeline']} | {r['images_per_s']:,.0f} | {r['vs_no_augmentation']} "
              f"| {r['s_per_1000_images']} |" for r in sorted(rows, key=lambda r: r["workers"])]
    state = {True: "dirty tree", False: "clean tree", None: "no git checkout"}[machine["dirty"]]
    args.out.with_suffix(".md").write_text(
        f"Training input pipeline, {SIZE}×{SIZE} RGB, batch {BATCH}, few-shot ({SHOTS} real defects, balanced: "
        f"{counts_per_kind}), median of {args.rounds} interleaved epochs; {machine['threads']} CPU threads, "
        f"torch {machine['torch']}, commit {machine['commit']} ({state}).\n\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
