"""Quantization-aware fine-tuning of a student: fake-quant from :mod:`ocrslim.compress.qat`, trained by the
distillation loop, exported to an MNN INT8 file whose scales are the learnt ones.

The student is prepared where MNN's INT8 runtime rounds (:func:`~ocrslim.compress.qat.prepare_qat`, step sizes
initialised on batches of its own training mix), fine-tuned by :func:`~ocrslim.compress.distill.distill` (KD from
the FP32 teacher plus the ground truth, the ``distill.<task>`` data, with ``qat``'s steps, learning rate and KD
weight; checkpoints and resume as there), then exported with
:func:`~ocrslim.compress.qat.export_qat_mnn` (MNNConvert ``--compressionParamsFile``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ocrslim.compress.distill import TaskData, distill, task_data
from ocrslim.compress.qat import export_qat_mnn, prepare_qat
from ocrslim.core.artifacts import preprocessing, read_sidecar, sidecar_path
from ocrslim.core.config import DetConfig, DistillConfig, QatConfig, RecConfig
from ocrslim.core.errors import ArtifactError
from ocrslim.core.fsutil import atomic_path, write_json
from ocrslim.data.train import DetTrainSet, RecTrainSet
from ocrslim.infer.pipeline import Model, open_model
from ocrslim.models.io import load_model

__all__ = ["CALIB_BATCH", "calibration_batches", "qat_finetune", "qat_stage"]

CALIB_BATCH = 8  # samples per calibration batch
_CALIB_SEED = 12345  # calibration batches are drawn apart from the training batches' seeds


def calibration_batches(data: TaskData, count: int) -> list[torch.Tensor]:
    """``count`` batches of :data:`CALIB_BATCH` training samples (the training mix, seeded), as model inputs."""
    train = data.train
    out = []
    for step in range(count):
        if isinstance(train, RecTrainSet):
            batch = train.batch(train.draw(CALIB_BATCH, step, _CALIB_SEED))
        else:
            assert isinstance(train, DetTrainSet)
            import numpy as np

            batch = train.batch(train.draw(CALIB_BATCH, step, _CALIB_SEED), np.random.default_rng((_CALIB_SEED, step)),
                                _CALIB_SEED)
        out.append(torch.from_numpy(batch.images))
    return out


def qat_finetune(
    task: str,
    student: nn.Module,
    teacher: Model | None,
    cfg: DistillConfig,
    qcfg: QatConfig,
    data: TaskData,
    run_dir: str | os.PathLike[str],
    mnn_out: str | os.PathLike[str],
    *,
    pre: DetConfig | RecConfig,
    characters: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepare ``student`` for INT8, fine-tune it, and write its MNN INT8 model to ``mnn_out``.

    Args:
        task: "det" or "rec".
        student: the distilled FP32 student (prepared in place).
        teacher: the FP32 teacher for KD (any runner).
        cfg: the distillation settings (data, loss, schedule); ``qcfg`` replaces the task's steps, lr, warm-up and
            alpha, and turns off hints and partial training.
        qcfg: the QAT settings.
        data: :func:`ocrslim.compress.distill.task_data` of the task.
        run_dir: checkpoints and curves (a killed run resumes).
        mnn_out: the INT8 ``.mnn`` (written atomically).
        pre: the student's preprocessing; characters: rec dictionary.

    Returns:
        ``{"plan": summary of the quantized / float layers, "distill": the loop's report, "mnn": the INT8 file's
        precision report}``.
    """
    section = dataclasses.replace(cfg.task(task), steps=qcfg.steps, lr=qcfg.lr, warmup_steps=qcfg.warmup_steps,
                                  alpha=qcfg.alpha, hint_weight=0.0, hint_layer=None, trainable=())
    qat_cfg = dataclasses.replace(cfg, **{task: section})
    calib = calibration_batches(data, qcfg.calib_batches)
    student.eval()
    plan = prepare_qat(student, calib, keep_float=qcfg.keep_float(task), init=qcfg.init)
    report = distill(task, student, teacher, qat_cfg, data, run_dir, pre=pre, characters=characters,
                     progress=progress)
    if report["fit"]["rank"] != 0:
        return {"plan": plan.summary(), "distill": report, "mnn": None}
    student.eval()
    mnn = export_qat_mnn(student, Path(mnn_out), calib[0][:1])
    return {"plan": plan.summary(), "distill": report, "mnn": mnn}


def qat_stage(task: str, model: str | os.PathLike[str], float_sidecar: str | os.PathLike[str],
              out: str | os.PathLike[str], run_dir: str | os.PathLike[str], qcfg: QatConfig, cfg: DistillConfig
              ) -> dict[str, Any] | None:
    """The ``qat`` stage: fine-tune the student ``model`` of ``task`` and write ``out/model.mnn`` (+ its sidecar: the
    FP32 model's configuration and dictionary, precision int8, quant method QAT, the layers kept float); or, when
    ``task`` is not in ``qcfg.tasks``, only ``out/skipped.json`` (and the run directory's note).

    Returns:
        The metrics (DVC metrics file), or None on a DDP rank other than 0 (which writes nothing).

    Raises:
        ArtifactError: ``float_sidecar`` is missing (the convert stage has not run).
    """
    out, run_dir = Path(out), Path(run_dir)
    if task not in qcfg.tasks:
        note = {"reason": f"{task} is not in qat.tasks"}
        with atomic_path(out) as tmp:
            tmp.mkdir()
            write_json(tmp / "skipped.json", note)
        write_json(run_dir / "skipped.json", note)
        return {"mode": "skipped"}
    student, meta = load_model(model)
    float_meta = read_sidecar(Path(float_sidecar).with_suffix(""))
    if not float_meta:
        raise ArtifactError(f"{float_sidecar}: not found. Run dvc repro convert first.")
    det_cfg, rec_cfg = preprocessing(meta)
    pre = det_cfg if task == "det" else rec_cfg
    chars = meta.get("characters")
    spec = str(model) if qcfg.teacher == "student" else cfg.teacher(task)  # the KD target
    teacher = open_model(spec, task, threads=cfg.threads) if spec else None
    data = task_data(task, cfg, pre, chars)
    work = run_dir / "export"
    work.mkdir(parents=True, exist_ok=True)
    report = qat_finetune(task, student, teacher, cfg, qcfg, data, run_dir, work / "model.mnn", pre=pre,
                          characters=chars)
    if report["mnn"] is None:
        return None  # DDP: rank 0 writes the outputs
    kept = sorted(report["plan"]["kept_float"])
    with atomic_path(out) as tmp:
        tmp.mkdir()
        shutil.copyfile(work / "model.mnn", tmp / "model.mnn")
        write_json(sidecar_path(tmp / "model.mnn"), {**float_meta, "precision": "int8", "quant_method": "QAT",
                                                     "float_layers": kept, "fixed_input_shape": None})
    val = report["distill"]["val"]
    return {"mode": "qat", "steps": report["distill"]["fit"]["end_step"],
            "quantized_layers": report["plan"]["quantized_layers"], "float_layers": len(kept),
            "int8_ops": report["mnn"]["int8_ops"], "mnn_bytes": report["mnn"]["mnn_bytes"],
            **{f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))}}
