"""Import a teacher into the pipeline as a PyTorch module with its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ocrslim.config import DetConfig, RecConfig, TeacherConfig
from ocrslim.errors import ArtifactError
from ocrslim.onnx2torch_compat import onnx_to_torch
from ocrslim.pipeline import model_meta
from ocrslim.zoo import ZOO, onnx_characters, read_dict_file, zoo_onnx_path


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
        entry = ZOO.get(spec)
        if entry is None or entry.task != task:
            names = [n for n, e in ZOO.items() if e.task == task]
            raise ArtifactError(
                f"params.yaml: teacher.{task} = {spec!r} is not a {task} model. Use one of {', '.join(names)} "
                f"or onnx:<path>."
            )
        path = zoo_onnx_path(spec)
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
