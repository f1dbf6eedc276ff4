"""The ``ddpm`` backend: a small class-conditional pixel-space diffusion model trained from scratch here.

It learns from patches: random crops of the user's normal images (class 0, many) teach the surface; crops
centred on the few real defects (class 1, heavily augmented) teach the defect. It makes defects by inpainting
them into normal images inside a mask (RePaint-style blended diffusion with classifier-free guidance), so every
output comes with its pixel mask and every pixel outside the mask is the input's, bit for bit.

No pretrained weights, no download; a model trains in minutes on a CPU (``DDPMConfig.preset("default")``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from torchvision.transforms.v2 import functional as F

from inout_aug.core.io import write_text
from inout_aug.core.sample import match_channels
from inout_aug.core.settings import settings_from_dict, settings_from_preset
from inout_aug.data.masks import bounding_box

#: Class labels of the UNet: normal surface, defect, and the null class of classifier-free guidance.
NORMAL, DEFECT, NULL = 0, 1, 2

#: What the backend cannot do: it has never seen a defect unless it is given real ones (no zero-shot).
ZERO_SHOT_ERROR = (
    "the ddpm backend learns what a defect looks like from real defects: give at least one defective image with "
    "its mask (few-shot); for zero-shot use the sd backend with Stable Diffusion weights "
    "(inout-aug finetune --backend sd)"
)
#: Further limits: it only inpaints (no whole new images) and only makes the kind of defect it was shown.
LIMITATIONS = (
    "no zero-shot: " + ZERO_SHOT_ERROR,
    "inpainting only: defects are painted into a given image inside a given mask (no txt2img)",
    "one defect class: it makes defects like the real ones it was trained on, nothing else",
    "works on square patches: a mask window larger than the patch is generated at lower resolution and upscaled",
)
#: Model kinds: "repaint" (v1, this module: blended sampling with resampling jumps) and "inpaint" (v2,
#: :mod:`inout_aug.models.ddpm_inpaint`: a UNet conditioned on the hole and its context, one class per defect type).
KINDS = ("repaint", "inpaint")
SCHEDULERS = ("ddim", "dpm++")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
CONFIG_FILE = "config.json"
UNET_FOLDER = "unet"
_WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


@dataclass
class DDPMConfig:
    """Settings of a ddpm model and its training; see :data:`PRESETS` for the ready-made ones.

    ``kind`` "repaint" is v1 (this module), "inpaint" v2 (:mod:`inout_aug.models.ddpm_inpaint`, which says how
    it reads ``defect_share``, ``types`` and the loss; ``defect_weight`` and ``resample`` are v1's only).
    ``window_scale``: the square window around a defect is this many times its bounding box's longer side
    (at least ``patch_size``), both for training crops and for inpainting; a larger window is resized to the patch.
    ``batch_size`` is per process when training runs on several (``accelerate launch``, torchrun).
    """

    kind: str = "repaint"
    patch_size: int = 64
    channels: int | None = None  # 1 or 3; None: from the training images (3 if any is RGB)
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    norm_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    learning_rate: float = 1e-3
    batch_size: int = 16
    steps: int = 2000
    defect_share: float = 0.5
    defect_weight: float = 5.0  # extra loss weight on the pixels of a real defect (1 elsewhere)
    class_dropout: float = 0.1
    guidance_scale: float = 3.0
    resample: int = 2  # RePaint jumps per ddim inpainting step: the defect fits its surroundings (and shows) better
    window_scale: float = 2.0
    ema: bool = True
    ema_decay: float = 0.995
    seed: int = 0
    types: tuple[str, ...] = ()  # inpaint: the defect types, class k + 1 (0: surface); (): from the training defects

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.types = tuple(self.types)
        levels = 2 ** (len(self.block_out_channels) - 1)
        checks = [
            (self.kind in KINDS, f"kind must be one of {KINDS}, got {self.kind!r}"),
            (not self.types or self.kind == "inpaint", "types name the classes of kind='inpaint' models only"),
            (all(isinstance(t, str) and t for t in self.types) and len(set(self.types)) == len(self.types),
             f"types must be distinct non-empty names, got {self.types}"),
            (self.patch_size >= 8 and self.patch_size % levels == 0,
             f"patch_size must be at least 8 and a multiple of {levels}, got {self.patch_size}"),
            (self.channels in (None, 1, 3), f"channels must be 1, 3 or None, got {self.channels}"),
            (all(c > 0 and c % self.norm_groups == 0 for c in self.block_out_channels),
             f"block_out_channels {self.block_out_channels} must be multiples of norm_groups={self.norm_groups}"),
            (self.layers_per_block >= 1, f"layers_per_block must be at least 1, got {self.layers_per_block}"),
            (self.beta_schedule in BETA_SCHEDULES, f"beta_schedule must be one of {BETA_SCHEDULES}"),
            (self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be at least 1"),
            (self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}"),
            (self.num_train_timesteps >= 2, f"num_train_timesteps must be at least 2, got {self.num_train_timesteps}"),
            (0 <= self.defect_share <= 1 and 0 <= self.class_dropout < 1,
             "defect_share must lie in [0, 1] and class_dropout in [0, 1)"),
            (self.defect_weight >= 0, f"defect_weight must be at least 0, got {self.defect_weight}"),
            (self.resample >= 0, f"resample must be at least 0, got {self.resample}"),
            (self.window_scale >= 1, f"window_scale must be at least 1, got {self.window_scale}"),
            (0 <= self.ema_decay < 1, f"ema_decay must lie in [0, 1), got {self.ema_decay}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        out = asdict(self)
        out["block_out_channels"] = list(self.block_out_channels)
        out["types"] = list(self.types)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DDPMConfig:
        """Settings from :meth:`to_dict`'s output; unknown keys raise a SettingsError."""
        return settings_from_dict(cls, data, what="ddpm")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DDPMConfig:
        """A named preset of :data:`PRESETS` with ``overrides`` on top."""
        return settings_from_preset(cls, PRESETS, name, overrides, what="ddpm")


_SMOKE = {"patch_size": 16, "block_out_channels": (8, 16), "norm_groups": 4, "batch_size": 8, "steps": 20,
          "num_train_timesteps": 100}
#: "default": v1, 2000 steps, about 11 minutes on a 2-core CPU; "inpaint": v2 (48-pixel patches, 3000 steps);
#: "smoke" and "inpaint-smoke": seconds, for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "smoke": _SMOKE,
    "inpaint": {"kind": "inpaint", "patch_size": 48, "steps": 3000},
    "inpaint-smoke": {**_SMOKE, "kind": "inpaint"},
}


class DDPMDefectModel:
    """A trained ddpm backend: its settings and UNet; :meth:`inpaint` paints defects into images inside masks."""

    def __init__(self, config: DDPMConfig, unet: UNet2DModel):
        self.config = config
        self.unet = unet.eval()

    @property
    def device(self) -> torch.device:
        """Where the UNet lives."""
        return next(self.unet.parameters()).device

    def save(self, folder: str | os.PathLike, extra_files: dict[str, str] | None = None) -> Path:
        """Write ``config.json``, ``unet/`` (safetensors) and ``extra_files`` (name: text, e.g. a record of the
        training data) to ``folder``, replacing an older model there whole.

        The files are written into a temporary sibling folder that is renamed at the end, so ``folder`` never
        holds half a model. A non-empty ``folder`` that is not a ddpm model is refused.
        """
        folder = Path(folder)
        check_model_folder(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir()
            write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", tmp / CONFIG_FILE)
            self.unet.save_pretrained(tmp / UNET_FOLDER, safe_serialization=True)
            for name, text in (extra_files or {}).items():
                write_text(text, tmp / name)
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> DDPMDefectModel:
        """The model :meth:`save` wrote to ``folder``, on ``device``, of the kind its config names (called on either
        class): a :class:`DDPMDefectModel`, or an :class:`~inout_aug.models.ddpm_inpaint.InpaintDefectModel`."""
        folder = Path(folder)
        needed = [folder / CONFIG_FILE, folder / UNET_FOLDER / CONFIG_FILE, folder / UNET_FOLDER / _WEIGHTS_FILE]
        missing = [str(p.relative_to(folder)) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"no ddpm model at {folder} (missing {', '.join(missing)}): train one with "
                f"`inout-aug finetune --backend ddpm --data DATASET --out {folder}`"
            )
        config = DDPMConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
        unet = UNet2DModel.from_pretrained(folder / UNET_FOLDER).to(device)
        if config.kind == "inpaint":
            from inout_aug.models.ddpm_inpaint import InpaintDefectModel

            return InpaintDefectModel(config, unet)
        return DDPMDefectModel(config, unet)

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, masks: torch.Tensor, *,
                generator: torch.Generator | Sequence[torch.Generator], steps: int = 50, guidance: float | None = None,
                scheduler: str = "ddim", resample: int | None = None) -> torch.Tensor:
        """Paint a defect into each (B, C, H, W) float [0, 1] image inside its (B, H, W) bool mask.

        ``generator`` is one generator for the batch, or one per image (then an image's result does not depend on
        the others in the batch).

        Per image, a square window around the mask (``config.window_scale`` times its bounding box, at least the
        patch) is resized to the patch, inpainted (``steps`` of ``scheduler`` "ddim" or "dpm++", classifier-free
        ``guidance``, default ``config.guidance_scale``; ``resample`` RePaint jumps per step, default
        ``config.resample`` with ddim, none with dpm++, which cannot jump), resized back and pasted inside the mask.
        Pixels outside the mask are the input's bit for bit; images with an empty mask come back unchanged.
        Returns a new tensor of the input's shape, dtype and device.
        """
        if resample is None:
            resample = self.config.resample if scheduler == "ddim" else 0
        _check_inputs(images, masks, scheduler, steps, resample)
        scale = self.config.guidance_scale if guidance is None else float(guidance)
        return self._in_windows(images, masks, generator, lambda known, holes, rows_generator, rows: self._sample(
            known, holes, rows_generator, steps, scale, scheduler, resample))

    def _in_windows(self, images: torch.Tensor, masks: torch.Tensor,
                    generator: torch.Generator | Sequence[torch.Generator],
                    sample: Callable[[torch.Tensor, torch.Tensor, torch.Generator | list[torch.Generator], list[int]],
                                     torch.Tensor]) -> torch.Tensor:
        """:meth:`inpaint`'s windows: each image's window cut and resized to the patch, ``sample(known, holes,
        generator, rows)`` run on them in [-1, 1] (``rows``: the indices of the images that have a mask, with
        their generators), the results resized back and pasted inside the masks."""
        out = images.clone()
        masks = masks.to(images.device)
        rows = [i for i in range(len(images)) if masks[i].any()]
        if not rows:
            return out
        c = self.config.channels
        p = self.config.patch_size
        boxes = [_window(masks[i], self.config) for i in rows]
        known = torch.stack([_patch(match_channels(images[i, :, t:t + h, x:x + w].float(), c), p)
                             for i, (t, x, h, w) in zip(rows, boxes)])
        holes = torch.stack([_patch(masks[i, t:t + h, x:x + w][None].float(), p) > 0
                             for i, (t, x, h, w) in zip(rows, boxes)])
        if not isinstance(generator, torch.Generator):
            if len(generator) != len(images):
                raise ValueError(f"give one generator, or one per image ({len(images)}), not {len(generator)}")
            generator = [generator[i] for i in rows]
        made = sample(known * 2 - 1, holes, generator, rows)
        made = (made + 1) / 2
        for k, (i, (t, x, h, w)) in enumerate(zip(rows, boxes)):
            back = match_channels(F.resize(made[k:k + 1], [h, w], antialias=True)[0], images.shape[1])
            region = out[i, :, t:t + h, x:x + w]
            hole = masks[i, t:t + h, x:x + w].expand_as(region)
            region[hole] = back.clamp(0, 1).to(images.dtype)[hole]
        return out

    def _sample(self, known: torch.Tensor, holes: torch.Tensor, generator: torch.Generator | list[torch.Generator],
                steps: int, guidance: float, scheduler: str, resample: int) -> torch.Tensor:
        """Blended (RePaint) sampling of (N, C, P, P) patches in [-1, 1]: ``known`` is kept outside ``holes``."""
        device = self.device
        known, holes = known.to(device), holes.to(device)
        sched = _inference_scheduler(self.config, scheduler)
        sched.set_timesteps(steps)
        alphas = sched.alphas_cumprod.to(device)
        labels = torch.full((len(known),), DEFECT, dtype=torch.long, device=device)

        def noise() -> torch.Tensor:
            return _noise(known.shape, generator, device)

        x = noise()
        gap = self.config.num_train_timesteps // steps
        for t in sched.timesteps:
            a = alphas[t]
            for jump in range(resample + 1):
                x = torch.where(holes, x, a.sqrt() * known + (1 - a).sqrt() * noise())
                x_prev = sched.step(_guided_eps(self.unet, x, t, labels, NULL, guidance), t, x).prev_sample
                if jump == resample or t - gap < 0:
                    break
                ratio = a / alphas[t - gap]  # back from t - gap to t: the RePaint resampling jump
                x = ratio.sqrt() * x_prev + (1 - ratio).sqrt() * noise()
            x = x_prev
        return torch.where(holes, x, known)


def train_ddpm(normals: Sequence[torch.Tensor], defects: Sequence[tuple[torch.Tensor, torch.Tensor]],
               config: DDPMConfig, *, progress: bool = True,
               device: str | torch.device | None = None) -> DDPMDefectModel:
    """Train a ddpm model from scratch on normal images (C, H, W) uint8 and defects (image, (H, W) bool mask).

    Each batch holds ``defect_share`` defect patches (class 1: windows around a real defect, with flips, 90°
    rotations, brightness/contrast and crop jitter) and normal patches (class 0: random crops, flipped);
    ``class_dropout`` of the labels become the null class for classifier-free guidance. Seeded by
    ``config.seed``: the same inputs give the same weights on CPU. ``progress`` shows a bar with the loss on stderr.
    One process trains on the CPU unless ``device`` says otherwise; data parallel under ``accelerate launch`` or
    torchrun, on accelerate's device unless ``device`` is "cpu" (``batch_size`` per process; every process returns
    the trained model).
    """
    config, normals, defects = _training_inputs(normals, defects, config)
    sides = [max(_window(mask, config)[2:]) for _, mask in defects]

    def draw(generator: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        n_defect = round(size * config.defect_share)
        labels = torch.tensor([DEFECT] * n_defect + [NORMAL] * (size - n_defect))
        return *_batch(normals, defects, sides, n_defect, size, config, generator), labels, None

    return DDPMDefectModel(config, _train(config, draw, progress, device))


def _training_inputs(
    normals: Sequence[torch.Tensor], defects: Sequence[tuple[torch.Tensor, torch.Tensor]], config: DDPMConfig,
) -> tuple[DDPMConfig, list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Checked training images: ``config`` with its channels set (from the images when None), the normals and the
    (image, bool mask) defects in those channels."""
    if not defects:
        raise ValueError(ZERO_SHOT_ERROR)
    if not normals:
        raise ValueError("the ddpm backend learns the surface from normal images: give at least one normal image")
    if any(x.dtype != torch.uint8 for x in [*normals, *(image for image, _ in defects)]):
        raise TypeError("train_ddpm takes uint8 (C, H, W) images (0-255)")
    for k, (image, mask) in enumerate(defects):
        if mask.shape != image.shape[-2:] or not mask.any():
            raise ValueError(f"defect {k}: its mask must be (H, W) like its image and mark at least one pixel")
    channels = config.channels or (3 if any(x.shape[0] == 3 for x in [*normals, *(d[0] for d in defects)]) else 1)
    config = DDPMConfig.from_dict({**config.to_dict(), "channels": channels})
    normals = [match_channels(x, channels) for x in normals]
    defects = [(match_channels(x, channels), m.bool()) for x, m in defects]
    return config, normals, defects


#: A training batch of ``size`` rows from a generator: patches in [-1, 1], per-pixel loss weights (B, 1, P, P),
#: class labels and the context channels fed to the UNet beside the noisy patches (None: none).
Draw = Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]


def _train(config: DDPMConfig, draw: Draw, progress: bool, device: str | torch.device | None) -> UNet2DModel:
    """The UNet of ``config`` trained on batches from ``draw`` (seeded by ``config.seed``; EMA weights when
    ``config.ema``): noise prediction, loss weighted per pixel, ``class_dropout`` of the labels made the null
    class (the last one).

    Runs under accelerate: one process on the CPU unless ``device`` says otherwise; data parallel on every process
    of ``accelerate launch`` or torchrun, on accelerate's device (``device="cpu"`` forces the CPU). ``batch_size``
    is per process. Every process draws the whole global batch (``batch_size`` x processes rows) from the one
    seeded generator and trains on its own rows, with the loss normalised by the global batch's weights, so the
    averaged gradients are the global batch's: n processes at batch b train as one process at batch n x b, up to
    float rounding."""
    from inout_aug.models.parallel import launched_distributed, make_accelerator

    # One process trains on the CPU unless told otherwise (so a bench's ddpm models are the same on every host);
    # processes launched together train on accelerate's device.
    on_cpu = not launched_distributed() if device is None else torch.device(device).type == "cpu"
    accelerator = make_accelerator(cpu=on_cpu)
    device = accelerator.device
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet = _build_unet(config).to(device).train()
    null = unet.config.num_class_embeds - 1
    average = copy.deepcopy(unet).eval() if config.ema else unet
    noise_scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.0)
    warmup = max(1, min(100, config.steps // 10))
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, config.steps))
    model, optimizer = accelerator.prepare(unet, optimizer)
    rank, size = accelerator.process_index, config.batch_size * accelerator.num_processes
    mine = slice(rank * config.batch_size, (rank + 1) * config.batch_size)
    running = math.nan
    with _progress(config.steps, progress and accelerator.is_local_main_process, lambda: f"loss {running:.4f}") as bar:
        for step in bar:
            batch, weight, labels, context = draw(generator, size)
            dropped = torch.rand(len(labels), generator=generator) < config.class_dropout
            noise = torch.randn(batch.shape, generator=generator)
            t = torch.randint(config.num_train_timesteps, (len(batch),), generator=generator)
            noisy = noise_scheduler.add_noise(batch[mine], noise[mine], t[mine]).to(device)
            if context is not None:
                noisy = torch.cat([noisy, context[mine].to(device)], 1)
            classes = labels.masked_fill(dropped, null)[mine].to(device)
            pred = model(noisy, t[mine].to(device), class_labels=classes).sample
            loss = ((pred - noise[mine].to(device)) ** 2 * weight[mine].to(device)).mean() / weight.mean()
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            if config.ema:
                decay = min(config.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for slow, fast in zip(average.parameters(), unet.parameters()):
                        slow.lerp_(fast, 1 - decay)
            shown = accelerator.reduce(loss.detach(), "mean").item()
            running = shown if math.isnan(running) else 0.95 * running + 0.05 * shown
    accelerator.wait_for_everyone()
    return average


def _build_unet(config: DDPMConfig) -> UNet2DModel:
    """An untrained UNet of ``config``: repaint sees the noisy patch, with classes normal, defect and null;
    inpaint also the patch with its hole zeroed and the hole, with classes surface, ``types`` and null."""
    levels = len(config.block_out_channels)
    inpaint = config.kind == "inpaint"
    return UNet2DModel(
        sample_size=config.patch_size, in_channels=2 * config.channels + 1 if inpaint else config.channels,
        out_channels=config.channels, block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block, down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels, norm_num_groups=config.norm_groups, class_embed_type=None,
        num_class_embeds=len(config.types) + 2 if inpaint else 3,
    )


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _inference_scheduler(config: DDPMConfig, name: str) -> DDIMScheduler | DPMSolverMultistepScheduler:
    common = {"num_train_timesteps": config.num_train_timesteps, "beta_schedule": config.beta_schedule,
              "timestep_spacing": "trailing"}
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=True)
    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", thresholding=True, sample_max_value=1.0)


@contextmanager
def _progress(steps: int, show: bool, status: Callable[[], str]) -> Iterator[Iterator[int]]:
    """``range(steps)``, with a progress bar on stderr showing ``status()`` when ``show``."""
    if not show:
        yield iter(range(steps))
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        import click

        with click.progressbar(range(steps), label="training ddpm", file=sys.stderr,
                               item_show_func=lambda _: status()) as bar:
            yield iter(bar)
        return
    with tqdm(range(steps), desc="training ddpm", file=sys.stderr) as bar:
        def steps_with_status() -> Iterator[int]:
            for step in bar:
                yield step
                bar.set_postfix_str(status(), refresh=False)
        yield steps_with_status()


def _noise(shape: torch.Size, generator: torch.Generator | list[torch.Generator],
           device: torch.device) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``device``, from one generator or one per row."""
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=generator.device).to(device)
    return torch.stack([torch.randn(shape[1:], generator=g, device=g.device) for g in generator]).to(device)


def _guided_eps(unet: UNet2DModel, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, null: int,
                guidance: float) -> torch.Tensor:
    """The UNet's noise prediction for ``x`` at ``t`` under ``labels``, with classifier-free ``guidance`` against
    the ``null`` class (one UNet call on the doubled batch), or without guidance when ``guidance`` is 1."""
    if guidance == 1:
        return unet(x, t.to(x.device).expand(len(x)), class_labels=labels).sample
    both = torch.cat([labels, torch.full_like(labels, null)])
    cond, uncond = unet(torch.cat([x, x]), t.to(x.device).expand(2 * len(x)), class_labels=both).sample.chunk(2)
    return uncond + guidance * (cond - uncond)


def _check_inputs(images: torch.Tensor, masks: torch.Tensor, scheduler: str, steps: int, resample: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be a (B, C, H, W) tensor with C 1 or 3, got {getattr(images, 'shape', images)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be float in [0, 1], got {images.dtype}; divide a uint8 image by 255")
    if masks.dtype != torch.bool or masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"masks must be (B, H, W) bool matching images {tuple(images.shape)}, got "
                         f"{tuple(masks.shape)} {masks.dtype}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    if steps < 1 or resample < 0:
        raise ValueError(f"steps must be at least 1 and resample at least 0, got {steps}, {resample}")
    if resample and scheduler != "ddim":
        raise ValueError("resampling jumps (resample > 0) need the ddim scheduler")


def _patch(image: torch.Tensor, size: int) -> torch.Tensor:
    """A (C, h, w) image resized to (C, size, size) unless it already is."""
    return image if image.shape[-2:] == (size, size) else F.resize(image, [size, size], antialias=True)


def _fit_window(h: int, w: int, cy: float, cx: float, side: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a square of ``side`` centred on (cy, cx), shifted into an (h, w) image."""
    height, width = min(side, h), min(side, w)
    top = min(max(0, round(cy - height / 2)), h - height)
    left = min(max(0, round(cx - width / 2)), w - width)
    return top, left, height, width


def _window(mask: torch.Tensor, config: DDPMConfig, scale: float = 1.0,
            shift: tuple[float, float] = (0.0, 0.0)) -> tuple[int, int, int, int]:
    """The window around a mask's defect: ``window_scale`` x its box (at least the patch), scaled and shifted.

    ``shift`` moves the centre by a fraction (-1..1) of the slack between box and window.
    """
    top, left, bottom, right = bounding_box(mask)
    extent = max(bottom - top, right - left)
    side = max(round(max(config.patch_size, extent * config.window_scale) * scale), extent)
    slack = (side - extent) / 4
    cy, cx = (top + bottom) / 2 + shift[0] * slack, (left + right) / 2 + shift[1] * slack
    return _fit_window(*mask.shape, cy, cx, side)


def _uniform(generator: torch.Generator, low: float, high: float, n: int = 1) -> list[float]:
    return (low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)).tolist()


def _to_unit(patch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] to float [-1, 1]."""
    return patch.float() / 127.5 - 1


def _batch(normals: list[torch.Tensor], defects: list[tuple[torch.Tensor, torch.Tensor]], sides: list[int],
           n_defect: int, size: int, config: DDPMConfig,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch of ``size`` in [-1, 1], ``n_defect`` defect patches first, and its per-pixel loss weights
    (B, 1, P, P)."""
    shown = [_defect_patch(defects, config, generator) for _ in range(n_defect)]
    normal = [_normal_patch(normals, sides, config, generator) for _ in range(size - n_defect)]
    batch = torch.stack([patch for patch, _ in shown] + normal)
    weight = torch.ones(len(batch), 1, config.patch_size, config.patch_size)
    if shown:
        weight[:n_defect] += config.defect_weight * torch.stack([defect for _, defect in shown])
    return batch, weight


def _normal_patch(normals: list[torch.Tensor], sides: list[int], config: DDPMConfig,
                  generator: torch.Generator) -> torch.Tensor:
    """A random crop of a random normal image, maybe flipped, in [-1, 1].

    Half the crops are patch-sized (native scale), half have the size of a random defect's window (``sides``),
    so the surface is also learnt at the scales that inpainting windows of defect-like masks are resized from.
    """
    image = normals[int(torch.randint(len(normals), (1,), generator=generator))]
    h, w = image.shape[-2:]
    cy, cx, coin = _uniform(generator, 0, 1, 3)
    side = config.patch_size if coin < 0.5 else sides[int(torch.randint(len(sides), (1,), generator=generator))]
    top, left, height, width = _fit_window(h, w, cy * h, cx * w, side)
    patch = _patch(image[:, top:top + height, left:left + width], config.patch_size)
    flip_h, flip_v = (torch.rand(2, generator=generator) < 0.5).tolist()
    patch = patch.flip(-1) if flip_h else patch
    return _to_unit(patch.flip(-2) if flip_v else patch)


def _defect_patch(defects: list[tuple[torch.Tensor, torch.Tensor]], config: DDPMConfig,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A window around a random real defect, in [-1, 1], and its defect mask (1, P, P) in [0, 1].

    Augmented with crop jitter (place and scale), a flip, 90° turns and brightness/contrast jitter.
    """
    image, mask = defects[int(torch.randint(len(defects), (1,), generator=generator))]
    scale, dy, dx, contrast, brightness = _uniform(generator, 0.85, 1.25) + _uniform(generator, -1, 1, 2) + \
        _uniform(generator, 0.9, 1.1) + _uniform(generator, -0.05, 0.05)
    top, left, height, width = _window(mask, config, scale, (dy, dx))
    both = torch.cat([_to_unit(image[:, top:top + height, left:left + width]),
                      mask[None, top:top + height, left:left + width].float()])
    both = _patch(both, config.patch_size)
    turns = int(torch.randint(4, (1,), generator=generator))
    flip = bool(torch.rand(1, generator=generator) < 0.5)
    both = torch.rot90(both.flip(-1) if flip else both, turns, (-2, -1))
    patch, defect = both[:-1], both[-1:].clamp(0, 1)
    mean = patch.mean()
    return ((patch - mean) * contrast + mean + 2 * brightness).clamp(-1, 1), defect


def check_model_folder(folder: Path) -> None:
    """Refuse an output ``folder`` that exists and is neither empty nor a ddpm model folder: a model written there
    would mix with other files. Checked before training, and again before saving."""
    if folder.exists() and not (folder / CONFIG_FILE).is_file() and (not folder.is_dir() or any(folder.iterdir())):
        what = "a file" if not folder.is_dir() else "a folder of other files"
        raise FileExistsError(f"{folder} is {what}, not a ddpm model folder: choose a new or empty output folder")
