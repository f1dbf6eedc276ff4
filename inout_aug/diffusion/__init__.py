"""In-distribution defects from diffusion models: Stable Diffusion + DreamBooth-LoRA (``sd``) and a small
pixel-space DDPM trained here (``ddpm``), an on-disk bank of generated defects, and the ``diffusion`` augmenter.

Needs the ``diffusion`` extra: ``pip install "inout-aug[diffusion]"``.
"""
