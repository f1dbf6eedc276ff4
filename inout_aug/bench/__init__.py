"""Measuring what augmentation buys: backbones with offline weights, image features and distances."""
