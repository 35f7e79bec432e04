"""Recover a pruned student: knowledge distillation from a frozen teacher plus ground truth, or plain fine-tuning.

* :func:`distill_rec`: ``alpha · T² KL(teacher_T ‖ student_T) + (1 − alpha) · CTC`` per frame
  (:func:`ocrslim.compress.losses.rec_distill_loss`). The teacher sees the same preprocessed batch; its
  dictionary is mapped onto the student's with :func:`ocrslim.compress.charmap.class_index_map` (PP-OCRv6
  small has 18,708 characters, the v4 student 6,623; both emit W/8 frames, so frames line up).
  Validation: word accuracy of the student through the real recognition pipeline
  (:meth:`ocrslim.infer.pipeline.OCR.recognize`: aspect-sorted batches padded to the widest crop).
* :func:`distill_det`: ``(1 − alpha) · DB loss on the labels + alpha · w · KD`` with KD the BCE (or
  L2) between the student's and the teacher's probability maps on the same crop
  (:func:`~ocrslim.compress.losses.db_loss`, :func:`~ocrslim.compress.losses.det_kd_loss`; the student gets a fresh,
  seeded DB threshold branch first). Validation: ICDAR 2015 P/R/hmean of the student through the
  real detection pipeline (:meth:`ocrslim.infer.pipeline.OCR.detect`: resize, DB boxes, matching), the
  number the evaluate stage reports, not a proxy such as map IoU vs the teacher.
* ``alpha = 0`` (or ``teacher=None``): ground-truth fine-tuning on the user's own data; no teacher
  is opened.

The loop, checkpoints, resume and DDP live in :mod:`ocrslim.compress.engine`; batches in :mod:`ocrslim.data.train`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ocrslim.compress.charmap import class_index_map, coverage
from ocrslim.compress.engine import fit
from ocrslim.compress.losses import ctc_gt_loss, db_loss, det_kd_loss, rec_distill_loss
from ocrslim.core.config import DetConfig, DistillConfig, RecConfig, to_dict
from ocrslim.core.errors import ArtifactError, ConfigError, DataError
from ocrslim.data.datasets import (
    DetSample,
    RecSample,
    is_labelled_det_set,
    load_det_dataset,
    load_rec_dataset,
    resolve_data_path,
)
from ocrslim.data.train import DetBatch, DetTrainSet, RecBatch, RecTrainSet, batch_indices
from ocrslim.eval.evaluate import score_det, score_rec
from ocrslim.infer.pipeline import OCR, Model

__all__ = [
    "DetData", "RecData", "det_data", "distill_det", "distill_rec", "distill_metrics", "finetune", "rec_data",
]


def _quiet(_msg: str) -> None:
    """Unreadable validation images are counted in the metrics, not printed every validation."""


class _ModuleRunner:
    """A torch module as a pipeline runner on its own device (``TorchRunner`` is CPU-only)."""

    name = "torch"

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.device = next(module.parameters()).device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return y.float().cpu().numpy()


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------------
# Recognition
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RecData:
    """A rec training set (encoded to the student's classes) and validation samples."""

    train: RecTrainSet
    val: list[RecSample]


def rec_data(cfg: DistillConfig, characters: Sequence[str], rec_cfg: RecConfig,
             train: Sequence[str | Path] | None = None, val: Sequence[str | Path] | None = None) -> RecData:
    """Load ``cfg.train_data_rec`` / ``cfg.val_data_rec`` (or the paths given) for a student dictionary."""
    train_set = RecTrainSet(train or cfg.train_data_rec, characters, rec_cfg, width=cfg.rec_width)
    val_samples = [s for p in (val if val is not None else cfg.val_data_rec) for s in load_rec_dataset(p, cfg.max_val)]
    return RecData(train_set, val_samples)


class _TeacherRec:
    """Teacher probabilities on a rec batch, gathered onto the student's classes (optionally cached per sample)."""

    def __init__(self, teacher: Model, student_chars: Sequence[str], cache: bool) -> None:
        if teacher.characters is None:
            raise ArtifactError(f"{teacher.source}: the rec teacher has no dictionary. Give it one (dict file).")
        self.teacher = teacher
        self.index = class_index_map(teacher.characters, student_chars)
        self.coverage = coverage(self.index)
        self.n_teacher = len(teacher.characters) + 2
        self.cache: dict[int, np.ndarray] | None = {} if cache else None

    def _run(self, images: np.ndarray) -> np.ndarray:
        probs = self.teacher.runner(images)
        if probs.ndim != 3 or probs.shape[2] != self.n_teacher:
            raise ArtifactError(
                f"{self.teacher.source}: outputs {list(probs.shape)}, expected N×T×{self.n_teacher} (its dictionary "
                "with blank and space). Pass the teacher's own dictionary."
            )
        # Gather onto student classes now (Cs ≪ Ct for a v6 teacher): what the loss and the cache need.
        return probs[:, :, np.maximum(self.index, 0)]

    def __call__(self, batch: RecBatch) -> np.ndarray:
        if self.cache is None:
            return self._run(batch.images)
        missing = [row for row, i in enumerate(batch.indices) if i not in self.cache]
        if missing:
            # Valid per sample: training crops have one fixed width, so a crop's input never depends on its batch.
            # float16 log-probabilities, not probabilities: at temperature T the KD target is p^(1/T), so
            # the tiny probabilities float16 would flush to 0 (below 6e-8) still matter.
            for row, probs in zip(missing, self._run(batch.images[missing]), strict=True):
                self.cache[batch.indices[row]] = np.log(np.maximum(probs, 1e-12)).astype(np.float16)
        return np.exp(np.stack([self.cache[i] for i in batch.indices]).astype(np.float32))

    @property
    def loss_map(self) -> np.ndarray:
        """The class map of the gathered probabilities: student class i → column i, or -1 (teacher lacks it)."""
        return np.where(self.index >= 0, np.arange(len(self.index)), -1)


def rec_metrics(model: nn.Module, samples: Sequence[RecSample], characters: Sequence[str],
                rec_cfg: RecConfig) -> dict[str, Any]:
    """Student accuracy / 1−NED / CER by the evaluate stage's scorer (call inside :func:`engine.evaluate`)."""
    ocr = OCR(None, Model("rec", _ModuleRunner(model), "student", characters=list(characters), rec_cfg=rec_cfg))
    res = score_rec(ocr, samples, warn=_quiet)
    return {**res["rec"], "skipped": res.get("skipped", 0)}


def distill_rec(
    student: nn.Module,
    teacher: Model | None,
    cfg: DistillConfig,
    data: RecData,
    out: str | os.PathLike[str],
    *,
    characters: Sequence[str],
    rec_cfg: RecConfig | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Distill (or, with ``teacher=None`` / ``cfg.alpha == 0``, fine-tune) a CTC recogniser in place.

    Args:
        student: :class:`~ocrslim.models.rec.CTCRecognizer` (pruned or not); ``model(x, return_logits=True)``
            gives N×T×Cs logits.
        teacher: a rec :class:`~ocrslim.infer.pipeline.Model` (any runner) with ``characters``; forward only.
        cfg: distillation settings.
        data: :func:`rec_data`.
        out: run directory (``ckpt/last.pt``, ``dvclive/``).
        characters: the student's dictionary (``meta["characters"]``), without blank and space.
        rec_cfg: the student's preprocessing, for validation (default: ``RecConfig()``).
        max_steps: stop early as if killed (see :func:`ocrslim.compress.engine.fit`).

    Returns:
        A JSON-able report: ``mode``, ``teacher``, ``charmap_coverage``, data counts, ``fit`` (the
        engine's history) and ``val`` (final validation metrics).
    """
    rec_cfg = rec_cfg or RecConfig()
    if len(characters) + 2 != getattr(student, "num_classes", len(characters) + 2):
        raise ArtifactError(
            f"student: {student.num_classes} CTC classes but its dictionary gives {len(characters) + 2} "
            "(with blank and space). Pass the student's own meta['characters']."
        )
    use_teacher = teacher is not None and cfg.alpha > 0
    kd = _TeacherRec(teacher, characters, cfg.cache_teacher) if use_teacher and teacher is not None else None
    loss_map = torch.as_tensor(kd.loss_map) if kd is not None else None
    bs = cfg.batch_size_rec

    def batch_fn(step: int, rank: int, world: int) -> RecBatch:
        return data.train.batch(batch_indices(len(data.train), bs, step, cfg.seed, rank, world))

    def loss_fn(model: nn.Module, batch: RecBatch) -> dict[str, torch.Tensor]:
        device = _device_of(model)
        logits = model(torch.from_numpy(batch.images).to(device), return_logits=True)
        targets = torch.from_numpy(batch.targets).to(device)
        lengths = torch.from_numpy(batch.lengths).to(device)
        if kd is None or loss_map is None:
            ctc = ctc_gt_loss(logits, targets, lengths)
            return {"loss": ctc, "ctc": ctc}
        probs = torch.from_numpy(kd(batch)).to(device)
        return rec_distill_loss(logits, probs, loss_map.to(device), targets, lengths, alpha=cfg.alpha,
                                T=cfg.temperature)

    history = fit(
        student, cfg, out, batch_fn=batch_fn, loss_fn=loss_fn,
        metric_fn=lambda m: rec_metrics(m, data.val, characters, rec_cfg),
        run={"task": "rec", "teacher": teacher.source if kd is not None and teacher is not None else None},
        max_steps=max_steps, progress=progress,
    )
    return {
        "task": "rec",
        "mode": "distill" if kd is not None else "finetune",
        "teacher": teacher.source if kd is not None and teacher is not None else None,
        "charmap_coverage": kd.coverage if kd is not None else None,
        "train_samples": len(data.train),
        "skipped_chars": data.train.skipped_chars,
        "skipped_images": data.train.skipped_images,
        "val_samples": len(data.val),
        "fit": history,
        "val": history["val"],
        "config": to_dict(cfg),
    }


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DetData:
    """A det training set (random crops with DB targets) and validation pages."""

    train: DetTrainSet
    val: list[DetSample]


def det_data(cfg: DistillConfig, det_cfg: DetConfig, train: Sequence[str | Path] | None = None,
             val: Sequence[str | Path] | None = None) -> DetData:
    """Load ``cfg.train_data_det`` / ``cfg.val_data_det`` (or the paths given)."""
    paths = list(train or cfg.train_data_det)
    kd_only = cfg.alpha >= 1.0
    if not kd_only:
        for p in paths:
            if Path(resolve_data_path(p)).is_dir() and not is_labelled_det_set(p):
                raise DataError(
                    f"distill.train_data_det: {p} has no ground truth (no gt/ beside images/). Label it, or set "
                    "distill.alpha 1 to train on unlabelled images by KD alone."
                )
    train_set = DetTrainSet(paths, det_cfg, size=cfg.det_size, scale=cfg.det_scale, unlabelled_ok=kd_only)
    val_samples = [s for p in (val if val is not None else cfg.val_data_det) for s in load_det_dataset(p, cfg.max_val)]
    return DetData(train_set, val_samples)


def det_metrics(model: nn.Module, samples: Sequence[DetSample], det_cfg: DetConfig) -> dict[str, Any]:
    """Student P/R/hmean (ICDAR 2015) by the evaluate stage's scorer (call inside :func:`engine.evaluate`)."""
    ocr = OCR(Model("det", _ModuleRunner(model), "student", det_cfg=det_cfg), None)
    res = score_det(ocr, samples, warn=_quiet)
    return {**res["det"], "skipped": res.get("skipped", 0)}


def distill_det(
    student: nn.Module,
    teacher: Model | None,
    cfg: DistillConfig,
    data: DetData,
    out: str | os.PathLike[str],
    *,
    det_cfg: DetConfig | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Distill (or, with ``teacher=None`` / ``cfg.alpha == 0``, fine-tune) a DBNet in place.

    Args:
        student: :class:`~ocrslim.models.det.DBNet` (pruned or not). A DB threshold branch sized to
            the (pruned) neck is added if missing, initialised from ``cfg.seed``.
        teacher: a det :class:`~ocrslim.infer.pipeline.Model` whose runner maps N×3×S×S to N×1×S×S probabilities.
        cfg, data, out, max_steps, progress: as :func:`distill_rec`.
        det_cfg: the student's preprocessing, for validation (default: ``DetConfig()``).

    Returns:
        The report of :func:`distill_rec`, ``val`` holding ``precision``/``recall``/``hmean``.
    """
    det_cfg = det_cfg or DetConfig()
    head = getattr(student, "head", None)
    if not hasattr(head, "enable_threshold"):
        raise ArtifactError(
            f"student: {type(student).__name__} has no DB head. Pass a DBNet (artifacts/pruned/det.pt)."
        )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # the new branch's initial weights are part of the run's identity
        head.enable_threshold()
    use_teacher = teacher is not None and cfg.alpha > 0
    bs = cfg.batch_size_det

    def batch_fn(step: int, rank: int, world: int) -> DetBatch:
        idx = batch_indices(len(data.train), bs, step, cfg.seed, rank, world)
        return data.train.batch(idx, np.random.default_rng((cfg.seed, step, rank)))

    def loss_fn(model: nn.Module, batch: DetBatch) -> dict[str, torch.Tensor]:
        device = _device_of(model)
        pred = model(torch.from_numpy(batch.images).to(device))
        parts: dict[str, torch.Tensor] = {}
        if not use_teacher or cfg.alpha < 1.0:  # alpha 1 = KD only: the images need no ground truth
            db = db_loss(pred, batch.gt_prob, batch.gt_mask, batch.gt_thresh, batch.gt_thresh_mask)
            parts = {"db": db["loss"], "db_prob": db["prob"], "db_thresh": db["thresh"], "db_binary": db["binary"]}
        if not use_teacher or teacher is None:
            return {"loss": parts["db"], **parts}
        t_prob = torch.from_numpy(np.asarray(teacher.runner(batch.images), dtype=np.float32)).to(device)
        kd = cfg.det_kd_weight * det_kd_loss(pred["prob"], t_prob, kind=cfg.det_kd)
        if not parts:
            return {"loss": kd, "kd": kd}
        return {"loss": (1.0 - cfg.alpha) * parts["db"] + cfg.alpha * kd, "kd": kd, **parts}

    history = fit(
        student, cfg, out, batch_fn=batch_fn, loss_fn=loss_fn,
        metric_fn=lambda m: det_metrics(m, data.val, det_cfg),
        run={"task": "det", "teacher": teacher.source if use_teacher and teacher is not None else None},
        max_steps=max_steps, progress=progress,
    )
    return {
        "task": "det",
        "mode": "distill" if use_teacher else "finetune",
        "teacher": teacher.source if use_teacher and teacher is not None else None,
        "train_samples": len(data.train),
        "skipped_images": data.train.skipped_images,
        "val_samples": len(data.val),
        "fit": history,
        "val": history["val"],
        "config": to_dict(cfg),
    }


def finetune(task: str, student: nn.Module, cfg: DistillConfig, data: RecData | DetData,
             out: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """Ground-truth-only training ("local fine-tuning" on users' own data): no teacher, alpha 0.

    >>> data = rec_data(cfg, chars, RecConfig(), train=["my_crops/"], val=["my_val/"])  # doctest: +SKIP
    >>> report = finetune("rec", model, cfg, data, "runs/ft", characters=chars)  # doctest: +SKIP
    """
    cfg = dataclasses.replace(cfg, alpha=0.0)
    if task == "rec" and isinstance(data, RecData):
        return distill_rec(student, None, cfg, data, out, **kwargs)
    if task == "det" and isinstance(data, DetData):
        return distill_det(student, None, cfg, data, out, **kwargs)
    raise ConfigError(f"finetune: task {task!r} with {type(data).__name__}. Pass 'rec' with rec_data(...) or 'det' "
                      "with det_data(...).")


def distill_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a report for a DVC metrics file: mode, steps, validation and last training losses,
    data counts, and the CPU minutes of this run (``resumed`` says whether it continued a killed one)."""
    fit = report["fit"]
    out: dict[str, Any] = {"mode": report["mode"], "steps": fit["end_step"], "resumed": fit["resumed"]}
    if fit.get("cpu_seconds") is not None:
        out["cpu_minutes"] = round(fit["cpu_seconds"] / 60, 1)
    out.update({f"val_{k}": v for k, v in (report.get("val") or {}).items()})
    out.update({f"train_{k}": round(v, 6) for k, v in (report["fit"].get("train") or {}).items()})
    for k in ("train_samples", "skipped_chars", "skipped_images", "charmap_coverage"):
        if report.get(k) is not None:
            out[k] = report[k]
    return out
