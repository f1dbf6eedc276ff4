"""The sd backend on tiny random-weight Stable Diffusion checkpoints: offline, CPU, seconds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from safetensors.torch import load_file, save_file  # noqa: E402

from inout_aug.core.io import write_png  # noqa: E402
from inout_aug.models import sd
from inout_aug.testing import tiny_sd as tiny  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # diffusers + numpy 2
    pytest.mark.usefixtures("one_thread"),
]

SMOKE = sd.LoraSettings.preset("smoke")
TXT = {"steps": 2, "height": 32, "width": 32}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny.save_tiny_checkpoint(tmp_path_factory.mktemp("base") / "sd")


@pytest.fixture(scope="module")
def inpaint_base(tmp_path_factory) -> Path:
    return tiny.save_tiny_checkpoint(tmp_path_factory.mktemp("inpaint") / "sd", inpaint=True)


@pytest.fixture(scope="module")
def defects(tmp_path_factory) -> list[Path]:
    """Two small defect images: one RGB, one grey, neither square nor at the training resolution."""
    folder = tmp_path_factory.mktemp("defects")
    generator = torch.Generator().manual_seed(0)
    files = []
    for i, (channels, h, w) in enumerate([(3, 40, 56), (1, 48, 36)]):
        files.append(folder / f"defect_{i}.png")
        write_png(torch.randint(0, 256, (channels, h, w), dtype=torch.uint8, generator=generator), files[-1])
    return files


@pytest.fixture(scope="module")
def trained(base, defects, tmp_path_factory) -> Path:
    """A smoke-preset LoRA (prior preservation with 2 class images) trained on the tiny checkpoint."""
    return sd.finetune_lora(base, defects, tmp_path_factory.mktemp("lora"), SMOKE, progress=False)


def _class_state(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def _count_images(monkeypatch) -> list[int]:
    """Counts the images that sd makes through its one pipeline-calling function."""
    made: list[int] = []
    real = sd._run

    def spy(pipeline, prompt, generators, **options):
        made.append(len(generators))
        return real(pipeline, prompt, generators, **options)

    monkeypatch.setattr(sd, "_run", spy)
    return made


# ---------------------------------------------------------------------------------------------------------------


def test_tiny_components_are_seeded():
    first, again, other = tiny.tiny_components(seed=0), tiny.tiny_components(seed=0), tiny.tiny_components(seed=1)
    for name in ("unet", "vae", "text_encoder"):
        a, b, c = (parts[name].state_dict() for parts in (first, again, other))
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert not all(torch.equal(a[key], c[key]) for key in a)
    assert tiny.tiny_components(inpaint=True)["unet"].config.in_channels == 9
    tokenizer = first["tokenizer"]
    assert tokenizer.tokenize("a photo of sks defect") == ["a</w>", "photo</w>", "of</w>", "sks</w>", "defect</w>"]
    assert tokenizer.unk_token_id not in tokenizer("white marks on the wall, copper metal scratches").input_ids[1:-1]


def test_txt2img_images_are_seeded_per_image():
    pipeline = tiny.tiny_pipeline()
    images = sd.generate(pipeline, "a photo of sks defect", num_images=3, seed=5, **TXT)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
    assert not torch.equal(images[0], images[1])
    assert torch.equal(sd.generate(pipeline, "a photo of sks defect", num_images=3, seed=5, **TXT), images)
    alone = sd.generate(pipeline, "a photo of sks defect", num_images=1, seed=5, **TXT)[0]
    assert (alone.int() - images[0].int()).abs().max() <= 2  # same noise; batched kernels may round differently
    assert not torch.equal(sd.generate(pipeline, "a photo of sks defect", num_images=1, seed=6, **TXT)[0], images[0])


def test_load_pipeline_sets_fast_scheduler_and_no_safety_checker(base):
    pipeline = sd.load_pipeline(base)
    assert type(pipeline.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipeline.scheduler.config.algorithm_type == "dpmsolver++"
    assert pipeline.safety_checker is None
    assert pipeline.name_or_path == str(base.resolve())


def test_finetune_writes_lora_and_record(trained, base, defects):
    out = trained.parent
    assert trained == out / "lora.safetensors" and trained.is_file()
    info = json.loads((out / "lora.json").read_text())
    assert info["base_checkpoint"] == str(base.resolve())
    assert info["base_sha256"] == sd.checkpoint_hash(base)
    assert (info["instance_prompt"], info["class_prompt"]) == ("sks defect", "defect")
    assert info["settings"] == SMOKE.to_dict()
    assert info["steps"] == 2
    assert info["instance_images"] == [{"path": str(p.resolve()), "sha256": _sha256(p)} for p in defects]
    class_files = sorted((out / "class_images").iterdir())
    assert [Path(c["path"]) for c in info["class_images"]] == class_files and len(class_files) == 2
    assert {"torch", "diffusers", "peft", "transformers", "accelerate"} <= set(info["versions"])
    assert info["lora_sha256"] == _sha256(trained)
    assert not list(out.glob(".*")), "no temporary files are left behind"


def test_lora_fuses_every_saved_layer_at_its_scale(trained, base):
    """Each layer in the file is merged as W + scale * alpha / r * B @ A (conv layers with their own rank/alpha)."""
    before = sd.load_pipeline(base).unet.state_dict()
    after = sd.load_lora(sd.load_pipeline(base), trained, scale=0.5).unet.state_dict()
    lora = load_file(trained)
    changed = set()
    for key in (k for k in lora if k.endswith("lora_A.weight")):
        down, up = lora[key], lora[key.replace("lora_A", "lora_B")]
        rank = down.shape[0]
        alpha = SMOKE.conv_alpha if rank == SMOKE.conv_rank else SMOKE.alpha
        weight = key.removeprefix("unet.").replace("lora_A.weight", "weight")
        delta = (up.flatten(1) @ down.flatten(1)).view(before[weight].shape)
        torch.testing.assert_close(after[weight], before[weight] + 0.5 * alpha / rank * delta)
        changed.add(weight)
    assert any(".attn2.to_k." in w for w in changed) and any(".resnets.0.conv1." in w for w in changed)
    assert not any("conv_in" in w or "conv_out" in w for w in changed)
    assert all(torch.equal(after[k], before[k]) for k in before if k not in changed)


def test_a_txt2img_checkpoint_for_inpainting_names_the_mode_that_takes_it(base):
    with pytest.raises(ValueError, match=r"is not an inpainting checkpoint \(UNet with 9 input channels\): its UNet "
                                         r"takes 4 input channels; use mode='txt2img' \(-p mode=txt2img\)"):
        sd.load_pipeline(base, inpaint=True)


def test_lora_changes_output_and_reloads_identically(trained, base):
    plain = sd.generate(sd.load_pipeline(base), "sks defect", num_images=2, **TXT)
    with_lora = sd.generate(sd.load_lora(sd.load_pipeline(base), trained), "sks defect", num_images=2, **TXT)
    assert not torch.equal(with_lora, plain)
    reloaded = sd.load_lora(sd.load_pipeline(base), trained.parent)  # the folder works too
    assert torch.equal(sd.generate(reloaded, "sks defect", num_images=2, **TXT), with_lora)
    assert not torch.equal(sd.generate(reloaded, "sks defect", num_images=2, seed=1, **TXT), with_lora)


def test_finetune_is_deterministic_and_reuses_class_images(trained, base, defects, tmp_path, monkeypatch):
    class_dir = trained.parent / "class_images"
    cached = _class_state(class_dir)
    made = _count_images(monkeypatch)
    again = sd.finetune_lora(base, defects, tmp_path / "again", SMOKE, class_images_dir=class_dir, progress=False)
    assert made == [] and _class_state(class_dir) == cached
    assert again.read_bytes() == trained.read_bytes()
    other = sd.finetune_lora(base, defects, tmp_path / "other", dataclasses.replace(SMOKE, seed=1),
                             class_images_dir=class_dir, progress=False)
    assert other.read_bytes() != trained.read_bytes()


def test_missing_class_images_are_regenerated_identically(trained, base, defects, tmp_path, monkeypatch):
    class_dir = tmp_path / "class_images"
    class_dir.mkdir()
    for file in (trained.parent / "class_images").iterdir():
        (class_dir / file.name).write_bytes(file.read_bytes())
    kept, lost = sorted(class_dir.iterdir())
    lost_bytes, kept_state = lost.read_bytes(), kept.stat().st_mtime_ns
    lost.unlink()
    made = _count_images(monkeypatch)
    sd.finetune_lora(base, defects, tmp_path / "out", dataclasses.replace(SMOKE, max_steps=1),
                     class_images_dir=class_dir, progress=False)
    assert made == [SMOKE.class_batch_size]  # the lost image is made again in its own batch
    assert lost.read_bytes() == lost_bytes and kept.stat().st_mtime_ns == kept_state


def test_finetune_leaves_a_passed_pipeline_as_it_was(base, defects, tmp_path):
    pipeline = sd.load_pipeline(base)
    before = sd.generate(pipeline, "sks defect", **TXT)
    settings = dataclasses.replace(SMOKE, prior_preservation=False, train_text_encoder=True,
                                   gradient_checkpointing=True)
    lora = sd.finetune_lora(pipeline, defects[:1], tmp_path, settings, progress=False)
    assert {key.split(".")[0] for key in load_file(lora)} == {"unet", "text_encoder"}
    assert not any("lora" in name for name, _ in pipeline.unet.named_modules())
    assert not any("lora" in name for name, _ in pipeline.text_encoder.named_modules())
    assert torch.equal(sd.generate(pipeline, "sks defect", **TXT), before)
    assert not torch.equal(sd.generate(sd.load_lora(pipeline, lora), "sks defect", **TXT), before)


def test_inpainting_with_lora_keeps_pixels_outside_the_mask(trained, inpaint_base):
    grey = torch.randint(0, 256, (1, 1, 36, 44), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 36, 44, dtype=torch.bool)
    mask[:, 8:24, 10:30] = True
    options = {"num_images": 2, "steps": 2, "image": grey, "mask": mask, "guidance": sd.DIAG_GUIDANCE,
               "negative_prompt": sd.DIAG_NEGATIVE_PROMPT}
    plain = sd.generate(sd.load_pipeline(inpaint_base, inpaint=True), sd.DIAG_PROMPTS[0], **options)
    pipeline = sd.load_lora(sd.load_pipeline(inpaint_base, inpaint=True), trained)
    made = sd.generate(pipeline, sd.DIAG_PROMPTS[0], **options)
    assert made.shape == (2, 3, 36, 44) and made.dtype == torch.uint8
    outside = ~mask[0]
    assert torch.equal(made[:, :, outside], grey.expand(2, 3, -1, -1)[:, :, outside])
    assert not torch.equal(made[:, :, mask[0]], grey.expand(2, 3, -1, -1)[:, :, mask[0]])
    assert not torch.equal(made[0], made[1])
    assert not torch.equal(made, plain)
    assert torch.equal(sd.generate(pipeline, sd.DIAG_PROMPTS[0], **options), made)


def test_checkpoint_hash(base, tmp_path):
    folder = tmp_path / "sd"
    folder.mkdir()
    for file in base.rglob("*"):
        if file.is_file():
            (folder / file.relative_to(base)).parent.mkdir(parents=True, exist_ok=True)
            (folder / file.relative_to(base)).write_bytes(file.read_bytes())
    assert sd.checkpoint_hash(folder) == sd.checkpoint_hash(base)
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"an unused variant")
    (folder / "notes.txt").write_text("not part of the model")
    assert sd.checkpoint_hash(folder) == sd.checkpoint_hash(base)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state[next(iter(state))] += 1
    save_file(state, weights)
    assert sd.checkpoint_hash(folder) != sd.checkpoint_hash(base)
    assert sd.checkpoint_hash(weights) == _sha256(weights)


def test_missing_checkpoint_and_lora_say_what_to_put_where(tmp_path, base):
    with pytest.raises(FileNotFoundError, match=r"not found at .*nowhere.*model_index.json, unet/.*\.safetensors"):
        sd.load_pipeline(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty \(the folder has no model_index.json\).*nothing is downloaded"):
        sd.load_pipeline(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"inpainting.*nothing is downloaded"):
        sd.load_pipeline(tmp_path / "nowhere", inpaint=True)
    with pytest.raises(FileNotFoundError, match=r"LoRA not found at .*lora.safetensors: put the lora.safetensors"):
        sd.load_lora(sd.load_pipeline(base), tmp_path)


def test_wrong_checkpoint_files_are_named(tmp_path, base, inpaint_base, defects, monkeypatch):
    picture = tmp_path / "photo.png"
    picture.write_bytes(defects[0].read_bytes())
    with pytest.raises(ValueError, match=r"photo.png is not a Stable Diffusion checkpoint"):
        sd.load_pipeline(picture)
    broken = tmp_path / "broken.safetensors"
    broken.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"broken.safetensors is not a Stable Diffusion checkpoint: cannot read"):
        sd.load_pipeline(broken)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match=r"foreign.safetensors is not a Stable Diffusion checkpoint: .*diffusion"):
        sd.load_pipeline(foreign)
    single = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, single)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"sd15.safetensors needs the diffusers configuration of .*cache.*"
                                                r"nothing is downloaded"):
        sd.load_pipeline(single)
    with pytest.raises(ValueError, match=r"not an inpainting checkpoint"):
        sd.load_pipeline(base, inpaint=True)
    with pytest.raises(ValueError, match=r"not a txt2img checkpoint"):
        sd.load_pipeline(inpaint_base)
    with pytest.raises(ValueError, match=r"finetune_lora needs a txt2img checkpoint"):
        sd.finetune_lora(tiny.tiny_pipeline(inpaint=True), defects, tmp_path / "x", SMOKE, progress=False)


def test_generate_checks_its_inputs():
    pipeline = tiny.tiny_pipeline()
    image, mask = torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.ones(1, 32, 32, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"inpaint=True"):
        sd.generate(pipeline, "defect", image=image, mask=mask, **TXT)
    inpainting = tiny.tiny_pipeline(inpaint=True)
    with pytest.raises(ValueError, match=r"need image= and mask="):
        sd.generate(inpainting, "defect", image=image, steps=2)
    with pytest.raises(ValueError, match=r"image holds 2 items; give 1 or num_images = 3"):
        sd.generate(inpainting, "defect", num_images=3, image=image.expand(2, -1, -1, -1), mask=mask, steps=2)
    with pytest.raises(ValueError, match=r"uint8"):
        sd.generate(inpainting, "defect", image=image.float(), mask=mask, steps=2)


def test_settings_presets():
    paper = sd.LoraSettings.preset("paper")
    assert (paper.rank, paper.alpha, paper.conv_rank, paper.conv_alpha) == (32, 16.0, 4, 1.0)
    assert (paper.learning_rate, paper.lr_scheduler, paper.lr_cycles) == (1e-5, "cosine_with_restarts", 3)
    assert (paper.batch_size, paper.epochs, paper.repeats, paper.resolution) == (12, 50, 10, 512)
    assert (paper.snr_gamma, paper.prior_preservation, paper.prior_loss_weight, paper.num_class_images) == \
        (5.0, True, 1.0, 200)
    assert (paper.instance_prompt, paper.class_prompt) == ("sks defect", "defect")
    assert not paper.train_text_encoder and not paper.gradient_checkpointing and paper.max_steps is None
    crack = dataclasses.replace(paper, class_word="crack")
    assert (crack.instance_prompt, crack.class_prompt) == ("sks crack", "crack")
    assert json.loads(json.dumps(SMOKE.to_dict())) == SMOKE.to_dict()
    with pytest.raises(ValueError, match="multiple of 8"):
        dataclasses.replace(paper, resolution=500)
    with pytest.raises(ValueError, match="mixed_precision"):
        dataclasses.replace(paper, mixed_precision="fp8")
    with pytest.raises(ValueError, match="unknown LoRA preset"):
        sd.LoraSettings.preset("fast")
