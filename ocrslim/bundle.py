"""The deployable bundle: ``det.mnn``, ``rec.mnn``, ``dict.txt`` and ``manifest.json`` in one directory.

The manifest is the single description a mobile app (or :func:`ocrslim.pipeline.open_bundle`)
needs: each model's file and sha256, its precision (int8 | int8-weights | fp16 | fp32), the layers
kept float, its pre/post-processing (input size rules, mean/std, DB thresholds, rec height — the
:class:`~ocrslim.config.DetConfig` / :class:`~ocrslim.config.RecConfig` the model was trained and
gated with, copied from the model's sidecar, never restated) and the gate metrics it shipped with.
The directory is written atomically: a killed stage leaves the previous bundle or none.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ocrslim.errors import ArtifactError
from ocrslim.fsutil import atomic_path, sha256_file, write_json
from ocrslim.pipeline import MANIFEST, _configs, _sidecar_meta, sidecar_path, write_manifest

# Sidecar keys that describe how a model was quantized, copied into its manifest entry.
_QUANT_KEYS = ("float_layers", "quant_method", "input_shape", "fixed_shape")


def _sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        raise ArtifactError(f"{path}: model or its sidecar {side.name} missing. Run dvc repro quantize first.")
    return _sidecar_meta(path)


def build_bundle(det_model: str | Path, rec_model: str | Path, out_dir: str | Path,
                 reports: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Assemble ``out_dir`` from a det and a rec model file (each with its ``.json`` sidecar).

    Args:
        det_model, rec_model: ``.mnn`` (or ``.onnx``) files whose sidecars carry ``task``,
            ``config`` and, for rec, ``characters``; quantized ones also ``precision`` etc.
        out_dir: the bundle directory (replaced atomically).
        reports: ``{"det": {...}, "rec": {...}}`` metrics to record as ``shipped_with`` (the
            quantize stage's gate results).

    Returns:
        The manifest written.
    """
    det_model, rec_model = Path(det_model), Path(rec_model)
    metas = {"det": _sidecar(det_model), "rec": _sidecar(rec_model)}
    for task, meta in metas.items():
        if meta.get("task") != task:
            raise ArtifactError(f"{sidecar_path(det_model if task == 'det' else rec_model)}: task is "
                                f"{meta.get('task')!r}, expected {task!r}. Pass the {task} model.")
    chars = metas["rec"].get("characters")
    if not chars:
        raise ArtifactError(f"{sidecar_path(rec_model)}: no 'characters'. Rebuild the rec model with dvc repro.")
    cfgs = {task: _configs(meta) for task, meta in metas.items()}
    if "det_cfg" not in cfgs["det"] or "rec_cfg" not in cfgs["rec"]:
        raise ArtifactError(f"{det_model.parent}: a sidecar has no pre/post-processing 'config'. Rebuild: dvc repro.")
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        files = {}
        for task, src in (("det", det_model), ("rec", rec_model)):
            files[task] = f"{task}{src.suffix}"
            shutil.copy2(src, tmp / files[task])
        manifest = write_manifest(tmp, files["det"], files["rec"], chars, cfgs["det"]["det_cfg"],
                                  cfgs["rec"]["rec_cfg"])
        for task in ("det", "rec"):
            meta = metas[task]
            entry = manifest[task]
            entry["precision"] = meta.get("precision", "fp32")
            for key in _QUANT_KEYS:
                if key in meta:
                    entry[key] = meta[key]
            entry["source"] = meta.get("source")
            entry["size_bytes"] = (tmp / files[task]).stat().st_size
            if reports and task in reports:
                entry["shipped_with"] = reports[task]
        write_json(tmp / MANIFEST, manifest)
    return manifest


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """Check every file the manifest names exists with its sha256; return the manifest."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: no manifest.json. Build the bundle with dvc repro bundle.")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for task in ("det", "rec"):
        entry = manifest.get(task, {})
        f = path / entry.get("file", "")
        if not f.is_file():
            raise ArtifactError(f"{manifest_path}: {task} file {entry.get('file')!r} missing. Rebuild the bundle.")
        if sha256_file(f) != entry.get("sha256"):
            raise ArtifactError(f"{f}: sha256 differs from manifest.json. The file changed; rebuild the bundle.")
    return manifest


__all__ = ["build_bundle", "verify_bundle"]
