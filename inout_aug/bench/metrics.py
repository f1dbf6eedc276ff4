"""Image-level metrics of a defect classifier whose scores are higher for "defective" (label 1): average precision,
AUROC and the precision-recall curve from scikit-learn, counts at a threshold, and thresholds chosen by F1 or by a
false-alarm rate on normal images."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch


def _sklearn() -> ModuleType:
    """``sklearn.metrics``, imported on first use (the ``bench`` extra)."""
    try:
        from sklearn import metrics
    except ImportError:
        raise ImportError("benchmark metrics need scikit-learn: pip install 'inout-aug[bench]'") from None
    return metrics


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


def _with_positive(labels: Any, scores: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_scores`, raising unless there is at least one positive (scikit-learn only warns)."""
    labels, scores = check_scores(labels, scores)
    if not labels.any():
        raise ValueError(f"{what} needs at least one defective (label 1) image; all {len(labels)} are normal")
    return labels, scores


def precision_recall_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's (precision, recall, thresholds): one point per distinct score, thresholds increasing, then
    the end point precision 1, recall 0 with no threshold; precision[i] and recall[i] are those of predicting
    defective where ``score >= thresholds[i]``."""
    labels, scores = _with_positive(labels, scores, "a precision-recall curve")
    return _sklearn().precision_recall_curve(labels, scores)


def average_precision(labels: Any, scores: Any) -> float:
    """scikit-learn's ``average_precision_score``: sum over distinct thresholds, in decreasing order, of
    (R_n - R_{n-1}) * P_n; no interpolation."""
    labels, scores = _with_positive(labels, scores, "average precision")
    return float(_sklearn().average_precision_score(labels, scores))


def auroc(labels: Any, scores: Any) -> float:
    """scikit-learn's ``roc_auc_score``: the probability that a random defective image outscores a random normal
    one, ties counting one half."""
    labels, scores = check_scores(labels, scores)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUROC needs both classes, got {positives} defective and {negatives} normal images")
    return float(_sklearn().roc_auc_score(labels, scores))


def scores_at(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1 and the confusion counts of predicting defective where ``score >= threshold``;
    precision is 0 when nothing is predicted defective, F1 is 0 when precision + recall is 0."""
    labels, scores = check_scores(labels, scores)
    tn, fp, fn, tp = (int(n) for n in _sklearn().confusion_matrix(labels, scores >= threshold, labels=[0, 1]).ravel())
    # By hand from the counts: scikit-learn's F1 is 2TP / (2TP + FP + FN), equal to 2PR / (P + R) but not to the
    # last bit, and the stored results used the latter.
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
    # By hand: no numpy quantile method gives "at most rate flagged" when scores tie.
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
