"""The classifier benchmark: config and presets, the plan of runs, the data views, training, reports, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from inout_aug.bench.classifier import create_classifier, frozen_parts, model_input
from inout_aug.bench.config import BenchConfig, load_config
from inout_aug.bench.data import open_bench_data
from inout_aug.bench.features import IMAGENET_MEAN, IMAGENET_STD
from inout_aug.bench.report import markdown, provenance, summarize
from inout_aug.bench.runner import NO_POSITIVES, NO_SD_WEIGHTS, Run, git_state, plan
from inout_aug.core.io import write_png
from inout_aug.core.settings import SettingsError
from inout_aug_cli.main import cli


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    """A folder layout of 20 normal surfaces and 8 defective ones (dark scratches, with masks), 48x48 grey."""
    root = tmp_path_factory.mktemp("surfaces")
    g = torch.Generator().manual_seed(0)
    for i in range(28):
        base = 120 + 20 * torch.rand((1, 12, 12), generator=g)
        image = torch.nn.functional.interpolate(base[None], size=(48, 48), mode="bilinear")[0].to(torch.uint8)
        if i < 20:
            write_png(image, root / "normal" / f"n{i:02d}.png")
            continue
        mask = torch.zeros((48, 48), dtype=torch.bool)
        top = int(torch.randint(4, 36, (1,), generator=g))
        mask[top:top + 6, 8:40] = True
        write_png(torch.where(mask, torch.tensor(30, dtype=torch.uint8), image), root / "defect" / f"d{i}.png")
        write_png(mask[None].to(torch.uint8) * 255, root / "masks" / f"d{i}.png")
    return root


def test_presets_and_config_errors(tmp_path):
    cpu = BenchConfig.preset("cpu")
    assert cpu.model == "efficientnet_lite0" and cpu.weights == "package" and cpu.seeds == (0, 1, 2)
    assert cpu.methods == ("none", "memseg", "diffusion", "inout") and cpu.settings == ("zero", "few")
    paper = BenchConfig.preset("paper")
    assert (paper.model, paper.image_size, paper.epochs, paper.batch_size, paper.learning_rate) == \
        ("resnet50", (704, 256), 30, 32, 1e-4)
    with pytest.raises(ValueError, match="unknown benchmark preset 'fast'; choose one of paper, cpu, smoke"):
        BenchConfig.preset("fast")
    with pytest.raises(SettingsError, match=r"unknown benchmark setting epoch \(did you mean epochs\?\); valid: "):
        BenchConfig.preset("cpu", epoch=3)
    with pytest.raises(ValueError, match="settings must be among"):
        BenchConfig.preset("cpu", settings=("some",))
    with pytest.raises(FileNotFoundError, match="benchmark config .*nope.json not found"):
        load_config(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{preset: cpu}")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_text(json.dumps({"_comment": "x", "preset": "smoke", "epochs": 2, "seeds": [3, 4]}))
    config = load_config(tmp_path / "ok.json", epochs=7)
    assert (config.epochs, config.seeds, config.image_size) == (7, (3, 4), (64, 64))


def test_paper_preset_asks_for_its_weights_file(tmp_path):
    with pytest.raises(ValueError, match=r"cannot be downloaded here: pass --weights PATH .*resnet50"):
        create_classifier(BenchConfig.preset("paper"), seed=0)
    with pytest.raises(FileNotFoundError, match="weights file .*r50.pth not found"):
        create_classifier(BenchConfig.preset("paper", weights=str(tmp_path / "r50.pth")), seed=0)


def test_plan_runs_every_combination_and_says_why_some_cannot_run():
    runs, skipped = plan(BenchConfig.preset("cpu"))
    assert skipped == {("none", "zero"): NO_POSITIVES, ("diffusion", "zero"): NO_SD_WEIGHTS,
                       ("inout", "zero"): NO_SD_WEIGHTS}
    assert len(runs) == (1 + 4) * 3 and runs[0] == Run("memseg", "zero", 0)
    assert {(r.method, r.setting) for r in runs} == {("memseg", "zero")} | {(m, "few") for m in
                                                                           ("none", "memseg", "diffusion", "inout")}
    with_bank = BenchConfig.preset("cpu", method_params={"diffusion": {"bank": "/banks/{setting}-{seed}"}})
    assert not plan(with_bank)[1].keys() - {("none", "zero")}
    sweep, skipped = plan(BenchConfig.preset("cpu", methods=("mem*",), settings=("zero",), seeds=(0,),
                                             in_ratios=(0, 0.25, 1)))
    assert [r.method for r in sweep] == ["memseg", "inout@0"] and set(skipped) == {("inout@0.25", "zero"),
                                                                                   ("inout@1", "zero")}
    assert sweep[1].in_ratio == 0.0 and sweep[1].augmenter_name == "inout" and sweep[0].name(5) == "memseg-zero-seed0"
    with pytest.raises(ValueError, match="no registered augmenter matches 'nope\\*'; registered: .*memseg"):
        plan(BenchConfig.preset("cpu", methods=("nope*",)))


def test_data_views_hold_out_normals_and_never_mix_splits(folder_data):
    data = open_bench_data(folder_data, (40, 32), val_fraction=0.2)
    train, val, test = ({r.image for r in v.records} for v in (data.train, data.validation, data.test))
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 28 and val and all(r.label == 0 for r in data.validation.records)
    assert data.test.defects() and data.train.defects()
    sample = data.train[0]
    assert sample["image"].shape == (1, 40, 32) and sample["image"].dtype == torch.uint8
    assert sample["mask"].shape == (40, 32) and sample["mask"].dtype == torch.bool
    assert data.train.read(data.train.records[0])["image"].data_ptr() == sample["image"].data_ptr()  # decoded once
    defect = data.train.read(data.train.defects()[0])
    inside, outside = defect["image"][0][defect["mask"]].float(), defect["image"][0][~defect["mask"]].float()
    assert defect["label"] == 1 and inside.mean() < 60 < 110 < outside.mean()  # the mask moved with the image
    assert data.record()["validation"]["defects"] == 0


def test_frozen_blocks_and_model_input():
    model = create_classifier(BenchConfig.preset("smoke", weights=None, frozen_blocks=2), seed=0)
    frozen = {id(p) for part in frozen_parts(model, 2) for p in part.parameters()}
    assert frozen and all(not p.requires_grad for p in model.parameters() if id(p) in frozen)
    assert all(p.requires_grad for p in model.parameters() if id(p) not in frozen)
    with pytest.raises(ValueError, match="frozen_blocks=9, but EfficientNet has 7 blocks"):
        frozen_parts(model, 9)
    x = model_input(torch.full((2, 1, 8, 8), 255, dtype=torch.uint8))
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 0, 0], expected)
    a = create_classifier(BenchConfig.preset("smoke"), seed=1).classifier.weight
    assert torch.equal(a, create_classifier(BenchConfig.preset("smoke"), seed=1).classifier.weight)


def _result(method, seed, ap, setting="few"):
    return {"run": {"method": method, "setting": setting, "shots": 5, "seed": seed}, "seconds": 10.0,
            "metrics": {"ap": ap, "auroc": 0.5, "precision": 0.4, "recall": 0.3, "f1": 0.2}}


def test_summary_pairs_gains_by_seed_and_lists_skipped_pairs():
    rows = summarize([_result("none", 0, 0.3), _result("none", 1, 0.5), _result("memseg", 0, 0.4),
                      _result("memseg", 1, 0.7)])
    memseg = next(r for r in rows if r["method"] == "memseg")
    assert memseg["ap"] == pytest.approx((0.55, 0.2121320)) and memseg["ap_gain"] == pytest.approx((0.15, 0.0707107))
    assert next(r for r in rows if r["method"] == "none")["ap_gain"] is None
    table = markdown(rows, {("none", "zero"): NO_POSITIVES}, ("zero", "few"), 5)
    assert "### few-shot (N = 5)" in table and "| memseg | 2 | 0.550 ± 0.212 |" in table
    assert "+0.150 ± 0.071" in table and f"| none | — | not run: {NO_POSITIVES}" in table


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_runs_record_their_commit_and_whether_the_tree_was_dirty(tmp_path):
    repo, source = tmp_path / "repo", tmp_path / "repo" / "pkg" / "code.py"
    source.parent.mkdir(parents=True)
    source.write_text("x = 1\n")
    (repo / "ignored.txt").write_text("ignored.txt\n")
    (repo / ".gitignore").write_text("ignored.txt\n")

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    commit = git("rev-parse", "HEAD")
    assert git_state(repo / "out", source) == {"commit": commit, "dirty": False}
    (repo / "out" / "runs").mkdir(parents=True)
    (repo / "out" / "runs" / "a.json").write_text("{}")
    assert git_state(repo / "out", source)["dirty"] is False  # the benchmark's own output does not count
    assert git_state(None, source)["dirty"] is True  # elsewhere an untracked file does
    source.write_text("x = 2\n")
    assert git_state(repo / "out", source) == {"commit": commit, "dirty": True}
    (tmp_path / "loose.py").write_text("")
    assert git_state(repo / "out", tmp_path / "loose.py") == {"commit": None, "dirty": None}  # not a checkout
    assert git_state(None, repo / "ignored.txt") == {"commit": None, "dirty": None}  # a file git does not track
    runs = [{"commit": "abc", "dirty": False}, {"commit": "abc", "dirty": False}, {"commit": "def", "dirty": True},
            {"commit": "f6e"}, {"commit": None, "dirty": None}]
    assert provenance(runs) == ("commit abc (clean): 2 runs; commit def (**dirty**: uncommitted changes): 1 run; "
                                "commit f6e (clean or dirty: not recorded): 1 run; no git checkout: 1 run")


def _bench(folder_data, out, *args):
    return CliRunner().invoke(cli, ["bench", "--preset", "smoke", "--data", str(folder_data), "--out", str(out),
                                    *args], catch_exceptions=False)


def test_bench_cli_writes_results_report_and_resumes(folder_data, tmp_path):
    out = tmp_path / "bench"
    result = _bench(folder_data, out, "--methods", "none,memseg")
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert runs == ["memseg-few2-seed0.json", "memseg-zero-seed0.json", "none-few2-seed0.json"]
    record = json.loads((out / "runs" / "memseg-few2-seed0.json").read_text())
    assert record["run"] == {"method": "memseg", "setting": "few", "shots": 2, "seed": 0}
    assert 0 <= record["metrics"]["ap"] <= 1 and 0 <= record["metrics"]["auroc"] <= 1
    assert len(record["scores"]["test"]) == record["data"]["test"]["images"] == len(record["scores"]["test_labels"])
    assert record["training_set"]["counts"]["real"] == 6 and record["training_set"]["counts"]["augmented"] > 0
    assert record["training_set"]["normals"]["sha256"] and torch.__version__.startswith(record["versions"]["torch"])
    assert "commit" in record and "validation normals" in record["threshold"]["rule"]
    assert record["dirty"] in (True, False, None) and "scikit-learn" in record["versions"]
    summary = (out / "summary.md").read_text()
    assert f"Source: {provenance([record] * 3)}." in summary  # the three runs came from this tree
    assert f"| none | — | not run: {NO_POSITIVES}" in summary and "| memseg | 1 |" in summary
    for name in ("pr-zero.png", "pr-few2.png", "positives-zero.png", "positives-few2.png"):
        assert PIL.Image.open(out / name).format == "PNG"
    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    again = _bench(folder_data, out, "--methods", "none,memseg")
    assert again.exit_code == 0 and again.output.count("done before") == 3
    assert {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")} == before
    narrower = _bench(folder_data, out, "--methods", "memseg", "--settings", "few", "--seeds", "0,1")
    assert narrower.output.count("done before") == 1 and (out / "runs" / "memseg-few2-seed1.json").is_file()
    assert "| memseg | 2 |" in (out / "summary.md").read_text()  # the report covers the runs asked for
    other = _bench(folder_data, tmp_path / "other", "--methods", "memseg", "--settings", "few")
    twin = json.loads((tmp_path / "other" / "runs" / "memseg-few2-seed0.json").read_text())
    assert other.exit_code == 0 and twin["scores"] == record["scores"]  # the same seed gives the same run


def test_bench_diffusion_trains_on_the_runs_own_defects(folder_data, tmp_path):
    result = _bench(folder_data, tmp_path, "--methods", "diffusion,inout", "--settings", "zero,few")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.json")) == ["diffusion-few2-seed0.json",
                                                                          "inout-few2-seed0.json"]
    assert "| diffusion | — | not run: needs Stable Diffusion weights" in (tmp_path / "summary.md").read_text()
    bank = tmp_path / "banks" / "few2-seed0"
    assert len((bank / "bank" / "manifest.jsonl").read_text().splitlines()) == 4
    assert len(list((bank / "masks").glob("*.png"))) == 2  # the masks of the 2 shots, no other defect's
    other = _bench(folder_data, tmp_path, "--methods", "diffusion", "--settings", "few",
                   "--set", "ddpm_overrides={'steps': 3}")
    assert other.exit_code != 0 and "holds a ddpm model made with other settings" in other.output


def test_bench_cli_errors_are_one_line(folder_data, tmp_path):
    result = CliRunner().invoke(cli, ["bench", "--preset", "paper", "--data", str(folder_data), "--out",
                                      str(tmp_path)])
    assert result.exit_code != 0 and "pass --weights PATH" in result.output and "Traceback" not in result.output
    config = tmp_path / "c.json"
    config.write_text("{}")
    both = CliRunner().invoke(cli, ["bench", str(config), "--preset", "cpu", "--data", str(folder_data),
                                    "--out", str(tmp_path)])
    assert both.exit_code != 0 and "not both" in both.output


@pytest.mark.realdata
def test_smoke_preset_on_magnetic_tile(magnetic_tile, tmp_path):
    result = _bench(magnetic_tile, tmp_path, "--methods", "memseg", "--settings", "few")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "runs" / "memseg-few2-seed0.json").read_text())
    assert record["data"]["test"]["images"] == 404 and record["data"]["test"]["defects"] == 118
    assert record["data"]["validation"] == {**record["data"]["validation"], "images": 133, "defects": 0}
    assert np.isfinite(record["scores"]["test"]).all()


def test_any_timm_model_trains_from_a_local_weights_file(folder_data, tmp_path):
    timm = pytest.importorskip("timm")
    source = timm.create_model("resnet18", pretrained=False)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    config = BenchConfig.preset("paper", model="resnet18", weights=str(tmp_path / "resnet18.pth"), frozen_blocks=1)
    model = create_classifier(config, seed=0)
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.out_features == 1
    assert not any(p.requires_grad for p in model.layer1.parameters()) and model.layer2[0].conv1.weight.requires_grad
    result = _bench(folder_data, tmp_path / "out", "--methods", "memseg", "--settings", "few", "--model", "resnet18",
                    "--weights", str(tmp_path / "resnet18.pth"), "--set", "image_size=(64, 48)")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "runs" / "memseg-few2-seed0.json").read_text())
    assert record["config"]["model"] == "resnet18" and record["config"]["image_size"] == [64, 48]
