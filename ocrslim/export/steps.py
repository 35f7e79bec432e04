"""The export and convert steps of the DAG: torch → ONNX (+onnxsim) → MNN, each behind a parity gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ocrslim.core.artifacts import (
    configs_of,
    onnx_characters,
    onnx_metadata,
    onnx_ocrslim_meta,
    sidecar_path,
    with_postprocessing,
)
from ocrslim.core.config import ConvertConfig, DetConfig, ExportConfig, RecConfig
from ocrslim.core.errors import ArtifactError
from ocrslim.core.fsutil import atomic_path, write_json

INPUT, OUTPUT = "x", "y"


def probe_inputs(task: str, cfg: ExportConfig, meta: dict[str, Any] | None = None, batch: int = 1,
                 seed: int = 0) -> list[np.ndarray]:
    """Deterministic inputs at the configured probe shapes (≥ 2): rendered text, normalized like
    the runners do, plus mild noise, so the det map and rec frames are far from trivial."""
    from ocrslim.data.probe import text_image
    from ocrslim.infer.preprocess import normalize

    cfgs = configs_of(meta or {})
    pre: DetConfig | RecConfig = cfgs.get("det_cfg", DetConfig()) if task == "det" else cfgs.get("rec_cfg", RecConfig())
    mean, std = pre.mean, pre.std
    rng = np.random.default_rng(seed)
    if task == "det":
        shapes = [(batch, h, w) for h, w in cfg.det_shapes]
    else:
        height = cfgs.get("rec_cfg", RecConfig()).height
        shapes = [(batch + i, height, w) for i, w in enumerate(cfg.rec_widths)]
    out = []
    for n, h, w in shapes:
        imgs = [normalize(text_image(h, w, seed=seed + k), mean, std) for k in range(n)]
        x = np.stack(imgs) + rng.normal(0.0, 0.02, size=(n, 3, h, w)).astype(np.float32)
        out.append(x.astype(np.float32))
    return out


def dynamic_axes(task: str) -> dict[str, dict[int, str]]:
    """Dynamic batch (and H/W for det, W for rec) so one file serves every image size."""
    if task == "det":
        return {INPUT: {0: "n", 2: "h", 3: "w"}, OUTPUT: {0: "n", 2: "h", 3: "w"}}
    return {INPUT: {0: "n", 3: "w"}, OUTPUT: {0: "n", 1: "t"}}


def _embed_meta(onnx_path: Path, meta: dict[str, Any]) -> None:
    """Store the dictionary (PP-OCR key ``character``) and ocrslim's metadata in the ONNX file."""
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    if meta.get("characters"):
        model.metadata_props.add(key="character", value="\n".join(meta["characters"]))
    light = {k: v for k, v in meta.items() if k != "characters"}
    model.metadata_props.add(key="ocrslim", value=json.dumps(light, ensure_ascii=False))
    onnx.save(model, str(onnx_path))


def export_model(pt_path: str | Path, out: str | Path, task: str, cfg: ExportConfig,
                 post: DetConfig | RecConfig | None = None) -> dict[str, Any]:
    """Export a saved ocrslim model to ONNX, simplify it, and gate on torch parity at ≥ 2 shapes.

    ``post``: the params' ``det`` / ``rec`` section; its post-processing is attached to the metadata the ONNX file
    carries (:func:`ocrslim.core.artifacts.with_postprocessing`: a torch model file holds its preprocessing only).
    ``None`` keeps the model's metadata as it is.

    Returns a report (sizes, max |torch − onnx| per probe shape) for the metrics file. Raises
    ParityError (and writes nothing) when the difference exceeds the task's tolerance.
    """
    from ocrslim.export.onnx import export_onnx, max_abs_diff_torch_onnx, parity_gate
    from ocrslim.models.io import load_model

    model, meta = load_model(pt_path)
    if meta.get("task") not in (None, task):
        raise ArtifactError(f"{pt_path}: is a {meta['task']} model, not {task}. Check dvc.yaml's export stage.")
    model.eval()
    if post is not None:
        meta = with_postprocessing(meta, post)
    inputs = probe_inputs(task, cfg, meta)
    out = Path(out)
    with atomic_path(out) as tmp:
        export_onnx(
            model, tmp, torch.from_numpy(inputs[0]), dynamic_axes(task), input_name=INPUT, output_name=OUTPUT,
            opset=cfg.opset, simplify=cfg.simplify,
        )
        _embed_meta(tmp, meta)
        diffs = {"x".join(map(str, x.shape)): max_abs_diff_torch_onnx(model, tmp, [x]) for x in inputs}
        parity_gate(f"export {task}: torch vs onnx", diffs, cfg.det_tol if task == "det" else cfg.rec_tol)
    params = sum(p.numel() for p in model.parameters())
    return {
        "params": int(params),
        "onnx_bytes": out.stat().st_size,
        "onnx_mb": round(out.stat().st_size / 2**20, 3),
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_by_shape": diffs,
    }


def convert_model(onnx_path: str | Path, out: str | Path, task: str, cfg: ConvertConfig,
                  export_cfg: ExportConfig | None = None) -> dict[str, Any]:
    """Convert ONNX → MNN FP32 (or FP16 weights) and gate on parity vs ONNX Runtime at ≥ 2 shapes.

    Writes ``out`` and its metadata sidecar ``out.json`` (task, dictionary, pre/post-processing).
    """
    from ocrslim.export.mnn import convert_onnx_to_mnn
    from ocrslim.export.onnx import parity_gate
    from ocrslim.infer.runners import MnnRunner, OrtRunner

    onnx_path, out = Path(onnx_path), Path(out)
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: not found. Run dvc repro export first.")
    props = onnx_metadata(onnx_path)
    meta = onnx_ocrslim_meta(onnx_path, props)
    if task == "rec":
        meta["characters"] = onnx_characters(onnx_path, props) or []
    inputs = probe_inputs(task, export_cfg or ExportConfig(), meta)
    with atomic_path(out) as tmp:
        convert_onnx_to_mnn(onnx_path, tmp, fp16=cfg.fp16)
        ort, mnn = OrtRunner(onnx_path), MnnRunner(tmp)
        diffs = {"x".join(map(str, x.shape)): float(np.abs(ort(x) - mnn(x)).max()) for x in inputs}
        parity_gate(f"convert {task}: onnx vs mnn", diffs, cfg.det_tol if task == "det" else cfg.rec_tol)
    write_json(sidecar_path(out), meta)
    return {
        "mnn_bytes": out.stat().st_size,
        "mnn_mb": round(out.stat().st_size / 2**20, 3),
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_by_shape": diffs,
    }
