"""Tiny random-weight Stable Diffusion components built in code, for offline tests and benchmarks.

Same architecture family as Stable Diffusion v1 (UNet2DConditionModel, AutoencoderKL, CLIP text encoder and
tokenizer), a few hundred thousand weights instead of a billion, so the real diffusers code paths (pipelines,
``save_pretrained``/``from_pretrained``, LoRA loading) run in seconds on a CPU without downloading anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# Whole-word tokens of the tiny vocabulary: the words the prompts of tests, benchmarks and the paper use.
WORDS = (
    "sks a photo of defect defects crack cracks scratch scratches surface white marks on the wall copper metal "
    "smooth plain black dark shadow dent hole stain spot"
).split()
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary holds the letters and every word of ``WORDS`` as one token.

    Follows CLIP's conventions: the last symbol of a word carries ``</w>``, and each word is built by merges
    from its first letter onwards, so ``"sks"`` becomes the single token ``"sks</w>"``.
    """
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab: dict[str, int] = {}
    for token in [_BOS, _EOS, ",</w>", ".</w>", *letters, *(f"{c}</w>" for c in letters)]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        symbols = [*word[:-1], f"{word[-1]}</w>"]
        merged = symbols[0]
        for symbol in symbols[1:]:
            if (merged, symbol) not in merges:
                merges.append((merged, symbol))
            merged += symbol
            vocab.setdefault(merged, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_components(seed: int = 0, inpaint: bool = False) -> dict:
    """The keyword arguments of a tiny Stable Diffusion (inpainting) pipeline; same seed, same weights."""
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=16,
            in_channels=9 if inpaint else 4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            block_out_channels=(16, 32),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=8,
            sample_size=32,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def tiny_pipeline(inpaint: bool = False, seed: int = 0) -> StableDiffusionPipeline | StableDiffusionInpaintPipeline:
    """A tiny random-weight txt2img (or inpainting) pipeline on the CPU; it makes 32x32 images by default."""
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipeline = cls(**tiny_components(seed=seed, inpaint=inpaint))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def save_tiny_checkpoint(folder: str | os.PathLike, inpaint: bool = False, seed: int = 0) -> Path:
    """Write a tiny pipeline as a diffusers folder (model_index.json, safetensors weights) and return it."""
    folder = Path(folder)
    tiny_pipeline(inpaint=inpaint, seed=seed).save_pretrained(folder, safe_serialization=True)
    return folder
