"""Inpainting speed of the ddpm backend's two kinds: v1 (repaint) against v2 (inpaint), the same run.

Untrained models of each kind's default preset (v1 "default": 64-pixel patches; v2 "inpaint": 48-pixel patches),
grey, one thread, the same batch of images and masks (windows of the patch size), each at its default sampling
as DiffusionDefect runs it: v1 25 DDIM steps with 2 RePaint jumps and guidance 3, v2 25 DDIM steps, no jumps,
guidance 3. v2 with 64-pixel patches shows what no jumps alone give. Medians of interleaved repeats
(``images_per_second`` of bench_memseg.py). Writes ``results/ddpm_speed.{json,md}`` with the commit.

    python benchmarks/bench_ddpm_speed.py [--batch 4 --seconds 6]

Needs the diffusion extra: pip install -e ".[diffusion]".
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from bench_memseg import images_per_second

import inout_aug
from inout_aug.bench.runner import git_state
from inout_aug.models.ddpm import DDPMConfig, DDPMDefectModel, _build_unet
from inout_aug.models.ddpm_inpaint import InpaintDefectModel

HERE = Path(__file__).resolve().parent
SIZE, STEPS = 128, 25  # image side; DiffusionDefect's default steps
TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")  # v2's classes: the magnetic tile defect types


def contenders(batch: int) -> dict[str, tuple[DDPMDefectModel, Callable[[], object]]]:
    """Each contender's model and one call of its default inpainting on the same images and masks."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 1, SIZE, SIZE, generator=g)
    masks = torch.zeros(batch, SIZE, SIZE, dtype=torch.bool)
    for i in range(batch):  # a 20 x 14 blob at a different place in each image
        masks[i, 10 + 9 * i:30 + 9 * i, 40 + 5 * i:54 + 5 * i] = True
    models = {
        "v1 repaint, 64 px (default)": DDPMConfig.preset("default", channels=1),
        "v2 inpaint, 48 px (default)": DDPMConfig.preset("inpaint", channels=1, types=TYPES),
        "v2 inpaint, 64 px": DDPMConfig.preset("inpaint", channels=1, types=TYPES, patch_size=64),
    }
    out = {}
    for name, config in models.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            unet = _build_unet(config)
        model = (InpaintDefectModel if config.kind == "inpaint" else DDPMDefectModel)(config, unet)
        out[name] = (model, lambda m=model: m.inpaint(images, masks, generator=torch.Generator().manual_seed(1),
                                                      steps=STEPS))
    return out


def unet_calls(model: DDPMDefectModel, run: Callable[[], object]) -> tuple[int, int]:
    """UNet calls of one ``run`` and the images they saw in all."""
    seen = []
    hook = model.unet.register_forward_hook(lambda _module, args, _out: seen.append(len(args[0])))
    try:
        run()
    finally:
        hook.remove()
    return len(seen), sum(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="images per inpainting call")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per contender (at least 2 calls a round)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ddpm_speed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = contenders(args.batch)
    calls = {name: unet_calls(model, run) for name, (model, run) in runs.items()}
    rates = images_per_second({name: run for name, (_, run) in runs.items()}, args.batch, args.seconds, "cpu",
                              rounds=args.rounds)
    reference = rates["v1 repaint, 64 px (default)"]
    rows = []
    for name, rate in rates.items():
        config = runs[name][0].config
        rows.append({"model": name, "patch": config.patch_size, "steps": STEPS,
                     "jumps": config.resample if config.kind == "repaint" else 0, "guidance": config.guidance_scale,
                     "unet_calls": calls[name][0], "unet_images_per_image": calls[name][1] // args.batch,
                     "images_per_s": round(rate, 3), "vs_v1": round(rate / reference, 2)})
        print(f"{name:<30} {rate:8.3f} img/s  x{rate / reference:.2f}  ({calls[name][0]} UNet calls)")
    state = git_state(args.out)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "inout_aug": inout_aug.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"commit": state["commit"], "dirty": state["dirty"], "machine": machine, "batch": args.batch,
            "image_size": SIZE, "rounds": args.rounds, "seconds": args.seconds}
    args.out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    table = ["| model | patch | steps | jumps | guidance | UNet calls | UNet images per image | images/s | × v1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    table += [f"| {r['model']} | {r['patch']} | {r['steps']} | {r['jumps']} | {r['guidance']} | {r['unet_calls']} "
              f"| {r['unet_images_per_image']} | {r['images_per_s']:.2f} | {r['vs_v1']} |" for r in rows]
    args.out.with_suffix(".md").write_text(
        f"ddpm inpainting speed, untrained models, batch {args.batch} of {SIZE}×{SIZE} grey images, "
        f"{machine['threads']} CPU thread ({machine['cpu']}), torch {machine['torch']}, commit {state['commit']}"
        f"{' (dirty tree)' if state['dirty'] else ''}; medians of {args.rounds} interleaved rounds.\n\n"
        + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
