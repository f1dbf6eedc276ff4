"""The benchmark's resized views: aspect ratio kept with reflected margins (or squashed), masks aligned, one decode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from inout_aug.bench.data import ResizedView, fit, open_bench_data
from inout_aug.core.io import read_image, write_png
from inout_aug.data.layouts import open_dataset


def _texture(height: int, width: int, seed: int) -> torch.Tensor:
    """A (1, H, W) uint8 surface that differs from row to row and column to column."""
    g = torch.Generator().manual_seed(seed)
    return (60 + 120 * torch.rand((1, height, width), generator=g)).to(torch.uint8)


@pytest.fixture
def wide_data(tmp_path) -> Path:
    """Folder layout: 2:1 (40x80) and 1:2 (80x40) normals; a 2:1 defect, a dark patch on its top edge, masked."""
    for i in range(6):
        write_png(_texture(40, 80, i) if i % 2 == 0 else _texture(80, 40, i), tmp_path / "normal" / f"n{i}.png")
    mask = torch.zeros((40, 80), dtype=torch.bool)
    mask[:10, 20:50] = True
    write_png(torch.where(mask, torch.tensor(5, dtype=torch.uint8), _texture(40, 80, 9)), tmp_path / "defect" / "d.png")
    write_png(mask[None].to(torch.uint8) * 255, tmp_path / "masks" / "d.png")
    return tmp_path


def _view(root: Path, resize: str = "pad", size: tuple[int, int] = (64, 64)) -> ResizedView:
    dataset = open_dataset(root, "folder", "all")
    return ResizedView(dataset, dataset.records, size, resize=resize)


def test_pad_keeps_the_aspect_ratio_in_a_centred_band_with_mirrored_margins(wide_data):
    view = _view(wide_data)
    for record in view.normals()[:2]:
        image = view.read(record)["image"].as_subclass(torch.Tensor)
        original = read_image(record.image)
        wide = original.shape[-1] > original.shape[-2]
        band = image if wide else image.transpose(-1, -2)  # the content runs along the band: 32 of 64 px
        content = F.resize(original, [32, 64] if wide else [64, 32], antialias=True)
        content = content if wide else content.transpose(-1, -2)
        assert image.shape == (1, 64, 64) and torch.equal(band[:, 16:48], content)
        for k in range(1, 17):  # the margins mirror the band about its first and last rows
            assert torch.equal(band[:, 16 - k], band[:, 16 + k]) and torch.equal(band[:, 47 + k], band[:, 47 - k])


def test_pad_masks_are_false_in_the_margins_and_aligned_with_the_image(wide_data):
    view = _view(wide_data)
    defect = view.read(view.defects()[0])
    image, mask = defect["image"][0].as_subclass(torch.Tensor), defect["mask"].as_subclass(torch.Tensor)
    assert mask.dtype == torch.bool and mask.shape == (64, 64)
    assert not mask[:16].any() and not mask[48:].any()
    expected = F.resize(read_image(view.defects()[0].mask)[:1] >= 128, [32, 64],
                        interpolation=F.InterpolationMode.NEAREST)[0]
    assert torch.equal(mask[16:48], expected)
    assert image[mask].float().mean() < 40 < 100 < image[16:48][~mask[16:48]].float().mean()
    assert image[:16][mask[17:33].flip(0)].float().mean() < 40  # the patch is mirrored into the margin, unmasked


def test_squash_stretches_as_before(wide_data):
    view = _view(wide_data, "squash", (48, 32))
    record = view.defects()[0]
    sample = view.read(record)
    assert torch.equal(sample["image"], F.resize(read_image(record.image), [48, 32], antialias=True))
    mask = F.resize(read_image(record.mask)[:1] >= 128, [48, 32], interpolation=F.InterpolationMode.NEAREST)[0]
    assert torch.equal(sample["mask"], mask)
    with pytest.raises(ValueError, match="resize must be one of pad, squash, got 'crop'"):
        _view(wide_data, "crop")


def test_margins_wider_than_the_image_reflect_again_and_a_line_is_repeated():
    image, mask = _texture(10, 100, 0), torch.ones((10, 100), dtype=torch.bool)
    out, out_mask = fit(image, mask, (64, 64))
    rows = {tuple(row.tolist()) for row in out[0, 29:35]}  # content 6 x 64, margins of 29 px
    assert out.shape == (1, 64, 64) and all(tuple(row.tolist()) in rows for row in out[0])
    assert out_mask.sum() == 6 * 64 and out_mask[29:35].all()
    line, line_mask = fit(_texture(1, 200, 1), torch.zeros((1, 200), dtype=torch.bool), (32, 32))
    assert line.shape == (1, 32, 32) and (line == line[:, 16:17]).all() and not line_mask.any()


def test_views_share_one_decode_per_image(wide_data, monkeypatch):
    data = open_bench_data(wide_data, (64, 64), val_fraction=0.4)
    layouts = {id(view.dataset): view.dataset for view in (data.train, data.validation, data.test)}
    decoded: list[Path] = []
    for layout in layouts.values():
        read = layout.read
        monkeypatch.setattr(layout, "read", lambda record, read=read: decoded.append(record.image) or read(record))
    views = (data.train, data.validation, data.test)
    first = [view[i] for view in views for i in range(len(view))]
    again = [view.read(record) for view in views for record in view.records]
    assert sorted(decoded) == sorted(r.image for view in views for r in view.records)  # each file once
    assert all(a["image"].data_ptr() == b["image"].data_ptr() for a, b in zip(first, again))
    assert data.train.resize == data.test.resize == "pad"
