"""The ddpm backend: training, save/load and masked inpainting, on tiny synthetic surfaces (smoke preset)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")

from inout_aug.core.settings import SettingsError  # noqa: E402
from inout_aug.models.ddpm import (  # noqa: E402
    ZERO_SHOT_ERROR,
    DDPMConfig,
    DDPMDefectModel,
    _defect_patch,
    train_ddpm,
)


def _surface(seed: int, c: int = 1, h: int = 32, w: int = 32) -> torch.Tensor:
    """A grey-ish noisy surface, (C, H, W) uint8."""
    g = torch.Generator().manual_seed(seed)
    return (100 + 40 * torch.rand(c, h, w, generator=g)).to(torch.uint8)


def _defect(seed: int, c: int = 1, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """A surface with a bright square blob of ``size`` (at a place set by ``seed``) and its mask."""
    image = _surface(seed, c)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    top = seed % (32 - size)
    mask[top:top + size, 12:12 + size] = True
    image[:, mask] = 250
    return image, mask


NORMALS = [_surface(i) for i in range(6)]
DEFECTS = [_defect(100), _defect(101)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(one_thread) -> DDPMDefectModel:
    return train_ddpm(NORMALS, DEFECTS, DDPMConfig.preset("smoke"), progress=False)


def _inpaint(model: DDPMDefectModel, images: torch.Tensor, masks: torch.Tensor, seed: int = 0, **kw) -> torch.Tensor:
    return model.inpaint(images, masks, generator=torch.Generator().manual_seed(seed), steps=4, **kw)


def _blob_masks(b: int, h: int, w: int) -> torch.Tensor:
    masks = torch.zeros(b, h, w, dtype=torch.bool)
    for i in range(b):
        masks[i, 3 + i:9 + i, 5:12] = True
    return masks


def test_training_is_seeded_and_reproducible():
    config = DDPMConfig.preset("smoke")
    a = train_ddpm(NORMALS, DEFECTS, config, progress=False).unet.state_dict()
    b = train_ddpm(NORMALS, DEFECTS, config, progress=False).unet.state_dict()
    c = train_ddpm(NORMALS, DEFECTS, DDPMConfig.preset("smoke", seed=1), progress=False).unet.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_takes_channels_from_data_and_reports_loss(capsys):
    rgb = train_ddpm([_surface(0, 3), NORMALS[1]], [_defect(100, 3)], DDPMConfig.preset("smoke"))
    assert rgb.config.channels == 3 and rgb.unet.config.in_channels == 3
    assert "loss" in capsys.readouterr().err


def test_zero_defects_point_to_the_sd_backend_and_bad_inputs_raise():
    with pytest.raises(ValueError, match="backend sd") as error:
        train_ddpm(NORMALS, [], DDPMConfig.preset("smoke"), progress=False)
    assert str(error.value) == ZERO_SHOT_ERROR and "few-shot" in ZERO_SHOT_ERROR
    with pytest.raises(TypeError, match="uint8"):
        train_ddpm([NORMALS[0].float()], DEFECTS, DDPMConfig.preset("smoke"), progress=False)
    with pytest.raises(ValueError, match="mark at least one pixel"):
        train_ddpm(NORMALS, [(NORMALS[0], torch.zeros(32, 32, dtype=torch.bool))], DDPMConfig.preset("smoke"))


def test_defect_patches_keep_the_defect_in_view_and_scale_large_ones_down():
    config = DDPMConfig.preset("smoke")  # 16-pixel patches
    large = _defect(0, size=24)  # larger than the patch: the whole window is scaled down
    g = torch.Generator().manual_seed(0)
    for defects in ([DEFECTS[0]], [large]):
        for _ in range(20):
            patch, defect = _defect_patch(defects, config, g)
            assert defect.shape == (1, 16, 16) and defect.max() > 0.5
            assert patch.shape == (1, 16, 16)
            assert (patch > 0.6).any()  # some of the bright blob (250 -> 0.96, jittered) is always in view
    # The 24-pixel blob's window (48 pixels, clipped to the 32-pixel image) is scaled down to the 16-pixel patch
    # whole: the blob covers well over a fifth of it.
    assert (patch > 0.6).float().mean() > 0.2


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inpaint_changes_only_inside_the_mask(model, channels, dtype):
    images = torch.rand(3, channels, 24, 30, generator=torch.Generator().manual_seed(5), dtype=dtype)
    masks = _blob_masks(3, 24, 30)
    out = _inpaint(model, images, masks)
    assert out.shape == images.shape and out.dtype == dtype
    assert torch.equal(out.permute(1, 0, 2, 3)[:, ~masks], images.permute(1, 0, 2, 3)[:, ~masks])
    changed = (out != images).any(1)
    assert changed[masks].float().mean() > 0.9
    assert out.min() >= 0 and out.max() <= 1
    if channels == 3:  # a grey model paints grey defects into RGB images
        assert torch.equal(out[:, 0][masks], out[:, 1][masks])
    assert torch.equal(_inpaint(model, images, masks), out)
    assert not torch.equal(_inpaint(model, images, masks, seed=1), out)


def test_inpaint_handles_masks_larger_than_the_patch_and_empty_masks(model):
    images = torch.rand(3, 1, 40, 50, generator=torch.Generator().manual_seed(6))
    masks = torch.zeros(3, 40, 50, dtype=torch.bool)
    masks[0, 4:36, 3:47] = True  # 32 x 44: far larger than the 16-pixel patch
    masks[2] = True  # the whole image
    out = _inpaint(model, images, masks)
    assert torch.equal(out[1], images[1])  # empty mask: untouched
    assert torch.equal(out[0][:, ~masks[0]], images[0][:, ~masks[0]])
    assert (out[0] != images[0])[:, masks[0]].float().mean() > 0.9
    assert (out[2] != images[2]).float().mean() > 0.9
    empty = torch.zeros(2, 40, 50, dtype=torch.bool)
    assert torch.equal(_inpaint(model, images[:2], empty), images[:2])


def test_inpaint_schedulers_and_guidance(model):
    images = torch.rand(2, 1, 20, 20, generator=torch.Generator().manual_seed(7))
    masks = _blob_masks(2, 20, 20)
    ddim = _inpaint(model, images, masks)
    assert model.config.resample == 2  # ddim resamples by default
    for out in (_inpaint(model, images, masks, scheduler="dpm++"), _inpaint(model, images, masks, guidance=1.0),
                _inpaint(model, images, masks, resample=0)):
        assert torch.equal(out[:, 0][~masks], images[:, 0][~masks])
        assert not torch.equal(out, ddim)
    with pytest.raises(ValueError, match="ddim"):
        _inpaint(model, images, masks, scheduler="dpm++", resample=1)
    with pytest.raises(ValueError, match="scheduler"):
        _inpaint(model, images, masks, scheduler="euler")
    with pytest.raises(TypeError, match="float"):
        _inpaint(model, (images * 255).to(torch.uint8), masks)


def test_save_load_round_trip(model, tmp_path):
    folder = tmp_path / "model"
    assert model.save(folder) == folder
    model.save(folder)  # replacing a model is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folders left
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((folder / "config.json").read_text())["channels"] == 1
    loaded = DDPMDefectModel.load(folder)
    assert loaded.config == model.config
    images = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(8))
    masks = _blob_masks(2, 24, 24)
    assert torch.equal(_inpaint(loaded, images, masks), _inpaint(model, images, masks))


def test_save_refuses_a_folder_that_is_not_a_model(model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a ddpm model"):
        model.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_load_of_a_missing_model_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ddpm model at .*inout-aug finetune --backend ddpm"):
        DDPMDefectModel.load(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="unet"):
        DDPMDefectModel.load(tmp_path / "half")


def test_config_round_trip_presets_and_checks():
    config = DDPMConfig.preset("default")
    assert DDPMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert DDPMConfig.preset("smoke", seed=3).seed == 3
    with pytest.raises(ValueError, match="unknown ddpm preset"):
        DDPMConfig.preset("huge")
    with pytest.raises(SettingsError, match="unknown ddpm setting width; valid: "):
        DDPMConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="patch_size"):
        DDPMConfig(patch_size=30)


def test_one_generator_per_image_makes_each_independent_of_the_batch(model):
    images = torch.stack([_surface(i).float() / 255 for i in range(3)])
    masks = _blob_masks(3, 32, 32)
    batch = model.inpaint(images, masks, generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)], steps=4)
    alone = model.inpaint(images[1:2], masks[1:2], generator=torch.Generator().manual_seed(6), steps=4)
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=0)  # a batched UNet pass may differ in the last bit
    with pytest.raises(ValueError, match="one per image"):
        model.inpaint(images, masks, generator=[torch.Generator()], steps=4)
