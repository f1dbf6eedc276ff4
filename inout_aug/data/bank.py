"""A bank of generated defects on disk: what ``inout-aug generate --augmenter diffusion`` writes.

A bank is a generation folder: ``images/``, ``masks/`` (for inpainted defects; txt2img outputs have none),
``manifest.jsonl`` and ``run.json``. Banks made on several machines merge by concatenating their manifests
(with distinct indices) and copying their files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from inout_aug.core.io import read_image
from inout_aug.data.manifest import read_manifest


class Bank:
    """The complete entries of a bank folder; images (and masks) are decoded on first use and kept (``cache``)."""

    def __init__(self, path: str | Path, cache: bool = True):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(
                f"no defect bank at {self.path}: make one with `inout-aug generate --augmenter diffusion "
                f"--param model=MODEL --input NORMALS --out {self.path}`"
            )
        self.records: list[dict[str, Any]] = [r for _, r in sorted(read_manifest(self.path).items())]
        if not self.records:
            raise FileNotFoundError(f"the defect bank {self.path} holds no complete entry (manifest.jsonl with files)")
        self.cache = cache
        self._decoded: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Bank({str(self.path)!r}, {len(self)} entries)"

    def entry(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Entry ``i``: its (C, H, W) uint8 image and (H, W) bool mask, or None for a weak (txt2img) label."""
        if i in self._decoded:
            return self._decoded[i]
        image, mask = read_image(self.path / self.records[i]["image"]), self.mask(i)
        if self.cache:
            self._decoded[i] = (image, mask)
        return image, mask

    def mask(self, i: int) -> torch.Tensor | None:
        """Entry ``i``'s (H, W) bool mask, decoded now (not cached), or None for a weak label."""
        record = self.records[i]
        return None if record["mask"] is None else read_image(self.path / record["mask"])[0] >= 128
