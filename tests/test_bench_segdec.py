"""The segmentation–decision network of the benchmark: model, loss, schedule, weights, pixel metrics, a smoke run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from helpers import scratch_surfaces
from inout_aug import Augmenter
from inout_aug.bench.config import BenchConfig
from inout_aug.bench.data import open_bench_data
from inout_aug.bench.report import markdown, mask_supervision, summarize
from inout_aug.bench.runner import PLAN_FIELDS, Benchmark, Run
from inout_aug.bench.segdec import (
    aupro,
    content_box,
    create_segdec,
    distance_weights,
    mask_known,
    pixel_targets,
    seg_weight,
    segdec_loss,
    train_segdec,
)
from inout_aug.core.augmenter import Made, Outcome
from inout_aug.data.training import TrainingSet
from inout_aug_cli.main import cli

pytest.importorskip("timm")


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory) -> Path:
    """A folder layout of 16 normal surfaces and 8 with a dark scratch (masks given), 48x48 grey."""
    return scratch_surfaces(tmp_path_factory.mktemp("surfaces"), normals=16, defects=8)


@pytest.fixture(scope="module")
def model():
    return create_segdec(BenchConfig.preset("smoke", detector="segdec", frozen_blocks=2), seed=0)


def test_the_maps_are_at_an_eighth_and_the_decision_gives_one_logit(model):
    for size in ((64, 48), (32, 32)):  # 32 px: a 4x4 map that the decision head still pools
        logits, seg = model(torch.randn(2, 3, *size))
        assert logits.shape == (2, 1) and seg.shape == (2, 1, size[0] // 8, size[1] // 8)
    assert model.frozen and not any(p.requires_grad for part in model.frozen for p in part.parameters())
    again = create_segdec(BenchConfig.preset("smoke", detector="segdec", frozen_blocks=2), seed=0)
    assert torch.equal(model.fc.weight, again.fc.weight) and torch.equal(model.seg_map.weight, again.seg_map.weight)


def test_the_decision_gradient_stops_before_the_segmentation(model):
    model.zero_grad(set_to_none=True)
    model.train()
    logits, _ = model(torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    assert model.fc.weight.grad is not None and model.decision[1][0].weight.grad.abs().sum() > 0
    upstream = [*model.seg_features.parameters(), *model.seg_map.parameters(), *model.encoder.parameters()]
    assert all(p.grad is None for p in upstream)
    model.zero_grad(set_to_none=True)
    _, seg = model(torch.randn(2, 3, 32, 32))
    seg.sum().backward()  # the pixel loss does train the encoder
    assert model.seg_map.weight.grad is not None and model.encoder.blocks_4[0].conv_pw.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_weak_labels_get_no_pixel_loss_but_their_image_loss():
    mask = torch.zeros(4, 16, 16, dtype=torch.bool)
    mask[1, 3:8, 5:12] = True
    batch = {"label": torch.tensor([0, 1, 1, 1]), "mask": mask, "has_mask": torch.tensor([True, True, True, False])}
    known = mask_known(batch)  # normal, masked defect, weak (label 1, empty mask), defect without a mask
    assert known.tolist() == [True, True, False, False]
    target, weights = pixel_targets(mask, (4, 4))
    # Max pooled: a cell with any defect pixel (row 3 alone in the first row of cells) is defective.
    assert target[1, 0].tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert weights[1, 0].tolist() == np.ones((4, 4)).tolist()  # a region 2 cells thick: all at distance 1
    seg = torch.randn(4, 1, 4, 4, requires_grad=True)
    logits = torch.randn(4, 1, requires_grad=True)
    loss, seg_loss, cls_loss = segdec_loss(logits, seg, batch["label"], target, weights, known, lam=0.5)
    loss.backward()
    assert seg.grad[0].abs().sum() > 0 and seg.grad[1].abs().sum() > 0
    assert seg.grad[2].abs().sum() == 0 and seg.grad[3].abs().sum() == 0  # δ = 0
    assert (logits.grad.abs() > 0).all()  # every sample has its image loss
    assert loss.item() == pytest.approx(0.5 * seg_loss.item() + 0.5 * cls_loss.item())
    only_image = segdec_loss(logits, seg, batch["label"], target, weights, torch.zeros(4, dtype=torch.bool), 0.5)
    assert only_image[1].item() == 0


class WeakLabels(Augmenter):
    """Replaces every image by itself with an empty mask: a weak label, as a txt2img bank entry is."""

    name = "test_segdec_weak"

    def make_params(self, image):
        return {}

    def transform(self, image, params):
        n, _, h, w = image.shape
        return Made(image.clone(), torch.zeros(n, h, w, dtype=torch.bool), torch.full((n,), Outcome.REPLACED))


def test_training_counts_weak_labels_and_trains_their_decision_only(surfaces):
    config = BenchConfig.preset("smoke", detector="segdec", image_size=(32, 32), epochs=2)
    data = open_bench_data(surfaces, config.image_size, config.val_fraction)
    dataset = TrainingSet(data.train, "few", shots=2, augmenter=WeakLabels(seed=0), online=False)
    history = train_segdec(create_segdec(config, seed=0), dataset, config, seed=0, augmenter=dataset.augmenter)
    weak = dataset.counts()["augmented"]
    assert [e["weak"] for e in history] == [weak, weak] and weak > 0
    assert [e["positives"] for e in history] == [weak + 6] * 2 and [e["lambda"] for e in history] == [1, 0.5]
    assert all(np.isfinite([e["loss"], e["seg_loss"], e["cls_loss"]]).all() for e in history)


def test_pixels_are_scored_inside_the_image_not_in_its_reflected_margins(surfaces):
    data = open_bench_data(surfaces, (64, 32), 0.2)  # 48x48 images fit as 32x32, 16 rows of margin above and below
    assert content_box(data.test, data.test.records[0]) == (16, 0, 32, 32)
    squashed = open_bench_data(surfaces, (64, 32), 0.2, resize="squash")
    assert content_box(squashed.test, squashed.test.records[0]) == (0, 0, 64, 32)


def test_lambda_hands_the_loss_from_pixels_to_the_image_linearly():
    assert seg_weight(0, 5) == 1 and seg_weight(1, 5) == pytest.approx(0.8) and seg_weight(4, 5) == pytest.approx(0.2)
    assert seg_weight(2.5, 5) == pytest.approx(0.5)  # interpolated within an epoch
    assert seg_weight(0.5, 1) == pytest.approx(0.5)  # one epoch still trains the decision head


def test_distance_weights_are_highest_at_a_defects_centre_and_one_on_background():
    mask = np.zeros((12, 12), bool)
    mask[1:6, 1:6] = True  # a 5x5 square
    mask[9, 2:10] = True  # a 1-pixel line, its own region
    weights = distance_weights(mask)
    assert weights[3, 3] == 1 and weights[1, 1] == pytest.approx((1 / 3) ** 2) and weights[2, 3] == pytest.approx(
        (2 / 3) ** 2)
    assert (weights[~mask] == 1).all() and (weights[9, 2:10] == 1).all()
    assert distance_weights(np.zeros((4, 4), bool)).tolist() == np.ones((4, 4)).tolist()


def test_aupro_of_maps_of_any_size_matches_anomalib():
    from anomalib.metrics.aupro import _AUPRO

    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, 2:6, 2:9] = True
    masks[0, 10:12, 10:15] = True
    masks[1, 5:9, 5:9] = True
    scores = torch.rand(3, 16, 16, generator=g) + masks * torch.rand(3, 16, 16, generator=g)
    reference = _AUPRO(fpr_limit=0.3)
    reference.update(scores, masks.int())
    assert aupro(list(scores), list(masks)) == pytest.approx(float(reference.compute()), abs=1e-6)
    assert aupro([scores[0, :8], scores[1]], [masks[0, :8], masks[1]]) > 0  # sizes differ
    assert aupro(list(masks.float()), list(masks)) == pytest.approx(1.0)


def test_the_classifier_path_keeps_its_settings_names_and_digests(surfaces, tmp_path):
    config = BenchConfig.preset("smoke", methods=("memseg",))
    assert config.detector == "classifier"
    bench = Benchmark(config, surfaces, tmp_path)
    run = Run("memseg", "few", 0)
    assert bench.result_path(run) == tmp_path / "runs" / "memseg-few2-seed0.json"
    # The digest of a classifier run is the one computed before the detector setting existed.
    settings = {k: v for k, v in config.to_dict().items() if k not in (*PLAN_FIELDS, "detector")}
    before = json.dumps([settings, "memseg", "few", 0, bench.data.record()], sort_keys=True)
    assert bench.digest(run) == hashlib.sha256(before.encode()).hexdigest()[:16]
    other = Benchmark(BenchConfig.preset("smoke", methods=("memseg",), detector="segdec"), surfaces, tmp_path)
    assert other.result_path(run).name == "segdec-memseg-few2-seed0.json" and other.digest(run) != bench.digest(run)
    with pytest.raises(ValueError, match="detector must be one of classifier, segdec"):
        BenchConfig.preset("smoke", detector="unet")


def test_a_stored_classifier_run_is_still_reused(magnetic_tile):
    stored = Path(__file__).parents[1] / "benchmarks" / "results" / "magnetic_tile_cpu" / "runs"
    record = json.loads((stored / "none-few5-seed0.json").read_text())
    bench = Benchmark(BenchConfig.from_dict(record["config"]), magnetic_tile, "unused")
    assert bench.digest(Run("none", "few", 0)) == record["digest"]


def _memseg_few(surfaces, out, *args):
    """``inout-aug bench`` of memseg few-shot on the smoke preset."""
    return CliRunner().invoke(cli, ["bench", "--preset", "smoke", "--data", str(surfaces), "--out", str(out),
                                    "--methods", "memseg", "--settings", "few", *args], catch_exceptions=False)


def test_segdec_smoke_run_scores_pixels_draws_heatmaps_and_keeps_the_classifier_report(surfaces, tmp_path):
    def bench(*args):
        return _memseg_few(surfaces, tmp_path, *args)

    result = bench("--detector", "segdec")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "runs" / "segdec-memseg-few2-seed0.json").read_text())
    assert record["run"]["detector"] == "segdec" and record["config"]["detector"] == "segdec"
    found = record["metrics"]
    assert 0 <= found["ap"] <= 1 and 0 <= found["pixel_ap"] <= 1 and 0 <= found["aupro"] <= 1
    assert record["pixel"]["defective_images"] == record["data"]["test"]["defects"] > 0
    assert record["pixel"]["pixels"] == record["pixel"]["images"] * 64 * 64  # square images: no margins
    epoch = record["history"][0]
    assert epoch["lambda"] == 1 and epoch["weak"] == 0 and {"seg_loss", "cls_loss"} <= epoch.keys()
    assert PIL.Image.open(tmp_path / "heatmaps-segdec-memseg-few2-seed0.png").format == "PNG"
    summary = (tmp_path / "segdec-summary.md").read_text()
    assert "Detector: segmentation–decision network" in summary and "| pixel AP | AUPRO@0.3 |" in summary
    assert (tmp_path / "segdec-pr-few2.png").is_file() and not (tmp_path / "summary.md").exists()
    plain = bench()  # the classifier beside it, in the same folder
    assert plain.exit_code == 0, plain.output
    classifier = json.loads((tmp_path / "runs" / "memseg-few2-seed0.json").read_text())
    assert "detector" not in classifier["run"] and "pixel_ap" not in classifier["metrics"]
    summary = (tmp_path / "summary.md").read_text()
    assert "Classifier: efficientnet_lite0" in summary and "pixel AP" not in summary
    assert "Detector: segmentation–decision network" in (tmp_path / "segdec-summary.md").read_text()
    assert "With and without mask supervision" not in summary


def test_the_segdec_report_pairs_its_runs_with_the_classifiers_of_the_same_seed(surfaces, tmp_path):
    def bench(*args):
        return _memseg_few(surfaces, tmp_path, *args)

    assert bench("--detector", "segdec").exit_code == 0
    assert "With and without mask supervision" not in (tmp_path / "segdec-summary.md").read_text()
    assert bench().exit_code == 0  # the classifier's run of the same seed, then the segdec report again
    assert bench("--detector", "segdec").exit_code == 0
    segdec = json.loads((tmp_path / "runs" / "segdec-memseg-few2-seed0.json").read_text())["metrics"]["ap"]
    plain = json.loads((tmp_path / "runs" / "memseg-few2-seed0.json").read_text())["metrics"]["ap"]
    [row] = json.loads((tmp_path / "segdec-summary.json").read_text())["mask_supervision"]
    assert row["seeds"] == [0] and row["segdec"][0] == segdec and row["classifier"][0] == plain
    assert row["segdec_minus_classifier"]["mean"] == pytest.approx(segdec - plain)
    summary = (tmp_path / "segdec-summary.md").read_text()
    assert "### With and without mask supervision: image AP, segdec against the classifier" in summary
    row = f"| few2 | memseg | 1 | {plain:.3f} ± 0.000 | {segdec:.3f} ± 0.000 | {segdec - plain:+.3f} (1 seed"
    assert row in summary


def test_mask_supervision_pairs_only_the_seeds_both_detectors_have():
    def result(seed, ap, method="memseg"):
        return {"run": {"method": method, "setting": "few", "shots": 5, "seed": seed}, "metrics": {"ap": ap}}

    segdec = [result(0, 0.6), result(1, 0.7), result(2, 0.9), result(0, 0.5, "none")]
    classifier = [result(0, 0.5), result(1, 0.5), None, None]
    [row] = mask_supervision(segdec, classifier)
    assert row["method"] == "memseg" and row["seeds"] == [0, 1]
    assert row["segdec"][0] == pytest.approx(0.65) and row["classifier"][0] == pytest.approx(0.5)
    assert row["segdec_minus_classifier"]["mean"] == pytest.approx(0.15)
    assert row["segdec_minus_classifier"]["low"] < 0.15 < row["segdec_minus_classifier"]["high"]


def test_the_summary_shows_pixel_measures_only_where_runs_have_them():
    results = [{"run": {"method": "memseg", "setting": "few", "shots": 5, "seed": s}, "seconds": 1.0,
                "metrics": {"ap": 0.5, "auroc": 0.5, "precision": 0.4, "recall": 0.3, "f1": 0.2, "pixel_ap": 0.3 + s,
                            "aupro": None if s else 0.6}} for s in (0, 1)]
    row = summarize(results)[0]
    assert row["pixel_ap"] == pytest.approx((0.8, np.sqrt(0.5))) and "aupro" not in row
    assert "| memseg | 2 | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.400 ± 0.000 | 0.300 ± 0.000 | 0.200 ± 0.000 | " \
           "0.800 ± 0.707 | — |" in markdown([row], {}, ("few",), 5)


def test_segdec_refuses_all_folds():
    with pytest.raises(ValueError, match="all_folds pools image scores only"):
        BenchConfig.preset("smoke", detector="segdec", all_folds=True)
