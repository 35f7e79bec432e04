"""Import a teacher into the pipeline as a PyTorch module with its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ocrslim.core.artifacts import model_meta, onnx_characters, read_dict_file
from ocrslim.core.config import DetConfig, RecConfig, TeacherConfig
from ocrslim.core.errors import ArtifactError
from ocrslim.models.onnx2torch import onnx_to_torch
from ocrslim.models.registry import lookup, teacher_onnx_path


def import_teacher(
    cfg: TeacherConfig, task: str, det_cfg: DetConfig, rec_cfg: RecConfig
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the teacher for ``task`` as a torch module, with metadata to save beside it.

    Zoo models with a native ocrslim architecture (PP-OCRv4 mobile) become native modules loaded
    with the shipped weights; other zoo names and ``onnx:<path>`` become onnx2torch modules
    (forward only is needed of a teacher).

    Returns:
        (module in eval mode, meta) where meta holds task, source, dictionary (rec) and the
        pre/post-processing config.
    """
    spec = cfg.det if task == "det" else cfg.rec
    characters: list[str] | None = None
    if spec.startswith("onnx:") or spec.endswith(".onnx"):
        path = Path(spec.removeprefix("onnx:"))
        if not path.is_file():
            raise ArtifactError(f"{path}: teacher.{task} ONNX file not found. Fix the path in conf/teacher/.")
        native = False
    else:
        try:
            entry = lookup(spec, "teacher", task, what=f"params.yaml: teacher.{task}")
        except ArtifactError as exc:
            raise ArtifactError(f"{exc} Or give onnx:<path>.") from None
        path = teacher_onnx_path(spec)
        native = entry.native
    if task == "rec":
        characters = read_dict_file(cfg.dict) if cfg.dict else onnx_characters(path)
        if not characters:
            raise ArtifactError(f"{path}: no character list in the model. Set teacher.dict to its dictionary file.")
    if native:
        from ocrslim.models.ppocr import load_ppocrv4

        module = load_ppocrv4(task, path)
    else:
        module = onnx_to_torch(path)
    module.eval()
    meta = model_meta(task, characters, det_cfg, rec_cfg)
    meta["source"] = spec
    meta["native"] = native
    return module, meta
