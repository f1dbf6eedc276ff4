"""The whole in-distribution path from the command line, offline with tiny random-weight Stable Diffusion:
finetune a LoRA -> generate banks (txt2img and inpaint) -> DiffusionDefect in a Compose."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from click.testing import CliRunner
from torchvision import tv_tensors

from helpers import gradient_dataset, gradient_image, kill_after
from inout_aug.augmenters.diffusion import DiffusionDefect
from inout_aug.core.io import read_image
from inout_aug_cli.main import cli

tiny = pytest.importorskip("inout_aug.testing.tiny_sd")
pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("path")
    data = gradient_dataset(root / "data")
    return root, data, tiny.save_tiny_checkpoint(root / "sd"), tiny.save_tiny_checkpoint(root / "sdi", inpaint=True)


def test_finetune_then_txt2img_bank_then_compose(setup):
    root, data, base, _ = setup
    done = run("finetune", "--backend", "sd", "--checkpoint", str(base), "--data", str(data), "--shots", "2",
               "--preset", "smoke", "--out", str(root / "lora"), "-d", "test_fraction=0.25")
    hint = f"-p backend=sd -p mode=txt2img -p model={base} -p lora={root / 'lora'}"
    assert f"use it with: inout-aug generate -a diffusion {hint} ..." in done.output
    record = json.loads((root / "lora" / "training_data.json").read_text())
    assert record["backend"] == "sd" and len(record["files"]) == 2
    assert all("/defect/" in f["image"] for f in record["files"])
    bank = root / "bank-txt2img"
    run("generate", "-a", "diffusion", *hint.split(), "-p", "steps=2", "-i", str(data), "-o", str(bank), "-n", "3")
    records = [json.loads(line) for line in (bank / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["mask"] is None for r in records)
    drawn = records[0]["drawn"]
    assert drawn["mode"] == "txt2img" and drawn["prompt"] == "sks defect" and drawn["steps"] == 2
    assert len(drawn["model_hash"]) == 64 and len(drawn["lora_hash"]) == 64
    assert read_image(bank / records[0]["image"]).shape == read_image(records[0]["source"]).shape
    sample = {"image": tv_tensors.Image(gradient_image(3, 24, 24)), "label": 0}
    out = DiffusionDefect(bank=str(bank), seed=0)(sample)
    assert out["label"] == 1 and not out["mask"].any()  # a weak label


def test_inpaint_bank_keeps_the_source_outside_real_masks(setup):
    root, data, _, inpaint_base = setup
    bank = root / "bank-inpaint"
    run("generate", "-a", "diffusion", "-p", "backend=sd", "-p", f"model={inpaint_base}", "-p", f"masks={data}",
        "-p", "steps=2", "-i", str(data), "-o", str(bank), "-n", "3")
    for record in map(json.loads, (bank / "manifest.jsonl").read_text().splitlines()):
        image, mask = read_image(bank / record["image"]), read_image(bank / record["mask"])[0] >= 128
        source = read_image(record["source"])
        assert mask.any() and image.shape == source.shape
        assert torch.equal(image[:, ~mask], source[:, ~mask])
        assert record["drawn"]["mode"] == "inpaint" and "lora_hash" not in record["drawn"]
    out = DiffusionDefect(bank=str(bank), seed=1).augment(gradient_image(1, 40, 44)[None].repeat(3, 1, 1, 1))
    assert out.defect.all() and out.mask.flatten(1).any(1).all()


def test_batched_generation_matches_one_at_a_time(setup):
    root, data, _, inpaint_base = setup
    banks = {}
    for size in ("1", "3"):
        banks[size] = root / f"bank-batch-{size}"
        run("generate", "-a", "diffusion", "-p", "backend=sd", "-p", f"model={inpaint_base}", "-p", "steps=2",
            "-i", str(data), "-o", str(banks[size]), "-n", "4", "--batch-size", size)
    for i in range(4):
        name = f"{i:06d}.png"
        one, batched = (read_image(banks[s] / "images" / name).int() for s in ("1", "3"))
        assert torch.equal(read_image(banks["1"] / "masks" / name), read_image(banks["3"] / "masks" / name))
        # The same seeds; a batched network pass may round a pixel to the next grey level.
        assert (one - batched).abs().max() <= 1 and (one == batched).float().mean() > 0.99


def test_finetune_ddpm_then_live_inpainting_in_compose(setup):
    root, data, _, _ = setup
    run("finetune", "--backend", "ddpm", "--data", str(data), "--shots", "1", "--preset", "smoke",
        "--out", str(root / "ddpm"), "-d", "test_fraction=0.25")
    record = json.loads((root / "ddpm" / "training_data.json").read_text())
    assert record["backend"] == "ddpm" and sum("/defect/" in f["image"] for f in record["files"]) == 1
    augment = DiffusionDefect(model=str(root / "ddpm"), masks=str(data), steps=2, seed=0)
    image = gradient_image(1, 40, 44)[None].repeat(2, 1, 1, 1)
    out = augment.augment(image)
    assert out.defect.all() and torch.equal(out.image[~out.mask[:, None]], image[~out.mask[:, None]])
    assert len(out.params[0]["model_hash"]) == 64
    refused = CliRunner().invoke(cli, ["finetune", "--backend", "ddpm", "--data", str(data), "--setting", "zero",
                                       "--out", str(root / "zero")])
    assert refused.exit_code == 1 and "zero-shot has none" in refused.output and "--backend sd" in refused.output


def test_finetune_refuses_an_output_folder_of_other_files_before_training(setup, monkeypatch):
    from inout_aug.models import finetune as module

    root, data, base, _ = setup
    occupied = root / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    monkeypatch.setattr(module, "finetune_ddpm", lambda *args, **kwargs: pytest.fail("trained before the check"))
    monkeypatch.setattr(module, "_sd", lambda *args, **kwargs: pytest.fail("trained before the check"))
    for backend in ("ddpm", "sd"):
        given = ["--checkpoint", str(base)] if backend == "sd" else []
        refused = CliRunner().invoke(cli, ["finetune", "--backend", backend, *given, "--data", str(data), "--shots",
                                           "1", "--out", str(occupied)])
        kind = "ddpm model" if backend == "ddpm" else "LoRA"
        assert refused.exit_code == 1
        assert f"Error: {occupied} is a folder of other files" in refused.output and f"not a {kind} folder" in \
            refused.output
    assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]
    ignored = CliRunner().invoke(cli, ["finetune", "--backend", "ddpm", "--checkpoint", str(base), "--data", str(data),
                                       "--out", str(root / "new")])
    assert ignored.exit_code == 1 and "--checkpoint is the sd backend's Stable Diffusion model" in ignored.output


def test_a_killed_bank_generation_resumes_to_exactly_n_identical_files(setup):
    root, data, _, inpaint_base = setup
    command = [sys.executable, "-m", "inout_aug_cli", "generate", "-a", "diffusion", "-p", "backend=sd",
               "-p", f"model={inpaint_base}", "-p", "steps=2", "-i", str(data), "-o"]
    run(*command[3:], str(root / "whole"), "-n", "8")
    out = root / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    manifest = out / "manifest.jsonl"
    kill_after([*command, str(out), "-n", "8"], manifest, 2, env)
    assert len(manifest.read_text().splitlines()) < 8, "the run finished before it could be killed"
    run(*command[3:], str(out), "-n", "8")
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(8))
    assert records[0]["drawn"]["scheduler"] == "DPMSolverMultistepScheduler"
    for part in ("images", "masks"):
        assert sorted(p.name for p in (out / part).iterdir()) == [f"{i:06d}.png" for i in range(8)]
        for name in (f"{i:06d}.png" for i in range(8)):
            assert (out / part / name).read_bytes() == (root / "whole" / part / name).read_bytes()
