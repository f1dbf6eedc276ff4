"""Test helpers: a toy augmenter with a known, checkable defect, and small images made here."""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from inout_aug import Augmenter
from inout_aug.core.io import write_png
from inout_aug.core.registry import GROUP


class SquareDefect(Augmenter):
    """Paints a square of a random grey level at a random place (test augmenter)."""

    name = "test_square"

    def __init__(self, p: float = 1.0, *, size: int = 4, empty: bool = False, seed: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(p=p, seed=seed, generator=generator)
        self.size = size
        self.empty = empty

    def make_params(self, image):
        n, _, h, w = image.shape
        g = self.generator
        return {
            "top": torch.randint(0, h - self.size + 1, (n,), generator=g),
            "left": torch.randint(0, w - self.size + 1, (n,), generator=g),
            "level": torch.rand(n, generator=g),
        }

    def transform(self, image, params):
        n, c, h, w = image.shape
        ys = torch.arange(h, device=image.device).view(1, h, 1)
        xs = torch.arange(w, device=image.device).view(1, 1, w)
        top = params["top"].to(image.device).view(n, 1, 1)
        left = params["left"].to(image.device).view(n, 1, 1)
        mask = (ys >= top) & (ys < top + self.size) & (xs >= left) & (xs < left + self.size)
        if self.empty:
            mask = torch.zeros_like(mask)
        # Change every pixel: the base class must keep those outside the mask.
        level = params["level"].to(image.device, image.dtype).view(n, 1, 1, 1)
        return level.expand_as(image).clone(), mask


def gradient_image(c: int = 3, h: int = 32, w: int = 40, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """A (C, H, W) image whose pixels differ from each other (so any change is visible)."""
    ramp = torch.arange(c * h * w, dtype=torch.float64).reshape(c, h, w) % 251 / 250
    return (ramp * 255).round().to(torch.uint8) if dtype == torch.uint8 else ramp.to(dtype)


def gradient_dataset(data: Path) -> Path:
    """A folder layout at ``data``: 4 shifted gradient normals and 2 defects with rectangular masks, 40x44 grey."""
    for i in range(4):
        write_png(gradient_image(1, 40, 44).roll(7 * i, -1), data / "normal" / f"n{i}.png")
    for i in range(2):
        write_png(gradient_image(1, 40, 44).roll(3 * i, -2), data / "defect" / f"d{i}.png")
        mask = torch.zeros(1, 40, 44, dtype=torch.uint8)
        mask[:, 10:20, 8 + 5 * i:30] = 255
        write_png(mask, data / "masks" / f"d{i}.png")
    return data


def scratch_surfaces(root: Path, normals: int, defects: int) -> Path:
    """A folder layout at ``root``: ``normals`` grey 48x48 surfaces and ``defects`` with a dark scratch (masks)."""
    g = torch.Generator().manual_seed(0)
    for i in range(normals + defects):
        base = 120 + 20 * torch.rand((1, 12, 12), generator=g)
        image = torch.nn.functional.interpolate(base[None], size=(48, 48), mode="bilinear")[0].to(torch.uint8)
        if i < normals:
            write_png(image, root / "normal" / f"n{i:02d}.png")
            continue
        mask = torch.zeros((48, 48), dtype=torch.bool)
        top = int(torch.randint(4, 36, (1,), generator=g))
        mask[top:top + 6, 8:40] = True
        write_png(torch.where(mask, torch.tensor(30, dtype=torch.uint8), image), root / "defect" / f"d{i}.png")
        write_png(mask[None].to(torch.uint8) * 255, root / "masks" / f"d{i}.png")
    return root


def make_distribution(root: Path, dist: str, module: str, source: str, entries: dict[str, str]) -> None:
    """A minimal installed distribution (dist-info with entry points) and its module, below ``root``."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


TOY_MODULE = """
    import time

    import torch
    from inout_aug import Augmenter

    class Toy(Augmenter):
        '''A toy augmenter from a fake plugin.'''

        def __init__(self, p=1.0, *, delay: float = 0.0, seed=None, generator=None):
            super().__init__(p=p, seed=seed, generator=generator)
            self.delay = delay

        def make_params(self, image):
            return {"level": torch.rand(image.shape[0], generator=self.generator)}

        def transform(self, image, params):
            time.sleep(self.delay)
            level = params["level"].view(-1, 1, 1, 1).to(image)
            return level.expand_as(image).clone(), torch.ones(image.shape[0], *image.shape[2:], dtype=torch.bool)
"""


#: A fake plugin with mistakes: a constructor's own error, a constructor bug, a transform bug, and a class named like a
#: built-in one.
FAULTY_MODULE = """
    from inout_aug import Augmenter

    class Ring(Augmenter):
        '''A ring whose transform has a bug.'''

        def __init__(self, p=1.0, *, radius: int = 3, seed=None, generator=None):
            super().__init__(p=p, seed=seed, generator=generator)
            if radius == 0:
                raise FileNotFoundError("ring.png not found: put it beside the plugin")
            if radius == 99:
                open("no-such-ring-file.png")  # a file the user named that is not there
            if radius < 0:
                raise ValueError("radius must be positive")

        def make_params(self, image):
            if image.shape[-1] < 8:
                raise ValueError(f"ring needs images 8 pixels wide or more, got {image.shape[-1]}")
            return {}

        def transform(self, image, params):
            return {}["no such key"]

    class Broken(Ring):
        '''A constructor with a bug.'''

        def __init__(self, p=1.0, *, seed=None, generator=None):
            super().__init__(p=p, seed=seed, generator=generator)
            {}["setting"]

    class Transplant(Ring):
        '''Not the built-in transplant.'''
"""
FAULTY_ENTRIES = {"ring": "fake_faulty:Ring", "broken_init": "fake_faulty:Broken",
                  "ring_transplant": "fake_faulty:Transplant"}


def kill_after(command: list[str], manifest: Path, records: int, env: dict[str, str] | None = None) -> None:
    """Run ``command`` and SIGKILL it once ``manifest`` holds ``records`` lines (or after 120 s)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (manifest.exists() and len(manifest.read_text().splitlines()) >= records):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def import_without(monkeypatch: pytest.MonkeyPatch, package: str, module: str) -> None:
    """Import ``module`` afresh as if ``package`` were not installed (both restored after the test)."""
    for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, module)
    importlib.import_module(module)


def memseg_draws(n: int, size: int, seed: int, **params) -> tuple[list[float], list[float]]:
    """What MemSegRegion draws for ``n`` grey ``size`` x ``size`` images: each mask's area (fraction of the image)
    and each blend factor δ, rounded to 6 places (the record in tests/data/memseg_draws.json)."""
    from inout_aug.augmenters.memseg import MemSegRegion

    out = MemSegRegion(seed=seed, **params).augment(torch.full((n, 3, size, size), 0.5))
    areas = out.mask.float().mean((1, 2)).tolist()
    return [round(a, 6) for a in areas], [round(float(p["delta"]), 6) for p in out.params]
