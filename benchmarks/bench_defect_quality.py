"""Defect quality per defect type, measured fairly: KID to held-back real defects, and a memorisation check.

Every method learns from the same real defects, the few-shot N=5 choice of the train split
(``choose_defects(train.defects(), "few", 5, seed)``), and paints into the same test-split normal images:

* slots: each held-back real defect (a test-split defect with a non-empty mask) gets a test-split normal image of
  the nearest size that its mask's box fits in (each normal used once; the largest masks choose first), and its own
  mask is placed there, pixels kept, its box's centre at the same fraction of the image (shifted inside);
* ddpm v1, ddpm v2 (``defect_type`` = the slot's type) and memseg (its Perlin regions restricted to the slot's mask
  by ``foreground``) paint inside that mask of the slot's normal; transplant pastes one of the shots of the slot's
  type (a type without a shot is skipped) at a random place of it; "no defect" is the normal image itself;
* crops, one rule for every image, real or made: a square centred on the defect mask's bounding box (the slot's
  mask; transplant: its pasted region), ``scale`` times the box's longer side (at least ``min_side``), shifted inside
  the image (cut to its shorter side when larger), resized to the feature net's input;
* KID (``inout_aug.bench.features.kid`` on ImageNet EfficientNet-Lite0 features), per type and all types pooled:
  the held-back reals of each type are split at random into halves A and B, ``halvings`` times (pooled: the types'
  halves together); a method's crops in A's slots are scored against the real crops of B and those in B's slots
  against A's, averaged; the floor "real" scores A's real crops against B's. So every row compares the same
  numbers of crops with the same mask shapes and sizes, and the floor is what a perfect generator would score.
  Each value is one unbiased KID estimate over whole halves (no subsets: halves hold 5 to 60 crops), averaged
  over the halvings, ± their standard deviation;
* memorisation: a made defect's feature distance to its nearest training shot (of the 5), over the median distance
  of a held-back real defect of its type to its nearest other held-back real of that type; the median ratio per
  method and type (<< 1: copies of the shots; the "real" row: held-back reals, i.e. what new real defects give).
  Twice: on the whole crops, and on the defect region alone (every crop pixel outside the defect's mask set to the
  median of those pixels, so that the surface a copy is pasted onto does not count; each shot in its 8 flips and
  quarter turns, the nearest counting, as transplant flips and turns them). On the magnetic tile data neither
  flags transplant's rescaled, rotated, shading-matched copies (results/defect_quality.md);

Writes ``results/defect_quality.{json,md}`` and, outside the repository (it shows dataset pixels), a PNG sheet of
made defects beside their nearest training shot. ddpm models are trained here (v1: the default preset, v2: the
inpaint preset, ``--set KEY=VALUE`` on both) unless ``--ddpm-v1``/``--ddpm-v2`` give models trained on the same shots.

    python benchmarks/bench_defect_quality.py [--ddpm-v1 MODEL] [--ddpm-v2 MODEL] [--set steps=1000]

Needs the diffusion and bench extras: pip install -e ".[diffusion,bench]".
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.ImageDraw
import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

import inout_aug
from inout_aug.augmenters.memseg import MemSegRegion
from inout_aug.augmenters.transplant import Transplant
from inout_aug.bench.features import image_features, kid
from inout_aug.bench.runner import git_state
from inout_aug.core.augmenter import mix_seed
from inout_aug.core.io import read_image, write_png, write_text
from inout_aug.core.sample import as_bytes, as_float, match_channels
from inout_aug.core.settings import parse_pairs
from inout_aug.data.layouts import Layout, Record, image_header, open_dataset, read_mask
from inout_aug.data.masks import bounding_box
from inout_aug.data.training import choose_defects
from inout_aug.models.ddpm import DDPMDefectModel
from inout_aug.models.ddpm_inpaint import InpaintDefectModel
from inout_aug.models.finetune import RECORD, finetune

HERE = Path(__file__).resolve().parent
REAL, NONE, POOLED = "real (floor)", "no defect", "all types"
MODELS = {"ddpm v1": None, "ddpm v2": "inpaint"}  # model name: its finetune preset (None: the default, v1)
SCALE, MIN_SIDE = 2.0, 32
SHOTS = 5  # the few-shot N
EXACT = "donot_use_mm_for_euclid_dist"  # cdist without the matmul shortcut: a copy is at distance 0

#: A made defect: the image and the mask its crop is centred on; None where a method made none for a slot.
Made = tuple[torch.Tensor, torch.Tensor] | None


@dataclass
class Slot:
    """A held-back real defect (image and mask) and the normal image with its mask placed there, to paint into."""

    record: Record
    image: torch.Tensor
    mask: torch.Tensor
    normal: torch.Tensor
    placed: torch.Tensor

    @property
    def defect_type(self) -> str:
        return self.record.defect_type


@dataclass
class Measurement:
    """Crops per method (one per slot, None: not made), the shots' crops, the tables and the notes."""

    types: list[str]
    crops: dict[str, list[torch.Tensor | None]]
    shot_crops: list[torch.Tensor]
    kid: list[dict[str, Any]]
    memorisation: list[dict[str, Any]]
    region_memorisation: list[dict[str, Any]]
    nearest: dict[str, tuple[torch.Tensor, torch.Tensor]]  # method: (ratio, nearest shot) per slot (NaN, -1: none)
    notes: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


def crop_window(mask: torch.Tensor, scale: float = SCALE, min_side: int = MIN_SIDE) -> tuple[int, int, int]:
    """(top, left, side) of the square crop around ``mask``'s defect: centred on its bounding box, ``scale`` times the
    box's longer side (at least ``min_side``), shifted inside the image and cut to its shorter side when larger."""
    top, left, bottom, right = bounding_box(mask)
    if bottom == 0:
        raise ValueError("an empty mask has no defect to crop around")
    h, w = mask.shape
    side = min(max(round(scale * max(bottom - top, right - left)), min_side), h, w)
    y = min(max(round((top + bottom - side) / 2), 0), h - side)
    x = min(max(round((left + right - side) / 2), 0), w - side)
    return y, x, side


def crop(image: torch.Tensor, mask: torch.Tensor, scale: float = SCALE, min_side: int = MIN_SIDE) -> torch.Tensor:
    """The (C, side, side) crop of :func:`crop_window` from ``image``."""
    y, x, side = crop_window(mask, scale, min_side)
    return image[:, y:y + side, x:x + side]


def region_crop(image: torch.Tensor, mask: torch.Tensor, scale: float = SCALE,
                min_side: int = MIN_SIDE) -> torch.Tensor:
    """The crop of :func:`crop` with every pixel outside ``mask`` set to the median of those pixels (per channel):
    the defect alone on a flat background."""
    y, x, side = crop_window(mask, scale, min_side)
    out = image[:, y:y + side, x:x + side].clone()
    outside = ~mask[y:y + side, x:x + side]
    if outside.any():
        out[:, outside] = out[:, outside].float().median(1).values.round().to(out.dtype)[:, None]
    return out


def dihedral(crop: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and quarter turns of a (C, H, W) crop."""
    return [torch.rot90(c, k, (-2, -1)) for c in (crop, crop.flip(-1)) for k in range(4)]


def place_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``mask``'s defect in an empty (H, W) mask of ``size``: its pixels kept, its box centred at the same fraction of
    the image (shifted inside; cut around its centre where larger than the image)."""
    top, left, bottom, right = bounding_box(mask)
    h, w = size
    bh, bw = min(bottom - top, h), min(right - left, w)
    cut_y, cut_x = top + (bottom - top - bh) // 2, left + (right - left - bw) // 2
    y = min(max(round((top + bottom) / 2 / mask.shape[0] * h - bh / 2), 0), h - bh)
    x = min(max(round((left + right) / 2 / mask.shape[1] * w - bw / 2), 0), w - bw)
    out = torch.zeros(size, dtype=torch.bool)
    out[y:y + bh, x:x + bw] = mask[cut_y:cut_y + bh, cut_x:cut_x + bw]
    return out


def pair_normals(sizes: list[tuple[int, int]], boxes: list[tuple[int, int]],
                 normals: list[tuple[int, int]]) -> list[int]:
    """For each defect image (its (H, W) size and its mask box's (h, w)) the index of a normal image (of ``normals``'
    (H, W) sizes): the nearest in size among those the box fits in (any when none does), each used once while any is
    left; the largest boxes choose first."""
    free: set[int] = set()
    chosen = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -max(boxes[i])):
        free = free or set(range(len(normals)))
        fits = [j for j in free if normals[j][0] >= boxes[i][0] and normals[j][1] >= boxes[i][1]] or free
        chosen[i] = min(fits, key=lambda j: (abs(normals[j][0] - sizes[i][0]) + abs(normals[j][1] - sizes[i][1]), j))
        free.remove(chosen[i])
    return chosen


def make_slots(test: Layout) -> tuple[list[Slot], int]:
    """The slots of a test split's defects with a non-empty mask (see the module docstring), and how many defects
    were left out for an empty mask."""
    held = [(r, read_image(r.image), read_mask(r.mask, test.mask_threshold)) for r in test.defects() if r.mask]
    held = [(r, image, mask) for r, image, mask in held if mask.any()]
    normals = test.normals()
    sizes = [image_header(r.image)[0][::-1] for r in normals]
    boxes = [(b[2] - b[0], b[3] - b[1]) for b in (bounding_box(mask) for _, _, mask in held)]
    pairs = pair_normals([tuple(image.shape[-2:]) for _, image, _ in held], boxes, sizes)
    slots = []
    for (record, image, mask), j in zip(held, pairs):
        normal = read_image(normals[j].image)
        slots.append(Slot(record, image, mask, normal, place_mask(mask, tuple(normal.shape[-2:]))))
    return slots, len(test.defects()) - len(held)


def paint_ddpm(model: DDPMDefectModel, slots: list[Slot], seed: int, steps: int) -> list[Made]:
    """Each slot's normal with a defect inpainted in its placed mask (v2: of the slot's type; None for a type it does
    not know), ``steps`` DDIM steps, a generator per slot."""
    out: list[Made] = []
    for i, slot in enumerate(slots):
        kind = {}
        if isinstance(model, InpaintDefectModel):
            if slot.defect_type not in model.types:
                out.append(None)
                continue
            kind = {"defect_type": slot.defect_type}
        g = torch.Generator().manual_seed(mix_seed(seed, "ddpm", i))
        made = model.inpaint(as_float(slot.normal[None]), slot.placed[None], generator=g, steps=steps, **kind)[0]
        out.append((as_bytes(made), slot.placed))
    return out


def paint_memseg(slots: list[Slot], seed: int) -> list[Made]:
    """Each slot's normal with a MemSeg defect whose Perlin region is restricted to the placed mask."""
    out: list[Made] = []
    for i, slot in enumerate(slots):
        memseg = MemSegRegion(foreground=slot.placed, seed=mix_seed(seed, "memseg", i))
        out.append((memseg.augment(slot.normal[None], describe=False).image[0], slot.placed))
    return out


def paint_transplant(data: Path, shots: list[Record], slots: list[Slot], seed: int) -> list[Made]:
    """Each slot's normal with one of the shots of its type transplanted (None where the type has no shot); the mask
    is the pasted region."""
    types = {slot.defect_type for slot in slots}
    makers = {t: Transplant(defects=data, shots=[r.image for r in shots if r.defect_type == t], split="train",
                            seed=seed) for t in types if any(r.defect_type == t for r in shots)}
    out: list[Made] = []
    for i, slot in enumerate(slots):
        maker = makers.get(slot.defect_type)
        if maker is None:
            out.append(None)
            continue
        maker.reseed(mix_seed(seed, "transplant", i))
        made = maker.augment(slot.normal[None], describe=False)
        out.append((made.image[0], made.mask[0]))
    return out


def halvings_of(types: list[str], rounds: int, seed: int) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per defect type, ``rounds`` random (A, B) halves of the indices of its slots (seeded by the type)."""
    out = {}
    for name in sorted(set(types)):
        members = torch.tensor([i for i, t in enumerate(types) if t == name])
        g = torch.Generator().manual_seed(mix_seed(seed, "halves", name))
        out[name] = []
        for _ in range(rounds):
            order = members[torch.randperm(len(members), generator=g)]
            out[name].append((order[:len(order) // 2], order[len(order) // 2:]))
    return out


def kid_table(types: list[str], features: dict[str, torch.Tensor], rounds: int, seed: int) -> list[dict[str, Any]]:
    """KID rows, per method of ``features`` ((N, D) per slot, NaN rows: not made; ``features[REAL]``: the held-back
    reals) and per type then pooled: mean and std over ``rounds`` halvings (see the module docstring). A type with
    fewer than 4 slots, or where a method did not make every slot's defect, gets ``kid`` None and a ``note`` (pooled:
    left out, noted)."""
    real = features[REAL]
    halves = halvings_of(types, rounds, seed)
    rows = []
    for method, feats in features.items():
        made = ~feats.isnan().any(1)
        for name in [*halves, POOLED]:
            chosen = [t for t in halves if name in (t, POOLED)]
            covered = [t for t in chosen if len(halves[t][0][0]) >= 2 and made[torch.cat(halves[t][0])].all()]
            row: dict[str, Any] = {"method": method, "type": name, "kid": None, "std": None,
                                   "crops": sum(len(torch.cat(halves[t][0])) for t in covered)}
            if not covered:
                few = all(len(halves[t][0][0]) < 2 for t in chosen)
                rows.append({**row, "note": "fewer than 4 held-back defects" if few else "no shot of this type"})
                continue
            values = []
            for r in range(rounds):
                a, b = (torch.cat([halves[t][r][k] for t in covered]) for k in (0, 1))
                size = len(a) + len(b)
                if method == REAL:
                    values.append(kid(real[a], real[b], subsets=1, subset_size=size, seed=r)[0])
                else:
                    values.append((kid(feats[a], real[b], subsets=1, subset_size=size, seed=r)[0]
                                   + kid(feats[b], real[a], subsets=1, subset_size=size, seed=r)[0]) / 2)
            v = torch.tensor(values)
            row.update(kid=v.mean().item(), std=v.std().item() if rounds > 1 else 0.0)
            if len(covered) < len(chosen):
                row["note"] = "only " + ", ".join(covered)
            rows.append(row)
    return rows


def nearest_shot(features: torch.Tensor, shots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's feature distance to its nearest shot and that shot's index (NaN rows: NaN, -1)."""
    distance = torch.cdist(features.nan_to_num(), shots, compute_mode=EXACT)
    value, index = distance.min(1)
    made = ~features.isnan().any(1)
    return value.where(made, torch.nan), index.where(made, -1)


def typical_distance(types: list[str], real: torch.Tensor) -> dict[str, float]:
    """Per type, the median distance of a real defect of that type to its nearest other one (types with one: NaN)."""
    out = {}
    for name in sorted(set(types)):
        members = real[[i for i, t in enumerate(types) if t == name]]
        if len(members) < 2:
            out[name] = float("nan")
            continue
        distance = torch.cdist(members, members, compute_mode=EXACT).fill_diagonal_(float("inf"))
        out[name] = distance.min(1).values.median().item()
    return out


def memorisation(types: list[str], features: dict[str, torch.Tensor], shots: torch.Tensor, variants: int = 1
                 ) -> tuple[list[dict[str, Any]], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Median ratio (distance to the nearest shot / the type's typical nearest-neighbour distance between held-back
    reals) per method (the reals included) and type, then pooled; and per method each slot's ratio and nearest
    shot. ``shots`` holds ``variants`` consecutive rows per shot (e.g. its 8 flips and turns), the nearest counting."""
    typical = typical_distance(types, features[REAL])
    scale = torch.tensor([typical[t] for t in types])
    rows, nearest = [], {}
    for method, feats in features.items():
        if method == NONE:
            continue
        distance, index = nearest_shot(feats, shots)
        ratio = distance / scale
        nearest[method] = (ratio, index.div(variants, rounding_mode="floor"))
        for name in [*typical, POOLED]:
            chosen = torch.tensor([name in (t, POOLED) for t in types]) & ~ratio.isnan()
            rows.append({"method": method, "type": name, "crops": int(chosen.sum()),
                         "ratio": ratio[chosen].median().item() if chosen.any() else None})
    return rows, nearest


def measure(data: Path, models: dict[str, DDPMDefectModel], seed: int, backbone: nn.Module, *, steps: int = 25,
            rounds: int = 50, feature_size: int = 224) -> Measurement:
    """Slots, made defects of every method, their crops and features, the KID and memorisation tables."""
    seconds: dict[str, float] = {}
    train, test = open_dataset(data, split="train"), open_dataset(data, split="test")
    chosen = choose_defects(train.defects(), "few", SHOTS, seed)
    with timed(seconds, "slots"):
        slots, empty = make_slots(test)
    types = [slot.defect_type for slot in slots]
    shot_masks = [(r, read_mask(r.mask, train.mask_threshold)) for r in chosen if r.mask]
    shot_crops = [crop(read_image(r.image), mask) for r, mask in shot_masks if mask.any()]
    made: dict[str, list[Made]] = {REAL: [(s.image, s.mask) for s in slots]}
    for name, model in models.items():
        with timed(seconds, f"paint {name}"):
            made[name] = paint_ddpm(model, slots, seed, steps)
    with timed(seconds, "paint transplant"):
        made["transplant"] = paint_transplant(data, chosen, slots, seed)
    with timed(seconds, "paint memseg"):
        made["memseg"] = paint_memseg(slots, seed)
    made[NONE] = [(s.normal, s.placed) for s in slots]
    crops = {name: [None if m is None else crop(*m) for m in items] for name, items in made.items()}
    regions = {name: [None if m is None else region_crop(*m) for m in items]
               for name, items in made.items() if name != NONE}
    shot_regions = [v for r, mask in shot_masks if mask.any() for v in dihedral(region_crop(read_image(r.image), mask))]
    with timed(seconds, "features"):
        shot_features = image_features(backbone, shot_crops, size=feature_size)
        features = {name: _features(backbone, items, feature_size) for name, items in crops.items()}
        region_features = {name: _features(backbone, items, feature_size) for name, items in regions.items()}
        shot_region_features = image_features(backbone, shot_regions, size=feature_size)
    memo, nearest = memorisation(types, features, shot_features)
    region_memo, _ = memorisation(types, region_features, shot_region_features, variants=8)
    notes = [f"{empty} held-back defects left out: empty mask"] if empty else []
    notes += [f"no shot of type {t}: transplant and ddpm v2 skip it" for t in sorted(set(types))
              if not any(r.defect_type == t for r in chosen)]
    if len(shot_crops) < len(chosen):
        notes.append(f"{len(chosen) - len(shot_crops)} shots without mask pixels: not among the nearest shots")
    return Measurement(types, crops, shot_crops, kid_table(types, features, rounds, seed), memo, region_memo, nearest,
                       notes, seconds)


def _features(backbone: nn.Module, crops: list[torch.Tensor | None], size: int) -> torch.Tensor:
    """(N, D) features of the crops, NaN rows for the missing ones."""
    kept = [c for c in crops if c is not None]
    feats = image_features(backbone, kept, size=size) if kept else torch.empty(0, 0)
    out = torch.full((len(crops), feats.shape[1] if kept else 1), torch.nan)
    out[[i for i, c in enumerate(crops) if c is not None]] = feats
    return out


@contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall time to ``seconds[name]``."""
    start = time.perf_counter()
    yield
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def ddpm_models(data: Path, work: Path, seed: int, given: dict[str, Path | None], overrides: dict[str, Any],
                seconds: dict[str, float]) -> tuple[dict[str, DDPMDefectModel], dict[str, dict[str, Any]]]:
    """v1 and v2 models, trained here on the few-shot choice (in ``work``) unless given, and what each is; a given
    model must have been trained on exactly that choice (its ``training_data.json``) and be of its kind."""
    train = open_dataset(data, split="train")
    shots = {str(r.image) for r in choose_defects(train.defects(), "few", SHOTS, seed)}
    others = {str(r.image) for r in train.defects()} - shots
    models, about = {}, {}
    for name, preset in MODELS.items():
        path = given[name]
        if path is None:
            with timed(seconds, f"train {name}"):
                path = finetune("ddpm", data, work / name.replace(" ", "-"), setting="few", shots=SHOTS, seed=seed,
                                preset=preset, overrides=overrides)
        used = {f["image"] for f in json.loads((path / RECORD).read_text())["files"]}
        if not shots <= used or used & others:
            raise SystemExit(f"{name} model {path} was not trained on the few-shot N=5 choice of seed {seed}")
        models[name] = DDPMDefectModel.load(path)
        if models[name].config.kind != (preset or "repaint"):
            raise SystemExit(f"{path} is a {models[name].config.kind} model, not {name}")
        config = models[name].config
        about[name] = {"path": str(path), "trained_here": given[name] is None, "preset": preset or "default",
                       "kind": config.kind, "steps": config.steps, "patch_size": config.patch_size}
    return models, about


def sheet(measurement: Measurement, tile: int = 96) -> torch.Tensor:
    """(3, H, W) uint8: per made method and type, a held-back real, then the made defect closest to a shot and the
    median one, each beside its nearest shot."""
    label_width, rows = 170, []
    header = "held-back real | made: closest to a shot, its shot | made: median ratio, its shot"
    rows.append(_text(header, label_width + 5 * tile, 20))
    for method, (ratio, index) in measurement.nearest.items():
        if method == REAL:
            continue
        for name in sorted(set(measurement.types)):
            slots = [i for i, t in enumerate(measurement.types) if t == name and not ratio[i].isnan()]
            if not slots:
                continue
            ranked = sorted(slots, key=lambda i: ratio[i].item())
            tiles = [measurement.crops[REAL][slots[0]]]
            for i in (ranked[0], ranked[len(ranked) // 2]):
                tiles += [measurement.crops[method][i], measurement.shot_crops[int(index[i])]]
            cells = [_text(f"{method}\n{name}\nratio {ratio[ranked[0]]:.2f} / {ratio[ranked[len(ranked) // 2]]:.2f}",
                           label_width, tile)]
            cells += [F.resize(match_channels(c, 3), [tile, tile], antialias=True) for c in tiles]
            rows.append(torch.cat(cells, 2))
    return torch.cat(rows, 1)


def _text(text: str, width: int, height: int) -> torch.Tensor:
    """A (3, height, width) uint8 tile with ``text`` in white on dark grey."""
    image = PIL.Image.new("RGB", (width, height), (40, 40, 40))
    PIL.ImageDraw.Draw(image).multiline_text((4, 3), text, fill=(255, 255, 255))
    return F.pil_to_tensor(image)


def markdown(result: dict[str, Any]) -> str:
    """The two tables with what they measure, the commit, the command and the time."""
    types = [*sorted({r["type"] for r in result["kid"]} - {POOLED}), POOLED]
    counts = {r["type"]: r["crops"] for r in result["kid"] if r["method"] == REAL}
    methods = list(dict.fromkeys(r["method"] for r in result["kid"]))
    kid_cell = {(r["method"], r["type"]): ("—" if r["kid"] is None else f"{r['kid']:.4f} ± {r['std']:.4f}")
                + (f" ({r['note']})" if r.get("note") else "") for r in result["kid"]}
    ratio = {(key, r["method"], r["type"]): "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
             for key in ("memorisation", "region_memorisation") for r in result[key]}
    head = "| method | " + " | ".join(f"{t} ({counts[t]})" for t in types) + " |"
    rule = "| --- " * (len(types) + 1) + "|"
    state = result["commit"]
    lines = [
        "# Defect quality per defect type (magnetic tile, few-shot N=5)", "",
        f"Training shots (seed {result['seed']}): " + ", ".join(f"{s['type']} `{s['image']}`" for s in result["shots"])
        + f". Held-back reals: the test split's defects; made defects painted into test-split normals in the held-back"
        f" masks (see the script's docstring). Crops {SCALE:g}× the mask box (≥ {MIN_SIDE} px), EfficientNet-Lite0 "
        f"ImageNet features. ddpm inpainting: {result['settings']['inpaint_steps']} DDIM steps; training: "
        + "; ".join(f"{name} {m['preset']} preset, {m['steps']} steps"
                    + ("" if m["trained_here"] else f" (given: {m['path']})")
                    for name, m in result["settings"]["training"].items()) + ".", "",
        f"Commit {state['commit']}{' (dirty tree)' if state['dirty'] else ''}; {result['machine']['cpu']}, "
        f"torch threads: {result['machine']['threads']}, GPU: {result['machine']['gpu']}; "
        f"{result['seconds']['total']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items() if k != "total") + ").", "",
        f"`{result['command']}`", "",
        f"## KID to held-back real defects (lower: closer; mean ± std over {result['settings']['halvings']} "
        "halvings, one whole-half estimate each, no subsets)", "",
        "Each method's crops in one half's slots against the real crops of the other half; `real (floor)`: half "
        "against half. Column headers: held-back defects of the type.", "", head, rule,
    ]
    lines += ["| " + " | ".join([m, *(kid_cell.get((m, t), "—") for t in types)]) + " |" for m in methods]
    lines += ["", "## Memorisation: median of (distance to the nearest training shot) / (typical nearest-neighbour "
              "distance between held-back reals of the type)", "",
              "Around 1 or above: as far from the shots as new real defects are (the `real` row); << 1: copies. "
              "Whole crops, then the defect region alone (outside its mask a flat median grey; shots in their 8 "
              "flips and quarter turns): a copy on another surface shows only there."]
    for key, title in (("memorisation", "whole crop"), ("region_memorisation", "defect region")):
        lines += ["", f"**{title}**", "", "| method | " + " | ".join(types) + " |", rule]
        lines += ["| " + " | ".join([m, *(ratio.get((key, m, t), "—") for t in types)]) + " |"
                  for m in dict.fromkeys(r["method"] for r in result[key])]
    notes = [*result["notes"], f"sheet of made defects beside their nearest shot: {result['sheet']} (not in the "
             "repository: it shows dataset pixels)"]
    lines += ["", "Notes: " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def check_sheet_path(path: Path) -> None:
    """Refuse a sheet path inside the repository that git does not ignore: the sheet shows dataset pixels."""
    root = HERE.parent
    if path.resolve().is_relative_to(root) and subprocess.run(
            ["git", "check-ignore", "-q", str(path.resolve())], cwd=root).returncode != 0:
        raise SystemExit(f"--sheet {path}: the sheet shows dataset pixels; write it outside the repository "
                         "or to a git-ignored path")


def main() -> None:
    from inout_aug.bench.backbones import create_backbone

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "magnetic_tile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ddpm-v1", type=Path, default=None, help="a v1 model trained on the seed's 5 shots")
    parser.add_argument("--ddpm-v2", type=Path, default=None, help="a v2 model trained on the seed's 5 shots")
    parser.add_argument("--set", dest="pairs", nargs="*", default=[], metavar="KEY=VALUE",
                        help="ddpm training settings on top of both presets, e.g. steps=1000")
    parser.add_argument("--steps", type=int, default=25, help="ddpm inpainting steps")
    parser.add_argument("--halvings", type=int, default=50)
    parser.add_argument("--work", type=Path, default=Path("/tmp/defect-quality"), help="where models are trained")
    parser.add_argument("--sheet", type=Path, default=Path("/tmp/defect-quality-sheet.png"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "defect_quality")
    args = parser.parse_args()
    check_sheet_path(args.sheet)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    overrides = parse_pairs(args.pairs)
    models, about = ddpm_models(args.data, args.work, args.seed, {"ddpm v1": args.ddpm_v1, "ddpm v2": args.ddpm_v2},
                         overrides, seconds)
    backbone = create_backbone("efficientnet_lite0", "package", num_classes=0)
    result = measure(args.data, models, args.seed, backbone, steps=args.steps, rounds=args.halvings)
    seconds.update(result.seconds, total=time.perf_counter() - start)
    train = open_dataset(args.data, split="train")
    report = {
        "commit": git_state(args.out.parent), "seed": args.seed,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "command": " ".join(["benchmarks/bench_defect_quality.py", *sys.argv[1:]]),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "torch": torch.__version__, "inout_aug": inout_aug.__version__},
        "shots": [{"image": str(r.image.relative_to(train.root)), "type": r.defect_type}
                  for r in choose_defects(train.defects(), "few", SHOTS, args.seed)],
        "settings": {"crop_scale": SCALE, "crop_min_side": MIN_SIDE, "halvings": args.halvings,
                     "inpaint_steps": args.steps, "feature_net": "efficientnet_lite0 (ImageNet), 224 px",
                     "training": about},
        "slots": {t: result.types.count(t) for t in sorted(set(result.types))},
        "notes": result.notes, "kid": result.kid, "memorisation": result.memorisation,
        "region_memorisation": result.region_memorisation, "sheet": str(args.sheet),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps(report, indent=2) + "\n", args.out.with_suffix(".json"))
    write_text(markdown(report), args.out.with_suffix(".md"))
    args.sheet.parent.mkdir(parents=True, exist_ok=True)
    write_png(sheet(result), args.sheet)
    print(markdown(report))
    print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
