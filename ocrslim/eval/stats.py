"""Paired comparisons of two models on the same samples: the drop of a metric and its bootstrap confidence interval.

Two models read the same pages or crops, so their per-sample results are paired: resampling samples (with
replacement, the same indices for both) and recomputing each metric gives the distribution of the drop
``100 · (reference − candidate)`` in points. The interval is the percentile interval of that distribution; a
gate passes a candidate when the interval's upper bound is within the allowed drop, which a noisy small set cannot
do by luck.

Rows are what :func:`ocrslim.eval.evaluate.score_det` / ``score_rec`` return with ``rows=True``: per det page
``(matched, care GT, care predictions)`` (hmean and e2e F1 are ``2 Σ matched / (Σ GT + Σ predictions)``), per
rec crop ``(exact, ci_alnum, 1−NED, CJK label)`` (accuracies and 1−NED are means; ``_cjk`` metrics over the CJK
crops only).

>>> ref = {"ids": ["a", "b", "c", "d"], "rec": [(1, 1, 1.0, 0), (1, 1, 1.0, 0), (0, 0, 0.5, 0), (1, 1, 1.0, 0)]}
>>> cand = {"ids": ["a", "b", "c", "d"], "rec": [(1, 1, 1.0, 0), (0, 0, 0.5, 0), (0, 0, 0.5, 0), (1, 1, 1.0, 0)]}
>>> d = paired_drop(ref, cand, "rec", "accuracy_ci_alnum", n_boot=200)
>>> d["drop"], d["hi"] >= d["drop"] >= d["lo"]
(25.0, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ocrslim.core.errors import ArtifactError

__all__ = ["METRICS", "metric_value", "paired_drop"]

#: metric name → (row kind, how it is computed from the rows)
METRICS: dict[str, tuple[str, str]] = {
    "hmean": ("det", "ratio"),
    "e2e_f1": ("e2e", "ratio"),
    "accuracy": ("rec", "col0"),
    "accuracy_ci_alnum": ("rec", "col1"),
    "one_minus_ned": ("rec", "col2"),
    "one_minus_ned_cjk": ("rec", "col2_cjk"),
}


def _arrays(rows: Mapping[str, Any], metric: str) -> np.ndarray:
    kind, _ = METRICS[metric]
    if kind not in rows:
        raise ArtifactError(f"rows: no {kind!r} rows for metric {metric} (present: {', '.join(rows)}).")
    arr = np.asarray(rows[kind], dtype=np.float64)
    return arr.reshape(len(arr), -1) if len(arr) else arr.reshape(0, 4)  # (no samples: an empty table)


def _values(arr: np.ndarray, metric: str, idx: np.ndarray) -> np.ndarray:
    """The metric on each resample ``idx`` (B × n sample indices) of ``arr``; NaN where undefined."""
    _, how = METRICS[metric]
    if how == "ratio":
        sums = arr[idx].sum(axis=1)  # B × 3
        den = sums[:, 1] + sums[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 2 * sums[:, 0] / den, np.nan)
    col = int(how[3])
    if how.endswith("_cjk"):
        weight = arr[:, 3][idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (arr[:, col][idx] * weight).sum(axis=1) / weight.sum(axis=1)
    return arr[:, col][idx].mean(axis=1)


def metric_value(rows: Mapping[str, Any], metric: str) -> float | None:
    """``metric`` over all rows (None where undefined, e.g. no CJK crop for ``one_minus_ned_cjk``)."""
    arr = _arrays(rows, metric)
    if not len(arr):
        return None
    v = float(_values(arr, metric, np.arange(len(arr))[None, :])[0])
    return None if np.isnan(v) else v


def paired_drop(ref: Mapping[str, Any], cand: Mapping[str, Any], kind: str, metric: str, *, n_boot: int = 2000,
                level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The drop ``100 · (ref − cand)`` of ``metric`` in points, with a paired percentile bootstrap interval.

    Args:
        ref, cand: the rows of the same samples (``ids`` in the same order) from the two models.
        kind: "det" or "rec" (which rows' ``ids`` pair up).
        metric: a key of :data:`METRICS`.
        n_boot: bootstrap resamples (seeded: the same rows give the same interval).
        level: two-sided confidence level of ``[lo, hi]``.

    Returns:
        ``{"ref", "cand", "drop", "lo", "hi", "n"}`` (values as fractions, drops in points); ``drop`` etc. None
        when the metric is undefined on these samples.

    Raises:
        ArtifactError: the two row sets are not the same samples.
    """
    if list(ref["ids"]) != list(cand["ids"]):
        raise ArtifactError(f"paired_drop: the two {kind} row sets are not the same samples "
                            f"({len(ref['ids'])} vs {len(cand['ids'])}). Evaluate both models on the same set.")
    a, b = _arrays(ref, metric), _arrays(cand, metric)
    n = len(a)
    out: dict[str, Any] = {"ref": metric_value(ref, metric), "cand": metric_value(cand, metric), "n": n}
    if n == 0 or out["ref"] is None or out["cand"] is None:
        return {**out, "drop": None, "lo": None, "hi": None}
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    drops = 100.0 * (_values(a, metric, idx) - _values(b, metric, idx))
    drops = drops[~np.isnan(drops)]
    tail = (1.0 - level) / 2 * 100
    drop = round(100.0 * (out["ref"] - out["cand"]), 3)
    if not len(drops):  # no resample defines the metric: no interval (a gate treats that as not shown)
        return {**out, "drop": drop, "lo": None, "hi": None}
    lo, hi = np.percentile(drops, [tail, 100 - tail])
    return {**out, "drop": drop, "lo": round(float(lo), 3), "hi": round(float(hi), 3)}
