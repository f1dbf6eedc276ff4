"""Fine-tuning on a dataset: choose the real files of a setup, train a backend, record what went in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inout_aug.core.io import digest, read_image
from inout_aug.data.layouts import Record, open_dataset, read_mask
from inout_aug.data.training import choose_defects

#: What a fine-tuning run records beside its model.
RECORD = "training_data.json"
ZERO_SHOT_DDPM = (
    "the ddpm backend learns what a defect looks like from real defects, and zero-shot has none: use "
    "few-shot (--setting few --shots N) or full-shot, or the sd backend with Stable Diffusion weights "
    "(inout-aug finetune --backend sd --checkpoint PATH)"
)


def finetune(backend: str, data: str | Path, out: str | Path, *, setting: str = "few", shots: int = 5,
             defect_type: str | None = None, layout: str | None = None, split: str = "train",
             data_options: dict[str, Any] | None = None, preset: str | None = None,
             overrides: dict[str, Any] | None = None, checkpoint: str | Path | None = None, seed: int = 0,
             normal_share: float = 0.1, progress: bool = True) -> Path:
    """Train ``backend`` ("ddpm" or "sd") on the ``setting`` of a dataset split and write it to ``out``.

    The real defects are chosen as in :class:`~inout_aug.data.TrainingSet` (``shots`` of them with ``seed``,
    optionally of one ``defect_type``). ``ddpm`` trains on every normal image of the split and the chosen
    defects; ``sd`` trains a LoRA on the chosen defects, or for zero-shot on ``normal_share`` of the normal
    images (then prompt for defects). ``preset`` and ``overrides`` set the backend's settings. Writes the
    model and ``training_data.json``: the dataset, the setup and every file that went in, with hashes.

    Data parallel under ``accelerate launch`` or torchrun (both backends; batch sizes are per process): the main
    process writes the model with its record as one, so a killed run leaves no half-written model in ``out``.
    """
    out = Path(out)
    if backend not in ("ddpm", "sd"):
        raise ValueError(f"backend must be 'ddpm' or 'sd', got {backend!r}")
    if backend == "ddpm" and checkpoint is not None:
        raise ValueError("--checkpoint is the sd backend's Stable Diffusion model; the ddpm backend trains from "
                         "scratch: leave it out, or use --backend sd")
    _check_out(backend, out)
    dataset = open_dataset(data, layout, split, **(data_options or {}))
    chosen = choose_defects(dataset.defects(defect_type), setting, shots if setting == "few" else None, seed)
    record = {
        "backend": backend, "dataset": {"layout": dataset.layout, "root": str(dataset.root), "split": split,
                                        "options": dataset.options()},
        "setting": setting, "shots": shots if setting == "few" else None, "defect_type": defect_type, "seed": seed,
    }
    if backend == "ddpm":
        finetune_ddpm(dataset, chosen, out, preset, overrides, seed, progress, record)
    else:
        _sd(dataset, chosen, out, preset, overrides, checkpoint, seed, normal_share, progress, record)
    return out


def _check_out(backend: str, out: Path) -> None:
    """Refuse, before training (which may take long), an ``out`` that holds other files than a model of ``backend``
    (for sd: a LoRA, its records and its cached class images)."""
    if backend == "ddpm":
        from inout_aug.models.ddpm import check_model_folder

        check_model_folder(out)
        return
    from inout_aug.models.sd import LORA_FILE, LORA_INFO

    own = {LORA_FILE, LORA_INFO, RECORD, "class_images"}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in own and not p.name.startswith(".")) \
        if out.is_dir() else []
    if out.exists() and (not out.is_dir() or foreign):
        what = "a file" if not out.is_dir() else f"a folder of other files ({', '.join(foreign[:3])})"
        raise FileExistsError(f"{out} is {what}, not a LoRA folder: choose a new or empty output folder")


def _record_text(record: dict[str, Any], used: list[Path]) -> str:
    """``training_data.json``: ``record`` with every file that went in, with hashes."""
    files = [{"image": str(path), "sha256": digest(path)} for path in used]
    return json.dumps({**record, "files": files}, indent=2) + "\n"


def finetune_ddpm(dataset, chosen: list[Record], out: Path, preset: str | None = None,
                  overrides: dict[str, Any] | None = None, seed: int = 0, progress: bool = True,
                  record: dict[str, Any] | None = None) -> list[Path]:
    """Train the ddpm backend on every normal image of ``dataset`` (anything with ``normals()`` and
    ``mask_threshold``, e.g. a layout) and the ``chosen`` defects (those whose mask marks a pixel); write it to
    ``out`` (with ``training_data.json``, ``record`` and the files used, when ``record`` is given); return the
    files used. Data parallel under accelerate; the main process saves.

    The preset's ``kind`` picks the model: v1 ("repaint", the default) or v2 ("inpaint", e.g. ``preset="inpaint"``
    or ``overrides={"kind": "inpaint"}``), whose classes are the chosen defects' types."""
    from accelerate import PartialState

    from inout_aug.models.ddpm import DDPMConfig, train_ddpm
    from inout_aug.models.ddpm_inpaint import train_inpaint

    if not chosen:
        raise ValueError(ZERO_SHOT_DDPM)
    config = DDPMConfig.preset(preset or "default", **{"seed": seed, **(overrides or {})})
    normals = dataset.normals()
    masks = [(r, read_mask(r.mask, dataset.mask_threshold)) for r in chosen if r.mask is not None]
    if not masks:
        raise ValueError("the ddpm backend needs defect masks (it paints inside them), and the chosen defects have no "
                         "mask files: a folder layout takes them from masks/ beside defect/")
    # A mask that marks no pixel (some data sets have them) shows no defect to learn: left out.
    used = [(r, mask) for r, mask in masks if mask.any()]
    typed = [(read_image(r.image), mask, r.defect_type) for r, mask in used]
    if not typed:
        raise ValueError("the ddpm backend needs defect masks (it paints inside them): the chosen defects have none "
                         "that marks a pixel")
    for (r, _), (image, mask, _) in zip(used, typed):
        if mask.shape != image.shape[-2:]:
            raise ValueError(f"the mask {r.mask} is {mask.shape[1]}x{mask.shape[0]} px but its image {r.image} is "
                             f"{image.shape[-1]}x{image.shape[-2]}: give each mask its image's size")
    images = [read_image(r.image) for r in normals]
    if config.kind == "inpaint":
        model = train_inpaint(images, typed, config, progress=progress)
    else:
        model = train_ddpm(images, [(image, mask) for image, mask, _ in typed], config, progress=progress)
    files = [r.image for r in normals] + [r.image for r, _ in used]
    state = PartialState()
    if state.is_main_process:
        model.save(out, None if record is None else {RECORD: _record_text(record, files)})
    state.wait_for_everyone()
    return files


def _sd(dataset, chosen, out: Path, preset, overrides, checkpoint, seed: int, share: float, progress: bool,
        record: dict[str, Any]) -> None:
    from inout_aug.models import sd

    if checkpoint is None:
        raise ValueError("the sd backend fine-tunes a local Stable Diffusion checkpoint: pass --checkpoint PATH")
    settings = sd.LoraSettings.preset(preset or "paper", **{"seed": seed, **(overrides or {})})
    images = [r.image for r in chosen]
    if not images:  # zero-shot: the surface from a share of the normals; defects come from the prompt
        normals = dataset.normals()
        images = [r.image for r in normals[:: max(1, round(1 / share))]]
    sd.finetune_lora(checkpoint, images, out, settings, progress=progress,
                     extra_files={RECORD: _record_text(record, images)})
