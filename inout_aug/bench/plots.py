"""Benchmark figures drawn with PIL alone (no matplotlib), deterministic: precision-recall curves per method and
seed, and a sheet of the positives each method trained on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_segmentation_masks

from inout_aug.bench.metrics import average_precision, check_scores, mean_std, precision_recall_curve
from inout_aug.core.io import write_png
from inout_aug.tools.preview import _fit

# One colour per method, cycling (matplotlib's tab10 without its last two).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MIN_SIZE = (240, 180)
# Plot margins in pixels: left, top, right, bottom.
MARGINS = (56, 36, 20, 44)
LABEL_WIDTH = 140
PAD = 4

Box = tuple[int, int, int, int]


def _font() -> PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont:
    """PIL's built-in font (no font files needed)."""
    return PIL.ImageFont.load_default(size=13)


def _text_size(draw: PIL.ImageDraw.ImageDraw, text: str) -> tuple[int, int]:
    """Width and height of ``text`` in the built-in font."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=_font())
    return right - left, bottom - top


def _to_pixel(box: Box, x: float, y: float) -> tuple[float, float]:
    """Data coordinates in [0, 1]² to pixels inside ``box`` (y up)."""
    left, top, right, bottom = box
    return left + x * (right - left), bottom - y * (bottom - top)


def _draw_axes(image: PIL.Image.Image, box: Box, title: str) -> None:
    """Frame, grid, ticks at 0, 0.2, ..., 1, the axis labels and the title."""
    draw = PIL.ImageDraw.Draw(image)
    left, top, right, bottom = box
    for tick in TICKS:
        x, _ = _to_pixel(box, tick, 0)
        _, y = _to_pixel(box, 0, tick)
        draw.line([(x, top), (x, bottom)], fill="#e6e6e6")
        draw.line([(left, y), (right, y)], fill="#e6e6e6")
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.line([(left - 4, y), (left, y)], fill="black")
        label = f"{tick:.1f}"
        width, height = _text_size(draw, label)
        draw.text((x - width / 2, bottom + 6), label, fill="black", font=_font())
        draw.text((left - 8 - width, y - height / 2 - 1), label, fill="black", font=_font())
    draw.rectangle(box, outline="black")
    width, _ = _text_size(draw, "recall")
    draw.text(((left + right - width) / 2, bottom + 24), "recall", fill="black", font=_font())
    width, _ = _text_size(draw, title)
    draw.text(((image.width - width) / 2, 12), title, fill="black", font=_font())
    _draw_vertical_text(image, "precision", (8, (top + bottom) // 2))


def _draw_vertical_text(image: PIL.Image.Image, text: str, left_middle: tuple[int, int]) -> None:
    """``text`` rotated to read upwards, its left edge at ``left_middle[0]``, centred on ``left_middle[1]``."""
    width, height = _text_size(PIL.ImageDraw.Draw(image), text)
    strip = PIL.Image.new("L", (width + 2, height + 4), 0)
    PIL.ImageDraw.Draw(strip).text((1, 0), text, fill=255, font=_font())
    strip = strip.rotate(90, expand=True)
    image.paste((0, 0, 0), (left_middle[0], left_middle[1] - strip.height // 2), strip)


def _dashed_line(draw: PIL.ImageDraw.ImageDraw, start: tuple[float, float], end_x: float, colour: str,
                 dash: int = 6, gap: int = 4) -> None:
    """A horizontal dashed line from ``start`` to ``end_x``."""
    x, y = start
    while x < end_x:
        draw.line([(x, y), (min(x + dash, end_x), y)], fill=colour)
        x += dash + gap


def _step_points(precision: np.ndarray, recall: np.ndarray) -> list[tuple[float, float]]:
    """The curve as a step polyline (recall, precision): each precision holds back to the previous recall, so
    the area under the steps is the average precision."""
    points = []
    for i in range(len(recall) - 1):
        points += [(recall[i], precision[i]), (recall[i + 1], precision[i])]
    return points + [(recall[-1], precision[-1])]


def _check_curves(curves: dict[str, list[tuple[Any, Any]]]) -> None:
    """Raise unless there is a method and every method has at least one (labels, scores) pair."""
    if not curves:
        raise ValueError("no curves to plot; pass {method: [(labels, scores), ...]}")
    empty = [name for name, pairs in curves.items() if not pairs]
    if empty:
        raise ValueError(f"methods without (labels, scores) pairs: {empty}; give each at least one seed's scores")


def _draw_legend(draw: PIL.ImageDraw.ImageDraw, box: Box, entries: list[tuple[str, str]]) -> None:
    """A boxed legend of (colour, text) entries in the lower left of the plot ``box``."""
    line_height = max(_text_size(draw, text)[1] for _, text in entries) + 6
    width = max(_text_size(draw, text)[0] for _, text in entries) + 36
    left, bottom = box[0] + 8, box[3] - 8
    top = bottom - line_height * len(entries) - 6
    draw.rectangle((left, top, left + width, bottom), fill="white", outline="#999999")
    for row, (colour, text) in enumerate(entries):
        y = top + 6 + row * line_height + line_height // 2 - 3
        draw.line([(left + 6, y), (left + 24, y)], fill=colour, width=3)
        draw.text((left + 30, y - line_height // 2 + 3), text, fill="black", font=_font())


def _legend_text(name: str, pairs: list[tuple[Any, Any]]) -> str:
    """``name  AP mean`` (with ``± std`` over several seeds)."""
    mean, std = mean_std([average_precision(labels, scores) for labels, scores in pairs])
    return f"{name}  AP {mean:.3f}" + (f" ± {std:.3f}" if len(pairs) > 1 else "")


def pr_curve_figure(curves: dict[str, list[tuple[Any, Any]]], title: str,
                    size: tuple[int, int] = (720, 540)) -> torch.Tensor:
    """A (3, H, W) uint8 figure, ``size`` = (W, H), of precision against recall: one colour per method, one thin
    step curve per (labels, scores) pair (one per seed), a legend with each method's mean AP and a dashed chance
    line at the positive fraction of the first pair."""
    _check_curves(curves)
    if size[0] < MIN_SIZE[0] or size[1] < MIN_SIZE[1]:
        raise ValueError(f"figure size {size} is too small; use at least {MIN_SIZE} (width, height)")
    image = PIL.Image.new("RGB", size, "white")
    box = (MARGINS[0], MARGINS[1], size[0] - MARGINS[2], size[1] - MARGINS[3])
    _draw_axes(image, box, title)
    draw = PIL.ImageDraw.Draw(image)
    labels, _ = check_scores(*next(iter(curves.values()))[0])
    _dashed_line(draw, _to_pixel(box, 0, labels.mean()), box[2], "#666666")
    entries = []
    for index, (name, pairs) in enumerate(curves.items()):
        colour = PALETTE[index % len(PALETTE)]
        for labels, scores in pairs:
            precision, recall, _ = precision_recall_curve(labels, scores)
            draw.line([_to_pixel(box, r, p) for r, p in _step_points(precision, recall)], fill=colour, width=1)
        entries.append((colour, _legend_text(name, pairs)))
    _draw_legend(draw, box, entries)
    return F.pil_to_tensor(image)


def write_pr_curves(curves: dict[str, list[tuple[Any, Any]]], title: str, path: str | os.PathLike,
                    **kwargs: Any) -> Path:
    """Write :func:`pr_curve_figure` as a PNG (atomically) and return its path."""
    path = Path(path)
    write_png(pr_curve_figure(curves, title, **kwargs), path)
    return path


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
