"""Classification metrics (scikit-learn's, checked against hand-computed cases) and the benchmark figures."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from inout_aug.bench.metrics import (
    auroc,
    average_precision,
    best_f1_threshold,
    check_scores,
    mean_std,
    precision_recall_curve,
    scores_at,
    threshold_at_false_alarm_rate,
)
from inout_aug.bench.plots import positives_figure, pr_curve_figure, write_pr_curves

LABELS, SCORES = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]


def _random_pair(seed: int, n: int = 60, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels with a few positives and scores that separate them by ``shift``, rounded to make ties."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    labels[:2] = [0, 1]
    return labels, np.round(rng.normal(size=n) + shift * labels, 1)


def test_ap_and_auroc_on_scikit_learns_documented_example():
    assert average_precision(LABELS, SCORES) == pytest.approx(0.8333333333)
    assert auroc(LABELS, SCORES) == pytest.approx(0.75)
    assert average_precision(np.array(LABELS), torch.tensor(SCORES)) == pytest.approx(0.8333333333)


def test_perfect_ranking_and_all_equal_scores():
    assert average_precision([0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5]) == 1.0
    assert auroc([0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5]) == 1.0
    assert auroc([0, 0, 1, 1, 1], [0.5, 0.4, 0.3, 0.2, 0.1]) == 0.0
    assert average_precision([0, 1, 0, 0, 1], [0.7] * 5) == pytest.approx(0.4)
    assert auroc([0, 1, 0, 0, 1], [0.7] * 5) == 0.5


def test_ties_count_as_one_threshold_and_half_a_win():
    # Thresholds 0.9 (1 positive, 1 negative) then 0.2 (all): AP = 0.5 * 0.5 + 0.5 * 0.5.
    assert average_precision([1, 0, 1, 0], [0.9, 0.9, 0.2, 0.2]) == pytest.approx(0.5)
    # Wins of positive over negative: 0.9 vs 0.9 (1/2), 0.9 vs 0.2 (1), 0.2 vs 0.9 (0), 0.2 vs 0.2 (1/2).
    assert auroc([1, 0, 1, 0], [0.9, 0.9, 0.2, 0.2]) == pytest.approx(0.5)
    assert auroc([1, 0, 1, 0], [0.9, 0.9, 0.3, 0.2]) == pytest.approx(0.625)


def test_ap_and_auroc_ignore_monotone_transforms_of_the_scores():
    labels, scores = _random_pair(0)
    for transformed in (np.exp(3 * scores), 10 * scores - 4, np.arctan(scores)):
        assert average_precision(labels, transformed) == pytest.approx(average_precision(labels, scores))
        assert auroc(labels, transformed) == pytest.approx(auroc(labels, scores))
    assert average_precision(labels, -scores) < average_precision(labels, scores)


def test_precision_recall_curve_matches_scikit_learn():
    precision, recall, thresholds = precision_recall_curve(LABELS, SCORES)
    np.testing.assert_allclose(precision, [0.5, 2 / 3, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(recall, [1.0, 1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(thresholds, [0.1, 0.35, 0.4, 0.8])
    labels, scores = _random_pair(1)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    assert (precision[-1], recall[-1]) == (1.0, 0.0) and recall[0] == 1.0
    assert len(precision) == len(recall) == len(thresholds) + 1 == len(np.unique(scores)) + 1
    assert (np.diff(recall) <= 0).all() and (np.diff(thresholds) > 0).all()
    for p, r, t in zip(precision, recall, thresholds):
        counts = scores_at(labels, scores, t)
        assert (counts["precision"], counts["recall"]) == pytest.approx((p, r))


def test_scores_at_counts_and_f1():
    result = scores_at(LABELS, SCORES, 0.35)
    assert {k: result[k] for k in ("tp", "fp", "fn", "tn")} == {"tp": 2, "fp": 1, "fn": 0, "tn": 1}
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == 1.0
    assert result["f1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1)) and result["threshold"] == 0.35
    nothing = scores_at(LABELS, SCORES, 0.9)
    assert (nothing["precision"], nothing["recall"], nothing["f1"], nothing["fn"], nothing["tn"]) == (0, 0, 0, 2, 2)
    assert isinstance(nothing["tp"], int) and isinstance(nothing["f1"], float)


def test_best_f1_threshold_beats_every_other_threshold():
    for seed in range(5):
        labels, scores = _random_pair(seed, shift=0.8)
        best = best_f1_threshold(labels, scores)
        assert best in scores
        best_f1 = scores_at(labels, scores, best)["f1"]
        assert all(best_f1 >= scores_at(labels, scores, t)["f1"] for t in np.r_[scores, scores.max() + 1])
    assert best_f1_threshold(LABELS, SCORES) == 0.35


def test_threshold_at_false_alarm_rate():
    normal = np.random.default_rng(0).normal(size=100)
    t = threshold_at_false_alarm_rate(normal, 0.05)
    assert t in normal and (normal >= t).sum() == 5
    assert threshold_at_false_alarm_rate(torch.tensor(normal), 0.05) == t
    assert (normal >= threshold_at_false_alarm_rate(normal, 0.0)).sum() == 0
    assert threshold_at_false_alarm_rate([1.0, 2.0, 2.0, 3.0], 0.5) == 3.0  # 2.0 would flag 3 of 4
    assert threshold_at_false_alarm_rate([1.0, 2.0, 2.0, 3.0], 0.75) == 2.0
    assert threshold_at_false_alarm_rate([4.0, 4.0], 0.4) > 4.0
    with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\)"):
        threshold_at_false_alarm_rate(normal, 1.0)
    with pytest.raises(ValueError, match="no normal scores"):
        threshold_at_false_alarm_rate([], 0.05)


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"differ in length \(3 vs 2\)"):
        check_scores([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="are empty"):
        auroc([], [])
    with pytest.raises(ValueError, match=r"must be 0 \(normal\) or 1 \(defective\), found \[0, 2\]"):
        average_precision([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        scores_at([0, 1], [0.1, float("nan")], 0.5)
    with pytest.raises(ValueError, match="1-D"):
        check_scores([[0, 1]], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="needs at least one defective"):
        average_precision([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="AUROC needs both classes, got 2 defective and 0 normal"):
        auroc([1, 1], [0.1, 0.2])


def test_mean_std():
    assert mean_std([1, 2, 3]) == (2.0, 1.0)
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_pr_curve_figure_draws_scikit_learns_curve_per_seed_and_the_mean_ap(tmp_path):
    curves = {"memseg": [(LABELS, SCORES)], "none": [_random_pair(0, shift=0.3), _random_pair(1, shift=0.3)]}
    figure = pr_curve_figure(curves, "test", size=(400, 300))
    lines = figure.axes[0].lines
    assert len(lines) == 1 + 3 and lines[0].get_ydata()[0] == 0.5  # the chance line, then one curve per seed
    np.testing.assert_allclose(lines[1].get_xdata(), [1.0, 1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(lines[1].get_ydata(), [0.5, 2 / 3, 0.5, 1.0, 1.0])
    assert lines[1].get_drawstyle() == "steps-post"  # precision holds back to the previous recall: area = AP
    assert lines[2].get_color() == lines[3].get_color() != lines[1].get_color()  # a colour per method
    aps = [average_precision(*pair) for pair in curves["none"]]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [
        "chance: AP 0.500", "memseg: AP 0.833",
        f"none: AP {np.mean(aps):.3f} ± {np.std(aps, ddof=1):.3f} over 2 seeds"]
    path = write_pr_curves(curves, "test", tmp_path / "figs" / "pr.png", size=(400, 300))
    with PIL.Image.open(path) as image:
        assert image.format == "PNG" and image.size == (400, 300)
    assert path.read_bytes() == write_pr_curves(curves, "test", tmp_path / "again.png", size=(400, 300)).read_bytes()
    with pytest.raises(ValueError, match="no curves"):
        pr_curve_figure({}, "test")
    with pytest.raises(ValueError, match=r"without \(labels, scores\) pairs: \['memseg'\]"):
        pr_curve_figure({"none": curves["none"], "memseg": []}, "test")


def test_positives_figure_rows_and_masks():
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (1, 40, 50), dtype=torch.uint8, generator=g)
    rgb = torch.randint(0, 256, (3, 30, 30), dtype=torch.uint8, generator=g)
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask[10:30, 10:40] = True
    one = positives_figure({"memseg": [(grey, None), (rgb, None)]}, tile=32, columns=4)
    two = positives_figure({"memseg": [(grey, None), (rgb, None)], "none": []}, tile=32, columns=4)
    assert one.dtype == torch.uint8 and one.shape[0] == 3 and two.shape[1] > one.shape[1]
    assert two.shape[2] == one.shape[2]
    masked = positives_figure({"memseg": [(grey, mask), (rgb, None)]}, tile=32, columns=4)
    assert masked.shape == one.shape and not torch.equal(masked, one)
    changed = (masked != one).any(0)
    assert masked[0][changed].float().mean() > one[0][changed].float().mean()  # redder where the mask lies
    many = positives_figure({"memseg": [(rgb, None)] * 20}, tile=32, columns=4)
    assert many.shape == one.shape  # at most ``columns`` tiles per row
    with pytest.raises(ValueError, match="no rows"):
        positives_figure({})
    with pytest.raises(ValueError, match="does not match its image"):
        positives_figure({"memseg": [(grey, mask[:20])]})
