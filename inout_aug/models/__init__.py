"""The models behind the in-distribution augmenter: Stable Diffusion + DreamBooth-LoRA (``sd``), a small
pixel-space DDPM trained here (``ddpm``: v1 paints by RePaint-style blending; ``ddpm_inpaint``: v2, a UNet
conditioned on the mask and the known context with one class per defect type), and fine-tuning from a training
setup (``finetune``).

Needs the ``diffusion`` extra: ``pip install "inout-aug[diffusion]"``.
"""
