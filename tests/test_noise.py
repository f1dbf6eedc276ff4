"""Batched Perlin noise: exact against a per-pixel reference, rotation, per-sample scales, sizes."""

from __future__ import annotations

import math

import pytest
import torch

from inout_aug.augmenters.memseg.noise import perlin_noise, random_gradients, rotated_view


def reference_perlin(
    ys: torch.Tensor, xs: torch.Tensor, cells: tuple[int, int], gradients: torch.Tensor
) -> torch.Tensor:
    """Textbook per-pixel Perlin noise at lattice coordinates (ys, xs), lattice wrapping at ``cells``."""
    y0, x0 = ys.floor(), xs.floor()
    fy, fx = ys - y0, xs - x0

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = gradients[(y0.long() + dy) % cells[0], (x0.long() + dx) % cells[1]]
        return g[..., 0] * (fx - dx) + g[..., 1] * (fy - dy)

    def fade(t: torch.Tensor) -> torch.Tensor:
        return t * t * t * (t * (t * 6 - 15) + 10)

    top = torch.lerp(corner(0, 0), corner(0, 1), fade(fx))
    bottom = torch.lerp(corner(1, 0), corner(1, 1), fade(fx))
    return math.sqrt(2) * torch.lerp(top, bottom, fade(fy))


def pixel_coords(h: int, w: int, degrees: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image coordinates of the pixel centres, rotated by ``degrees`` about the image centre."""
    y = torch.arange(h, dtype=torch.float64)[:, None] + 0.5 - h / 2
    x = torch.arange(w, dtype=torch.float64)[None] + 0.5 - w / 2
    a = math.radians(degrees)
    return math.sin(a) * x + math.cos(a) * y + h / 2, math.cos(a) * x - math.sin(a) * y + w / 2


CELLS = torch.tensor([[1, 1], [2, 8], [8, 4], [5, 3]])


@pytest.mark.parametrize("size", [(64, 48), (100, 37), (1, 1)])
def test_axis_aligned_noise_matches_the_per_pixel_reference(size):
    gradients = random_gradients(len(CELLS), (8, 8), torch.Generator().manual_seed(0))
    noise = perlin_noise(size, CELLS, gradients)
    assert noise.shape == (len(CELLS), *size) and noise.dtype == torch.float32
    ys, xs = pixel_coords(*size)
    for k, (cy, cx) in enumerate(CELLS.tolist()):
        expected = reference_perlin(ys * cy / size[0], xs * cx / size[1], (cy, cx), gradients[k].double())
        torch.testing.assert_close(noise[k].double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(64, 48), (37, 100)])
def test_unrotated_view_of_the_canvas_is_exact(size):
    gradients = random_gradients(len(CELLS), (8, 8), torch.Generator().manual_seed(1))
    rotated = perlin_noise(size, CELLS, gradients, torch.zeros(len(CELLS)))
    torch.testing.assert_close(rotated, perlin_noise(size, CELLS, gradients), atol=1e-5, rtol=0)


def test_rotated_noise_samples_the_rotated_coordinates():
    h, w = 96, 64
    cells = torch.tensor([[2, 2], [4, 1], [3, 4]])
    degrees = torch.tensor([30.0, -75.0, 90.0])
    gradients = random_gradients(3, (4, 4), torch.Generator().manual_seed(2))
    noise = perlin_noise((h, w), cells, gradients, degrees)
    for k, (cy, cx) in enumerate(cells.tolist()):
        ys, xs = pixel_coords(h, w, float(degrees[k]))
        expected = reference_perlin(ys * cy / h, xs * cx / w, (cy, cx), gradients[k].double())
        # Computed at 4 samples per cell, rotated and scaled up bilinearly: a small error, corners included.
        error = (noise[k].double() - expected).abs()
        assert error.mean() < 0.025 and error.max() < 0.15


def test_coarse_noise_on_a_large_image_uses_a_coarser_grid_faithfully():
    h, w = 256, 192  # 4 cells at most: computed on a grid 12 times coarser, then scaled up
    cells = torch.tensor([[4, 2], [1, 4]])
    degrees = torch.tensor([20.0, -60.0])
    gradients = random_gradients(2, (4, 4), torch.Generator().manual_seed(6))
    noise = perlin_noise((h, w), cells, gradients, degrees)
    for k, (cy, cx) in enumerate(cells.tolist()):
        ys, xs = pixel_coords(h, w, float(degrees[k]))
        expected = reference_perlin(ys * cy / h, xs * cx / w, (cy, cx), gradients[k].double())
        error = (noise[k].double() - expected).abs()
        assert error.mean() < 0.04 and error.max() < 0.2


def test_noise_is_bounded_and_per_sample():
    g = torch.Generator().manual_seed(3)
    cells = 2 ** torch.randint(0, 6, (16, 2), generator=g)
    degrees = torch.rand(16, generator=g) * 180 - 90
    noise = perlin_noise((64, 64), cells, random_gradients(16, (32, 32), g), degrees)
    assert noise.abs().max() <= 1.0 + 1e-4
    flat = noise.flatten(1)
    assert all(not torch.equal(flat[0], row) for row in flat[1:])


def test_finer_lattice_gives_rougher_noise():
    g = torch.Generator().manual_seed(4)
    cells = torch.tensor([[1, 1], [32, 32]]).repeat(8, 1)
    noise = perlin_noise((128, 128), cells, random_gradients(16, (32, 32), g))
    roughness = noise.diff(dim=2).abs().mean((1, 2))
    assert roughness[1::2].min() > 4 * roughness[0::2].max()


def test_rotated_view_of_the_image_itself_rotates_it():
    image = torch.rand(3, 2, 12, 12, generator=torch.Generator().manual_seed(5))
    same = rotated_view(image, torch.zeros(3), (12, 12), (12, 12))
    torch.testing.assert_close(same, image)
    quarter = rotated_view(image, torch.full((3,), 90.0), (12, 12), (12, 12))
    torch.testing.assert_close(quarter, image.rot90(1, (2, 3)), atol=1e-5, rtol=0)
    tilted = rotated_view(image, torch.full((3,), 30.0), (12, 12), (12, 12), padding_mode="zeros")
    assert (tilted[..., 0, 0] == 0).all()  # a corner pixel's source lies outside the image
