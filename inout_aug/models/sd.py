"""The ``sd`` backend: Stable Diffusion v1 with a DreamBooth-LoRA fine-tuned on a few defect images.

In&Out (arXiv 2406.00501) adapts Stable Diffusion v1.5 to the real defects with DreamBooth + LoRA and generates
in-distribution positives; DIAG (arXiv 2407.03961) instead inpaints real defect masks on normal images with a
Stable Diffusion inpainting model, training-free. Everything here works on local files only: nothing is downloaded.

A LoRA is trained on a txt2img UNet. It leaves the UNet's first and last convolutions alone, so it also loads into
the inpainting UNet of the same family (whose first convolution takes 9 channels): that is how a LoRA reaches
DIAG-style inpainting. DIAG itself uses the base inpainting model, with ``DIAG_PROMPTS``, ``DIAG_NEGATIVE_PROMPT``,
``DIAG_GUIDANCE`` and ``DIAG_STEPS`` (and strength 0.99; ``generate`` repaints the masked area fully, strength 1).

Reproducibility: a seed fixes every random draw (LoRA initialisation, data order, noise, class images). On one
machine with the same thread count and number of processes the same inputs give the same bytes; other hardware
may round differently.
diffusers, peft and accelerate are imported on first use, so ``LoraSettings`` and ``checkpoint_hash`` stay light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from inout_aug.core.augmenter import mix_seed
from inout_aug.core.io import IMAGE_SUFFIXES, atomic_open, digest, read_image, write_png, write_text
from inout_aug.core.sample import as_bytes, as_float
from inout_aug.core.settings import settings_from_preset

#: DIAG's prompts for SD inpainting with real defect masks (KolektorSDD2-like surfaces).
DIAG_PROMPTS = ("white marks on the wall", "copper metal scratches")
#: DIAG's negative prompt.
DIAG_NEGATIVE_PROMPT = "smooth, plain, black, dark, shadow"
#: DIAG's classifier-free guidance scale for inpainting (much higher than the usual 7.5).
DIAG_GUIDANCE = 20.0
#: DIAG's number of denoising steps for inpainting.
DIAG_STEPS = 30
#: The scale at which the In&Out authors merge the LoRA into the base model.
LORA_SCALE = 0.65
#: File names that ``finetune_lora`` writes in its output folder.
LORA_FILE = "lora.safetensors"
LORA_INFO = "lora.json"

# LoRA targets in the UNet. Linear (and 1x1) layers of the transformer blocks get the main rank; the 3x3
# convolutions of the ResNet blocks and resamplers get the convolution rank (LoCon). conv_in and conv_out are
# left out, so the LoRA fits txt2img and inpainting UNets alike.
_LINEAR_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
_CONV_TARGETS = ("conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv")
_TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class LoraSettings:
    """Every DreamBooth-LoRA fine-tuning setting. The defaults are the In&Out authors' recipe (``preset("paper")``).

    Override fields with ``preset(name, **overrides)`` or ``dataclasses.replace``. ``batch_size`` is per process
    (per GPU under ``accelerate launch``); ``max_steps``, when set, replaces ``epochs``. ``conv_rank = 0`` turns the
    convolution LoRA off. ``flip`` adds horizontally and vertically flipped copies of each instance image (the authors
    triple their positives so). ``mixed_precision`` ("no", "fp16", "bf16") applies on CUDA; without CUDA training
    runs in full precision.
    """

    class_word: str = "defect"
    identifier: str = "sks"
    rank: int = 32
    alpha: float = 16.0
    conv_rank: int = 4
    conv_alpha: float = 1.0
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine_with_restarts"
    lr_cycles: int = 3
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    batch_size: int = 12
    epochs: int = 50
    repeats: int = 10
    max_steps: int | None = None
    resolution: int = 512
    flip: bool = True
    snr_gamma: float | None = 5.0
    prior_preservation: bool = True
    prior_loss_weight: float = 1.0
    num_class_images: int = 200
    class_steps: int = 25
    class_guidance: float = 7.5
    class_batch_size: int = 4
    train_text_encoder: bool = False
    mixed_precision: str = "fp16"
    gradient_checkpointing: bool = False
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.resolution <= 0 or self.resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        for name in ("rank", "batch_size", "epochs", "repeats", "class_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("learning_rate", "alpha", "conv_alpha"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 or None (then epochs count), got {self.max_steps}")

    @property
    def instance_prompt(self) -> str:
        """DreamBooth's instance caption, e.g. ``"sks defect"``."""
        return f"{self.identifier} {self.class_word}"

    @property
    def class_prompt(self) -> str:
        """The caption of the class (regularisation) images, e.g. ``"defect"``."""
        return self.class_word

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LoraSettings:
        """``"paper"``: the In&Out recipe; ``"smoke"``: a few seconds on a CPU with the tiny test model."""
        return settings_from_preset(cls, PRESETS, name, overrides, what="LoRA")

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "smoke": {"rank": 4, "alpha": 4.0, "conv_rank": 2, "conv_alpha": 1.0, "learning_rate": 1e-3, "batch_size": 2,
              "epochs": 1, "repeats": 1, "max_steps": 2, "resolution": 32, "num_class_images": 2, "class_steps": 2,
              "class_batch_size": 2, "mixed_precision": "no", "seed": 0},
}


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def load_pipeline(checkpoint: str | os.PathLike, *, inpaint: bool = False, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32):
    """A Stable Diffusion (inpainting) pipeline from a local diffusers folder or a single checkpoint file.

    No safety checker; the scheduler is DPM-Solver++ (multistep), built from the checkpoint's scheduler config.
    The pipeline's own per-step progress bar is off (``pipeline.set_progress_bar_config(disable=False)``).
    """
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    path = Path(checkpoint).expanduser()
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    options = {"dtype": dtype, "safety_checker": None, "requires_safety_checker": False,
               "local_files_only": True}
    if path.is_dir() and (path / "model_index.json").is_file():
        pipeline = cls.from_pretrained(path, **options)
    elif path.is_file():
        pipeline = cls.from_single_file(path, config=_single_file_config(path, inpaint), **options)
    else:
        problem = "the folder has no model_index.json" if path.is_dir() else "no such file or folder"
        raise FileNotFoundError(f"Stable Diffusion checkpoint not found at {path} ({problem}): {_what_to_put(inpaint)}")
    channels = pipeline.unet.config.in_channels
    if inpaint != (channels == 9):
        wanted = "an inpainting checkpoint (UNet with 9 input channels)" if inpaint else "a txt2img checkpoint"
        other = ("mode='txt2img' (-p mode=txt2img) for whole new images, or give an inpainting checkpoint" if inpaint
                 else "mode='inpaint' for an inpainting checkpoint")
        raise ValueError(f"{path} is not {wanted}: its UNet takes {channels} input channels; use {other}")
    pipeline.register_to_config(_name_or_path=str(path.resolve()))
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config,
                                                                 algorithm_type="dpmsolver++")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def _what_to_put(inpaint: bool) -> str:
    model = "an SD inpainting checkpoint, e.g. Stable Diffusion v1.5 inpainting" if inpaint else \
        "e.g. Stable Diffusion v1.5"
    return ("put a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a "
            f"single .safetensors file there, {model}; nothing is downloaded")


def _single_file_config(path: Path, inpaint: bool) -> str:
    """The cached diffusers configuration folder that ``from_single_file`` needs for ``path``; never downloads."""
    from diffusers.loaders.single_file_utils import fetch_diffusers_config
    from huggingface_hub import try_to_load_from_cache

    shapes = _checkpoint_shapes(path)
    if not any(key.startswith("model.diffusion_model.") for key in shapes):
        raise ValueError(f"{path} is not a Stable Diffusion checkpoint: it holds no model.diffusion_model.* weights")
    repo = fetch_diffusers_config(shapes)["pretrained_model_name_or_path"]
    cached = try_to_load_from_cache(repo, "model_index.json")
    if not isinstance(cached, str):
        raise FileNotFoundError(
            f"the single-file checkpoint {path} needs the diffusers configuration of {repo} in the Hugging Face "
            f"cache, which is not there, and nothing is downloaded: convert the checkpoint to a diffusers folder, or "
            f"{_what_to_put(inpaint)}"
        )
    return str(Path(cached).parent)


def _checkpoint_shapes(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a single-file checkpoint as shape-only (meta) tensors, without reading the weights."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                return {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in handle.keys()}
        if path.suffix in (".ckpt", ".pt", ".pth"):
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            state = state.get("state_dict", state)
            return {key: torch.empty(value.shape, device="meta") for key, value in state.items()
                    if isinstance(value, torch.Tensor)}
    except Exception as exc:  # safetensors and torch.load raise many types for a damaged or foreign file
        raise ValueError(f"{path} is not a Stable Diffusion checkpoint: cannot read it ({exc})") from exc
    raise ValueError(f"{path} is not a Stable Diffusion checkpoint: expected a .safetensors or .ckpt file")


def checkpoint_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) that identifies a checkpoint; streams the files, so it suits multi-GB models.

    A single file: the SHA-256 of its bytes. A diffusers folder: the SHA-256 of a listing, one line
    ``<relative path> <sha256>`` per file that ``from_pretrained`` reads by default (model_index.json, every
    component's JSON and text files, and its weights: the non-variant ``.safetensors`` files, else the ``.bin``).
    """
    path = Path(path)
    if path.is_file():
        return digest(path)
    index = path / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"Stable Diffusion checkpoint not found at {path}: {_what_to_put(False)}")
    files = [index]
    for name, spec in sorted(json.loads(index.read_text()).items()):
        folder = path / name
        if not isinstance(spec, list) or spec[0] is None or not folder.is_dir():
            continue
        present = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        weights = [p for p in present if p.suffix == ".safetensors" and "." not in p.stem]
        weights = weights or [p for p in present if p.suffix == ".bin" and "." not in p.stem]
        files += [p for p in present if p.suffix in (".json", ".txt")] + weights
    listing = "".join(f"{p.relative_to(path).as_posix()} {digest(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Generation


def generate(pipeline, prompt: str, *, num_images: int = 1, seed: int = 0, steps: int = 25, guidance: float = 7.5,
             height: int | None = None, width: int | None = None, image: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, negative_prompt: str | None = None,
             seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Generate ``num_images`` images as a (N, 3, H, W) uint8 tensor on the CPU.

    Image ``i`` is drawn with the seed ``mix_seed(seed, i)``, so it does not depend on how many images are made
    with it; ``seeds`` gives each image's generator seed instead (and the number of images). Without ``image``:
    txt2img (``height``/``width`` default to the model's size). With ``image``
    ((N or 1, C, H, W) uint8, C = 1 or 3) and ``mask`` ((N or 1, H, W) bool, True = repaint): inpainting with a
    ``StableDiffusionInpaintPipeline`` at ``height`` x ``width`` (default: the image size rounded up to a multiple
    of 8); the result has the image's size, grey images come back as RGB, and every pixel outside the mask is
    the input's, bit for bit. DIAG inpaints with ``guidance=DIAG_GUIDANCE``, ``steps=DIAG_STEPS``.
    """
    from diffusers import StableDiffusionInpaintPipeline

    if seeds is not None:
        num_images = len(seeds)
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    inpainting = isinstance(pipeline, StableDiffusionInpaintPipeline)
    if inpainting != (image is not None) or (image is None) != (mask is None):
        raise ValueError("inpainting pipelines need image= and mask=, txt2img pipelines take neither; "
                         "load the pipeline with load_pipeline(..., inpaint=True) to inpaint")
    seeds = [mix_seed(seed, i) for i in range(num_images)] if seeds is None else seeds
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    options = {"num_inference_steps": steps, "guidance_scale": guidance, "negative_prompt": negative_prompt}
    if image is None:
        return _run(pipeline, prompt, generators, height=height, width=width, **options)
    rgb, repaint = _inpaint_inputs(image, mask, num_images)
    size = rgb.shape[-2:]
    height, width = height or _multiple_of_8(size[0]), width or _multiple_of_8(size[1])
    made = _run(pipeline, prompt, generators, height=height, width=width, image=as_float(rgb),
                mask_image=repaint[:, None].float(), **options)
    if made.shape[-2:] != size:
        made = TF.resize(made, list(size), antialias=True)
    return torch.where(repaint[:, None], made, rgb)


def _run(pipeline, prompt: str, generators: list[torch.Generator], **options) -> torch.Tensor:
    """One batched pipeline call, one generator per image; (N, 3, H, W) uint8 on the CPU."""
    images = pipeline(prompt, num_images_per_prompt=len(generators), generator=generators, output_type="pt",
                      **options).images
    return as_bytes(images.float().cpu(), inplace=True)


def _inpaint_inputs(image: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and broadcast inpainting inputs to (n, 3, H, W) uint8 and (n, H, W) bool."""
    if image.dtype != torch.uint8 or image.ndim != 4 or image.shape[1] not in (1, 3):
        raise ValueError(f"image must be a (N, 1 or 3, H, W) uint8 tensor, got {tuple(image.shape)} {image.dtype}")
    if mask.ndim != 3 or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"mask must be (N, H, W) with the image's H, W; got {tuple(mask.shape)} for an image "
                         f"{tuple(image.shape)}")
    for name, tensor in (("image", image), ("mask", mask)):
        if tensor.shape[0] not in (1, n):
            raise ValueError(f"{name} holds {tensor.shape[0]} items; give 1 or num_images = {n}")
    rgb = image.cpu().expand(-1, 3, -1, -1).expand(n, -1, -1, -1)
    return rgb, mask.cpu().bool().expand(n, -1, -1)


def _multiple_of_8(size: int) -> int:
    return -(-size // 8) * 8


# ---------------------------------------------------------------------------------------------------------------
# LoRA


def load_lora(pipeline, lora: str | os.PathLike, scale: float = LORA_SCALE):
    """Merge a LoRA from ``finetune_lora`` (its ``lora.safetensors`` or its folder) into ``pipeline`` at ``scale``.

    The weights are fused into the UNet (and the text encoder when it was trained), and the LoRA layers removed:
    the pipeline then runs as a plain model. Works for txt2img and inpainting pipelines of the same family.
    Returns the pipeline.
    """
    path = Path(lora).expanduser()
    if path.is_dir():
        path = path / LORA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"LoRA not found at {path}: put the {LORA_FILE} that finetune_lora "
                                "(`inout-aug finetune`) wrote there, or pass the folder that holds it")
    pipeline.load_lora_weights(str(path.parent), weight_name=path.name)
    pipeline.fuse_lora(lora_scale=scale)
    pipeline.unload_lora_weights()
    return pipeline


def finetune_lora(checkpoint, instance_images: Sequence[str | os.PathLike], out: str | os.PathLike,
                  settings: LoraSettings, *, class_images_dir: str | os.PathLike | None = None,
                  progress: bool = True, extra_files: dict[str, str] | None = None) -> Path:
    """DreamBooth-LoRA fine-tuning of a txt2img checkpoint (a path, or a pipeline) on ``instance_images``.

    Writes ``<out>/lora.safetensors`` (diffusers LoRA format, with its peft configuration) and ``<out>/lora.json``
    (base checkpoint and hash, prompts, settings, input images with hashes, library versions, LoRA hash), and
    returns the path of ``lora.safetensors``. With prior preservation, ``num_class_images`` images of the class
    prompt are generated by the base model into ``class_images_dir`` (default ``<out>/class_images``) unless
    there already. ``extra_files`` (name: text, e.g. a record of the training data) are written with them.

    Data parallel on every process of ``accelerate launch`` or torchrun (``batch_size`` per process): every process
    takes its rows of the global batch, and each sample's noise and timestep come from the seed, the step and its
    place in the global batch, so n processes at batch b train as one process at batch n x b, up to float rounding.
    The main process saves (see :func:`_save`). The same seed and data give the same LoRA bytes on one machine with
    the same number of processes. A pipeline passed in is trained in place, then left without LoRA layers or
    gradients.
    """
    from inout_aug.models.parallel import make_accelerator

    if not instance_images:
        raise ValueError("no instance images: pass the defect (or, zero-shot, normal) images to fine-tune on")
    out = Path(out)
    precision = settings.mixed_precision if torch.cuda.is_available() else "no"
    if precision != settings.mixed_precision:
        warnings.warn(f"mixed precision {settings.mixed_precision!r} needs CUDA; training in full precision",
                      stacklevel=2)
    accelerator = make_accelerator(mixed_precision=precision)
    if isinstance(checkpoint, (str, os.PathLike)):
        pipeline = load_pipeline(checkpoint, device=accelerator.device)
        base = str(Path(checkpoint).expanduser().resolve())
    else:
        pipeline = checkpoint.to(accelerator.device)
        base = pipeline.config.get("_name_or_path") or None
    if pipeline.unet.config.in_channels != 4:
        raise ValueError("finetune_lora needs a txt2img checkpoint; fine-tune on the base model and load the LoRA "
                         "into the inpainting pipeline with load_lora")
    class_files: list[Path] = []
    if settings.prior_preservation:
        folder = Path(class_images_dir) if class_images_dir is not None else out / "class_images"
        class_files = _class_images(pipeline, folder, settings, accelerator, progress)
    steps = _train(pipeline, [Path(p) for p in instance_images], class_files, settings, accelerator, progress)
    if accelerator.is_main_process:
        _save(pipeline, out, base, [Path(p) for p in instance_images], class_files, settings, precision, steps,
              extra_files or {})
    accelerator.wait_for_everyone()
    pipeline.unload_lora_weights()
    if settings.gradient_checkpointing:
        pipeline.unet.disable_gradient_checkpointing()
        _text_checkpointing(pipeline.text_encoder, on=False)
    return out / LORA_FILE


def _class_images(pipeline, folder: Path, settings: LoraSettings, accelerator, progress: bool) -> list[Path]:
    """The class images in ``folder``, generating the missing ones (``class_00000.png``, ...) with the base model.

    Image ``i`` is seeded with ``mix_seed(seed, "class", i)`` and made in the batch of ``class_batch_size`` it
    always belongs to, so an interrupted run resumes with the very bytes it would have written (batched kernels
    round differently for other batch sizes). Processes split the batches between them.
    """
    from tqdm.auto import tqdm

    existing = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    names = (i for i in itertools.count() if not (folder / f"class_{i:05d}.png").exists())
    missing = list(itertools.islice(names, max(0, settings.num_class_images - len(existing))))
    accelerator.wait_for_everyone()
    size = settings.class_batch_size
    batches = sorted({i // size for i in missing})[accelerator.process_index::accelerator.num_processes]
    bar = tqdm(total=len(batches), desc="class images", unit="batch", file=sys.stderr,
               disable=not (progress and accelerator.is_local_main_process and batches))
    for batch in batches:
        indices = range(batch * size, (batch + 1) * size)
        generators = [torch.Generator().manual_seed(mix_seed(settings.seed, "class", i)) for i in indices]
        images = _run(pipeline, settings.class_prompt, generators, num_inference_steps=settings.class_steps,
                      guidance_scale=settings.class_guidance, height=settings.resolution, width=settings.resolution)
        for i, picture in zip(indices, images):
            if i in missing:
                write_png(picture, folder / f"class_{i:05d}.png")
        bar.update()
    bar.close()
    accelerator.wait_for_everyone()
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:settings.num_class_images]


def _pixels(files: Sequence[Path], size: int, flip: bool) -> torch.Tensor:
    """Images resized (shorter side) and centre-cropped to ``size``, as RGB in [-1, 1]; optionally with flips."""
    images = []
    for file in files:
        image = read_image(file)
        image = TF.center_crop(TF.resize(image.expand(3, -1, -1), size, antialias=True), [size, size])
        images += [image, TF.horizontal_flip(image), TF.vertical_flip(image)] if flip else [image]
    return torch.stack(images).float() / 127.5 - 1


@torch.no_grad()
def _encode(vae, pixels: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's latent distribution (mean, std) of each image, computed once and sampled at every step."""
    means, stds = [], []
    for chunk in pixels.split(batch):
        dist = vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def _order(n: int, repeats: int, seed: int) -> Iterator[int]:
    """An endless stream of indices into ``n`` items: shuffled epochs of ``repeats`` copies of each."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from (torch.randperm(n * repeats, generator=generator) % n).tolist()


def _lora_config(rank: int, alpha: float, conv_rank: int, conv_alpha: float, text: bool = False):
    from peft import LoraConfig

    if text:
        return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(_TEXT_TARGETS))
    conv = list(_CONV_TARGETS) if conv_rank else []
    return LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(_LINEAR_TARGETS) + conv,
        rank_pattern={name: conv_rank for name in conv}, alpha_pattern={name: conv_alpha for name in conv},
    )


def _train(pipeline, instance_files: list[Path], class_files: list[Path], settings: LoraSettings, accelerator,
           progress: bool) -> int:
    """Add LoRA adapters to the pipeline's UNet (and text encoder) and train them; returns the number of steps."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from peft import inject_adapter_in_model
    from tqdm.auto import tqdm

    s = settings
    device = accelerator.device
    unet, text_encoder, vae = pipeline.unet, pipeline.text_encoder, pipeline.vae
    for module in (unet, text_encoder, vae):
        module.requires_grad_(False).eval()
    scaling = vae.config.scaling_factor
    instance = _encode(vae, _pixels(instance_files, s.resolution, s.flip), s.class_batch_size)
    prior = _encode(vae, _pixels(class_files, s.resolution, False), s.class_batch_size) if class_files else None

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(s.seed)  # the same LoRA initialisation on every process
        unet.add_adapter(_lora_config(s.rank, s.alpha, s.conv_rank, s.conv_alpha))
        if s.train_text_encoder:
            inject_adapter_in_model(_lora_config(s.rank, s.alpha, 0, 0, text=True), text_encoder)
    trained = [unet, text_encoder] if s.train_text_encoder else [unet]
    if s.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if s.train_text_encoder:
            _text_checkpointing(text_encoder, on=True)
    params = [p for module in trained for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    per_step = s.batch_size * accelerator.num_processes
    steps = s.max_steps or s.epochs * math.ceil(instance[0].shape[0] * s.repeats / per_step)
    processes = accelerator.num_processes  # a prepared LR scheduler steps once per process
    lr_scheduler = get_scheduler(s.lr_scheduler, optimizer, num_warmup_steps=s.lr_warmup_steps * processes,
                                 num_training_steps=steps * processes, num_cycles=s.lr_cycles)
    *trained_models, optimizer, lr_scheduler = accelerator.prepare(*trained, optimizer, lr_scheduler)
    for model in trained_models:
        model.train()

    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    alphas = noise_scheduler.alphas_cumprod.to(device)
    ids = pipeline.tokenizer([s.instance_prompt, s.class_prompt], padding="max_length", truncation=True,
                             max_length=pipeline.tokenizer.model_max_length, return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        frozen_embeddings = text_encoder(ids)[0]
    instance_order = _order(instance[0].shape[0], s.repeats, mix_seed(s.seed, "instance order"))
    prior_order = _order(prior[0].shape[0], 1, mix_seed(s.seed, "class order")) if prior is not None else None
    first = accelerator.process_index * s.batch_size
    mine = slice(first, first + s.batch_size)

    bar = tqdm(range(steps), desc="LoRA fine-tuning", file=sys.stderr,
               disable=not (progress and accelerator.is_local_main_process))
    for step in bar:
        picks = [(instance, list(itertools.islice(instance_order, per_step))[mine], 0)]
        if prior is not None:
            picks.append((prior, list(itertools.islice(prior_order, per_step))[mine], 1))
        draws = [_sample_draws(mix_seed(s.seed, "noise", step, which, first + k), mean.shape[1:],
                               noise_scheduler.config.num_train_timesteps)
                 for (mean, _), idx, which in picks for k in range(len(idx))]
        sampled, noise, timesteps = (torch.stack(parts).to(device) for parts in zip(*draws))
        latents = torch.cat([mean[idx] for (mean, _), idx, _ in picks])
        latents = (latents + torch.cat([std[idx] for (_, std), idx, _ in picks]) * sampled) * scaling
        prompt_index = torch.tensor([which for _, idx, which in picks for _ in idx], device=device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        embeddings = trained_models[1](ids)[0] if s.train_text_encoder else frozen_embeddings
        prediction = trained_models[0](noisy, timesteps, embeddings[prompt_index]).sample
        per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        per_image = per_image * _snr_weights(alphas[timesteps], s.snr_gamma, noise_scheduler.config.prediction_type)
        is_prior = prompt_index == 1
        loss = per_image[~is_prior].mean()
        if prior is not None:
            loss = loss + s.prior_loss_weight * per_image[is_prior].mean()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, s.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    for model in trained_models:
        accelerator.unwrap_model(model, keep_fp32_wrapper=False).eval()
    return steps


def _sample_draws(seed: int, shape: torch.Size, timesteps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training sample's draws from its own seed, on the CPU: the noise that samples its latent from the VAE's
    distribution, the diffusion noise and the timestep."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator), torch.randn(shape, generator=generator),
            torch.randint(timesteps, (), generator=generator))


def _text_checkpointing(text_encoder, on: bool) -> None:
    """Turn gradient checkpointing of a transformers model on or off (transformers 5 calls it activation ...)."""
    prefix = "activation" if hasattr(text_encoder, "activation_checkpointing_enable") else "gradient"
    getattr(text_encoder, f"{prefix}_checkpointing_{'enable' if on else 'disable'}")()


def _snr_weights(alphas: torch.Tensor, gamma: float | None, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for the noise levels ``alphas`` (cumulative products)."""
    if not gamma:
        return torch.ones_like(alphas)
    snr = alphas / (1 - alphas)
    return snr.clamp(max=gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)


def _save(pipeline, out: Path, base: str | None, instance_files: list[Path], class_files: list[Path],
          settings: LoraSettings, precision: str, steps: int, extra_files: dict[str, str]) -> None:
    """Write ``lora.safetensors``, ``lora.json`` and ``extra_files`` to ``out`` as one model.

    They are written into a temporary folder in ``out``; then an older ``lora.safetensors`` is removed, the records
    are renamed into place and the LoRA file last, so ``out`` never holds a LoRA without its records or beside
    another's. (``out`` is not replaced whole: it also keeps the class-image cache.)"""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    layers = {"unet": pipeline.unet}
    if settings.train_text_encoder:
        layers["text_encoder"] = pipeline.text_encoder
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".lora-*"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".lora-") as folder:
        tmp = Path(folder)
        StableDiffusionPipeline.save_lora_weights(
            tmp, weight_name=LORA_FILE,
            **{f"{name}_lora_layers": get_peft_model_state_dict(model) for name, model in layers.items()},
            **{f"{name}_lora_adapter_metadata": _adapter_metadata(model) for name, model in layers.items()},
        )
        data = _canonical_safetensors((tmp / LORA_FILE).read_bytes())
        with atomic_open(tmp / LORA_FILE) as handle:
            handle.write(data)
        _write_info(tmp, data, base, instance_files, class_files, settings, precision, steps)
        for name, text in extra_files.items():
            write_text(text, tmp / name)
        (out / LORA_FILE).unlink(missing_ok=True)
        for name in [LORA_INFO, *extra_files, LORA_FILE]:
            os.replace(tmp / name, out / name)


def _write_info(folder: Path, data: bytes, base: str | None, instance_files: list[Path], class_files: list[Path],
                settings: LoraSettings, precision: str, steps: int) -> None:
    """Write ``lora.json`` for the LoRA file ``data`` to ``folder``."""
    base_hash = checkpoint_hash(base) if base and Path(base).exists() else None
    info = {
        "base_checkpoint": base,
        "base_sha256": base_hash,
        "instance_prompt": settings.instance_prompt,
        "class_prompt": settings.class_prompt,
        "settings": settings.to_dict(),
        "mixed_precision_used": precision,
        "steps": steps,
        "instance_images": [{"path": str(p.resolve()), "sha256": digest(p)} for p in instance_files],
        "class_images": [{"path": str(p.resolve()), "sha256": digest(p)} for p in class_files],
        "versions": _versions(),
        "lora_file": LORA_FILE,
        "lora_sha256": hashlib.sha256(data).hexdigest(),
    }
    write_text(json.dumps(info, indent=2) + "\n", folder / LORA_INFO)


def _canonical_safetensors(data: bytes) -> bytes:
    """The safetensors file with its JSON header's keys sorted: safetensors writes its metadata in hash-map order,
    which changes from run to run. Offsets count from the end of the header, so the tensors need no change."""
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header = header.ljust(max(size, _multiple_of_8(len(header))))
    return len(header).to_bytes(8, "little") + header + data[8 + size:]


def _adapter_metadata(model) -> dict:
    """The model's peft LoRA configuration as a dict with sorted sets, so the saved bytes are reproducible."""
    config = model.peft_config["default"].to_dict()
    return {key: sorted(value) if isinstance(value, (set, frozenset)) else value for key, value in config.items()}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("inout-aug", "torch", "diffusers", "peft", "transformers", "accelerate", "safetensors"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
