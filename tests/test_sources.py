"""Anomaly sources: texture folder (decoded once) and procedural textures."""

from __future__ import annotations

import PIL.Image
import pytest
import torch

from inout_aug.augmenters.memseg.sources import ProceduralTexture, TextureFolder


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
    assert out.shape == (6, 3, 37, 100) and out.dtype == torch.uint8
    assert out.flatten(1).float().std(1).min() > 5
    assert torch.equal(out[:, 0], out[:, 1])  # the textures are grey
