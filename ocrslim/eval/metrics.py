"""OCR metrics as small stateful objects: ``update`` per sample, ``summary`` at the end, ``reset`` to reuse.

- ``DetMetric``: text detection precision/recall/hmean under the ICDAR 2015 (Task 4.1) protocol.
- ``RecMetric``: word accuracy (exact and case-insensitive alphanumeric), 1 - normalized edit distance, CER;
  optionally exact accuracy and 1−NED per script of the label (CJK or not).
- ``E2EMetric``: end-to-end spotting precision/recall/F1 on top of the same detection matching.

``summary`` returns ``None`` for any ratio whose denominator is 0 (nothing to measure), never a made-up 0 or 1.

ICDAR 2015 matching, as in the official RRC ``script.py`` (``evaluate_method``), per image:

1. A prediction is "don't care" if, for some don't-care GT polygon (checked one at a time, in GT order, not
   their union), ``intersection_area / prediction_area > dontcare_area_thresh`` (strict ``>``; a zero-area
   prediction has ratio 0). Don't-care predictions are dropped from the prediction count.
2. For each GT in order, for each prediction in order: match them if neither is already matched, neither is
   don't care, and ``IoU > iou_thresh`` (strict ``>``, as the official ``iouMat[gtNum,detNum] > IOU_CONSTRAINT``;
   an IoU of exactly 0.5 does not match). This is greedy first-fit, not best-IoU or Hungarian matching.
3. Counts are accumulated over images and the ratios are taken at the end (micro average), as the official
   ``methodPrecision = matchedSum / numGlobalCareDet``.

Geometry differences from the official script (which uses the ``Polygon`` C library and rejects
non-clockwise or self-intersecting submissions): polygons are built with shapely, so point order does not
matter; an invalid polygon (self-intersecting "bow tie") is repaired with ``shapely.make_valid`` and only its
polygonal parts are kept; a polygon with fewer than 3 points, non-finite coordinates or no area left after
repair matches nothing (it still counts as a GT or a prediction). The union area is computed as
``area_gt + area_pred - intersection``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from rapidfuzz.distance import Levenshtein
from shapely.geometry.base import BaseGeometry

__all__ = [
    "DetImageResult",
    "DetMetric",
    "E2EImageResult",
    "E2EMetric",
    "RecMetric",
    "SCRIPTS",
    "has_cjk",
    "match_icdar15",
    "normalize_ci_alnum",
    "normalize_for_ned",
]

_NOT_ALNUM = re.compile(r"[^0-9a-z]")
# Han (unified ideographs, extension A, compatibility, extensions B and later), kana and Hangul syllables;
# CJK punctuation and full-width Latin forms are not counted, so "ＵＳＤ　７８" is not a CJK label.
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]")
# RecMetric's per-script groups, by the ground truth: a label with a CJK character, or one without any
# (Latin words, numbers, dates, prices). A mixed line such as "Generative 骂 决不" counts as CJK.
SCRIPTS = ("cjk", "latin")


def has_cjk(s: str) -> bool:
    """True if ``s`` holds a Chinese, Japanese or Korean character (see ``SCRIPTS``).

    >>> has_cjk("庆功版 Heydeguy"), has_cjk("USD 78.92"), has_cjk("（）")
    (True, False, False)
    """
    return _CJK.search(s) is not None


def normalize_for_ned(s: str) -> str:
    """Normalize text before edit-distance metrics (``one_minus_ned``, ``cer``): lower-case, letters and digits only.

    Like ``normalize_ci_alnum`` but Unicode-aware (``str.isalnum``), so Chinese characters are kept
    while case, spaces and punctuation are ignored. This matches how the reference figures in
    PROBE.md were scored (1−NED 0.976 on sroie_dev for PP-OCRv4 is reproduced only this way) and
    is the single place to change the normalization of ``RecMetric``'s edit-distance metrics.

    >>> normalize_for_ned("  Hello, \t World! ")
    'helloworld'
    """
    return "".join(ch for ch in s.lower() if ch.isalnum())


def normalize_ci_alnum(s: str) -> str:
    """Lower-case ``s`` and drop every character outside ``[0-9a-z]`` (the usual ICDAR word-recognition protocol).

    Used by ``RecMetric``'s ``accuracy_ci_alnum`` and by ``E2EMetric``. Only meaningful for Latin text: accented
    letters, CJK and spaces are removed, so two Chinese strings both normalize to ``""`` and compare equal.

    >>> normalize_ci_alnum("Hello, World!")
    'helloworld'
    """
    return _NOT_ALNUM.sub("", s.lower())


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


# --------------------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class DetImageResult:
    """One image's ICDAR 2015 matching.

    Attributes:
        pairs: matched ``(gt_index, pred_index)`` pairs, indices into the lists passed to ``update``, in match order.
        num_gt_care: GT polygons that are not don't care.
        num_pred_care: predictions not removed as overlapping don't-care GT.
        pred_dontcare: per prediction, True if it was removed as overlapping don't-care GT.
    """

    pairs: tuple[tuple[int, int], ...]
    num_gt_care: int
    num_pred_care: int
    pred_dontcare: tuple[bool, ...]

    @property
    def num_matched(self) -> int:
        """Number of matched pairs (true positives)."""
        return len(self.pairs)


def _to_geometry(points: np.ndarray) -> BaseGeometry | None:
    """Build a polygonal shapely geometry from a (K, 2) array; ``None`` if it has no usable area."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        # A caller bug (e.g. a flat 8-vector), not bad data: keep the traceback.
        raise ValueError(f"polygon must be a (K, 2) array of points, got shape {arr.shape}")
    if len(arr) < 3 or not np.isfinite(arr).all():
        return None
    geom: BaseGeometry = shapely.Polygon(arr)
    if not geom.is_valid:
        # make_valid may return a GeometryCollection of polygons plus stray lines; only the area matters here.
        parts = [p for p in shapely.get_parts(shapely.make_valid(geom)) if p.geom_type in ("Polygon", "MultiPolygon")]
        if not parts:
            return None
        geom = shapely.union_all(parts)
    return geom if geom.area > 0 else None


def _intersection_areas(a: Sequence[BaseGeometry | None], b: Sequence[BaseGeometry | None]) -> np.ndarray:
    """Pairwise intersection areas, shape (len(a), len(b)); only bbox-overlapping pairs reach shapely."""
    out = np.zeros((len(a), len(b)), dtype=np.float64)
    ia = np.array([i for i, g in enumerate(a) if g is not None], dtype=np.int64)
    ib = np.array([j for j, g in enumerate(b) if g is not None], dtype=np.int64)
    if ia.size == 0 or ib.size == 0:
        return out
    ga = np.empty(ia.size, dtype=object)
    ga[:] = [a[i] for i in ia]
    gb = np.empty(ib.size, dtype=object)
    gb[:] = [b[j] for j in ib]
    ba, bb = shapely.bounds(ga), shapely.bounds(gb)  # (n, 4): minx, miny, maxx, maxy
    overlap = (
        (ba[:, None, 0] < bb[None, :, 2])
        & (bb[None, :, 0] < ba[:, None, 2])
        & (ba[:, None, 1] < bb[None, :, 3])
        & (bb[None, :, 1] < ba[:, None, 3])
    )
    rows, cols = np.nonzero(overlap)
    if rows.size:
        out[ia[rows], ib[cols]] = shapely.area(shapely.intersection(ga[rows], gb[cols]))
    return out


def match_icdar15(
    gt_polys: Sequence[np.ndarray],
    gt_ignore: Sequence[bool],
    pred_polys: Sequence[np.ndarray],
    iou_thresh: float = 0.5,
    dontcare_area_thresh: float = 0.5,
) -> DetImageResult:
    """Match one image's predictions to its GT with the ICDAR 2015 rules (see the module docstring).

    Args:
        gt_polys: GT polygons, each a (K, 2) array of x, y points.
        gt_ignore: per GT polygon, True for don't care ("###").
        pred_polys: predicted polygons, each a (K, 2) array.
        iou_thresh: a pair matches if IoU is strictly greater than this.
        dontcare_area_thresh: a prediction is dropped if more than this fraction of its area lies in one
            don't-care GT polygon.

    Returns:
        The matched pairs and the care counts of this image.

    >>> box = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=np.float32)
    >>> match_icdar15([box], [False], [box]).pairs
    ((0, 0),)
    """
    if len(gt_polys) != len(gt_ignore):
        raise ValueError(f"gt_polys has {len(gt_polys)} polygons but gt_ignore has {len(gt_ignore)} flags")
    gts = [_to_geometry(p) for p in gt_polys]
    preds = [_to_geometry(p) for p in pred_polys]
    gt_area = np.array([0.0 if g is None else g.area for g in gts])
    pred_area = np.array([0.0 if g is None else g.area for g in preds])
    inter = _intersection_areas(gts, preds)

    dontcare_gt = [i for i, ign in enumerate(gt_ignore) if ign]
    pred_dontcare = [False] * len(preds)
    for j in range(len(preds)):
        if pred_area[j] <= 0:
            continue
        for i in dontcare_gt:
            if inter[i, j] / pred_area[j] > dontcare_area_thresh:
                pred_dontcare[j] = True
                break

    union = gt_area[:, None] + pred_area[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    gt_matched = [False] * len(gts)
    pred_matched = [False] * len(preds)
    pairs: list[tuple[int, int]] = []
    for i in range(len(gts)):
        for j in range(len(preds)):
            if gt_matched[i] or pred_matched[j] or gt_ignore[i] or pred_dontcare[j]:
                continue
            if iou[i, j] > iou_thresh:
                gt_matched[i] = pred_matched[j] = True
                pairs.append((i, j))

    return DetImageResult(
        pairs=tuple(pairs),
        num_gt_care=len(gts) - len(dontcare_gt),
        num_pred_care=len(preds) - sum(pred_dontcare),
        pred_dontcare=tuple(pred_dontcare),
    )


class DetMetric:
    """Text detection precision, recall and hmean under the ICDAR 2015 protocol, accumulated over images.

    Args:
        iou_thresh: a GT/prediction pair matches if IoU > this (strict, as the official script).
        dontcare_area_thresh: predictions with more than this fraction of their area inside one don't-care GT
            polygon are not counted.

    >>> m = DetMetric()
    >>> box = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=np.float32)
    >>> _ = m.update([box], [False], [box])
    >>> m.summary()
    {'precision': 1.0, 'recall': 1.0, 'hmean': 1.0, 'images': 1}
    """

    def __init__(self, iou_thresh: float = 0.5, dontcare_area_thresh: float = 0.5) -> None:
        self.iou_thresh = iou_thresh
        self.dontcare_area_thresh = dontcare_area_thresh
        self.reset()

    def reset(self) -> None:
        """Forget all images seen so far."""
        self.matched = 0
        self.num_gt_care = 0
        self.num_pred_care = 0
        self.images = 0
        self.rows: list[tuple[int, int, int]] = []  # per image: (matched, care GT, care predictions)

    def update(
        self, gt_polys: Sequence[np.ndarray], gt_ignore: Sequence[bool], pred_polys: Sequence[np.ndarray]
    ) -> DetImageResult:
        """Match one image and add its counts.

        Args:
            gt_polys: GT polygons, each (K, 2).
            gt_ignore: per GT polygon, True for don't care.
            pred_polys: predicted polygons, each (K, 2).

        Returns:
            The image's matching, with the matched ``(gt_index, pred_index)`` pairs.
        """
        result = match_icdar15(gt_polys, gt_ignore, pred_polys, self.iou_thresh, self.dontcare_area_thresh)
        self.matched += result.num_matched
        self.num_gt_care += result.num_gt_care
        self.num_pred_care += result.num_pred_care
        self.images += 1
        self.rows.append((result.num_matched, result.num_gt_care, result.num_pred_care))
        return result

    def summary(self) -> dict[str, float | int | None]:
        """Return ``{"precision", "recall", "hmean", "images"}``.

        precision = matched / care predictions, recall = matched / care GT, each ``None`` if its denominator
        is 0. hmean = 2 * matched / (care GT + care predictions), which equals 2PR / (P + R) whenever both are
        defined (and is 0 when P = R = 0, as the official script); it is ``None`` only when there is neither
        care GT nor a care prediction, so a model that predicts nothing scores hmean 0, not ``None``.
        """
        return {
            "precision": _ratio(self.matched, self.num_pred_care),
            "recall": _ratio(self.matched, self.num_gt_care),
            "hmean": _ratio(2 * self.matched, self.num_gt_care + self.num_pred_care),
            "images": self.images,
        }


# ------------------------------------------------------------------------------------------- recognition


class RecMetric:
    """Word recognition metrics accumulated over (prediction, ground truth) pairs.

    - ``accuracy``: exact string match.
    - ``accuracy_ci_alnum``: match after ``normalize_ci_alnum`` (lower-case, keep only [0-9a-z]).
    - ``one_minus_ned``: 1 - mean over samples of ``distance / max(len(pred), len(gt))`` (0 when both are
      empty), on ``normalize_for_ned`` text.
    - ``cer``: total edit distance / total GT characters, on ``normalize_for_ned`` text.

    Edit distance is the unit-cost Levenshtein distance (rapidfuzz).

    With ``by_script``, the summary also splits exact accuracy and 1−NED by the script of the ground truth
    (``SCRIPTS``: ``accuracy_cjk``, ``one_minus_ned_cjk``, ``samples_cjk`` over labels with a CJK character,
    the same with ``_latin`` over the others). ``accuracy_ci_alnum`` is not split: it drops CJK characters.

    >>> m = RecMetric()
    >>> m.update("abd", "abc")
    >>> m.summary()["cer"]
    0.3333333333333333
    """

    def __init__(self, by_script: bool = False) -> None:
        self.by_script = by_script
        self.reset()

    def reset(self) -> None:
        """Forget all samples seen so far."""
        self.samples = 0
        self.exact = 0
        self.ci_alnum = 0
        self.ned_sum = 0.0
        self.edit_sum = 0
        self.gt_chars = 0
        self.script = {s: {"samples": 0, "exact": 0, "ned_sum": 0.0} for s in SCRIPTS}
        self.rows: list[tuple[int, int, float, int]] = []  # per sample: (exact, ci_alnum, 1−NED, CJK label)

    def update(self, pred: str, gt: str) -> None:
        """Add one predicted string and its ground truth."""
        exact, ci_alnum = pred == gt, normalize_ci_alnum(pred) == normalize_ci_alnum(gt)
        self.samples += 1
        self.exact += exact
        self.ci_alnum += ci_alnum
        p, g = normalize_for_ned(pred), normalize_for_ned(gt)
        dist = Levenshtein.distance(p, g)
        longest = max(len(p), len(g))
        ned = dist / longest if longest else 0.0
        self.ned_sum += ned
        self.edit_sum += dist
        self.gt_chars += len(g)
        cjk = has_cjk(gt)
        group = self.script["cjk" if cjk else "latin"]
        group["samples"] += 1
        group["exact"] += exact
        group["ned_sum"] += ned
        self.rows.append((int(exact), int(ci_alnum), 1.0 - ned, int(cjk)))

    def summary(self) -> dict[str, float | int | None]:
        """Return ``{"accuracy", "accuracy_ci_alnum", "one_minus_ned", "cer", "samples"}`` (and, with
        ``by_script``, ``accuracy_<script>``, ``one_minus_ned_<script>``, ``samples_<script>`` per script).

        Ratios are ``None`` with no samples; ``cer`` is ``None`` if the normalized GT has no characters at all.

        >>> m = RecMetric(by_script=True)
        >>> for pred, gt in (("中文", "中文"), ("中又", "中文"), ("abc", "abd")):
        ...     m.update(pred, gt)
        >>> {k: m.summary()[k] for k in ("accuracy_cjk", "one_minus_ned_cjk", "samples_cjk", "accuracy_latin")}
        {'accuracy_cjk': 0.5, 'one_minus_ned_cjk': 0.75, 'samples_cjk': 2, 'accuracy_latin': 0.0}
        """
        mean_ned = _ratio(self.ned_sum, self.samples)
        out: dict[str, float | int | None] = {
            "accuracy": _ratio(self.exact, self.samples),
            "accuracy_ci_alnum": _ratio(self.ci_alnum, self.samples),
            "one_minus_ned": None if mean_ned is None else 1.0 - mean_ned,
            "cer": _ratio(self.edit_sum, self.gt_chars),
            "samples": self.samples,
        }
        if self.by_script:
            for name, g in self.script.items():
                ned = _ratio(g["ned_sum"], g["samples"])
                out[f"accuracy_{name}"] = _ratio(g["exact"], g["samples"])
                out[f"one_minus_ned_{name}"] = None if ned is None else 1.0 - ned
                out[f"samples_{name}"] = int(g["samples"])
        return out


# ------------------------------------------------------------------------------------------- end to end


@dataclass(frozen=True)
class E2EImageResult:
    """One image's end-to-end result: the detection matching and which matched pairs also read correctly."""

    det: DetImageResult
    correct: tuple[tuple[int, int], ...]


class E2EMetric:
    """End-to-end spotting precision, recall and F1 over images.

    Boxes are matched exactly as ``DetMetric`` (``match_icdar15``). A true positive is a matched pair whose
    texts are equal after ``normalize_for_ned`` (case-insensitive, letters and digits only, Unicode-aware so
    Chinese lines are compared on their characters; on Latin text it equals ``normalize_ci_alnum``).
    Precision = TP / care predictions, recall = TP / care GT,
    F1 = 2 TP / (care GT + care predictions); ``None`` when a denominator is 0.

    Predictions are scored as the caller passes them: one with empty (or non-alphanumeric) text is still a
    prediction, and a GT whose normalized text is empty is matched by a prediction whose normalized text is
    also empty. Filter before ``update`` if that is not wanted.

    Args:
        iou_thresh: as in ``DetMetric``.
        dontcare_area_thresh: as in ``DetMetric``.
    """

    def __init__(self, iou_thresh: float = 0.5, dontcare_area_thresh: float = 0.5) -> None:
        self.iou_thresh = iou_thresh
        self.dontcare_area_thresh = dontcare_area_thresh
        self.reset()

    def reset(self) -> None:
        """Forget all images seen so far."""
        self.true_positives = 0
        self.num_gt_care = 0
        self.num_pred_care = 0
        self.images = 0
        self.rows: list[tuple[int, int, int]] = []  # per image: (true positives, care GT, care predictions)

    def update(
        self,
        gt_polys: Sequence[np.ndarray],
        gt_texts: Sequence[str],
        gt_ignore: Sequence[bool],
        pred_polys: Sequence[np.ndarray],
        pred_texts: Sequence[str],
    ) -> E2EImageResult:
        """Match one image's boxes, then compare the texts of matched pairs.

        Args:
            gt_polys: GT polygons, each (K, 2).
            gt_texts: GT transcriptions, one per polygon.
            gt_ignore: per GT polygon, True for don't care.
            pred_polys: predicted polygons, each (K, 2).
            pred_texts: predicted transcriptions, one per polygon.

        Returns:
            The detection matching and the correctly read ``(gt_index, pred_index)`` pairs.
        """
        if len(gt_texts) != len(gt_polys):
            raise ValueError(f"gt_polys has {len(gt_polys)} polygons but gt_texts has {len(gt_texts)} texts")
        if len(pred_texts) != len(pred_polys):
            raise ValueError(f"pred_polys has {len(pred_polys)} polygons but pred_texts has {len(pred_texts)} texts")
        det = match_icdar15(gt_polys, gt_ignore, pred_polys, self.iou_thresh, self.dontcare_area_thresh)
        correct = tuple(
            (i, j) for i, j in det.pairs if normalize_for_ned(gt_texts[i]) == normalize_for_ned(pred_texts[j])
        )
        self.true_positives += len(correct)
        self.num_gt_care += det.num_gt_care
        self.num_pred_care += det.num_pred_care
        self.images += 1
        self.rows.append((len(correct), det.num_gt_care, det.num_pred_care))
        return E2EImageResult(det=det, correct=correct)

    def summary(self) -> dict[str, float | None]:
        """Return ``{"precision", "recall", "f1"}``; each ``None`` when its denominator is 0."""
        return {
            "precision": _ratio(self.true_positives, self.num_pred_care),
            "recall": _ratio(self.true_positives, self.num_gt_care),
            "f1": _ratio(2 * self.true_positives, self.num_gt_care + self.num_pred_care),
        }
