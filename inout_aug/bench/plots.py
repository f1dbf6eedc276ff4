"""Benchmark figures: precision-recall curves per method and seed (matplotlib, PNG), and a sheet of the positives
each method trained on (torchvision and PIL)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_segmentation_masks

from inout_aug.bench.metrics import average_precision, check_scores, mean_std, precision_recall_curve
from inout_aug.core.io import atomic_open, write_png
from inout_aug.tools.preview import _fit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Pixels per inch of the PR figures: their ``size`` is in pixels.
DPI = 100
# Positives sheet: width of the method names, gap between tiles (pixels).
LABEL_WIDTH = 140
PAD = 4


def _check_curves(curves: dict[str, list[tuple[Any, Any]]]) -> None:
    """Raise unless there is a method and every method has at least one (labels, scores) pair."""
    if not curves:
        raise ValueError("no curves to plot; pass {method: [(labels, scores), ...]}")
    empty = [name for name, pairs in curves.items() if not pairs]
    if empty:
        raise ValueError(f"methods without (labels, scores) pairs: {empty}; give each at least one seed's scores")


def _legend_text(name: str, pairs: list[tuple[Any, Any]]) -> str:
    """``name: AP mean`` (with ``± std over N seeds`` for several seeds)."""
    mean, std = mean_std([average_precision(labels, scores) for labels, scores in pairs])
    return f"{name}: AP {mean:.3f}" + (f" ± {std:.3f} over {len(pairs)} seeds" if len(pairs) > 1 else "")


def pr_curve_figure(curves: dict[str, list[tuple[Any, Any]]], title: str,
                    size: tuple[int, int] = (800, 600)) -> Figure:
    """A matplotlib figure, ``size`` = (W, H) pixels, of precision against recall: one colour per method, one step
    curve per (labels, scores) pair (one per seed), a legend with each method's mean AP and a dashed chance line at
    the positive fraction of the first pair."""
    try:
        from matplotlib import colormaps
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("benchmark plots need matplotlib: pip install 'inout-aug[bench]'") from None
    _check_curves(curves)
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    chance = check_scores(*next(iter(curves.values()))[0])[0].mean()  # the positive fraction
    axes.axhline(chance, color="black", linestyle="--", linewidth=1, label=f"chance: AP {chance:.3f}")
    palette = colormaps["tab10"].colors
    for index, (name, pairs) in enumerate(curves.items()):
        for seed, (labels, scores) in enumerate(pairs):
            precision, recall, _ = precision_recall_curve(labels, scores)
            # Each precision holds back to the previous recall: the area under the steps is the AP.
            axes.plot(recall, precision, drawstyle="steps-post", color=palette[index % len(palette)], linewidth=1.5,
                      alpha=0.8, label=_legend_text(name, pairs) if seed == 0 else "_nolegend_")
    axes.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.02), xlabel="recall", ylabel="precision", title=title)
    axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2)  # below the axes: it hides no curve
    return figure


def write_pr_curves(curves: dict[str, list[tuple[Any, Any]]], title: str, path: str | os.PathLike,
                    **kwargs: Any) -> Path:
    """Write :func:`pr_curve_figure` as a PNG (atomically, no version stamp) and return its path."""
    path = Path(path)
    with atomic_open(path) as handle:
        pr_curve_figure(curves, title, **kwargs).savefig(handle, format="png", dpi=DPI, metadata={"Software": None})
    return path


# The positives sheet stays torchvision and PIL drawing: tiles pixel for pixel with the masks' outlines, which a
# matplotlib image would resample.


def _font() -> PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont:
    """PIL's built-in font (no font files needed)."""
    return PIL.ImageFont.load_default(size=13)


def _text_size(draw: PIL.ImageDraw.ImageDraw, text: str) -> tuple[int, int]:
    """Width and height of ``text`` in the built-in font."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=_font())
    return right - left, bottom - top


def _shorten(draw: PIL.ImageDraw.ImageDraw, text: str, width: int) -> str:
    """``text`` cut down (ending in "...") to fit ``width`` pixels."""
    if _text_size(draw, text)[0] <= width:
        return text
    while text and _text_size(draw, text + "...")[0] > width:
        text = text[:-1]
    return text + "..."


def _tile(image: torch.Tensor, mask: torch.Tensor | None, tile: int) -> torch.Tensor:
    """A (3, tile, tile) uint8 tile of ``image`` with the outline of ``mask`` (non-zero = defect) in red, so the
    defect itself stays visible."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"positives must be (C, H, W) uint8 images with C = 1 or 3, got {image.dtype} "
                         f"{tuple(image.shape)}")
    shown = _fit(image, tile)
    if mask is None:
        return shown
    mask = mask.squeeze(0) if mask.ndim == 3 else mask
    if mask.shape != image.shape[-2:]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match its image {tuple(image.shape)}; "
                         "pass an (H, W) mask per image")
    fitted = (_fit((mask != 0).to(torch.uint8)[None] * 255, tile)[0] > 127).float()[None]
    inner = -torch.nn.functional.max_pool2d(-fitted, 3, stride=1, padding=1)  # eroded by one pixel
    return draw_segmentation_masks(shown, (fitted - inner)[0] > 0, alpha=1.0, colors="red")


def _row_labels(rows: dict[str, list[tuple[torch.Tensor, torch.Tensor | None]]], width: int, height: int,
                row_height: int) -> torch.Tensor:
    """A (3, height, width) white canvas with each method's name and positive count at the left of its row."""
    image = PIL.Image.new("RGB", (width, height), "white")
    draw = PIL.ImageDraw.Draw(image)
    for row, (name, pairs) in enumerate(rows.items()):
        middle = PAD + row * row_height + (row_height - PAD) // 2
        draw.text((PAD, middle - 14), _shorten(draw, name, LABEL_WIDTH - 2 * PAD), fill="black", font=_font())
        draw.text((PAD, middle + 2), f"{len(pairs)} positives", fill="#666666", font=_font())
    return F.pil_to_tensor(image)


def positives_figure(rows: dict[str, list[tuple[torch.Tensor, torch.Tensor | None]]], tile: int = 96,
                     columns: int = 8) -> torch.Tensor:
    """A (3, H, W) uint8 sheet, one row per method: its name, then up to ``columns`` of the positives it trained
    on as (image, mask or None) pairs, each mask outlined in red."""
    if not rows:
        raise ValueError("no rows to draw; pass {method: [(image, mask or None), ...]}")
    if tile < 1 or columns < 1:
        raise ValueError(f"tile and columns must be positive, got tile={tile}, columns={columns}")
    row_height = tile + PAD
    sheet = _row_labels(rows, LABEL_WIDTH + columns * (tile + PAD) + PAD, PAD + len(rows) * row_height, row_height)
    for row, pairs in enumerate(rows.values()):
        top = PAD + row * row_height
        for column, (image, mask) in enumerate(pairs[:columns]):
            left = LABEL_WIDTH + column * (tile + PAD)
            sheet[:, top:top + tile, left:left + tile] = _tile(image, mask, tile)
    return sheet


def write_positives(rows: dict[str, list[tuple[torch.Tensor, torch.Tensor | None]]], path: str | os.PathLike,
                    **kwargs: Any) -> Path:
    """Write :func:`positives_figure` as a PNG (atomically) and return its path."""
    path = Path(path)
    write_png(positives_figure(rows, **kwargs), path)
    return path
