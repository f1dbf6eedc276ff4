"""The models behind the in-distribution augmenter: Stable Diffusion + DreamBooth-LoRA (``sd``), a small
pixel-space DDPM trained here (``ddpm``), and fine-tuning from a training setup (``finetune``).

Needs the ``diffusion`` extra: ``pip install "inout-aug[diffusion]"``.
"""
