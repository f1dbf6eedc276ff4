"""The classifier benchmark: config and presets, the plan of runs, the data views, training, reports, CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from helpers import scratch_surfaces
from inout_aug.bench.classifier import create_classifier, frozen_parts, model_input
from inout_aug.bench.config import BenchConfig, load_config
from inout_aug.bench.data import open_bench_data
from inout_aug.bench.features import IMAGENET_MEAN, IMAGENET_STD
from inout_aug.bench.metrics import average_precision
from inout_aug.bench.report import gap_share, markdown, paired_difference, provenance, ratio_sweeps, summarize
from inout_aug.bench.runner import (
    NO_POSITIVES,
    NO_REAL_DEFECTS,
    NO_SD_WEIGHTS,
    NOT_FULL,
    NOT_PADDED,
    Benchmark,
    Run,
    git_state,
    plan,
)
from inout_aug.core.io import lock, write_png
from inout_aug.core.settings import SettingsError
from inout_aug.data.layouts import KolektorSDD, open_dataset
from inout_aug_cli.main import cli


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    """A folder layout of 20 normal surfaces and 8 defective ones (dark scratches, with masks), 48x48 grey."""
    return scratch_surfaces(tmp_path_factory.mktemp("surfaces"), normals=20, defects=8)


def test_presets_and_config_errors(tmp_path):
    cpu = BenchConfig.preset("cpu")
    assert cpu.model == "efficientnet_lite0" and cpu.weights == "package" and cpu.seeds == (0, 1, 2, 3, 4)
    assert cpu.methods == ("none", "memseg", "diffusion", "inout") and cpu.settings == ("zero", "few", "full")
    assert cpu.full_methods == ("none",) and not cpu.all_folds
    paper = BenchConfig.preset("paper")
    assert (paper.model, paper.image_size, paper.epochs, paper.batch_size, paper.learning_rate) == \
        ("resnet50", (704, 256), 30, 32, 1e-4)
    with pytest.raises(ValueError, match="unknown benchmark preset 'fast'; choose one of paper, cpu, smoke"):
        BenchConfig.preset("fast")
    with pytest.raises(SettingsError, match=r"unknown benchmark setting epoch \(did you mean epochs\?\); valid: "):
        BenchConfig.preset("cpu", epoch=3)
    with pytest.raises(ValueError, match="settings must be among"):
        BenchConfig.preset("cpu", settings=("some",))
    with pytest.raises(ValueError, match="all_folds runs every fold as the test fold in turn"):
        BenchConfig.preset("cpu", all_folds=True, data_options={"fold": 1})
    with pytest.raises(ValueError, match="all_folds must be True or False"):
        BenchConfig.preset("cpu", all_folds="false")
    given = BenchConfig.preset("smoke", methods="memseg,none", settings="few", full_methods="memseg", seeds="1,2")
    assert (given.methods, given.settings, given.full_methods, given.seeds) == (("memseg", "none"), ("few",),
                                                                                  ("memseg",), (1, 2))
    assert BenchConfig.preset("smoke", seeds=3, in_ratios=0.25).seeds == (3,)  # a single value is a list of one
    for setting, message in [({"seeds": (0, 0, 1)}, "seeds holds 0 more than once"),
                             ({"settings": ("few", "few")}, "settings holds few more than once"),
                             ({"epochs": "abc"}, "epochs must be an integer, got 'abc'"),
                             ({"epochs": 2.7}, "epochs must be an integer, got 2.7"),
                             ({"learning_rate": float("nan")}, "learning_rate must be a finite number, got nan"),
                             ({"image_size": 64}, r"image_size must be \(height, width\) in pixels"),
                             ({"image_size": (64,)}, r"image_size must be \(height, width\)"),
                             ({"seeds": "a"}, "seeds must be a list of numbers")]:
        with pytest.raises(ValueError, match=message):
            BenchConfig.preset("smoke", **setting)
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
    not_full = NOT_FULL.format("none")
    assert skipped == {("none", "zero"): NO_POSITIVES, ("diffusion", "zero"): NO_SD_WEIGHTS,
                       ("inout", "zero"): NO_SD_WEIGHTS, ("memseg", "full"): not_full,
                       ("diffusion", "full"): not_full, ("inout", "full"): not_full}
    assert len(runs) == (1 + 4 + 1) * 5 and runs[0] == Run("memseg", "zero", 0)
    assert {(r.method, r.setting) for r in runs} == {("memseg", "zero"), ("none", "full")} | \
        {(m, "few") for m in ("none", "memseg", "diffusion", "inout")}
    assert [r.seed for r in runs if r.setting == "full"] == [0, 1, 2, 3, 4]  # the full-shot reference
    with_bank = BenchConfig.preset("cpu", method_params={"diffusion": {"bank": "/banks/{setting}-{seed}"}})
    assert not plan(with_bank)[1].keys() - {("none", "zero"), *(m for m in skipped if m[1] == "full")}
    assert not plan(BenchConfig.preset("paper"))[1].keys() - {("none", "zero"), ("diffusion", "zero"),
                                                              ("inout", "zero")}  # the paper runs all at full
    wider, skipped = plan(BenchConfig.preset("cpu", methods=("none", "none_unbalanced", "memseg"), seeds=(0,),
                                             full_methods=("none*",)))
    assert {(r.method, r.setting) for r in wider if r.method.startswith("none")} == \
        {(m, s) for m in ("none", "none_unbalanced") for s in ("few", "full")}
    assert skipped[("none_unbalanced", "zero")] == NO_POSITIVES and ("memseg", "full") in skipped
    sweep, skipped = plan(BenchConfig.preset("cpu", methods=("mem*",), settings=("zero",), seeds=(0,),
                                             in_ratios=(0, 0.25, 1)))
    assert [r.method for r in sweep] == ["memseg", "inout@0"] and set(skipped) == {("inout@0.25", "zero"),
                                                                                   ("inout@1", "zero")}
    assert sweep[1].in_ratio == 0.0 and sweep[1].augmenter_name == "inout" and sweep[0].name(5) == "memseg-zero-seed0"
    with pytest.raises(ValueError, match="no registered augmenter matches 'nope\\*'; registered: .*memseg"):
        plan(BenchConfig.preset("cpu", methods=("nope*",)))
    named = plan(BenchConfig.preset("cpu", methods=("inout@0.25",), settings=("few",), seeds=(0,)))[0]
    assert [(r.method, r.in_ratio, r.augmenter_name) for r in named] == [("inout@0.25", 0.25, "inout")]
    once = plan(BenchConfig.preset("cpu", methods=("inout@.25", "inout@0.5"), in_ratios=(0.25, 0.5, 0.75),
                                   settings=("few",), seeds=(0,)))[0]
    assert [r.method for r in once] == ["inout@0.25", "inout@0.5", "inout@0.75"]  # each ratio runs once
    with pytest.raises(ValueError, match=r"'inout@0.001': in_ratio 0.001 rounds to one side only"):
        plan(BenchConfig.preset("cpu", in_ratios=(0.001,)))
    with pytest.raises(ValueError, match="method_params names 'memsge', not a registered augmenter"):
        plan(BenchConfig.preset("cpu", method_params={"memsge": {"threshold": 0.4}}))
    for method in ("inout+memseg@1.5", "inout@abc", "memseg@0.5"):  # refused when planned, not when its run starts
        with pytest.raises(ValueError, match="@r sets InOutMix's in_ratio, a number in \\[0, 1\\]"):
            plan(BenchConfig.preset("cpu", methods=(method,)))


def test_augmenter_runs_without_a_slot_for_a_made_defect_are_left_out_with_the_reason(folder_data, tmp_path):
    config = BenchConfig.preset("smoke", methods=("none", "memseg"), full_methods=("*",), seeds=(0, 1),
                                positive_fraction=0.4)  # the 6 training defects, flipped, fill more than 40 %
    bench = Benchmark(config, folder_data, tmp_path)
    assert {(r.method, r.setting) for r in bench.runs} == {("none", "full"), ("none", "few"), ("memseg", "few"),
                                                           ("memseg", "zero")}
    reason = bench.skipped[("memseg", "full")]
    assert reason.startswith("no made defect: the real defects already fill ") and "would train exactly as " \
        "none" in reason
    wider = Benchmark(BenchConfig.preset("smoke", methods=("none", "memseg"), full_methods=("*",),
                                         positive_fraction=0.7), folder_data, tmp_path)
    assert ("memseg", "full") in {(r.method, r.setting) for r in wider.runs}  # at 70 % there are slots left


def test_inout_takes_another_in_side_and_transplant_needs_real_defects_at_their_scale():
    runs, skipped = plan(BenchConfig.preset("cpu", methods=("transplant", "inout+transplant"), seeds=(0,)))
    assert [(r.method, r.setting) for r in runs] == [("transplant", "few"), ("inout+transplant", "few")]
    assert skipped[("transplant", "zero")] == skipped[("inout+transplant", "zero")] == NO_REAL_DEFECTS
    run = runs[1]
    assert (run.augmenter_name, run.in_side, run.sources) == ("inout", "transplant", ("transplant", "memseg"))
    assert Run("inout@1", "few", 0).sources == ("diffusion",) and Run("none", "few", 0).sources == ()
    ratio = plan(BenchConfig.preset("cpu", methods=("inout+transplant@0.25",), settings=("few",), seeds=(0,)))[0][0]
    assert (ratio.in_side, ratio.in_ratio, ratio.sources) == ("transplant", 0.25, ("transplant", "memseg"))
    squashed = plan(BenchConfig.preset("cpu", methods=("transplant",), settings=("few",), resize="squash"))
    assert squashed == ([], {("transplant", "few"): NOT_PADDED})
    for wrong in ("memseg+transplant", "inout+nope"):
        with pytest.raises(ValueError, match=re.escape(f"{wrong!r}: only inout+X takes an in side X")):
            plan(BenchConfig.preset("cpu", methods=(wrong,)))


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


def test_a_holdout_of_the_training_split_stands_in_for_the_test_split(folder_data):
    data = open_bench_data(folder_data, (40, 32), val_fraction=0.2, holdout=0.25)
    training_split = {r.image for r in open_dataset(folder_data, "folder", "train").records}
    train, val, test = ({r.image for r in v.records} for v in (data.train, data.validation, data.test))
    assert test <= training_split and train <= training_split and val <= training_split  # no test-split image
    assert not (train & val or train & test or val & test) and len(train | val | test) == len(training_split)
    assert data.test.defects() and data.test.normals() and data.train.defects()
    assert {r.image for r in open_bench_data(folder_data, (40, 32), 0.2, holdout=0.25).test.records} == test


def test_the_data_hash_is_the_same_wherever_the_data_lives(folder_data, tmp_path):
    moved = shutil.copytree(folder_data, tmp_path / "elsewhere" / "surfaces")
    here, there = (open_bench_data(root, (40, 32), val_fraction=0.2).record() for root in (folder_data, moved))
    assert here == there
    (moved / "normal" / "n00.png").unlink()
    assert open_bench_data(moved, (40, 32), val_fraction=0.2).record() != here


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


#: t(0.975, 2) from a printed table, and the half-width of the 95 % paired interval of differences [0.1, 0.2, 0.3]:
#: their sd is 0.1.
T_2 = 4.302653
HALF = T_2 * 0.1 / np.sqrt(3)


def test_paired_differences_have_t_intervals_and_unresolved_ones_are_marked():
    found = paired_difference({0: 0.4, 1: 0.6, 2: 0.8, 3: 0.9}, {0: 0.3, 1: 0.4, 2: 0.5})
    assert found["seeds"] == [0, 1, 2] and found["mean"] == pytest.approx(0.2)
    assert (found["low"], found["high"]) == pytest.approx((0.2 - HALF, 0.2 + HALF), abs=1e-6)
    assert not found["resolved"]  # [-0.048, 0.448] contains 0
    tight = paired_difference({0: 0.4, 1: 0.52, 2: 0.64}, {0: 0.3, 1: 0.4, 2: 0.5})
    assert tight["resolved"] and tight["low"] == pytest.approx(0.12 - T_2 * 0.02 / np.sqrt(3), abs=1e-6)
    single = paired_difference({0: 0.5}, {0: 0.3})
    assert single["low"] is None and not single["resolved"] and paired_difference({0: 0.5}, {1: 0.3}) is None


def test_the_gap_share_is_a_ratio_of_paired_means_with_a_fieller_interval():
    few, full = {0: 0.3, 1: 0.4, 2: 0.5}, {0: 0.8, 1: 0.9, 2: 1.0}  # a gap of 0.5 for every seed
    found = gap_share({0: 0.4, 1: 0.6, 2: 0.8}, few, full)
    # With a constant gap the Fieller interval is the t interval of the gains over the gap.
    assert found["share"] == pytest.approx(0.4) and found["gap"] == pytest.approx(0.5)
    assert (found["low"], found["high"]) == pytest.approx(((0.2 - HALF) / 0.5, (0.2 + HALF) / 0.5), abs=1e-6)
    unsure = gap_share({0: 0.4, 1: 0.6, 2: 0.8}, few, {0: 0.8, 1: 0.0, 2: 0.6})  # the gap is not resolved
    assert unsure["share"] == pytest.approx(0.2 / 0.0667, rel=1e-2) and unsure["low"] is None


def test_summary_pairs_differences_by_seed_and_lists_skipped_pairs():
    few = [0.3, 0.4, 0.5]
    results = [_result("none", s, ap) for s, ap in enumerate(few)]
    results += [_result("memseg", s, ap + 0.1 + 0.02 * s) for s, ap in enumerate(few)]
    results += [_result("inout", s, ap + 0.1 * (s + 1)) for s, ap in enumerate(few)]
    results += [_result("none", s, ap + 0.5, "full") for s, ap in enumerate(few)]
    rows = summarize(results)
    memseg, inout = (next(r for r in rows if r["method"] == m) for m in ("memseg", "inout"))
    assert memseg["ap"] == pytest.approx((0.52, 0.12)) and memseg["vs"]["none"]["resolved"]
    assert set(memseg["vs"]) == {"none"} and set(inout["vs"]) == {"none", "memseg"}
    assert inout["vs"]["none"]["mean"] == pytest.approx(0.2) and not inout["vs"]["none"]["resolved"]
    assert inout["gap_share"]["share"] == pytest.approx(0.4) and memseg["gap_share"]["share"] == pytest.approx(0.24)
    none = next(r for r in rows if r["method"] == "none" and r["setting"] == "few")
    assert set(none["vs"]) == {"memseg"} and none["vs"]["memseg"]["mean"] == pytest.approx(-0.12)
    assert json.dumps(rows)  # plain JSON types only
    assert all(r["gap_share"] is None for r in rows if r["method"] == "none")
    table = markdown(rows, {("none", "zero"): NO_POSITIVES}, ("zero", "few", "full"), 5)
    assert "### few-shot (N = 5)" in table and "| memseg | 3 | 0.520 ± 0.120 |" in table
    inout_line = next(line for line in table.splitlines() if line.startswith("| inout |"))
    assert f"+0.200 [{0.2 - HALF:+.3f}, {0.2 + HALF:+.3f}] not resolved" in inout_line
    assert f"0.40 [{(0.2 - HALF) / 0.5:.2f}, {(0.2 + HALF) / 0.5:.2f}]" in inout_line
    memseg_line = next(line for line in table.splitlines() if line.startswith("| memseg |"))
    assert "+0.120 [" in memseg_line and "not resolved" not in memseg_line
    assert f"| none | — | not run: {NO_POSITIVES}" in table and "### full-shot" in table
    assert "(1 seed, not resolved)" in markdown(summarize(results[:1] + results[3:4]), {}, ("few",), 5)


def test_summary_compares_the_in_sides_and_what_memseg_adds_to_each():
    results = [_result(method, s, base + 0.01 * s * k)
               for k, (method, base) in enumerate([("none", 0.3), ("memseg", 0.5), ("diffusion", 0.4),
                                                   ("transplant", 0.35), ("inout", 0.6)]) for s in range(3)]
    rows = {r["method"]: r for r in summarize(results)}
    assert set(rows["diffusion"]["vs"]) == {"none", "memseg", "transplant"}
    assert set(rows["inout"]["vs"]) == {"none", "memseg", "diffusion"}  # inout+transplant did not run
    assert rows["diffusion"]["vs"]["transplant"]["mean"] == pytest.approx(0.05 - 0.01)
    table = markdown(list(rows.values()), {}, ("few",), 5)
    assert "| diffusion − transplant | +0.040 [" in table and "| inout − diffusion | +0.220 [" in table
    assert "| transplant − " not in table


def test_the_in_ratio_sweep_runs_from_memseg_to_the_in_side_and_is_paired_with_its_best_ratio():
    aps = {"memseg": [0.1, 0.2, 0.3], "inout+transplant@0.25": [0.6, 0.7, 0.8], "inout+transplant": [0.65] * 3,
           "transplant": [0.55] * 3, "inout": [0.4] * 3, "diffusion": [0.3] * 3}
    results = [_result(method, s, ap) for method, values in aps.items() for s, ap in enumerate(values)]
    results.append(_result("memseg", 0, 0.9, "zero"))
    sweeps = ratio_sweeps(results)
    assert len(sweeps) == 1 and json.dumps(sweeps)  # diffusion ran at no other ratio: no sweep for it
    sweep = sweeps[0]
    assert (sweep["setting"], sweep["in_side"], sweep["best"]) == ("few", "transplant", "inout+transplant@0.25")
    assert [(p["in_ratio"], p["method"]) for p in sweep["points"]] == [
        (0, "memseg"), (0.25, "inout+transplant@0.25"), (0.5, "inout+transplant"), (1, "transplant")]
    memseg, best, _, transplant = sweep["points"]
    assert best["vs_best"] is None and memseg["ap"] == pytest.approx((0.2, 0.1))
    assert memseg["vs_best"]["mean"] == pytest.approx(-0.5) and memseg["vs_best"]["resolved"]
    assert transplant["vs_best"]["mean"] == pytest.approx(-0.15) and not transplant["vs_best"]["resolved"]
    assert transplant["vs_best"]["high"] - transplant["vs_best"]["mean"] == pytest.approx(HALF)
    table = markdown(summarize(results), {}, ("zero", "few"), 5, sweeps=sweeps)
    assert "InOutMix's in_ratio with transplant as its in side (0: memseg alone, 1: transplant alone" in table
    assert "| 0.25 | inout+transplant@0.25 | 3 | 0.700 ± 0.100 | — |" in table
    assert f"| 1 | transplant | 3 | 0.550 ± 0.000 | -0.150 [{-0.15 - HALF:+.3f}, {-0.15 + HALF:+.3f}] not resolved |" \
        in table
    assert table.index("### few-shot") < table.index("InOutMix's in_ratio")  # under its setting
    assert "in_ratio" not in markdown(summarize(results), {}, ("zero", "few"), 5)


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
    assert runs == ["memseg-few2-seed0.json", "memseg-zero-seed0.json", "none-few2-seed0.json", "none-full-seed0.json"]
    record = json.loads((out / "runs" / "memseg-few2-seed0.json").read_text())
    baseline = json.loads((out / "runs" / "none-few2-seed0.json").read_text())
    counts = baseline["training_set"]["counts"]
    assert counts["copy"] > 0 and counts["augmented"] == 0 and baseline["training_set"]["oversample"]
    assert counts["normal"] == record["training_set"]["counts"]["normal"]  # the same balance as an augmented run
    assert counts["real"] + counts["copy"] == record["training_set"]["counts"]["real"] + \
        record["training_set"]["counts"]["augmented"]
    assert [e["images"] for e in baseline["history"]] == [e["images"] for e in record["history"]]
    assert baseline["history"][0]["positives"] == counts["real"] + counts["copy"]
    assert record["run"] == {"method": "memseg", "setting": "few", "shots": 2, "seed": 0}
    assert 0 <= record["metrics"]["ap"] <= 1 and 0 <= record["metrics"]["auroc"] <= 1
    assert len(record["scores"]["test"]) == record["data"]["test"]["images"] == len(record["scores"]["test_labels"])
    assert record["training_set"]["counts"]["real"] == 6 and record["training_set"]["counts"]["augmented"] > 0
    assert record["training_set"]["normals"]["sha256"] and torch.__version__.startswith(record["versions"]["torch"])
    assert "commit" in record and "validation normals" in record["threshold"]["rule"]
    flagged = sum(score >= record["threshold"]["value"] for score in record["scores"]["validation"])
    assert record["threshold"]["rule"].endswith(f"validation normals ({flagged} of them)")
    assert record["dirty"] in (True, False, None) and "scikit-learn" in record["versions"]
    summary = (out / "summary.md").read_text()
    assert f"Source: {provenance([record] * 4)}." in summary  # the four runs came from this tree
    assert f"| none | — | not run: {NO_POSITIVES}" in summary and "| memseg | 1 |" in summary
    assert "Balance and steps are equal for every method" in summary and "paired t interval" in summary
    assert f"| memseg | — | not run: {NOT_FULL.format('none')}" in summary and "### full-shot" in summary
    rows = json.loads((out / "summary.json").read_text())["rows"]
    few = next(r for r in rows if r["method"] == "memseg" and r["setting"] == "few")
    assert few["vs"]["none"]["seeds"] == [0] and few["gap_share"]["seeds"] == [0]
    for name in ("pr-zero.png", "pr-few2.png", "positives-zero.png", "positives-few2.png"):
        assert PIL.Image.open(out / name).format == "PNG"
    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    again = _bench(folder_data, out, "--methods", "none,memseg")
    assert again.exit_code == 0 and again.output.count("done before") == 4
    assert {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")} == before
    bench = Benchmark(BenchConfig.preset("smoke", methods=("none", "none_unbalanced")), folder_data, out)
    assert bench.training_set(Run("none_unbalanced", "few", 0))[0].counts()["copy"] == 0  # the real defects alone
    assert bench.digest(Run("none", "few", 0)) == baseline["digest"]
    narrower = _bench(folder_data, out, "--methods", "memseg", "--settings", "few", "--seeds", "0,1")
    assert narrower.output.count("done before") == 1 and (out / "runs" / "memseg-few2-seed1.json").is_file()
    assert "| memseg | 2 |" in (out / "summary.md").read_text()  # the report covers the runs asked for
    other = _bench(folder_data, tmp_path / "other", "--methods", "memseg", "--settings", "few")
    twin = json.loads((tmp_path / "other" / "runs" / "memseg-few2-seed0.json").read_text())
    assert other.exit_code == 0 and twin["scores"] == record["scores"]  # the same seed gives the same run


def test_a_run_is_redone_when_a_data_file_changes_in_place(folder_data, tmp_path):
    data, out = shutil.copytree(folder_data, tmp_path / "data"), tmp_path / "bench"
    assert _bench(data, out, "--methods", "none", "--settings", "few").exit_code == 0
    stored = out / "runs" / "none-few2-seed0.json"
    record = json.loads(stored.read_text())
    assert record["threads"] == torch.get_num_threads() and len(record["data_content"]) == 64
    mask = next((data / "masks").rglob("*.png"))
    corrected = torch.zeros((1, 48, 48), dtype=torch.uint8)
    corrected[:, 10:20, 10:20] = 255
    write_png(corrected, mask)  # a mask corrected in place, under its name: the same file list and labels
    again = _bench(data, out, "--methods", "none", "--settings", "few")
    assert again.exit_code == 0 and "done before" not in again.output
    redone = json.loads(stored.read_text())
    assert redone["data_content"] != record["data_content"]
    stored.write_text(json.dumps({k: v for k, v in redone.items() if k != "data_content"}))
    assert "done before" in _bench(data, out, "--methods", "none", "--settings", "few").output  # a run stored
    # before the files' bytes were recorded is taken on its file list, as it was then


@pytest.fixture(scope="module")
def ksdd_data(tmp_path_factory) -> Path:
    """A KolektorSDD tree of 9 items (kosNN/PartK.jpg, PartK_label.bmp) of 2 parts, 48x48 grey; in each of the 3
    folds (layout seed 0) two items have a dark scratch on Part0."""
    root = tmp_path_factory.mktemp("ksdd")
    g = torch.Generator().manual_seed(1)
    for n in range(9):
        for k in range(2):
            base = 120 + 20 * torch.rand((1, 12, 12), generator=g)
            image = torch.nn.functional.interpolate(base[None], size=(48, 48), mode="bilinear")[0, 0]
            (root / f"kos{n:02d}").mkdir(exist_ok=True)
            PIL.Image.fromarray(image.to(torch.uint8).numpy()).save(root / f"kos{n:02d}" / f"Part{k}.jpg")
            PIL.Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / f"kos{n:02d}" / f"Part{k}_label.bmp")
    by_fold: dict[int, list[str]] = {}
    for item, fold in KolektorSDD(root).item_folds().items():
        by_fold.setdefault(fold, []).append(item)
    for items in by_fold.values():
        for item in items[:2]:
            top = int(torch.randint(4, 36, (1,), generator=g))
            image = np.array(PIL.Image.open(root / item / "Part0.jpg"))
            mask = np.zeros((48, 48), np.uint8)
            mask[top:top + 6, 8:40] = 255
            PIL.Image.fromarray(np.where(mask > 0, 30, image).astype(np.uint8)).save(root / item / "Part0.jpg")
            PIL.Image.fromarray(mask).save(root / item / "Part0_label.bmp")
    return root


def test_a_validation_share_that_leaves_no_normal_on_either_side_is_refused(folder_data):
    with pytest.raises(ValueError, match=r"val_fraction 0.99 of the \d+ normal images of the training split leaves "
                                         r"0 to train on and \d+ to set the threshold: both need some"):
        open_bench_data(folder_data, (40, 32), val_fraction=0.99)
    with pytest.raises(ValueError, match=r"leaves \d+ to train on and 0 to set the threshold"):
        open_bench_data(folder_data, (40, 32), val_fraction=0.01)


def test_a_holdout_keeps_each_kolektorsdd_item_whole(ksdd_data):
    data = open_bench_data(ksdd_data, (48, 48), val_fraction=0.2, holdout=0.5)
    train, test = ({r.group for r in view.records} for view in (data.train, data.test))
    assert test and train and not train & test  # no item has images on both sides
    assert data.test.defects() and data.train.defects()


def test_bench_all_folds_tests_every_image_once_and_pools(ksdd_data, folder_data, tmp_path):
    out = tmp_path / "folds"
    result = _bench(ksdd_data, out, "--folds", "all", "--methods", "none", "--settings", "few")
    assert result.exit_code == 0, result.output
    records = [json.loads((out / f"fold{k}" / "runs" / "none-few2-seed0.json").read_text()) for k in range(3)]
    assert len({r["digest"] for r in records}) == 3 and [r["config"]["data_options"]["fold"] for r in records] == \
        [0, 1, 2]
    assert sum(r["data"]["test"]["images"] for r in records) == 18 and all(r["data"]["test"]["defects"] == 2
                                                                           for r in records)
    assert len({r["data"]["test"]["sha256"] for r in records}) == 3  # disjoint folds: each image tested once
    summary = json.loads((out / "summary.json").read_text())
    row = summary["rows"][0]
    labels = np.concatenate([r["scores"]["test_labels"] for r in records])
    scores = np.concatenate([r["scores"]["test"] for r in records])
    assert row["ap"][0] == pytest.approx(average_precision(labels, scores))  # AP over the pooled test scores
    assert [ap for ap, _ in row["fold_ap"]] == pytest.approx([r["metrics"]["ap"] for r in records])
    assert len(summary["folds"]) == 3 and (out / "fold1" / "summary.md").is_file()
    text = (out / "summary.md").read_text()
    assert "3 folds, each the test split once" in text and "| few2 | none |" in text
    again = _bench(ksdd_data, out, "--folds", "all", "--methods", "none", "--settings", "few")
    assert again.output.count("done before") == 3
    flat = _bench(folder_data, tmp_path / "flat", "--folds", "all")
    assert flat.exit_code != 0 and "needs a layout split by folds" in flat.output
    both = _bench(ksdd_data, tmp_path / "both", "--folds", "all", "-d", "fold=1")
    assert both.exit_code != 0 and "do not also set data_options fold" in both.output


def test_bench_diffusion_trains_on_the_runs_own_defects(folder_data, tmp_path, monkeypatch):
    result = _bench(folder_data, tmp_path, "--methods", "diffusion,inout", "--settings", "zero,few")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.json")) == ["diffusion-few2-seed0.json",
                                                                          "inout-few2-seed0.json"]
    assert "| diffusion | — | not run: needs Stable Diffusion weights" in (tmp_path / "summary.md").read_text()
    bank = tmp_path / "banks" / "few2-seed0"
    assert len((bank / "bank" / "manifest.jsonl").read_text().splitlines()) == 4
    assert len(list((bank / "masks").glob("*.png"))) == 2  # the masks of the 2 shots, no other defect's
    shots = json.loads((bank / "settings.json").read_text())["defects"]  # named within the data's folder
    assert len(shots) == 2 and all(name.startswith("defect/d") for name in shots)
    typo = _bench(folder_data, tmp_path / "typo", "--methods", "diffusion", "--settings", "few",
                  "--set", "ddpm_overrides={'stepz': 3}")
    assert typo.exit_code == 1 and "unknown ddpm setting stepz" in typo.output
    assert not (tmp_path / "typo" / "banks").exists()  # refused before any ddpm trained
    other = _bench(folder_data, tmp_path, "--methods", "diffusion", "--settings", "few",
                   "--set", "ddpm_overrides={'steps': 3}")
    assert other.exit_code != 0 and "holds a ddpm model made with other settings" in other.output
    untrained = tmp_path / "banks" / "few2-seed1"  # a run killed while its ddpm trained: only settings.json
    untrained.mkdir(parents=True)
    (untrained / "settings.json").write_text(json.dumps({"ddpm_preset": "other"}))
    resumed = _bench(folder_data, tmp_path, "--methods", "diffusion", "--settings", "few", "--seeds", "1")
    assert resumed.exit_code == 0, resumed.output  # its settings are not the lock of a model never made
    smaller = _bench(folder_data, tmp_path, "--methods", "diffusion", "--settings", "few", "--set", "bank_size=2")
    assert smaller.exit_code == 1 and "holds 4 defects from an earlier sweep, more than bank_size=2: give " \
        "bank_size=4 or more" in smaller.output
    (tmp_path / "runs" / "diffusion-few2-seed0.json").unlink()  # killed after its bank was made
    run_file = bank / "bank" / "run.json"
    settings = json.loads(run_file.read_text())
    for key in ("model", "masks"):  # as a sweep begun before bank paths were absolute recorded them
        settings["params"][key] = os.path.relpath(settings["params"][key], tmp_path.parent)
    run_file.write_text(json.dumps(settings))
    monkeypatch.chdir(tmp_path.parent)
    again = _bench(folder_data, tmp_path.name, "--methods", "diffusion", "--settings", "few")
    assert again.exit_code == 0, again.output  # the bank resumes from --out spelled another way


def test_bench_jobs_share_the_runs_between_processes_with_the_results_of_one(folder_data, tmp_path, capfd):
    args = ("--methods", "memseg,diffusion,inout", "--settings", "few", "--seeds", "0,1")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the threads each of the 2 processes below gets
        alone = _bench(folder_data, tmp_path / "alone", *args)
        torch.set_num_threads(2)
        capfd.readouterr()
        shared = _bench(folder_data, tmp_path / "shared", *args, "--jobs", "2")
    finally:
        torch.set_num_threads(threads)
    assert alone.exit_code == 0 and shared.exit_code == 0, shared.output
    logged = capfd.readouterr().err.splitlines()  # the processes' logs
    assert len([line for line in logged if line.endswith(": training")]) == 6  # each run made once
    assert len([line for line in logged if "ddpm for few2-seed" in line]) == 2  # each seed's ddpm trained once
    names = sorted(p.name for p in (tmp_path / "alone" / "runs").glob("*.json"))
    assert len(names) == 6 and sorted(p.name for p in (tmp_path / "shared" / "runs").glob("*.json")) == names
    for name in names:  # diffusion and inout of a seed share one ddpm bank, made once under its lock
        runs = [json.loads((tmp_path / where / "runs" / name).read_text()) for where in ("alone", "shared")]
        assert runs[0]["scores"] == runs[1]["scores"], name
    assert shared.output.count("done before") == 6  # the report's pass found every run made by the processes
    assert not list((tmp_path / "shared" / "runs").glob(".*"))  # no run's lock is left behind


def test_a_lock_excludes_another_holder_and_follows_its_file_when_the_holder_deletes_it(tmp_path):
    path = tmp_path / "runs" / ".run.lock"
    first = lock(path)
    assert first is not None and lock(path) is None  # a second open file, as another process's, is refused
    path.unlink()  # the holder deletes the file before releasing it
    second = lock(path)
    assert second is not None  # the file now at the path is free
    first.close()
    assert lock(path) is None  # still held, by the second
    second.close()
    assert lock(path) is not None


def test_a_claiming_process_leaves_the_runs_another_holds_and_takes_the_longest_first(folder_data, tmp_path):
    bench = Benchmark(BenchConfig.preset("smoke", methods=("none",), settings=("few", "full"), seeds=(0, 1)),
                      folder_data, tmp_path)
    held = lock(tmp_path / "runs" / ".none-few2-seed1.lock")
    try:
        results = bench.run_all(claim=True)
    finally:
        held.close()
    assert [(r["run"]["setting"], r["run"]["seed"]) for r in results] == [("full", 0), ("full", 1), ("few", 0)]
    assert not (tmp_path / "runs" / "none-few2-seed1.json").exists()
    assert [p.name for p in (tmp_path / "runs").glob(".*")] == [".none-few2-seed1.lock"]  # the others went with them
    assert [bench.cost(Run(m, s, 0)) for m, s in [("diffusion", "few"), ("inout", "few"), ("none", "full"),
                                                   ("memseg", "few")]] == [2, 2, 1, 0]
    given = Benchmark(BenchConfig.preset("smoke", method_params={"diffusion": {"bank": "B"}}), folder_data, tmp_path)
    assert given.cost(Run("diffusion", "few", 0)) == 0  # a bank given: no ddpm to train


def test_bench_transplant_copies_only_the_runs_own_shots_at_the_bench_scale(folder_data, tmp_path):
    config = BenchConfig.preset("smoke", methods=("transplant", "inout+transplant"), settings=("few",))
    bench = Benchmark(config, folder_data, tmp_path)
    run = bench.runs[1]
    mix = bench.augmenter(run)
    side = mix.sides["in"]
    shots = {r.image.name for r in bench.real_defects("few", 0)}
    assert len(shots) == 2 and {d.name for d in side.defects} == shots and side.fit == (64, 64)
    # The 48x48 sources are fitted into 64x64 as the bench's images are: 6-pixel scratches become 8 pixels.
    assert all(d.mask.any(1).sum() == 8 for d in side.defects)
    result = _bench(folder_data, tmp_path, "--methods", "transplant,inout+transplant", "--settings", "zero,few")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.json")) == ["inout+transplant-few2-seed0.json",
                                                                          "transplant-few2-seed0.json"]
    assert f"| transplant | — | not run: {NO_REAL_DEFECTS}" in (tmp_path / "summary.md").read_text()


def test_bench_cli_errors_are_one_line(folder_data, tmp_path):
    result = CliRunner().invoke(cli, ["bench", "--preset", "paper", "--data", str(folder_data), "--out",
                                      str(tmp_path)])
    assert result.exit_code != 0 and "pass --weights PATH" in result.output and "Traceback" not in result.output
    config = tmp_path / "c.json"
    config.write_text("{}")
    both = CliRunner().invoke(cli, ["bench", str(config), "--preset", "cpu", "--data", str(folder_data),
                                    "--out", str(tmp_path)])
    assert both.exit_code != 0 and "not both" in both.output
    unknown = _bench(folder_data, tmp_path / "m", "--model", "nosuchmodel")
    assert unknown.exit_code == 1 and "Error: unknown timm model 'nosuchmodel'" in unknown.output
    assert not (tmp_path / "m" / "runs").exists()  # refused before any run


def test_a_sweep_the_data_cannot_score_or_train_is_refused_before_any_run(tmp_path):
    from test_data_layouts import make_mvtec_category, write_image

    mvtec = make_mvtec_category(tmp_path / "bottle")  # a training split without defects
    for i in range(3, 12):  # normals enough to hold some out
        write_image(mvtec / "train" / "good" / f"{i:03d}.png", mode="RGB")
    few = _bench(mvtec, tmp_path / "few", "--methods", "memseg", "--settings", "zero,few")
    assert few.exit_code == 1 and "few-shot trains on real defects, and the split holds no defective image" in \
        few.output and not (tmp_path / "few" / "runs").exists()
    held = _bench(mvtec, tmp_path / "held", "--methods", "memseg", "--settings", "zero", "--set", "holdout=0.25")
    assert held.exit_code == 1 and "the holdout of the training split of" in held.output
    assert "holds no defective image, and AP needs some" in held.output and "or no holdout" in held.output


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
