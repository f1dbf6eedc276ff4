"""Anomaly sources: texture folder (decoded once), procedural textures, structural operations, shuffle."""

from __future__ import annotations


import PIL.Image
import pytest
import torch

from inout_aug import sources
from inout_aug.sources import ProceduralTexture, StructuralSource, TextureFolder, shuffle_tiles



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
    before, after = tile_levels(image, (4, 8), (6, 3)), tile_levels(out, (4, 8), (6, 3))
    assert torch.equal(after.sort(1).values, before.sort(1).values)
    assert not torch.equal(out, image)


@pytest.mark.parametrize("channels", [1, 3])
def test_each_operation_keeps_shape_and_range(channels):
    image = torch.rand(4, channels, 33, 20, generator=gen(1))
    changed = 0
    for operation in sources._OPERATIONS:
        out = operation(image.clone(), gen(2))
        assert out.shape == image.shape, operation.__name__
        assert out.min() >= 0 and out.max() <= 1, operation.__name__
        changed += not torch.equal(out, image)
    # Hue/saturation leaves grey images alone; solarize may skip (probability 0.5); all others change them.
    assert changed >= len(sources._OPERATIONS) - 2


def test_invert_is_exact():
    image = torch.rand(2, 3, 16, 16, generator=gen(3))
    assert torch.equal(sources._invert(image.clone(), gen()), 1 - image)


def test_structural_source_is_reproducible_and_in_range():
    image = torch.rand(6, 3, 40, 24, generator=gen(5))
    a = StructuralSource().draw(image, gen(7))
    b = StructuralSource().draw(image, gen(7))
    assert torch.equal(a, b) and a.shape == image.shape
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, StructuralSource().draw(image, gen(8)))


@pytest.mark.parametrize("channels", [1, 3])
def test_procedural_textures_vary_per_sample(channels):
    image = torch.zeros(8, channels, 48, 64)
    out = ProceduralTexture().draw(image, gen(9))
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    assert out.flatten(1).std(1).min() > 0.01  # every texture has structure
    assert len({tuple(row[:5].tolist()) for row in out.flatten(1)}) == 8


def test_texture_folder_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*textures=None"):
        TextureFolder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path.name}.*holds no images"):
        TextureFolder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        TextureFolder(tmp_path).draw(torch.zeros(1, 3, 8, 8), gen())


def test_texture_folder_decodes_each_file_once(tmp_path, monkeypatch):
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        PIL.Image.new("RGB", (20, 10), colour).save(tmp_path / f"t{i}.png")
    opened: list[str] = []
    real_open = PIL.Image.open
    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    folder = TextureFolder(tmp_path)
    for size in [(8, 8), (13, 7), (8, 8)]:
        for _ in range(5):
            out = folder.draw(torch.zeros(6, 3, *size), gen(len(opened)))
            assert out.shape == (6, 3, *size)
    assert sorted(opened) == sorted(str(f) for f in folder.files)
    grey = folder.draw(torch.zeros(4, 1, 5, 5), gen())
    assert grey.shape == (4, 1, 5, 5) and len(opened) == 3


def test_real_textures_are_resized_to_the_image(textures):
    folder = TextureFolder(textures)
    out = folder.draw(torch.zeros(6, 3, 37, 100), gen())
    assert out.shape == (6, 3, 37, 100) and 0 <= out.min() and out.max() <= 1
    assert out.flatten(1).std(1).min() > 0.02
    assert torch.equal(out[:, 0], out[:, 1])  # the textures are grey
