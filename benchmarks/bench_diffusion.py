"""Diffusion backends: generation speed against diffusers' default settings, and defect quality (KID).

Speed (same run, tiny random-weight models on the CPU; the real models where a GPU and weights exist):
  * sd txt2img: inout-aug's defaults (DPM-Solver++, 25 steps) against the pipeline's own scheduler at diffusers'
    default 50 steps;
  * ddpm inpainting: inout-aug's defaults (DDIM, 25 steps) against ancestral DDPM sampling over all training
    timesteps (diffusers' DDPMPipeline default).
Quality (needs the magnetic tile data and a ddpm model trained on one defect type, e.g. with
``inout-aug finetune --backend ddpm --data ../shared/data/magnetic_tile --defect-type Blowhole --out MODEL``):
KID on ImageNet EfficientNet-Lite0 features of defect crops, from held-back real defects (the test split) to
  * ddpm defects inpainted into test-split normal images inside real test-split masks of that type,
  * MemSeg defects in the same normal images,
  * plain normal crops (the reference: what "no defect at all" scores).

    python benchmarks/bench_diffusion.py [--ddpm-model MODEL --defect-type Blowhole]

Needs the diffusion and bench extras: pip install -e ".[diffusion,bench]".
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

import inout_aug
from inout_aug.core.sample import as_bytes, as_float
from inout_aug.data.masks import bounding_box

HERE = Path(__file__).resolve().parent


def images_per_second(run: Callable[[], object], images: int, repeats: int) -> float:
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return images * repeats / (time.perf_counter() - start)


def speed_rows(repeats: int) -> list[dict]:
    """Images/s of inout-aug's generation defaults and of diffusers' defaults, tiny models, same run."""
    from diffusers import DDPMScheduler

    from inout_aug.models import sd
    from inout_aug.models.ddpm import DDPMConfig, DDPMDefectModel, _build_unet
    from inout_aug.testing import tiny_sd as tiny

    n = 4
    ours = sd.load_pipeline(tiny.save_tiny_checkpoint(Path("/tmp/inout-bench-sd")))
    plain = tiny.tiny_pipeline()
    sd_pair = (
        ("sd txt2img, inout-aug (DPM-Solver++, 25 steps)",
         images_per_second(lambda: sd.generate(ours, "sks defect", num_images=n, steps=25), n, repeats)),
        (f"sd txt2img, diffusers default ({type(plain.scheduler).__name__}, 50 steps)",
         images_per_second(lambda: plain("sks defect", num_images_per_prompt=n, output_type="pt"), n, repeats)),
    )
    config = DDPMConfig.preset("default", channels=1)
    model = DDPMDefectModel(config, _build_unet(config))
    images, masks = torch.rand(n, 1, 64, 64), torch.zeros(n, 64, 64, dtype=torch.bool)
    masks[:, 20:40, 20:40] = True
    g = torch.Generator().manual_seed(0)
    full = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)
    full.set_timesteps(config.num_train_timesteps)

    @torch.no_grad()
    def ancestral() -> None:
        x = torch.randn(n, 1, config.patch_size, config.patch_size, generator=g)
        labels = torch.ones(n, dtype=torch.long)
        for t in full.timesteps:
            x = full.step(model.unet(x, t, class_labels=labels).sample, t, x, generator=g).prev_sample

    ddpm_pair = (
        ("ddpm inpaint, inout-aug (DDIM, 25 steps)",
         images_per_second(lambda: model.inpaint(images, masks, generator=g, steps=25), n, repeats)),
        (f"ddpm, diffusers default (DDPM, {config.num_train_timesteps} steps)",
         images_per_second(ancestral, n, 1)),
    )
    rows = []
    for (mine, rate), (peer, peer_rate) in (sd_pair, ddpm_pair):
        rows.append({"what": mine, "images_per_s": round(rate, 2), "vs_default": round(rate / peer_rate, 1)})
        rows.append({"what": peer, "images_per_s": round(peer_rate, 2), "vs_default": 1.0})
    return rows


def quality_rows(data: Path, model_path: Path, defect_type: str, limit: int, seed: int) -> list[dict]:
    from inout_aug.augmenters.memseg import MemSegRegion
    from inout_aug.bench.backbones import create_backbone
    from inout_aug.bench.features import image_features, kid
    from inout_aug.core.io import read_image
    from inout_aug.data import open_dataset
    from inout_aug.data.layouts import read_mask
    from inout_aug.models.ddpm import DDPMDefectModel

    test = open_dataset(data, split="test")
    real = [r for r in test.defects() if r.defect_type == defect_type][:limit]
    normals = test.normals()[:len(real)]
    if len(real) < 4:
        raise SystemExit(f"too few test defects of type {defect_type!r} in {data}")
    model = DDPMDefectModel.load(model_path)
    memseg = MemSegRegion(seed=seed)
    g = torch.Generator().manual_seed(seed)
    crops: dict[str, list[torch.Tensor]] = {"real": [], "ddpm": [], "memseg": [], "normal": []}
    for record, normal in zip(real, normals):
        image, mask = read_image(record.image), read_mask(record.mask, test.mask_threshold)
        if not mask.any():
            continue
        crops["real"].append(crop(image, mask))
        base = read_image(normal.image)
        placed = F.resize(mask[None].float(), list(base.shape[-2:]), interpolation=F.InterpolationMode.NEAREST)[0] > 0.5
        if not placed.any():
            continue
        made = model.inpaint(as_float(base[None]), placed[None], generator=g, steps=25)[0]
        crops["ddpm"].append(crop(as_bytes(made), placed))
        out = memseg.augment(base[None])
        crops["memseg"].append(crop(out.image[0], out.mask[0]))
        crops["normal"].append(crop(base, placed))
    backbone = create_backbone("efficientnet_lite0", "package", num_classes=0)
    feats = {k: image_features(backbone, v) for k, v in crops.items()}
    rows = []
    for name in ("ddpm", "memseg", "normal"):
        mean, std = kid(feats["real"], feats[name], subsets=50, subset_size=min(50, len(feats[name])), seed=seed)
        rows.append({"what": f"KID(real {defect_type} defects, {name})", "kid": round(mean, 4),
                     "std": round(std, 4), "crops": len(feats[name])})
    return rows


def crop(image: torch.Tensor, mask: torch.Tensor, margin: float = 1.5) -> torch.Tensor:
    """A square crop of ``image`` around ``mask``'s bounding box (``margin`` times its longer side)."""
    top, left, bottom, right = bounding_box(mask)
    cy, cx = (top + bottom - 1) / 2, (left + right - 1) / 2
    side = int(max(bottom - top, right - left, 16) * margin)
    h, w = image.shape[-2:]
    side = min(side, h, w)
    top = int(min(max(cy - side / 2, 0), h - side))
    left = int(min(max(cx - side / 2, 0), w - side))
    return image[:, top:top + side, left:left + side]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "magnetic_tile")
    parser.add_argument("--ddpm-model", type=Path, default=None, help="trained ddpm model for the quality rows")
    parser.add_argument("--defect-type", default="Blowhole")
    parser.add_argument("--limit", type=int, default=60, help="most test defects used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "diffusion")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest on one thread (two crawl on this 2-core machine)
    speed = speed_rows(args.repeats)
    torch.set_num_threads(threads)
    quality = []
    if args.ddpm_model is not None:
        quality = quality_rows(args.data, args.ddpm_model, args.defect_type, args.limit, args.seed)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "torch": torch.__version__, "inout_aug": inout_aug.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "speed": speed, "quality": quality},
                                                        indent=2))
    lines = [f"{machine['threads']} CPU threads (speed rows: 1), torch {machine['torch']}, GPU: {machine['gpu']}", "",
             "| generation (tiny models) | images/s | × diffusers default |", "| --- | --- | --- |"]
    lines += [f"| {r['what']} | {r['images_per_s']} | {r['vs_default']} |" for r in speed]
    if quality:
        lines += ["", "| defect quality | KID (lower: closer to the real defects) | ± | crops |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {r['what']} | {r['kid']} | {r['std']} | {r['crops']} |" for r in quality]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
