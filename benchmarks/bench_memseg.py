"""Throughput of MemSegRegion against anomalib's PerlinAnomalyGenerator, in the same run.

256x256 RGB float batches in [0, 1], batch 1 and 32, CPU (and CUDA when present). Writes images/s and
the ratio to anomalib to a JSON file and a markdown table, beside the floor: the blend alone on
preallocated tensors.

    python benchmarks/bench_memseg.py --textures ../shared/data/textures

Needs the benchmark extra: pip install -e ".[bench]" (anomalib 2.7.0).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import inout_aug
from inout_aug.augmenters.memseg import MemSegRegion
from inout_aug.augmenters.memseg.noise import perlin_masks
from inout_aug.augmenters.memseg.structural import OPERATIONS, StructuralSource
from inout_aug.bench.runner import git_state
from inout_aug.core.sample import as_bytes

SIZE = 256
HERE = Path(__file__).resolve().parent


def images_per_second(steps: dict[str, Callable[[], object]], batch: int, seconds: float, device: str,
                      rounds: int = 5) -> dict[str, float]:
    """Median images/s of each step, timed in interleaved rounds so that drifts of the machine hit all alike."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up: caches, allocator, lazy initialisation
        for _ in range(3):
            step()
    sync()
    for _ in range(rounds):
        for name, step in steps.items():
            end = time.perf_counter() + seconds / rounds
            while time.perf_counter() < end or len(times[name]) < 2:
                start = time.perf_counter()
                step()
                sync()
                times[name].append(time.perf_counter() - start)
    return {name: batch / statistics.median(spent) for name, spent in times.items()}


def contenders(textures: str, batch: int, device: str) -> dict[str, Callable[[], object]]:
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

    torch.manual_seed(0)
    image = torch.rand(batch, 3, SIZE, SIZE, device=device)
    image_u8 = as_bytes(image)
    with_textures = PerlinAnomalyGenerator(anomaly_source_path=textures, probability=1.0)
    perlin_only = PerlinAnomalyGenerator(anomaly_source_path=None, probability=1.0)
    memseg = MemSegRegion(textures=textures, seed=0)
    anomaly, out = torch.rand_like(image), torch.empty_like(image)
    weight = torch.rand(batch, 1, 1, 1, device=device) * (torch.rand(batch, 1, SIZE, SIZE, device=device) > 0.5)
    return {
        "anomalib PerlinAnomalyGenerator, textures": lambda: with_textures(image),
        "anomalib PerlinAnomalyGenerator, Perlin only": lambda: perlin_only(image),
        "MemSegRegion, full pipeline (float)": lambda: memseg.augment(image),
        "MemSegRegion, full pipeline (uint8)": lambda: memseg.augment(image_u8),
        "floor: blend alone, preallocated": lambda: torch.lerp(image, anomaly, weight, out=out),
    }


def stages(textures: str, batch: int = 32) -> dict[str, Callable[[], object]]:
    """Where MemSegRegion's time goes at ``batch``, CPU: each stage of one call on its share of the batch (MemSeg
    draws a texture or the structural source with probability 0.5 each), the structural source per operation."""
    torch.manual_seed(0)
    image = torch.rand(batch, 3, SIZE, SIZE)
    memseg = MemSegRegion(textures=textures, seed=0)
    texture, structural = memseg.sources
    half = image[: batch // 2]
    generator = memseg.generator
    params = memseg.make_params(image)
    steps: dict[str, Callable[[], object]] = {
        "full pipeline (float)": lambda: memseg.augment(image),
        f"Perlin masks ({batch} images)": lambda: perlin_masks(batch, (SIZE, SIZE), generator),
        f"texture source ({batch // 2} images)": lambda: texture.draw(half, generator),
        f"structural source, 3 operations ({batch // 2} images)": lambda: structural.draw(half, generator),
        f"blend ({batch} images, anomaly copied first)": lambda: memseg.transform(
            image, {**params, "anomaly": params["anomaly"].clone()}),
    }
    bare = StructuralSource(ops=0)
    steps[f"structural, no operation: quantise, shuffle ({batch // 2} images)"] = \
        lambda: bare.draw(half, generator)
    for name in OPERATIONS:
        one = StructuralSource(ops=1, operations=[name])
        steps[f"structural, {name} alone ({batch // 2} images)"] = lambda one=one: one.draw(half, generator)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--textures", default=str(HERE.parents[1] / "shared" / "data" / "textures"),
                        help="texture folder used by both (default: ../shared/data/textures)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per contender and setting")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "memseg_throughput")
    args = parser.parse_args()
    if not Path(args.textures).is_dir():
        raise SystemExit(f"texture folder not found: {args.textures}; pass --textures DIR")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for batch in (1, 32):
            measured = images_per_second(contenders(args.textures, batch, device), batch, args.seconds, device)
            reference = measured["anomalib PerlinAnomalyGenerator, textures"]
            for name, rate in measured.items():
                rows.append({"device": device, "batch": batch, "method": name, "images_per_s": round(rate, 1),
                             "vs_anomalib_textures": round(rate / reference, 2)})
                print(f"{device} batch {batch:>2}  {name:<48} {rate:>10.1f} img/s  x{rate / reference:.2f}")
    per_call = images_per_second(stages(args.textures), 1, args.seconds, "cpu")  # calls/s
    full = 1000 / per_call["full pipeline (float)"]
    where = [{"stage": name, "ms": round(1000 / rate, 2), "share_of_full": round(1000 / rate / full, 3)}
             for name, rate in per_call.items()]
    machine = {
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__, "inout_aug": inout_aug.__version__, **git_state(args.out.parent),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "size": SIZE, "rows": rows,
                                                         "where_the_time_goes": where}, indent=2) + "\n")
    table = ["| device | batch | method | images/s | × anomalib (textures) |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {r['device']} | {r['batch']} | {r['method']} | {r['images_per_s']:,.0f} "
              f"| {r['vs_anomalib_textures']} |" for r in rows]
    table += ["", "Where MemSegRegion's time goes, batch 32, CPU (ms per call, median; each stage alone, so the "
              "shares need not add up to 1):", "", "| stage | ms | share of the full pipeline |", "| --- | --- | --- |"]
    table += [f"| {w['stage']} | {w['ms']:.2f} | {w['share_of_full']:.2f} |" for w in where]
    state = {True: "dirty tree", False: "clean tree", None: "no git checkout"}[machine["dirty"]]
    args.out.with_suffix(".md").write_text(
        f"256×256 RGB, {machine['threads']} CPU threads, torch {machine['torch']}, GPU: {machine['gpu']}, "
        f"commit {machine['commit']} ({state})\n\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
