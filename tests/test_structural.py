"""The structural source: operations (pointwise ones checked against PIL), tile shuffle, reproducibility."""

from __future__ import annotations

import itertools

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import torch
import torch.nn.functional as F

from inout_aug.augmenters.memseg import structural
from inout_aug.augmenters.memseg.structural import OPERATIONS, StructuralSource, shuffle_tiles


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiled_image(n: int, c: int, grid: tuple[int, int], tile: tuple[int, int]) -> torch.Tensor:
    """(n, c, H, W) images whose tiles are distinct constants."""
    rows, cols = grid
    levels = torch.arange(rows * cols, dtype=torch.float32).div(rows * cols).view(1, 1, rows, cols)
    image = levels.repeat_interleave(tile[0], 2).repeat_interleave(tile[1], 3)
    return image.expand(n, c, -1, -1).clone()


def tile_levels(image: torch.Tensor, grid: tuple[int, int], tile: tuple[int, int]) -> torch.Tensor:
    """(n, rows * cols) value of each tile (checking that the tile is constant)."""
    n, c = image.shape[:2]
    body = image[..., : grid[0] * tile[0], : grid[1] * tile[1]]
    tiles = body.reshape(n, c, grid[0], tile[0], grid[1], tile[1])
    assert (tiles == tiles[:, :, :, :1, :, :1]).all(), "a tile was cut"
    return tiles[:, 0, :, 0, :, 0].reshape(n, -1)


def only(operation: str) -> StructuralSource:
    """One given operation and no shuffle (a 1x1 grid)."""
    return StructuralSource(ops=1, grid=(1, 1), operations=[operation])


def grey_levels(seed: int, n: int = 6) -> torch.Tensor:
    """(n, 1, 24, 20) uint8 grey images, each with its own narrow range of levels."""
    g = gen(seed)
    low = torch.randint(0, 128, (n, 1, 1, 1), generator=g)
    spread = torch.randint(2, 128, (n, 1, 1, 1), generator=g)
    return (low + torch.rand((n, 1, 24, 20), generator=g) ** 2 * spread).round().to(torch.uint8)


def test_shuffle_permutes_whole_tiles_per_sample():
    image = tiled_image(4, 3, (8, 8), (4, 5))
    out = shuffle_tiles(image, (8, 8), gen())
    before, after = tile_levels(image, (8, 8), (4, 5)), tile_levels(out, (8, 8), (4, 5))
    assert torch.equal(after.sort(1).values, before.sort(1).values)
    assert (after != before).any(1).all()
    assert not torch.equal(after[0], after[1])


def test_shuffle_keeps_leftover_strips_when_the_grid_does_not_divide():
    image = torch.rand(2, 1, 37, 100)
    out = shuffle_tiles(image, (8, 8), gen())
    assert torch.equal(out[..., 32:, :], image[..., 32:, :])
    assert torch.equal(out[..., 96:], image[..., 96:])
    assert not torch.equal(out, image)
    assert torch.equal(out.flatten().sort().values, image.flatten().sort().values)


def test_shuffle_of_an_image_smaller_than_the_grid():
    image = torch.rand(2, 3, 3, 5)
    out = shuffle_tiles(image, (8, 8), gen())
    assert torch.equal(out.flatten(2).sort(2).values, image.flatten(2).sort(2).values)


def test_structural_source_without_operations_only_shuffles():
    image = tiled_image(3, 1, (4, 8), (6, 3))
    out = StructuralSource(ops=0, grid=(4, 8)).draw(image, gen())
    assert out.dtype == torch.uint8
    before = tile_levels(image.mul(255).round(), (4, 8), (6, 3))
    after = tile_levels(out.float(), (4, 8), (6, 3))
    assert torch.equal(after.sort(1).values, before.sort(1).values)
    assert not torch.equal(after, before)


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_operation_keeps_shape_and_changes_the_image(operation, channels):
    image = torch.rand(16, channels, 33, 20, generator=gen(1)).mul_(0.6).add_(0.2)  # room for autocontrast
    out = only(operation).draw(image, gen(2))
    assert out.shape == image.shape and out.dtype == torch.uint8
    if operation == "hue_saturation" and channels == 1:
        assert torch.equal(out, image.mul(255).round().to(torch.uint8))  # no chroma to turn
    else:
        assert (out != image.mul(255).round().to(torch.uint8)).flatten(1).any(1).sum() >= 3


def test_float_and_uint8_input_give_the_same_bytes():
    image = torch.randint(0, 256, (5, 3, 30, 26), dtype=torch.uint8, generator=gen(3))
    a = StructuralSource().draw(image, gen(4))
    b = StructuralSource().draw(image.float() / 255, gen(4))
    assert torch.equal(a, b)


@pytest.mark.parametrize(("operation", "reference"), [
    ("invert", PIL.ImageOps.invert),
    ("autocontrast", PIL.ImageOps.autocontrast),
    ("equalize", PIL.ImageOps.equalize),
])
def test_pointwise_operations_match_pil(operation, reference):
    image = grey_levels(5)
    out = only(operation).draw(image, gen())
    for got, original in zip(out, image):
        expected = reference(PIL.Image.fromarray(original[0].numpy()))
        assert torch.equal(got[0], torch.tensor(np.array(expected)))


def test_posterize_and_solarize_take_one_setting_per_image():
    image = grey_levels(6, n=40)
    posterized = only("posterize").draw(image, gen(1))
    for got, original in zip(posterized, image):
        bits = [b for b in range(1, 9) if torch.equal(got, original & (256 - 2 ** (8 - b)))]
        assert bits, "not a posterization of the image"
    solarized = only("solarize").draw(image, gen(2))
    flipped = solarized != image
    assert torch.equal(solarized[flipped], 255 - image[flipped])
    some = flipped.flatten(1).any(1)
    assert 0 < some.sum() < len(image)  # applied with probability 0.5
    for got, original in zip(flipped[some], image[some]):  # one threshold: everything at or above it flips
        assert original[got].min() > original[~got].max() if (~got).any() else True
        assert 32 <= original[got].min() <= 255


def test_a_chain_of_table_operations_matches_pil_step_by_step():
    image = grey_levels(7, n=12)
    names = ["invert", "autocontrast", "equalize"]
    out = StructuralSource(ops=3, grid=(1, 1), operations=names).draw(image, gen(8))
    orders_seen = set()
    for got, original in zip(out, image):
        matches = set()
        for order in itertools.permutations(names):
            picture = PIL.Image.fromarray(original[0].numpy())
            for name in order:
                picture = getattr(PIL.ImageOps, name)(picture)
            if torch.equal(got[0], torch.tensor(np.array(picture))):
                matches.add(order)
        assert matches, "the fused tables differ from PIL applied step by step in every order"
        orders_seen |= matches
    assert len(orders_seen) > 1


def test_sharpness_blends_with_the_smoothing_kernel_and_keeps_the_border():
    image = torch.rand(3, 2, 9, 7, generator=gen(1))
    out = OPERATIONS["sharpness"].apply(image.clone(), gen(2))
    factor = torch.rand((3, 1, 1, 1), generator=gen(2)) * 2  # the factor it draws, uniform in [0, 2)
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
    smooth = F.conv2d(image.reshape(6, 1, 9, 7), kernel[None, None]).view(3, 2, 7, 5)
    expected = image.clone()
    inner = image[..., 1:-1, 1:-1]
    expected[..., 1:-1, 1:-1] = (smooth + factor * (inner - smooth)).clamp(0, 1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    strided = image.clone().to(memory_format=torch.channels_last)
    assert torch.equal(OPERATIONS["sharpness"].apply(strided, gen(2)), out)


def test_a_spatial_operation_after_a_table_operation_reads_the_mapped_pixels():
    image = grey_levels(9, n=8)
    out = StructuralSource(ops=2, grid=(1, 1), operations=["invert", "sharpness"]).draw(image, gen(3))
    inverted = 255 - image.float().mean((1, 2, 3))  # in either order: sharpness keeps the mean (up to rounding)
    assert (out.float().mean((1, 2, 3)) - inverted).abs().max() < 2


@pytest.mark.parametrize("chunk", [1, 2000, 2**17])
def test_look_up_and_histogram_give_the_direct_values_whatever_the_index_chunk(monkeypatch, chunk):
    monkeypatch.setattr(structural, "INDEX_CHUNK", chunk)  # 1 and 2 planes per chunk, and the whole batch
    pixels = torch.randint(0, 256, (5, 3, 30, 26), dtype=torch.uint8, generator=gen(3))
    table = torch.randint(0, 256, (5, 3, 256), generator=gen(4)).double()
    direct = torch.stack([torch.stack([table[i, c][pixels[i, c].long()] for c in range(3)]) for i in range(5)])
    assert torch.equal(structural._look_up(pixels, table), direct.float())
    assert torch.equal(structural._look_up(pixels, table.to(torch.uint8)), direct.to(torch.uint8))
    counts = [[torch.bincount(pixels[i, c].flatten(), minlength=256) for c in range(3)] for i in range(5)]
    assert torch.equal(structural._histogram(pixels), torch.stack([torch.stack(row) for row in counts]))


def test_structural_source_is_reproducible():
    image = torch.rand(6, 3, 40, 24, generator=gen(5))
    a = StructuralSource().draw(image, gen(7))
    b = StructuralSource().draw(image, gen(7))
    assert torch.equal(a, b) and a.shape == image.shape and a.dtype == torch.uint8
    assert not torch.equal(a, StructuralSource().draw(image, gen(8)))


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="unknown structural operations.*blur.*choose from gamma"):
        StructuralSource(operations=["gamma", "blur"])
    with pytest.raises(ValueError, match="ops must be between 0 and 2"):
        StructuralSource(ops=3, operations=["gamma", "invert"])
    with pytest.raises(ValueError, match="grid"):
        StructuralSource(grid=(0, 4))
