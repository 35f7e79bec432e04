"""Evaluate an OCR pipeline on detection and recognition sets.

The result of one evaluation has the shape (fractions in 0..1; sections present for the data
given)::

    {"det": {"precision", "recall", "hmean", "images"},
     "rec": {"accuracy", "accuracy_ci_alnum", "one_minus_ned", "cer", "samples"},
     "e2e": {"f1", "precision", "recall"}}

With ``by_script`` (the evaluate stage), ``rec`` also holds exact accuracy and 1−NED per script of the label:
``accuracy_cjk``, ``one_minus_ned_cjk``, ``samples_cjk`` and the same with ``_latin`` (``RecMetric``).

Unreadable images (and images over the pixel cap, :data:`ocrslim.infer.preprocess.MAX_PIXELS`) are reported
one line each on stderr, skipped, and counted (``skipped``). GT boxes reaching outside their image are clipped
to it; a GT box wholly outside is dropped and counted (``det.gt_clipped`` / ``det.gt_dropped``, present when
not zero), so it is neither a miss nor a match.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ocrslim.data.datasets import (
    DetSample,
    RecSample,
    fit_gt_to_image,
    load_det_dataset,
    load_rec_dataset,
    read_sample_image_checked,
)
from ocrslim.eval.metrics import DetMetric, E2EMetric, RecMetric
from ocrslim.infer.pipeline import OCR

Warn = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def score_det(
    ocr: OCR, samples: Sequence[DetSample], progress: bool = False, warn: Warn = _stderr, desc: str = "det",
    rows: bool = False,
) -> dict[str, Any]:
    """Detection P/R/hmean (ICDAR 2015) and, with a recogniser, end-to-end F1 on det samples.

    The one scoring path: the evaluate stage, the quantize gate and distillation's validation all call it.
    ``rows``: also return the per-image counts (``out["rows"]["det"]``: ``ids``, ``det`` and ``e2e`` rows of
    ``(matched, care GT, care predictions)``) that paired comparisons resample (:mod:`ocrslim.eval.stats`).
    """
    det, e2e = DetMetric(), E2EMetric()
    ids: list[str] = []
    skipped = clipped = dropped = 0
    drop = ocr.rec.rec_cfg.drop_score if ocr.rec is not None else 0.0
    for s in tqdm(samples, desc=desc, disable=not progress, file=sys.stderr):
        img, why = read_sample_image_checked(s)
        if img is None:
            warn(f"{s.image}: {why}, skipped.")
            skipped += 1
            continue
        s, n_clipped, n_dropped = fit_gt_to_image(s, *img.shape[:2])
        clipped += n_clipped
        dropped += n_dropped
        if n_dropped:
            warn(f"{s.image}: {n_dropped} GT box(es) wholly outside the {img.shape[1]}x{img.shape[0]} image, "
                 "dropped from scoring. Fix their coordinates.")
        boxes, scores = ocr.detect(img)
        det.update(s.polys, s.ignore, boxes)
        ids.append(str(s.image))
        if ocr.rec is not None:
            lines = [ln for ln in ocr.read_boxes(img, boxes, scores) if ln.score >= drop and ln.text.strip()]
            e2e.update(s.polys, s.texts, s.ignore, [ln.box for ln in lines], [ln.text for ln in lines])
    out: dict[str, Any] = {"det": det.summary()}
    out["det"].update({k: v for k, v in (("gt_clipped", clipped), ("gt_dropped", dropped)) if v})
    if ocr.rec is not None:
        out["e2e"] = e2e.summary()
    if skipped:
        out["skipped"] = skipped
    if rows:
        out["rows"] = {"det": {"ids": ids, "det": det.rows, **({"e2e": e2e.rows} if ocr.rec is not None else {})}}
    return out


def score_rec(
    ocr: OCR, samples: Sequence[RecSample], progress: bool = False, warn: Warn = _stderr, desc: str = "rec",
    by_script: bool = False, rows: bool = False,
) -> dict[str, Any]:
    """Word/line accuracy, 1−NED and CER on rec samples (crops with labels), batched as the pipeline batches;
    ``by_script`` adds them per script of the label (CJK or not, see ``RecMetric``); ``rows`` returns the
    per-crop ``(exact, ci_alnum, 1−NED, CJK)`` rows and their ``ids`` (``out["rows"]["rec"]``)."""
    metric = RecMetric(by_script=by_script)
    ids: list[str] = []
    skipped = 0
    chunk = 64  # read a few crops at a time so batches can be formed by aspect ratio
    bar = tqdm(total=len(samples), desc=desc, disable=not progress, file=sys.stderr)
    for start in range(0, len(samples), chunk):
        crops, labels = [], []
        for s in samples[start : start + chunk]:
            img, why = read_sample_image_checked(s)
            if img is None:
                warn(f"{s.image}: {why}, skipped.")
                skipped += 1
                continue
            crops.append(img)
            labels.append(s.text)
            ids.append(str(s.image))
        for (text, _), gt in zip(ocr.recognize(crops) if crops else [], labels, strict=True):
            metric.update(text, gt)
        bar.update(min(chunk, len(samples) - start))
    bar.close()
    out: dict[str, Any] = {"rec": metric.summary()}
    if skipped:
        out["skipped"] = skipped
    if rows:
        out["rows"] = {"rec": {"ids": ids, "rec": metric.rows}}
    return out


def evaluate_det(
    ocr: OCR, data: str | Path, limit: int | None = None, progress: bool = True, warn: Warn = _stderr,
    rows: bool = False,
) -> dict[str, Any]:
    """:func:`score_det` on the first ``limit`` pages of one det set (any layout ocrslim reads)."""
    return score_det(ocr, load_det_dataset(data, limit=limit), progress, warn, f"det {Path(data).name}", rows)


def evaluate_rec(
    ocr: OCR, data: str | Path, limit: int | None = None, progress: bool = True, warn: Warn = _stderr,
    by_script: bool = False, rows: bool = False,
) -> dict[str, Any]:
    """:func:`score_rec` on the first ``limit`` crops of one rec set."""
    return score_rec(ocr, load_rec_dataset(data, limit=limit), progress, warn, f"rec {Path(data).name}", by_script,
                     rows)


def evaluate(
    ocr: OCR,
    det_data: Sequence[str | Path] = (),
    rec_data: Sequence[str | Path] = (),
    limit: int | None = None,
    progress: bool = True,
    warn: Warn = _stderr,
    by_script: bool = False,
    rows: bool = False,
) -> dict[str, dict[str, Any]]:
    """Evaluate on every set given; returns ``{set_name: {"det"|"rec"|"e2e": {...}}}``.

    The set name is the directory name (``sroie_dev``) or, for a task sub-folder, its parent's.
    ``by_script``: rec metrics also per script of the label (see :func:`score_rec`); ``rows``: each set also
    holds its per-sample ``rows`` (``{"det": ..., "rec": ...}``, see :func:`score_det` / :func:`score_rec`).
    """
    results: dict[str, dict[str, Any]] = {}
    for path in det_data:
        res = evaluate_det(ocr, path, limit, progress, warn, rows)
        _merge(results.setdefault(set_name(path), {}), res)
    for path in rec_data:
        res = evaluate_rec(ocr, path, limit, progress, warn, by_script, rows)
        _merge(results.setdefault(set_name(path), {}), res)
    total_skipped = sum(r.get("skipped", 0) for r in results.values())
    if total_skipped:
        warn(f"skipped {total_skipped} unreadable image(s) in all.")
    return results


def _merge(into: dict[str, Any], res: dict[str, Any]) -> None:
    for key, value in res.items():
        if key == "skipped":
            into["skipped"] = into.get("skipped", 0) + value
        elif key == "rows":
            into.setdefault("rows", {}).update(value)
        else:
            into[key] = value


def set_name(path: str | Path) -> str:
    """A short, stable name for a data set path: ``../shared/data/sroie_dev/det`` → ``sroie_dev``,
    ``data/synth/rec/test`` → ``synth_test``, ``data/splits/sroie_train/det/val.split.json`` →
    ``sroie_train_val``; another label file is named by its folder."""
    p = Path(path)
    part = ""
    if p.is_file():
        if p.name.endswith(".split.json"):  # the split stage's train/val part of a set: sroie_train_val
            part = "_" + p.name.removesuffix(".split.json")
        p = p.parent
    parts = [x for x in p.parts if x not in ("det", "rec", "images", "", ".")]
    if not parts:
        return str(path)
    name = parts[-1] + part
    if name in ("train", "val", "test") and len(parts) > 1:
        name = f"{parts[-2]}_{name}"
    return name
