"""DiffusionDefect: in-distribution defects, drawn from a bank on disk or generated live by a diffusion model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as F

from inout_aug.augmenters.memseg.noise import perlin_masks
from inout_aug.core.augmenter import Augmenter, Made, Outcome, mix_seed
from inout_aug.core.io import digest
from inout_aug.core.sample import as_bytes, as_float, match_channels
from inout_aug.core.settings import kind_mismatch
from inout_aug.data.bank import Bank
from inout_aug.data.masks import RealMasks

BACKENDS = ("ddpm", "sd")
MODES = ("inpaint", "txt2img")
#: Settings of live generation (model=) and of bank entries (bank=): each means nothing with the other.
_LIVE_ONLY = ("backend", "mode", "masks", "mask_type", "masks_split", "masks_options", "prompt", "negative_prompt",
              "lora", "lora_scale", "steps", "guidance", "scheduler", "device")
_BANK_ONLY = ("fit",)


class DiffusionDefect(Augmenter):
    """In-distribution defects from a diffusion model adapted to the few real defects (In&Out's "in" side).

    Two ways to use it, exactly one of ``bank`` and ``model``:

    * ``bank=PATH``, a bank written by ``inout-aug generate --augmenter diffusion``: each chosen sample is
      replaced by a random bank entry, resized (``fit="resize"``) or randomly cropped (``fit="crop"``) to the
      sample's size. An inpainted entry comes with its pixel mask; a txt2img entry with a weak label: label
      1 and an empty mask (the defect is somewhere, no pixel is known). The sample's own pixels are not kept.
    * ``model=PATH``, generating live (on ``device``; a GPU for Stable Diffusion): ``backend="ddpm"`` inpaints a
      defect into the sample's own image with a model trained by ``inout-aug finetune --backend ddpm`` (pixels
      outside the mask unchanged); ``backend="sd"`` runs a Stable Diffusion checkpoint (optionally with
      ``lora``, merged at ``lora_scale``) in ``mode="inpaint"`` (an inpainting checkpoint, as DIAG) or
      ``mode="txt2img"`` (the paper: a whole new image, weak label). Inpainting masks are real defect masks
      from ``masks`` (a dataset: its ``masks_split``, by default the training split as the layout's
      ``masks_options`` (test_fraction, seed, fold) make it, and only its defects of ``mask_type`` when given; or a
      folder of mask images),
      turned, scaled and placed at random, or MemSeg's Perlin regions when ``masks`` is None. A ddpm model of
      kind "inpaint" (v2, one class per defect type) paints defects of ``mask_type``; without it, each defect
      of the type of the real defect whose mask it fills (masks from a dataset, a type the model knows), else
      of a type drawn per image.

    A setting that means nothing for the chosen source (``prompt`` or ``lora`` with a bank, ``fit`` with a model,
    a prompt for the ddpm backend) is an error, not ignored. A replaced image's outcome is ``Outcome.REPLACED``;
    a sample carrying boxes, keypoints or other masks then raises unless ``on_replace="drop"`` drops them.

    Recorded per sample (``describe``): the bank entry, or mode, backend, steps, scheduler, guidance, prompt,
    the defect type an inpaint model was asked for (None: drawn) and the model's (and LoRA's) hashes.
    """

    name = "diffusion"
    # Live inpainting pastes the input back outside its mask itself; bank and txt2img images replace the sample
    # whole (Outcome.REPLACED). Either way the base class has nothing to paste.
    keeps_outside = True

    def __init__(
        self,
        p: float = 1.0,
        *,
        bank: str | None = None,
        fit: str | None = None,
        model: str | None = None,
        backend: str | None = None,
        mode: str | None = None,
        masks: str | None = None,
        mask_type: str | None = None,
        masks_split: str | None = None,
        masks_options: dict[str, Any] | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        lora: str | None = None,
        lora_scale: float | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        scheduler: str | None = None,
        device: str | None = None,
        on_replace: str = "error",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(p=p, seed=seed, generator=generator)
        if (bank is None) == (model is None):
            raise ValueError(
                "DiffusionDefect needs exactly one of bank=PATH (a bank written by `inout-aug generate --augmenter "
                "diffusion`) and model=PATH (a ddpm model from `inout-aug finetune --backend ddpm`, or a Stable "
                "Diffusion checkpoint with backend='sd')"
            )
        settings = {"backend": backend, "mode": mode, "masks": masks, "mask_type": mask_type,
                    "masks_split": masks_split, "masks_options": masks_options, "prompt": prompt,
                    "negative_prompt": negative_prompt, "lora": lora, "lora_scale": lora_scale, "steps": steps,
                    "guidance": guidance, "scheduler": scheduler, "device": device, "fit": fit}
        meaningless = sorted(key for key in (_LIVE_ONLY if bank is not None else _BANK_ONLY)
                             if settings[key] is not None)
        if meaningless:
            which = "bank=" if bank is not None else "model="
            raise ValueError(f"DiffusionDefect: {', '.join(meaningless)} mean(s) nothing with {which}; "
                             f"{'they set live generation (model=)' if bank is not None else 'fit sets bank entries'}")
        if (mask_type is not None or masks_split is not None or masks_options is not None) and masks is None:
            raise ValueError("DiffusionDefect: mask_type, masks_split and masks_options pick the masks of "
                             "masks=DATASET; give masks too")
        fit, backend, mode = fit or "resize", backend or "ddpm", mode or "inpaint"
        if fit not in ("resize", "crop"):
            raise ValueError(f"fit must be 'resize' or 'crop', got {fit!r}")
        if backend not in BACKENDS or mode not in MODES:
            raise ValueError(f"backend must be one of {BACKENDS} and mode one of {MODES}, got {backend!r}, {mode!r}")
        if backend == "ddpm" and mode == "txt2img":
            raise ValueError("the ddpm backend only inpaints (mode='inpaint'); txt2img needs backend='sd'")
        if backend == "ddpm" and (prompt is not None or negative_prompt is not None):
            raise ValueError("prompt and negative_prompt apply to the sd backend; a ddpm model takes no prompt")
        if mode == "txt2img" and masks is not None:
            raise ValueError("masks= place inpainted defects; txt2img makes whole images (weak labels), without masks")
        numbers = (("steps", steps, int), ("guidance", guidance, float), ("lora_scale", lora_scale, float))
        for key, value, kind in numbers:
            wanted = None if value is None else kind_mismatch(value, kind)
            if wanted:
                raise ValueError(f"{key} must be {wanted}, got {value!r}")
        steps = 25 if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        device = device or "cpu"
        if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process under accelerate or torchrun
            device = f"cuda:{os.environ['LOCAL_RANK']}"
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asks for a GPU, and torch sees none here: use device='cpu'")
        self.on_replace = self._check_on_replace(on_replace)
        self.fit, self.backend, self.mode = fit, backend, mode
        self.prompt, self.negative_prompt = prompt or "sks defect", negative_prompt
        self.steps, self.guidance, self.scheduler, self.device = steps, guidance, scheduler or "ddim", device
        self.bank = None if bank is None else Bank(bank)
        self.masks = None if masks is None else RealMasks(masks, defect_type=mask_type, split=masks_split or "train",
                                                          options=masks_options)
        self.model, self.hashes = None, {}
        if model is not None:
            self.model, self.hashes = _load_backend(backend, mode, Path(model), lora, lora_scale, device)
        if backend == "ddpm" and scheduler is not None:  # checked now, not when the first batch samples
            from inout_aug.models.ddpm import SCHEDULERS

            if scheduler not in SCHEDULERS:
                raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        levels = self.model.config.num_train_timesteps if backend == "ddpm" and self.model is not None else steps
        if steps > levels:
            raise ValueError(f"steps={steps} is more than the {levels} noise levels this model was trained on: give "
                             f"steps={levels} or fewer")
        # A ddpm model of kind "inpaint" paints defects of mask_type (an unknown type fails here, naming the
        # model's), or without it of each mask's own type where the model knows it, else a type drawn per image.
        self._paints_types = backend == "ddpm" and self.model is not None and self.model.config.kind == "inpaint"
        if self._paints_types and mask_type is not None:
            self.model.class_of(mask_type)
        self.mask_type = mask_type

    @property
    def replaces(self) -> bool:
        """Whether a chosen sample is replaced by a new image (bank, txt2img) rather than painted into."""
        return self.bank is not None or self.mode == "txt2img"

    # -- parameters: a drawn mask and generator seed (inpainting), or bank entries and crop spots ------------------
    def make_params(self, image: torch.Tensor) -> dict[str, Any]:  # type: ignore[override]
        n, _, h, w = image.shape
        if self.bank is not None:
            return {"entry": torch.randint(len(self.bank), (n,), generator=self.generator),
                    "spot": torch.rand((n, 2), generator=self.generator)}
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        if self.mode == "txt2img":
            return {"seed": seed}
        if self.masks is not None:
            masks, types = self.masks.draw_typed(n, (h, w), self.generator)
        else:
            masks, types = perlin_masks(n, (h, w), self.generator)[0], [None] * n
        params = {"mask": masks.to(image.device), "seed": seed}
        if self._paints_types:
            known = self.model.types
            params["defect_type"] = [self.mask_type or (kind if kind in known else None) for kind in types]
        return params

    def merge_params(self, drawn: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Samples drawn one by one, inpainted as one batch: each keeps its own generator seed."""
        if self.replaces:
            return None
        merged = {"mask": torch.cat([d["mask"] for d in drawn]), "seed": [d["seed"] for d in drawn]}
        if self._paints_types:
            merged["defect_type"] = [kind for d in drawn for kind in d["defect_type"]]
        return merged

    def transform(self, image: torch.Tensor, params: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        if self.replaces:
            made, mask, params["drawn"] = self._new_images(image.shape, params)
            outcome = torch.full((len(image),), Outcome.REPLACED, dtype=torch.int8)
            return Made(as_float(made.to(image.device)).to(image.dtype), mask.to(image.device), outcome)
        mask, seed = params["mask"], params["seed"]
        per_sample = isinstance(seed, list)  # merged from single samples: one generator each
        if self.backend == "ddpm":
            generator = [torch.Generator().manual_seed(s) for s in seed] if per_sample else \
                torch.Generator().manual_seed(seed)
            types = {"defect_type": params["defect_type"]} if self._paints_types else {}
            made = self.model.inpaint(image, mask, generator=generator, steps=self.steps, guidance=self.guidance,
                                      scheduler=self.scheduler, **types)
        else:
            from inout_aug.models import sd

            seeds = [mix_seed(s, 0) for s in seed] if per_sample else [mix_seed(seed, i) for i in range(len(image))]
            rgb = as_float(sd.generate(
                self.model, self.prompt, seeds=seeds, steps=self.steps, guidance=self._inpaint_guidance(),
                image=as_bytes(image).expand(-1, 3, -1, -1), mask=mask, negative_prompt=self.negative_prompt,
            )).to(image.device)
            made = match_channels(rgb, image.shape[1])
        # Outside the mask: the input, bit for bit (the backends promise it; make sure of it here).
        return torch.lerp(image, made.to(image.dtype), mask[:, None].to(image.dtype)), mask

    def _inpaint_guidance(self) -> float:
        """The guidance scale inpainting uses: the one given, else the model's own (ddpm) or DIAG's (sd)."""
        if self.guidance is not None:
            return float(self.guidance)
        if self.backend == "ddpm":
            return self.model.config.guidance_scale
        from inout_aug.models import sd

        return sd.DIAG_GUIDANCE

    def file_hashes(self) -> dict[str, str]:
        return dict(self.hashes)  # the model's (and LoRA's) weights; a bank's entries are read as they are

    def describe(self, params: dict[str, Any], index: int, n: int) -> dict[str, Any]:
        if self.replaces:
            return params["drawn"][index]
        scheduler = self.scheduler if self.backend == "ddpm" else type(self.model.scheduler).__name__
        return {"mode": self.mode, "backend": self.backend, "steps": self.steps, "scheduler": scheduler,
                "guidance": self._inpaint_guidance(), "prompt": self.prompt if self.backend == "sd" else None,
                "generator_seed": params["seed"][index] if isinstance(params["seed"], list) else params["seed"],
                **({"defect_type": params["defect_type"][index]} if self._paints_types else {}), **self.hashes}

    # -- bank entries and txt2img: whole new images --------------------------------------------------------------
    def _new_images(self, shape: torch.Size, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        """n uint8 (n, C, H, W) images, their (n, H, W) masks (empty: weak label) and what each one is."""
        n, c, h, w = shape
        if self.bank is None:
            from inout_aug.models import sd

            seed = params["seed"]
            guidance = {} if self.guidance is None else {"guidance": self.guidance}
            rgb = sd.generate(self.model, self.prompt, num_images=n, seed=seed, steps=self.steps,
                              negative_prompt=self.negative_prompt, **guidance)
            images = match_channels(F.resize(rgb, [h, w], antialias=True), c)
            drawn = [{"mode": "txt2img", "backend": "sd", "steps": self.steps,
                      "scheduler": type(self.model.scheduler).__name__, "prompt": self.prompt,
                      "generator_seed": mix_seed(seed, i), **self.hashes} for i in range(n)]
            return images, torch.zeros((n, h, w), dtype=torch.bool), drawn
        images, masks, drawn = [], [], []
        for pick, spot in zip(params["entry"].tolist(), params["spot"].tolist()):
            image, mask = self.bank.entry(pick)
            weak = mask is None
            mask = torch.zeros(image.shape[-2:], dtype=torch.bool) if weak else mask
            image, mask = self._fit(image, mask, (h, w), spot)
            images.append(match_channels(image, c))
            masks.append(mask)
            record = self.bank.records[pick]
            drawn.append({"bank": str(self.bank.path), "entry": record["index"], "weak_label": weak})
        return torch.stack(images), torch.stack(masks), drawn

    def _fit(self, image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int],
             spot: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """A bank entry brought to ``size``: resized, or (``fit="crop"``) scaled to cover it and cropped at ``spot``."""
        h, w = size
        if self.fit == "crop":
            scale = max(h / image.shape[1], w / image.shape[2])
            cover = [max(h, round(image.shape[1] * scale)), max(w, round(image.shape[2] * scale))]
            image, mask = _resize(image, mask, cover)
            top, left = int(spot[0] * (cover[0] - h + 1)), int(spot[1] * (cover[1] - w + 1))
            return image[:, top:top + h, left:left + w], mask[top:top + h, left:left + w]
        return _resize(image, mask, [h, w])

    def extra_repr(self) -> str:
        where = f"bank={self.bank!r}" if self.bank is not None else f"backend={self.backend!r}, mode={self.mode!r}"
        return f"{super().extra_repr()}, {where}, steps={self.steps}, masks={self.masks!r}"


def _resize(image: torch.Tensor, mask: torch.Tensor, size: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    if list(image.shape[-2:]) == size:
        return image, mask
    resized = F.resize(image, size, antialias=True)
    return resized, F.resize(mask[None].float(), size, interpolation=F.InterpolationMode.NEAREST)[0] > 0.5


def _load_backend(backend: str, mode: str, model: Path, lora: str | None, lora_scale: float | None,
                  device: str) -> tuple[Any, dict[str, str]]:
    """The loaded model and the hashes that identify it (for the manifest)."""
    if backend == "ddpm":
        from inout_aug.models.ddpm import DDPMDefectModel

        if lora is not None or lora_scale is not None:
            raise ValueError("lora= and lora_scale= apply to the sd backend; a ddpm model is trained whole")
        return DDPMDefectModel.load(model, device=device), {"model_hash": digest(model)}
    from inout_aug.models import sd

    pipeline = sd.load_pipeline(model, inpaint=mode == "inpaint", device=device)
    hashes = {"model_hash": sd.checkpoint_hash(model)}
    if lora is not None:
        sd.load_lora(pipeline, lora, scale=0.65 if lora_scale is None else lora_scale)
        hashes["lora_hash"] = digest(lora)
    return pipeline, hashes
