"""Image-level metrics of a defect classifier whose scores are higher for "defective" (label 1): average precision,
AUROC, the precision-recall curve, counts at a threshold and thresholds chosen by F1 or by a false-alarm rate.
The definitions follow scikit-learn's, so numbers compare with published ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _as_array(values: Any) -> np.ndarray:
    """A numpy array of a list, array or (any-device) tensor."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def check_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as 1-D int64 in {0, 1} and ``scores`` as 1-D float64 of the same non-zero length; raises
    ValueError naming the problem otherwise."""
    labels, scores = _as_array(labels), _as_array(scores)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {labels.shape} and {scores.shape}; flatten them")
    if len(labels) != len(scores):
        raise ValueError(f"labels and scores differ in length ({len(labels)} vs {len(scores)}); pass one score "
                         "per labelled image")
    if len(labels) == 0:
        raise ValueError("labels and scores are empty; pass at least one scored image")
    if not np.isin(labels, (0, 1)).all():
        found = sorted(np.unique(labels).tolist())
        raise ValueError(f"labels must be 0 (normal) or 1 (defective), found {found}")
    scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ValueError(f"scores contain NaN at positions {np.flatnonzero(np.isnan(scores)).tolist()[:10]}; "
                         "fix the classifier output")
    return labels.astype(np.int64), scores


def _counts_per_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positive counts when predicting ``score >= t``, for each distinct score t in decreasing
    order (tied scores form one threshold): (tps, fps, thresholds)."""
    order = np.argsort(-scores, kind="mergesort")
    labels, scores = labels[order], scores[order]
    last_of_tie = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1]
    tps = np.cumsum(labels)[last_of_tie]
    fps = last_of_tie + 1 - tps
    return tps, fps, scores[last_of_tie]


def _need_positive(labels: np.ndarray, what: str) -> None:
    """Raise unless ``labels`` hold at least one positive."""
    if not labels.any():
        raise ValueError(f"{what} needs at least one defective (label 1) image; all {len(labels)} are normal")


def precision_recall_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) as scikit-learn returns them: one point per distinct score, thresholds
    increasing (so recall decreasing), then the end point precision 1, recall 0 with no threshold; precision[i]
    and recall[i] are those of predicting defective where ``score >= thresholds[i]``."""
    labels, scores = check_scores(labels, scores)
    _need_positive(labels, "a precision-recall curve")
    tps, fps, thresholds = _counts_per_threshold(labels, scores)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(labels: Any, scores: Any) -> float:
    """scikit-learn's ``average_precision_score``: sum over distinct thresholds, in decreasing order, of
    (R_n - R_{n-1}) * P_n; no interpolation."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve: the probability that a random defective image outscores a random normal one,
    ties counting one half (Mann-Whitney U over positives times negatives)."""
    labels, scores = check_scores(labels, scores)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUROC needs both classes, got {positives} defective and {negatives} normal images")
    _, tie_group, tie_counts = np.unique(scores, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(tie_counts) - (tie_counts - 1) / 2  # 1-based ranks, averaged within ties
    rank_sum = mean_rank[tie_group][labels == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def scores_at(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1 and the confusion counts of predicting defective where ``score >= threshold``;
    precision is 0 when nothing is predicted defective, F1 is 0 when precision + recall is 0."""
    labels, scores = check_scores(labels, scores)
    predicted = scores >= threshold
    actual = labels == 1
    tp, fp = int((predicted & actual).sum()), int((predicted & ~actual).sum())
    fn, tn = int((~predicted & actual).sum()), int((~predicted & ~actual).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "threshold": float(threshold)}


def best_f1_threshold(labels: Any, scores: Any) -> float:
    """The score that, used as threshold (``score >= t`` is defective), gives the highest F1 on these images;
    the highest such score on ties."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return float(thresholds[np.flatnonzero(f1 == f1.max())[-1]])


def threshold_at_false_alarm_rate(normal_scores: Any, rate: float) -> float:
    """The smallest normal score t such that at most a fraction ``rate`` (0 <= rate < 1) of ``normal_scores`` is
    >= t: an upper quantile, to set a decision threshold from held-out normal images alone. When even the
    highest score would flag too many, the next float above it (nothing flagged)."""
    normal = np.sort(_as_array(normal_scores).astype(np.float64).ravel())
    if len(normal) == 0:
        raise ValueError("no normal scores; pass the scores of held-out normal images")
    if np.isnan(normal).any():
        raise ValueError("normal scores contain NaN; fix the classifier output")
    if not 0 <= rate < 1:
        raise ValueError(f"rate must lie in [0, 1), got {rate}; e.g. 0.05 for 5% false alarms")
    candidates = np.unique(normal)
    flagged = (len(normal) - np.searchsorted(normal, candidates, side="left")) / len(normal)
    allowed = np.flatnonzero(flagged <= rate)
    if len(allowed) == 0:
        return float(np.nextafter(normal[-1], np.inf))
    return float(candidates[allowed[0]])


def mean_std(values: Any) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value) of ``values``."""
    values = _as_array(values).astype(np.float64).ravel()
    if len(values) == 0:
        raise ValueError("mean_std of no values; pass at least one (e.g. one AP per seed)")
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std
