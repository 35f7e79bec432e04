"""Recover a pruned student: KD from a frozen teacher everywhere, ground truth where labels exist.

The training data of a task is a mix of sets (:mod:`ocrslim.data.train`): the user's real data (labelled
sets, or plain image folders that only the teacher supervises) and the synthetic data that keeps the scripts
the real sets lack. Per batch:

* rec: ``alpha · T² KL(teacher_T ‖ student_T)`` per frame on every crop + ``(1 − alpha) · CTC`` on the
  labelled ones (:func:`~ocrslim.compress.losses.ctc_kd_loss`, :func:`~ocrslim.compress.losses.ctc_gt_loss`).
  The teacher's dictionary is mapped onto the student's (:func:`ocrslim.compress.charmap.class_index_map`:
  PP-OCRv6 small has 18,708 characters, the v4 student 6,623; both emit W/8 frames). The KD target is the
  teacher's :data:`TOP_K` most likely classes per frame (the rest of its mass is below float noise at T = 1).
* det: ``(1 − alpha) · DB loss`` on labelled pages (unlabelled ones are masked out) ``+ alpha · w · KD``,
  KD the BCE (or L2) between the student's and the teacher's probability maps on the same crop.

``alpha = 0`` (or no teacher) is ground-truth fine-tuning on the user's own data; no teacher is opened.

**The teacher runs once per (sample, augmentation).** Rec crops have no random augmentation and det pages a
fixed set of ``views``, so the teacher's output is a function of the batch row's key (``RecBatch.keys`` /
``DetBatch.keys``) and is cached in memory: the cached and the computed targets are the same arrays.

Validation scores the student with the evaluate stage's own scorer (:mod:`ocrslim.eval.evaluate`) on the
validation splits of the training sets, never on the dev sets. The loop, checkpoints, resume and DDP live in
:mod:`ocrslim.compress.engine`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ocrslim.compress.charmap import class_index_map, coverage
from ocrslim.compress.engine import check_trainable, fit
from ocrslim.compress.losses import ctc_gt_loss, ctc_kd_loss, db_loss, det_kd_loss
from ocrslim.compress.reconstruct import capture
from ocrslim.core.config import DetConfig, DetTrainConfig, DistillConfig, RecConfig, RecTrainConfig, to_dict
from ocrslim.core.errors import ArtifactError, DataError
from ocrslim.data.datasets import DetSample, RecSample, detect_layout, load_det_dataset, load_rec_dataset
from ocrslim.data.train import DetBatch, DetTrainSet, RecBatch, RecTrainSet, mix_counts
from ocrslim.eval.evaluate import score_det, score_rec
from ocrslim.infer.pipeline import OCR, Model
from ocrslim.infer.runners import TorchRunner

__all__ = ["TOP_K", "TaskData", "TeacherCache", "distill", "distill_log", "distill_metrics", "model_record",
           "task_data"]

#: Teacher classes kept per rec frame as the KD target.
TOP_K = 32


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _quiet(_msg: str) -> None:
    """Unreadable validation images are counted in the metrics, not printed every validation."""


# -------------------------------------------------------------------------------------------------- data
@dataclasses.dataclass
class TaskData:
    """A task's training mix and validation samples."""

    train: DetTrainSet | RecTrainSet
    val: list[DetSample] | list[RecSample]


def _check_sets(paths: Sequence[str | Path], task: str, key: str) -> None:
    """One-line errors for a training path that is missing or holds nothing usable (naming the key)."""
    for p in paths:
        found = detect_layout(p, task)
        if not found.root.exists():
            raise DataError(f"{key}: {p} not found. Fix the path (relative paths are read from the repo root), or "
                            "run dvc repro split / data first.")
        if found.kind == "none":
            raise DataError(f"{key}: {p} holds no {task} samples (neither a labelled set nor a folder of images). "
                            "Point it at a set or an image folder.")


def task_data(task: str, cfg: DistillConfig, pre: DetConfig | RecConfig, characters: Sequence[str] | None = None,
              train: Sequence[str | Path] | None = None, val: Sequence[str | Path] | None = None,
              limit: int | None = None) -> TaskData:
    """Load ``distill.<task>.train_data`` (mixed by ``mix``) and ``val_data`` (or the paths given).

    ``limit``: at most this many training samples per set (benchmarks, smoke runs).

    Raises:
        DataError: a path is missing or empty (one line naming ``distill.<task>.train_data``), or a labelled
            set is needed (``alpha < 1`` and no teacher) and only image folders were given.
    """
    t = cfg.task(task)
    paths = list(train if train is not None else t.train_data)
    _check_sets(paths, task, f"distill.{task}.train_data")
    if not any(detect_layout(p, task).labelled for p in paths) and (t.alpha < 1.0 or not t.teacher):
        raise DataError(f"distill.{task}.train_data: only unlabelled image folders, but distill.{task}.alpha is "
                        f"{t.alpha}. Add a labelled set, or set distill.{task}.alpha 1 to train by KD alone.")
    shares = t.mix if train is None else ()
    val_paths = list(val if val is not None else t.val_data)
    _check_sets(val_paths, task, f"distill.{task}.val_data")
    if task == "rec":
        assert isinstance(t, RecTrainConfig) and isinstance(pre, RecConfig)
        train_set: DetTrainSet | RecTrainSet = RecTrainSet(paths, characters or [], pre, t.widths, shares, limit)
        val_samples: list[Any] = [s for p in val_paths for s in load_rec_dataset(p, t.max_val)]
    else:
        assert isinstance(t, DetTrainConfig) and isinstance(pre, DetConfig)
        train_set = DetTrainSet(paths, pre, size=t.size, shares=shares, scale=t.scale,
                                views=t.views if t.cache_teacher else 0, limit=limit)
        val_samples = [s for p in val_paths for s in load_det_dataset(p, t.max_val)]
    for name, n in zip(train_set.names, train_set.sizes(), strict=True):
        if n == 0:
            raise DataError(f"distill.{task}.train_data: {name} has no usable samples (empty, or every label has "
                            "characters outside the student's dictionary). Remove it or fix it.")
    return TaskData(train_set, val_samples)


# ----------------------------------------------------------------------------------------- teacher cache
class TeacherCache:
    """Teacher outputs by batch-row key, computed for the rows not seen yet (``enabled=False``: never kept)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.store: dict[Hashable, Any] = {}
        self.hits = 0
        self.computed = 0

    def get(self, keys: Sequence[Hashable], images: np.ndarray, compute: Callable[[np.ndarray], list[Any]]
            ) -> list[Any]:
        """One entry per row: cached ones reused, the others computed from ``images[rows]`` (and kept)."""
        missing = [r for r, k in enumerate(keys) if not (self.enabled and k in self.store)]
        fresh = dict(zip(missing, compute(images[missing]), strict=True)) if missing else {}
        self.computed += len(missing)
        self.hits += len(keys) - len(missing)
        if self.enabled:
            self.store.update({keys[r]: v for r, v in fresh.items()})
        return [fresh[r] if r in fresh else self.store[k] for r, k in enumerate(keys)]


class _TeacherRec:
    """The rec teacher's KD target on the student's classes: top-:data:`TOP_K` probabilities per frame."""

    def __init__(self, teacher: Model, student_chars: Sequence[str], cache: bool) -> None:
        if teacher.characters is None:
            raise ArtifactError(f"{teacher.source}: the rec teacher has no dictionary. Give it one (dict file).")
        self.teacher = teacher
        self.index = class_index_map(teacher.characters, student_chars)
        self.coverage = coverage(self.index)
        self.n_teacher = len(teacher.characters) + 2
        self.n_student = len(student_chars) + 2
        self.cache = TeacherCache(cache)

    def _compute(self, images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        probs = self.teacher.runner(images)
        if probs.ndim != 3 or probs.shape[2] != self.n_teacher:
            raise ArtifactError(f"{self.teacher.source}: outputs {list(probs.shape)}, expected N×T×{self.n_teacher} "
                                "(its dictionary with blank and space). Pass the teacher's own dictionary.")
        gathered = np.where(self.index >= 0, probs[:, :, np.maximum(self.index, 0)], 0.0)  # N×T×Cs
        top = np.argpartition(-gathered, TOP_K - 1, axis=2)[:, :, :TOP_K] if gathered.shape[2] > TOP_K else \
            np.broadcast_to(np.arange(gathered.shape[2]), gathered.shape).copy()
        vals = np.take_along_axis(gathered, top, axis=2)
        return [(top[i].astype(np.int16), vals[i].astype(np.float16)) for i in range(len(images))]

    def __call__(self, batch: RecBatch) -> np.ndarray:
        """N×T×Cs probabilities (zero outside each frame's top-k), the same whether cached or computed."""
        rows = self.cache.get(batch.keys, batch.images, self._compute)
        n, t = len(rows), rows[0][0].shape[0]
        out = np.zeros((n, t, self.n_student), dtype=np.float32)
        for r, (idx, val) in enumerate(rows):
            np.put_along_axis(out[r], idx.astype(np.int64), val.astype(np.float32), axis=1)
        return out

    @property
    def loss_map(self) -> np.ndarray:
        """Student class i → column i of the gathered target, or -1 (the teacher lacks the character)."""
        return np.where(self.index >= 0, np.arange(len(self.index)), -1)


class _TeacherDet:
    """The det teacher's probability map of a crop, kept as uint8 (1/255 steps) when cached and when not."""

    def __init__(self, teacher: Model, cache: bool) -> None:
        self.teacher = teacher
        self.cache = TeacherCache(cache)

    def _compute(self, images: np.ndarray) -> list[np.ndarray]:
        prob = np.asarray(self.teacher.runner(images), dtype=np.float32)
        return [np.round(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8) for p in prob]

    def __call__(self, batch: DetBatch) -> np.ndarray:
        keys = [k if k[2] >= 0 else (*k, id(batch), r) for r, k in enumerate(batch.keys)]  # fresh views never hit
        maps = self.cache.get(keys, batch.images, self._compute)
        return np.stack(maps).astype(np.float32) / 255.0


class _Hints:
    """Feature KD: the student's output of one module against the unpruned teacher's (relative MSE).

    ``capture`` records the student's output of ``layer`` during its forward; ``loss`` runs the teacher (no
    gradient) only as far as that module and returns ``{"hint": ||s − t||² / ||t||²}`` (``{}`` when off).
    """

    def __init__(self, layer: str | None, teacher: nn.Module | None) -> None:
        if layer is not None and teacher is None:
            raise ArtifactError(f"distill: hint_layer {layer!r} needs the unpruned teacher module (the teacher "
                                "stage's .safetensors). Pass it, or set hint_weight 0.")
        self.layer, self.teacher = layer, teacher
        self.box: dict[str, torch.Tensor] = {}
        if teacher is not None and layer is not None:
            teacher.eval().requires_grad_(False)
            _module(teacher, layer)

    @contextlib.contextmanager
    def capture(self, model: nn.Module) -> Iterator[None]:
        if self.layer is None:
            yield
            return
        handle = _module(model, self.layer).register_forward_hook(
            lambda _m, _i, out: self.box.__setitem__("s", out))
        try:
            yield
        finally:
            handle.remove()

    def loss(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.layer is None or self.teacher is None:
            return {}
        s = self.box.pop("s")
        teacher = self.teacher.to(images.device)
        t = capture(teacher, _module(teacher, self.layer), images)
        if s.shape != t.shape:
            raise ArtifactError(f"distill: hint_layer {self.layer!r} outputs {list(s.shape)} in the student and "
                                f"{list(t.shape)} in the teacher. Keep its width (prune.keep_out_<task>) or pick "
                                "another layer.")
        return {"hint": ((s.float() - t.float()) ** 2).mean() / (t.float() ** 2).mean().clamp_min(1e-12)}


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ArtifactError(f"distill: hint_layer {name!r} is not a module of {type(model).__name__} (e.g. "
                            "backbone, neck). Fix distill.<task>.hint_layer.") from None


# -------------------------------------------------------------------------------------------- metrics
def rec_metrics(model: nn.Module, samples: Sequence[RecSample], characters: Sequence[str],
                rec_cfg: RecConfig) -> dict[str, Any]:
    """Student accuracy / 1−NED / CER by the evaluate stage's scorer (call inside :func:`engine.evaluate`)."""
    ocr = OCR(None, Model("rec", TorchRunner(model), "student", characters=list(characters), rec_cfg=rec_cfg))
    res = score_rec(ocr, samples, warn=_quiet)
    return {**res["rec"], "skipped": res.get("skipped", 0)}


def det_metrics(model: nn.Module, samples: Sequence[DetSample], det_cfg: DetConfig) -> dict[str, Any]:
    """Student P/R/hmean (ICDAR 2015) by the evaluate stage's scorer (call inside :func:`engine.evaluate`)."""
    ocr = OCR(Model("det", TorchRunner(model), "student", det_cfg=det_cfg), None)
    res = score_det(ocr, samples, warn=_quiet)
    return {**res["det"], "skipped": res.get("skipped", 0)}


def _by_set(samples: Sequence[Any]) -> dict[str, list[Any]]:
    """Validation samples grouped by the set (folder) they come from, for per-set metrics."""
    out: dict[str, list[Any]] = {}
    for s in samples:
        parts = [p for p in Path(s.image).parts if p not in ("images", "det", "rec")]
        out.setdefault(parts[-2] if len(parts) >= 2 else "val", []).append(s)
    return out


# -------------------------------------------------------------------------------------------- training
def distill(
    task: str,
    student: nn.Module,
    teacher: Model | None,
    cfg: DistillConfig,
    data: TaskData,
    out: str | os.PathLike[str],
    *,
    pre: DetConfig | RecConfig,
    characters: Sequence[str] | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    hint_teacher: nn.Module | None = None,
) -> dict[str, Any]:
    """Distill (or, with ``teacher=None`` / alpha 0, fine-tune) a student of ``task`` in place.

    Args:
        task: "det" (a :class:`~ocrslim.models.det.DBNet`; a DB threshold branch sized to the (pruned) neck is
            added if missing, seeded) or "rec" (a :class:`~ocrslim.models.rec.CTCRecognizer`).
        teacher: a :class:`~ocrslim.infer.pipeline.Model` of the task (any runner), forward only.
        cfg: distillation settings (``cfg.det`` / ``cfg.rec`` and the shared schedule).
        data: :func:`task_data`.
        out: run directory (``ckpt/last.safetensors``, ``dvclive/``).
        pre: the student's preprocessing (validation runs through the real pipeline with it).
        characters: rec: the student's dictionary, without blank and space.
        max_steps: stop early as if killed (see :func:`ocrslim.compress.engine.fit`).
        hint_teacher: the unpruned native teacher (torch, forward only) whose ``hint_layer`` output the
            student's is pulled to (``distill.<task>.hint_weight`` > 0).

    Returns:
        A JSON-able report: ``mode``, ``teacher``, per-set data counts and batch shares, the teacher cache's
        use, ``fit`` (the engine's history) and ``val`` (final validation metrics, also per set).
    """
    t = cfg.task(task)
    use_teacher = teacher is not None and t.alpha > 0
    bs = t.batch_size
    extra: dict[str, Any] = {}
    hints = _Hints(t.hint_layer if t.hint_weight > 0 else None, hint_teacher)
    if task == "rec":
        chars = list(characters or [])
        if len(chars) + 2 != getattr(student, "num_classes", len(chars) + 2):
            raise ArtifactError(f"student: {student.num_classes} CTC classes but its dictionary gives "
                                f"{len(chars) + 2} (with blank and space). Pass the student's own meta['characters'].")
        assert isinstance(data.train, RecTrainSet) and isinstance(t, RecTrainConfig) and isinstance(pre, RecConfig)
        kd_rec = _TeacherRec(teacher, chars, t.cache_teacher) if use_teacher and teacher is not None else None
        extra["charmap_coverage"] = kd_rec.coverage if kd_rec is not None else None
        loss_map = torch.as_tensor(kd_rec.loss_map) if kd_rec is not None else None
        train_rec: RecTrainSet = data.train

        def batch_fn(step: int, rank: int, world: int) -> Any:
            return train_rec.batch(train_rec.draw(bs, step, cfg.seed, rank, world))

        def loss_fn(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
            device = _device_of(model)
            images = torch.from_numpy(batch.images).to(device)
            with hints.capture(model):
                logits = model(images, return_logits=True)
            parts: dict[str, torch.Tensor] = hints.loss(images)
            rows = torch.from_numpy(np.flatnonzero(batch.labelled)).to(device)
            if len(rows):
                parts["ctc"] = ctc_gt_loss(logits.index_select(0, rows), torch.from_numpy(batch.targets).to(device)
                                           .index_select(0, rows), torch.from_numpy(batch.lengths).to(device)
                                           .index_select(0, rows))
            if kd_rec is not None and loss_map is not None:
                target = torch.from_numpy(kd_rec(batch)).to(device)
                parts["kd"] = ctc_kd_loss(logits, target, loss_map.to(device), t.temperature)
            return {"loss": _mix(parts, "ctc", t.alpha) + t.hint_weight * parts.get("hint", 0.0), **parts}

        def metric_fn(m: nn.Module) -> dict[str, Any]:
            return _val(data.val, lambda s: rec_metrics(m, s, chars, pre))

        cache = kd_rec.cache if kd_rec is not None else None
    else:
        assert isinstance(data.train, DetTrainSet) and isinstance(t, DetTrainConfig) and isinstance(pre, DetConfig)
        head = getattr(student, "head", None)
        if not hasattr(head, "enable_threshold"):
            raise ArtifactError(f"student: {type(student).__name__} has no DB head. Pass a DBNet.")
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)  # the new branch's initial weights are part of the run's identity
            head.enable_threshold()
        kd_det = _TeacherDet(teacher, t.cache_teacher) if use_teacher and teacher is not None else None
        train_det: DetTrainSet = data.train

        def batch_fn(step: int, rank: int, world: int) -> Any:
            return train_det.batch(train_det.draw(bs, step, cfg.seed, rank, world),
                                   np.random.default_rng((cfg.seed, step, rank)), cfg.seed)

        def loss_fn(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
            device = _device_of(model)
            images = torch.from_numpy(batch.images).to(device)
            with hints.capture(model):
                pred = model(images)
            parts: dict[str, torch.Tensor] = hints.loss(images)
            if batch.labelled.any() and t.alpha < 1.0:
                db = db_loss(pred, batch.gt_prob, batch.gt_mask, batch.gt_thresh, batch.gt_thresh_mask)
                total = db["prob"] + t.aux_weight * (db["thresh"] + db["binary"])
                parts.update(db=total, db_prob=db["prob"], db_thresh=db["thresh"], db_binary=db["binary"])
            if kd_det is not None:
                t_prob = torch.from_numpy(kd_det(batch)).to(device)
                parts["kd"] = t.kd_weight * det_kd_loss(pred["prob"], t_prob, kind=t.kd)
            return {"loss": _mix(parts, "db", t.alpha) + t.hint_weight * parts.get("hint", 0.0), **parts}

        def metric_fn(m: nn.Module) -> dict[str, Any]:
            return _val(data.val, lambda s: det_metrics(m, s, pre))

        cache = kd_det.cache if kd_det is not None else None

    check_trainable(student, t.trainable, f"distill.{task}.trainable")
    run = {"task": task, "teacher": teacher.source if use_teacher and teacher is not None else None,
           "section": to_dict(t), "sets": data.train.names}
    history = fit(student, cfg.fit(task), out, batch_fn=batch_fn, loss_fn=loss_fn, metric_fn=metric_fn, run=run,
                  max_steps=max_steps, progress=progress)
    counts = mix_counts(data.train.shares, data.train.sizes(), bs)
    timing = {k: history.pop(k) for k in ("seconds", "cpu_seconds", "steps_per_s") if k in history}
    return {
        "task": task,
        # steps 0: the pruned (and reconstructed) model is the student, validated as is
        "mode": "pruned" if t.steps == 0 else "distill" if use_teacher else "finetune",
        "teacher": run["teacher"],
        **extra,
        "train_sets": [{"path": n, "samples": s, "per_batch": c}
                       for n, s, c in zip(data.train.names, data.train.sizes(), counts, strict=True)],
        "skipped_chars": getattr(data.train, "skipped_chars", 0),
        "skipped_images": data.train.skipped_images,
        "val_samples": len(data.val),
        "teacher_cache": {"computed": cache.computed, "reused": cache.hits} if cache is not None else None,
        "fit": history,
        "val": history["val"],
        "config": to_dict(t),
        "timing": timing,  # wall and CPU time: not part of the outputs (they would differ on every run)
    }


def _mix(parts: dict[str, torch.Tensor], gt: str, alpha: float) -> torch.Tensor:
    """``alpha · kd + (1 − alpha) · gt``; one term alone when the batch has only that one."""
    if "kd" in parts and gt in parts:
        return alpha * parts["kd"] + (1.0 - alpha) * parts[gt]
    if gt in parts:
        return parts[gt]
    if "kd" in parts:
        return parts["kd"]
    if "hint" in parts:
        return parts["hint"] * 0.0  # the hint term is added by the caller
    raise DataError("distill: a batch with neither labels nor a teacher. Give a teacher or labelled data.")


def _val(samples: Sequence[Any], score: Callable[[Sequence[Any]], dict[str, Any]]) -> dict[str, Any]:
    """Metrics on all validation samples, plus per set (``<set>/<metric>``)."""
    out = score(samples) if samples else {}
    groups = _by_set(samples)
    if len(groups) > 1:
        for name, group in groups.items():
            out.update({f"{name}/{k}": v for k, v in score(group).items() if k != "skipped"})
    return out


def score_student(task: str, model: nn.Module, samples: Sequence[Any], pre: DetConfig | RecConfig,
                  characters: Sequence[str] | None = None) -> dict[str, Any]:
    """A student's validation metrics, overall and per set, as :func:`distill` reports them (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if task == "rec":
                assert isinstance(pre, RecConfig)
                return _val(samples, lambda s: rec_metrics(model, s, list(characters or []), pre))
            assert isinstance(pre, DetConfig)
            return _val(samples, lambda s: det_metrics(model, s, pre))
    finally:
        model.train(was_training)


_HISTORY = ("resumed", "start_step", "train")  # fit keys of one run (its times are in report["timing"])


def distill_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a report for a DVC metrics file: mode, steps, validation, data counts. Nothing of the run's
    history (wall times, last training losses, teacher-cache hits: a run resumed at its last step has none): a
    rerun or a resumed run with the same inputs writes the same file. The history is :func:`distill_log`'s."""
    fit_ = report["fit"]
    out: dict[str, Any] = {"mode": report["mode"], "steps": fit_["end_step"]}
    out.update({f"val_{k}": v for k, v in (report.get("val") or {}).items()})
    for k in ("skipped_chars", "skipped_images", "charmap_coverage"):
        if report.get(k) is not None:
            out[k] = report[k]
    out["train_samples"] = sum(s["samples"] for s in report.get("train_sets", []))
    return out


def distill_log(report: dict[str, Any]) -> dict[str, Any]:
    """This run's history, for an untracked log: wall and CPU time, steps/s, last training losses, resume point,
    teacher forwards computed and reused."""
    fit_ = report["fit"]
    out: dict[str, Any] = dict(report.get("timing") or {})
    out.update({k: fit_[k] for k in ("resumed", "start_step") if k in fit_})
    out.update({f"train_{k}": round(v, 6) for k, v in (fit_.get("train") or {}).items()})
    if report.get("teacher_cache"):
        out["teacher_forwards"] = report["teacher_cache"]["computed"]
        out["teacher_reused"] = report["teacher_cache"]["reused"]
    return out


def model_record(report: dict[str, Any]) -> dict[str, Any]:
    """What the student's model file keeps of a report: what defines the student, not the run's history (resume
    point, losses, times, cache hits), so a killed-and-resumed run writes the same bytes as an uninterrupted one."""
    kept = {k: v for k, v in report.items() if k not in ("timing", "teacher_cache")}
    return {**kept, "fit": {k: v for k, v in report["fit"].items() if k not in _HISTORY}}
