"""The ddpm backend's inpaint kind (v2): a UNet conditioned on the hole and its context, one class per defect
type, sampled without resampling jumps; tiny models on a folder dataset with two defect types."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("diffusers")

from inout_aug.augmenters.diffusion import DiffusionDefect  # noqa: E402
from inout_aug.core.io import write_png  # noqa: E402
from inout_aug.core.settings import SettingsError  # noqa: E402
from inout_aug.data.masks import RealMasks  # noqa: E402
from inout_aug.models.ddpm import DDPMConfig, DDPMDefectModel  # noqa: E402
from inout_aug.models.ddpm_inpaint import SURFACE, InpaintDefectModel, _window_batch, train_inpaint  # noqa: E402
from inout_aug.models.finetune import finetune  # noqa: E402
from inout_aug_cli.main import cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TYPES = ("blob", "crack")  # sorted: classes 1 and 2


def _surface(seed: int, c: int = 1, size: int = 32) -> torch.Tensor:
    """A grey-ish noisy surface, (C, H, W) uint8."""
    return (100 + 40 * torch.rand(c, size, size, generator=torch.Generator().manual_seed(seed))).to(torch.uint8)


def _defect(seed: int, kind: str, c: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A surface with a bright blob or a dark vertical crack (placed by ``seed``) and its mask."""
    image, mask = _surface(seed, c), torch.zeros(32, 32, dtype=torch.bool)
    top = 4 + seed % 16
    if kind == "blob":
        mask[top:top + 6, 10:16] = True
    else:
        mask[top:top + 12, 20:22] = True
    image[:, mask] = 250 if kind == "blob" else 20
    return image, mask


def _masks(b: int, size: int = 32) -> torch.Tensor:
    masks = torch.zeros(b, size, size, dtype=torch.bool)
    for i in range(b):
        masks[i, 3 + i:9 + i, 5:12] = True
    return masks


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A folder layout: 4 normal images, 2 blobs and 2 cracks with their masks."""
    root = tmp_path_factory.mktemp("data")
    for i in range(4):
        write_png(_surface(i), root / "normal" / f"n{i}.png")
    for kind in TYPES:
        for i in range(2):
            image, mask = _defect(10 + i, kind)
            write_png(image, root / "defect" / kind / f"{kind}{i}.png")
            write_png(mask[None].to(torch.uint8) * 255, root / "masks" / kind / f"{kind}{i}.png")
    return root


@pytest.fixture(scope="module")
def model_path(dataset, tmp_path_factory):
    """A v2 model trained from the command line (full-shot, inpaint-smoke preset)."""
    out = tmp_path_factory.mktemp("models") / "inpaint"
    result = CliRunner().invoke(cli, ["finetune", "--backend", "ddpm", "--data", str(dataset), "--setting", "full",
                                      "--split", "all", "--preset", "inpaint-smoke", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def model(model_path) -> InpaintDefectModel:
    return DDPMDefectModel.load(model_path)


def _inpaint(model: InpaintDefectModel, images: torch.Tensor, masks: torch.Tensor, seed: int = 0,
             **kw) -> torch.Tensor:
    return model.inpaint(images, masks, generator=torch.Generator().manual_seed(seed), steps=4, **kw)


def test_finetune_saves_a_model_that_loads_as_the_inpaint_kind(model_path, model):
    config = json.loads((model_path / "config.json").read_text())
    assert config["kind"] == "inpaint" and config["types"] == list(TYPES)
    assert (model_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert type(model) is InpaintDefectModel and type(InpaintDefectModel.load(model_path)) is InpaintDefectModel
    assert model.types == TYPES and [model.class_of(t) for t in TYPES] == [1, 2]
    assert model.unet.config.in_channels == 2 * 1 + 1  # noisy patch, masked patch, hole
    assert model.unet.config.num_class_embeds == len(TYPES) + 2  # surface, the types, null
    record = json.loads((model_path / "training_data.json").read_text())
    assert sum("/defect/" in f["image"] for f in record["files"]) == 4


def test_kind_is_a_setting_and_v1_stays_the_default(dataset, tmp_path):
    finetune("ddpm", dataset, tmp_path / "v2", setting="few", shots=1, split="all", preset="smoke",
             overrides={"kind": "inpaint", "steps": 2}, progress=False)
    loaded = DDPMDefectModel.load(tmp_path / "v2")
    assert type(loaded) is InpaintDefectModel and len(loaded.types) == 1  # the one chosen defect's type
    assert DDPMConfig().kind == "repaint" and DDPMConfig.preset("default").kind == "repaint"
    assert DDPMConfig.preset("inpaint").kind == "inpaint"
    with pytest.raises(ValueError, match="kind must be one of"):
        DDPMConfig(kind="outpaint")
    with pytest.raises(ValueError, match="kind='inpaint' models only"):
        DDPMConfig(types=("blob",))
    with pytest.raises(SettingsError, match="unknown ddpm preset"):
        DDPMConfig.preset("inpaint-huge")


def test_training_is_seeded_takes_channels_and_checks_types():
    defects = [(*_defect(10, "blob", 3), "blob"), (*_defect(11, "crack"), "crack")]
    config = DDPMConfig.preset("inpaint-smoke", steps=3)
    a = train_inpaint([_surface(0), _surface(1)], defects, config, progress=False)
    b = train_inpaint([_surface(0), _surface(1)], defects, config, progress=False)
    assert a.config.channels == 3 and a.unet.config.in_channels == 7 and a.types == TYPES
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    given = train_inpaint([_surface(0)], defects[:1], DDPMConfig.preset("inpaint-smoke", steps=1, types=("x", "blob")),
                          progress=False)
    assert given.types == ("x", "blob") and given.class_of("blob") == 2
    with pytest.raises(ValueError, match="crack are not among the configured types x"):
        train_inpaint([_surface(0)], defects, DDPMConfig.preset("inpaint-smoke", types=("x",)), progress=False)
    with pytest.raises(ValueError, match="use train_ddpm"):
        train_inpaint([_surface(0)], defects, DDPMConfig.preset("smoke"), progress=False)
    with pytest.raises(ValueError, match="few-shot"):
        train_inpaint([_surface(0)], [], DDPMConfig.preset("inpaint-smoke"), progress=False)


def test_training_batches_hold_defect_windows_then_surface_windows_with_holes():
    config = DDPMConfig.preset("inpaint-smoke", channels=1, types=TYPES)
    defects = [_defect(10, "blob"), _defect(11, "crack")]
    batch, weight, labels, context = _window_batch([_surface(0)], defects, [1, 2], [16, 16], 3, 8, config,
                                                   torch.Generator().manual_seed(0))
    assert batch.shape == (8, 1, 16, 16) and weight.shape == (8, 1, 16, 16) and context.shape == (8, 2, 16, 16)
    assert set(labels[:3].tolist()) <= {1, 2} and labels[3:].eq(SURFACE).all()
    assert weight.flatten(1).any(1).all() and torch.equal(context[:, 1:], weight)  # the loss is on the hole
    assert torch.equal(context[:, :1], batch.masked_fill(weight > 0, 0))
    assert (batch[:3][weight[:3] > 0] - batch[:3][weight[:3] == 0].mean()).abs().mean() > 0.5  # a defect in each hole


@pytest.mark.parametrize("channels", [1, 3])
def test_inpaint_changes_only_inside_the_mask_and_is_seeded(model, channels):
    images = torch.rand(3, channels, 24, 30, generator=torch.Generator().manual_seed(5))
    masks = torch.zeros(3, 24, 30, dtype=torch.bool)
    for i in range(3):
        masks[i, 4 + i:10 + i, 6:14 + 2 * i] = True
    out = _inpaint(model, images, masks, defect_type="crack")
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(out.permute(1, 0, 2, 3)[:, ~masks], images.permute(1, 0, 2, 3)[:, ~masks])
    assert (out != images).any(1)[masks].float().mean() > 0.9 and out.min() >= 0 and out.max() <= 1
    assert torch.equal(_inpaint(model, images, masks, defect_type="crack"), out)
    assert not torch.equal(_inpaint(model, images, masks, seed=1, defect_type="crack"), out)
    assert not torch.equal(_inpaint(model, images, masks, defect_type="blob"), out)
    for kw in ({"scheduler": "dpm++"}, {"guidance": 1.0}, {}):
        other = _inpaint(model, images, masks, **kw)
        assert torch.equal(other.permute(1, 0, 2, 3)[:, ~masks], images.permute(1, 0, 2, 3)[:, ~masks])
    empty = torch.zeros_like(masks)
    assert torch.equal(_inpaint(model, images, empty), images)


def _count_unet_calls(model: InpaintDefectModel, monkeypatch) -> list[tuple[int, list[int]]]:
    """Record (batch size, class labels) of every UNet call."""
    calls, forward = [], model.unet.forward

    def counted(sample, timestep, class_labels=None, **kw):
        calls.append((len(sample), class_labels.tolist()))
        assert sample.shape[1] == 2 * model.config.channels + 1
        return forward(sample, timestep, class_labels=class_labels, **kw)

    monkeypatch.setattr(model.unet, "forward", counted)
    return calls


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++"])
def test_sampling_calls_the_unet_once_per_step_without_resampling(model, monkeypatch, scheduler):
    calls = _count_unet_calls(model, monkeypatch)
    images, masks = torch.rand(2, 1, 32, 32), _masks(2)
    model.inpaint(images, masks, generator=torch.Generator().manual_seed(0), steps=5, scheduler=scheduler,
                  defect_type="blob")
    assert len(calls) == 5 and all(n == 4 for n, _ in calls)  # guidance: conditional and null halves, one call
    assert all(labels == [1, 1, 3, 3] for _, labels in calls)
    calls.clear()
    model.inpaint(images, masks, generator=torch.Generator().manual_seed(0), steps=3, guidance=1.0,
                  scheduler=scheduler)
    assert len(calls) == 3 and all(n == 2 for n, _ in calls)


def test_defect_type_picks_a_class_or_one_is_drawn_per_image(model, monkeypatch):
    with pytest.raises(ValueError, match="unknown defect type 'scratch': this model paints blob, crack"):
        _inpaint(model, torch.rand(1, 1, 32, 32), _masks(1), defect_type="scratch")
    calls = _count_unet_calls(model, monkeypatch)
    images, masks = torch.rand(6, 1, 32, 32), _masks(6)
    generators = [torch.Generator().manual_seed(s) for s in range(6)]
    batch = model.inpaint(images, masks, generator=generators, steps=2)
    drawn = calls[0][1][:6]
    assert set(drawn) == {1, 2} and calls[1][1][:6] == drawn  # drawn once per image, from its generator
    alone = model.inpaint(images[4:5], masks[4:5], generator=torch.Generator().manual_seed(4), steps=2)
    assert calls[-1][1][0] == drawn[4]
    torch.testing.assert_close(batch[4:5], alone, atol=1e-5, rtol=0)  # a batched pass may differ in the last bit


def test_defect_types_given_per_image_and_drawn_where_none_is_given(model, monkeypatch):
    calls = _count_unet_calls(model, monkeypatch)
    images, masks = torch.rand(4, 1, 32, 32), _masks(4)

    def labels(defect_type):
        generators = [torch.Generator().manual_seed(s) for s in range(4)]
        model.inpaint(images, masks, generator=generators, steps=1, defect_type=defect_type)
        return calls[-1][1][:4]

    drawn = labels(None)
    assert labels(["crack", None, "blob", None]) == [2, drawn[1], 1, drawn[3]]  # the rest drawn as before
    assert labels(["blob"] * 4) == labels("blob") == [1] * 4
    three, holes, types = torch.rand(3, 1, 32, 32), _masks(3), ["crack", None, "blob"]
    batch = model.inpaint(three, holes, generator=[torch.Generator().manual_seed(s) for s in range(3)], steps=1,
                          defect_type=types)
    for i in range(3):  # a row's draws do not depend on the rows beside it
        alone = model.inpaint(three[i:i + 1], holes[i:i + 1], generator=torch.Generator().manual_seed(i), steps=1,
                              defect_type=types[i])
        torch.testing.assert_close(batch[i:i + 1], alone, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"one defect type, or one per image \(4\), not 3"):
        labels(["blob", "crack", None])
    with pytest.raises(ValueError, match="unknown defect type 'dent'"):
        labels([None, "dent", None, None])


def test_diffusion_defect_paints_each_real_mask_with_its_own_defect_type(model_path, dataset, monkeypatch):
    augment = DiffusionDefect(model=str(model_path), masks=str(dataset), steps=1, seed=3)
    levels = augment.model.config.num_train_timesteps
    with pytest.raises(ValueError, match=f"steps={levels + 1} is more than the {levels} noise levels this model"):
        DiffusionDefect(model=str(model_path), steps=levels + 1)
    with pytest.raises(ValueError, match=r"scheduler must be one of ddim, dpm\+\+, got 'foo'"):
        DiffusionDefect(model=str(model_path), scheduler="foo")
    train, every = (RealMasks(dataset, split=split).shapes for split in ("train", "all"))
    assert len(augment.masks.shapes) == len(train) < len(every)  # the training split's masks only, by default
    assert len(DiffusionDefect(model=str(model_path), masks=str(dataset), masks_split="all").masks.shapes) == len(every)
    calls = _count_unet_calls(augment.model, monkeypatch)
    out = augment.augment((_surface(7).float() / 255)[None].repeat(8, 1, 1, 1))
    types = [p["defect_type"] for p in out.params]
    assert {p["guidance"] for p in out.params} == {augment.model.config.guidance_scale}  # the scale used, not None
    assert set(types) == {"blob", "crack"} and calls[0][1][:8] == [TYPES.index(t) + 1 for t in types]
    for kind, mask in zip(types, out.mask):  # blobs are squares, cracks long and thin (turned by 0 or 90 degrees)
        rows, cols = mask.any(1).sum().item(), mask.any(0).sum().item()
        assert (max(rows, cols) / min(rows, cols) > 3) == (kind == "crack"), (kind, rows, cols)


def test_diffusion_defect_uses_an_inpaint_model_and_maps_mask_type_to_its_class(model_path, dataset, monkeypatch,
                                                                                 tmp_path):
    image = (_surface(7).float() / 255)[None].repeat(2, 1, 1, 1)
    augment = DiffusionDefect(model=str(model_path), masks=str(dataset), mask_type="crack", steps=2, seed=0)
    calls = _count_unet_calls(augment.model, monkeypatch)
    out = augment.augment(image)
    assert out.defect.all() and torch.equal(out.image[~out.mask[:, None]], image[~out.mask[:, None]])
    assert all(set(labels) == {2, 3} for _, labels in calls)  # crack, and the null class
    assert torch.equal(DiffusionDefect(model=str(model_path), masks=str(dataset), mask_type="crack", steps=2,
                                       seed=0).augment(image).image, out.image)
    plain = DiffusionDefect(model=str(model_path), steps=2, seed=0).augment(image)  # Perlin masks, drawn types
    assert plain.defect.all() and torch.equal(plain.image[~plain.mask[:, None]], image[~plain.mask[:, None]])
    image, mask = _defect(3, "crack")
    write_png(image, tmp_path / "normal" / "n.png")
    write_png(image, tmp_path / "defect" / "scratch" / "s.png")
    write_png(mask[None].to(torch.uint8) * 255, tmp_path / "masks" / "scratch" / "s.png")
    with pytest.raises(ValueError, match="unknown defect type 'scratch': this model paints blob, crack"):
        DiffusionDefect(model=str(model_path), masks=str(tmp_path), mask_type="scratch")


def test_generate_from_the_command_line_with_an_inpaint_model(model_path, dataset, tmp_path):
    result = CliRunner().invoke(cli, ["generate", "-a", "diffusion", "-p", f"model={model_path}", "-p", "steps=2",
                                      "-p", f"masks={dataset}", "-p", "mask_type=blob", "-i", str(dataset),
                                      "-o", str(tmp_path / "out"), "-n", "3"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 3


def test_a_run_refuses_to_resume_with_other_model_files_or_settings(model_path, dataset, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_path, model)
    args = ["generate", "-a", "diffusion", "-p", f"model={model}", "-p", "steps=1", "-i", str(dataset),
            "-o", str(tmp_path / "out")]
    assert CliRunner().invoke(cli, [*args, "-n", "2"]).exit_code == 0
    other = CliRunner().invoke(cli, [*args[:5], "-p", "steps=2", *args[7:], "-n", "3"])
    assert other.exit_code == 1
    assert 'holds a run with other settings (params: {"model": ' in other.output
    assert '"steps": 1, "p": 1.0} there' in other.output and '"steps": 2, "p": 1.0} now' in other.output
    (model / "notes.txt").write_text("trained again")  # the model's files change at the same path
    changed = CliRunner().invoke(cli, [*args, "-n", "3"])
    assert changed.exit_code == 1 and "Error: the files of diffusion changed since the run in" in changed.output
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 2  # nothing added
    (model / "notes.txt").unlink()
    assert CliRunner().invoke(cli, [*args, "-n", "3"]).exit_code == 0  # the same files again: it resumes


def test_finetune_names_a_mask_of_another_size_and_defects_without_mask_files(tmp_path):
    from inout_aug.data.layouts import open_dataset
    from inout_aug.models.finetune import finetune_ddpm

    root = tmp_path / "data"
    write_png(_surface(0), root / "normal" / "n0.png")
    write_png(_defect(7, "pit")[0], root / "defect" / "d.png")
    data = open_dataset(root)
    with pytest.raises(ValueError, match="the chosen defects have no mask files: a folder layout takes them from "
                                         "masks/ beside defect/"):
        finetune_ddpm(data, data.defects(), tmp_path / "model", "inpaint-smoke", {"steps": 2})
    write_png(torch.full((1, 20, 20), 255, dtype=torch.uint8), root / "masks" / "d.png")
    data = open_dataset(root)
    with pytest.raises(ValueError, match=r"the mask .*masks/d.png is 20x20 px but its image .*defect/d.png is "
                                         r"\d+x\d+: give each mask its image's size"):
        finetune_ddpm(data, data.defects(), tmp_path / "model", "inpaint-smoke", {"steps": 2})


def test_finetune_leaves_out_shots_whose_mask_marks_no_pixel(tmp_path):
    from inout_aug.data.layouts import open_dataset
    from inout_aug.models.finetune import finetune_ddpm

    root = tmp_path / "data"
    for i in range(3):
        write_png(_surface(i), root / "normal" / f"n{i}.png")
    for kind, marked in (("pit", True), ("scratch", False)):
        image, mask = _defect(7, kind)
        write_png(image, root / "defect" / kind / "d.png")
        write_png((mask & marked)[None].to(torch.uint8) * 255, root / "masks" / kind / "d.png")
    data = open_dataset(root)
    used = finetune_ddpm(data, data.defects(), tmp_path / "model", "inpaint-smoke", {"steps": 2})
    assert json.loads((tmp_path / "model" / "config.json").read_text())["types"] == ["pit"]
    assert [p.parent.name for p in used if "defect" in p.parts] == ["pit"]  # the record lists what was used
    with pytest.raises(ValueError, match="the chosen defects have none that marks a pixel"):
        finetune_ddpm(data, data.defects("scratch"), tmp_path / "other", "inpaint-smoke", {"steps": 2})
