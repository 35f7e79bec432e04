"""The deployable bundle: ``det.mnn``, ``rec.mnn``, ``dict.txt`` and ``manifest.json`` in one directory.

The manifest is the single description a mobile app (or :func:`ocrslim.infer.pipeline.open_bundle`)
needs: each model's file with its sha256 and size, its precision (int8 | int8-weights | fp16 | fp32), the
layers kept float, its pre/post-processing (input size rules, mean/std, DB thresholds, rec height — the
:class:`~ocrslim.core.config.DetConfig` / :class:`~ocrslim.core.config.RecConfig` the model was trained and
gated with, copied from the model's sidecar, never restated) and the gate metrics it shipped with.
The directory is written atomically: a killed stage leaves the previous bundle or none.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ocrslim.core.artifacts import configs_of, read_manifest, read_sidecar, sidecar_path, write_manifest
from ocrslim.core.config import to_dict
from ocrslim.core.errors import ArtifactError
from ocrslim.core.fsutil import atomic_path

__all__ = ["build_bundle", "describe_bundle"]

# Sidecar keys that describe how a model was quantized (and for which target), copied into its manifest entry.
_QUANT_KEYS = ("float_layers", "quant_method", "fixed_input_shape", "target")


def _sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        raise ArtifactError(f"{path}: model or its sidecar {side.name} missing. Run dvc repro quantize first.")
    return read_sidecar(path)


def build_bundle(det_model: str | Path, rec_model: str | Path, out_dir: str | Path,
                 reports: dict[str, dict[str, Any]] | None = None, extra: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Assemble ``out_dir`` from a det and a rec model file (each with its ``.json`` sidecar).

    Args:
        det_model, rec_model: ``.mnn`` (or ``.onnx``) files whose sidecars carry ``task``,
            ``config`` and, for rec, ``characters``; quantized ones also ``precision`` etc.
        out_dir: the bundle directory (replaced atomically).
        reports: ``{"det": {...}, "rec": {...}}`` metrics to record as ``shipped_with`` (the
            quantize stage's gate results).
        extra: further top-level manifest keys (e.g. the quantization ``target``).

    Returns:
        The manifest written.
    """
    det_model, rec_model = Path(det_model), Path(rec_model)
    sources = {"det": det_model, "rec": rec_model}
    metas = {task: _sidecar(src) for task, src in sources.items()}
    for task, meta in metas.items():
        if meta.get("task") != task:
            raise ArtifactError(f"{sidecar_path(sources[task])}: task is {meta.get('task')!r}, expected {task!r}. "
                                f"Pass the {task} model.")
    chars = metas["rec"].get("characters")
    if not chars:
        raise ArtifactError(f"{sidecar_path(rec_model)}: no 'characters'. Rebuild the rec model with dvc repro.")
    cfgs = {task: configs_of(meta).get(f"{task}_cfg") for task, meta in metas.items()}
    for task, cfg in cfgs.items():
        if cfg is None:
            raise ArtifactError(f"{sidecar_path(sources[task])}: no pre/post-processing 'config'. Rebuild: dvc repro.")
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        manifest: dict[str, Any] = dict(extra or {})
        for task, src in sources.items():
            meta = metas[task]
            name = f"{task}{src.suffix}"
            shutil.copy2(src, tmp / name)
            entry: dict[str, Any] = {"file": name, "config": to_dict(cfgs[task]),
                                     "precision": meta.get("precision", "fp32")}
            entry.update({key: meta[key] for key in _QUANT_KEYS if key in meta})
            entry["source"] = meta.get("source")
            if reports and task in reports:
                entry["shipped_with"] = reports[task]
            manifest[task] = entry
        manifest = write_manifest(tmp, manifest, chars)
    return manifest


def describe_bundle(path: str | Path) -> dict[str, Any]:
    """Verify a bundle (every file against the manifest) and summarise what it holds, JSON-able:
    per model its file, size, precision, float layers, quantization method and target, and the gate
    metrics it shipped with.

    Raises:
        ArtifactError: as :func:`ocrslim.core.artifacts.read_manifest` (tampered, truncated, missing files).
    """
    manifest = read_manifest(path, verify=True)
    out: dict[str, Any] = {"bundle": str(path), "format": manifest["format"], "verified": True}
    out["target"] = manifest.get("target")
    for task in ("det", "rec"):
        e = manifest[task]
        out[task] = {
            "file": e["file"], "size_mb": round(e.get("size_bytes", e["path"].stat().st_size) / 2**20, 3),
            "sha256": e["sha256"], "precision": e.get("precision"), "quant_method": e.get("quant_method"),
            "float_layers": e.get("float_layers", []), "target": e.get("target", manifest.get("target")),
            "shipped_with": e.get("shipped_with", {}),
        }
    out["rec"]["classes"] = None
    try:
        out["rec"]["classes"] = sum(1 for _ in manifest["rec"]["dict_path"].open(encoding="utf-8")) + 2
    except OSError:
        pass
    return out
