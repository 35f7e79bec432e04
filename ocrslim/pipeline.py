"""One OCR pipeline over any runner: open models by spec, detect, crop, recognise.

A model spec is a zoo name (``ppocrv4_mobile_det``), ``onnx:<path>``, or a ``.pt`` / ``.onnx`` /
``.mnn`` file; the runner follows from it. Pre/post-processing settings travel with the model
(``.pt`` meta, ONNX ``metadata_props``, the bundle ``manifest.json``) and default to the
dataclasses in :mod:`ocrslim.config` — they are defined nowhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ocrslim.config import DetConfig, RecConfig, from_dict, to_dict
from ocrslim.errors import ArtifactError
from ocrslim.onnx2torch_compat import onnx_to_torch
from ocrslim.postprocess import ctc_charset, ctc_greedy_decode, db_boxes
from ocrslim.preprocess import cap_image, crop_quad, det_preprocess, reading_order, rec_preprocess
from ocrslim.runtime import MnnRunner, OrtRunner, Runner, TorchRunner
from ocrslim.zoo import ZOO, onnx_characters, onnx_ocrslim_meta, read_dict_file, zoo_entry, zoo_onnx_path

BACKENDS = ("onnx", "torch", "mnn")
MANIFEST = "manifest.json"


@dataclasses.dataclass
class Model:
    """A runnable model with what is needed to pre/post-process for it."""

    task: str  # "det" | "rec"
    runner: Runner
    source: str  # what was opened, for messages and reports
    characters: list[str] | None = None  # rec: dictionary without blank/space
    det_cfg: DetConfig = dataclasses.field(default_factory=DetConfig)
    rec_cfg: RecConfig = dataclasses.field(default_factory=RecConfig)

    @property
    def charset(self) -> list[str]:
        """CTC classes: blank, the dictionary, space."""
        if self.characters is None:
            raise ArtifactError(f"{self.source}: no character dictionary. Pass --dict <file> (one character per line).")
        return ctc_charset(self.characters)


def _configs(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "det" in meta.get("config", {}):
        out["det_cfg"] = from_dict(DetConfig, meta["config"]["det"], "det")
    if "rec" in meta.get("config", {}):
        out["rec_cfg"] = from_dict(RecConfig, meta["config"]["rec"], "rec")
    return out


def model_meta(task: str, characters: Sequence[str] | None, det_cfg: DetConfig, rec_cfg: RecConfig) -> dict[str, Any]:
    """Metadata every ocrslim model artifact carries (task, dictionary, pre/post-processing)."""
    meta: dict[str, Any] = {"task": task, "config": {task: to_dict(det_cfg if task == "det" else rec_cfg)}}
    if task == "rec":
        meta["characters"] = list(characters or [])
    return meta


def _cache_dir() -> Path:
    return Path(os.environ.get("OCRSLIM_CACHE", Path.home() / ".cache" / "ocrslim"))


def _zoo_as_mnn(name: str) -> Path:
    """Convert a zoo ONNX to MNN FP32 once, cached by the ONNX file's hash."""
    from ocrslim.export.mnn import convert_onnx_to_mnn

    onnx_path = zoo_onnx_path(name)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:16]
    dest = _cache_dir() / "mnn" / f"{name}-{digest}.mnn"
    if not dest.is_file():
        convert_onnx_to_mnn(onnx_path, dest)
    return dest


def _torch_from_onnx(path: Path, native: bool, task: str) -> Any:
    if native:
        from ocrslim.models.ppocr import load_ppocrv4

        return load_ppocrv4(task, path)
    return onnx_to_torch(path)


def sidecar_path(path: str | Path) -> Path:
    """Metadata file beside a model that cannot carry its own (``det.mnn`` → ``det.mnn.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _sidecar_meta(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{side}: not valid JSON ({exc.msg}, line {exc.lineno}). Rebuild it with dvc repro."
        ) from None


def open_model(
    spec: str,
    task: str,
    *,
    backend: str | None = None,
    dict_path: str | Path | None = None,
    threads: int | None = None,
) -> Model:
    """Open a model by spec for ``task`` ("det" or "rec").

    Args:
        spec: zoo name, ``onnx:<path>``, or a path ending in .pt / .onnx / .mnn.
        task: "det" or "rec".
        backend: for zoo names only: "onnx" (default, ONNX Runtime on the shipped file), "torch"
            (native ocrslim module where one exists, else onnx2torch) or "mnn" (converted once
            to FP32 MNN and cached under ``$OCRSLIM_CACHE``).
        dict_path: character list for a recogniser that carries none.
        threads: intra-op threads for the runtime.
    """
    if backend is not None and backend not in BACKENDS:
        raise ArtifactError(f"--backend {backend}: unknown. Use one of {', '.join(BACKENDS)}.")
    meta: dict[str, Any] = {}
    chars: list[str] | None = None
    if spec.startswith("onnx:"):
        spec = spec[len("onnx:") :]
    path = Path(spec)
    if spec in ZOO or (path.suffix == "" and not path.exists()):
        entry = zoo_entry(spec)
        if entry.task != task:
            raise ArtifactError(f"{spec}: is a {entry.task} model, given for {task}. Pass a {task} model.")
        onnx_path = zoo_onnx_path(spec)
        chars = onnx_characters(onnx_path) if task == "rec" else None
        backend = backend or "onnx"
        source = f"{spec} ({backend})"
        if backend == "onnx":
            runner: Runner = OrtRunner(onnx_path, threads=threads)
        elif backend == "torch":
            runner = TorchRunner(_torch_from_onnx(onnx_path, entry.native, task), threads=threads)
        else:
            runner = MnnRunner(_zoo_as_mnn(spec), threads=threads)
    else:
        if not path.is_file():
            raise ArtifactError(f"{path}: model file not found. Check the path, or run dvc repro to build it.")
        suffix = path.suffix.lower()
        source = str(path)
        if suffix == ".pt":
            from ocrslim.models.io import load_model

            module, meta = load_model(path)
            runner = TorchRunner(module, threads=threads)
        elif suffix == ".onnx":
            meta = onnx_ocrslim_meta(path)
            chars = onnx_characters(path) if task == "rec" else None
            runner = OrtRunner(path, threads=threads)
        elif suffix == ".mnn":
            meta = _sidecar_meta(path)
            runner = MnnRunner(path, threads=threads)
        else:
            raise ArtifactError(f"{path}: unknown model type '{suffix}'. Use a zoo name or a .pt, .onnx or .mnn file.")
        if meta.get("task") not in (None, task):
            raise ArtifactError(f"{path}: is a {meta['task']} model, given for {task}. Pass a {task} model.")
    if task == "rec":
        if dict_path is not None:
            chars = read_dict_file(dict_path)
        elif meta.get("characters"):
            chars = list(meta["characters"])
    return Model(task=task, runner=runner, source=source, characters=chars, **_configs(meta))


def open_bundle(path: str | Path, threads: int | None = None) -> tuple[Model, Model]:
    """Open a bundle directory: ``manifest.json`` naming det/rec files and the dictionary, or a
    directory holding ``det.<ext>`` and ``rec.<ext>`` models with their ``.json`` sidecars."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: bundle directory not found. Build one with dvc repro (e.g. artifacts/mnn).")
    manifest = path / MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        models = []
        for task in ("det", "rec"):
            entry = data.get(task)
            if not entry or "file" not in entry:
                raise ArtifactError(f"{manifest}: no '{task}.file' entry. Rebuild the bundle with dvc repro.")
            dict_path = path / entry["dict"] if task == "rec" and entry.get("dict") else None
            model = open_model(str(path / entry["file"]), task, dict_path=dict_path, threads=threads)
            if entry.get("config"):
                cfg = _configs({"config": {task: entry["config"]}})
                model = dataclasses.replace(model, **cfg)
            models.append(model)
        return models[0], models[1]
    found = []
    for task in ("det", "rec"):
        files = [p for p in (path / f"{task}.mnn", path / f"{task}.onnx", path / f"{task}.pt") if p.is_file()]
        if not files:
            raise ArtifactError(f"{path}: no manifest.json and no {task}.mnn/.onnx/.pt. Pass a bundle directory.")
        found.append(open_model(str(files[0]), task, threads=threads))
    return found[0], found[1]


def write_manifest(
    out_dir: Path, det_file: str, rec_file: str, characters: Sequence[str], det_cfg: DetConfig, rec_cfg: RecConfig,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``dict.txt`` and ``manifest.json`` describing the models in ``out_dir``."""
    from ocrslim.fsutil import sha256_file, write_json, write_text

    write_text(out_dir / "dict.txt", "".join(c + "\n" for c in characters))

    def sha(name: str) -> str:
        return sha256_file(out_dir / name)

    manifest = {
        "format": "ocrslim-bundle/1",
        "det": {"file": det_file, "sha256": sha(det_file), "config": to_dict(det_cfg)},
        "rec": {"file": rec_file, "sha256": sha(rec_file), "dict": "dict.txt", "config": to_dict(rec_cfg)},
        **(extra or {}),
    }
    write_json(out_dir / MANIFEST, manifest)
    return manifest


@dataclasses.dataclass
class Line:
    """One recognised text line."""

    box: np.ndarray  # 4x2 float32, original-image pixels, tl tr br bl
    text: str
    score: float  # mean CTC confidence
    det_score: float


class OCR:
    """Detection → crop → recognition over any pair of runners."""

    def __init__(self, det: Model | None, rec: Model | None):
        self.det = det
        self.rec = rec
        self._checked = False

    def detect(self, img: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        """Boxes (4x2, original image pixels) and scores for one BGR image."""
        boxes, scores, _ = self._detect(img)
        return boxes, scores

    def _detect(self, img: np.ndarray) -> tuple[list[np.ndarray], list[float], np.ndarray]:
        """Boxes in original pixels, scores, and the (possibly capped) image crops are cut from."""
        if self.det is None:
            raise ArtifactError("no detection model given. Pass --det MODEL or --bundle DIR.")
        cfg = self.det.det_cfg
        work, ratio_h, ratio_w = cap_image(img, cfg)
        prob = self.det.runner(det_preprocess(work, cfg))
        boxes, scores = db_boxes(prob[0], work.shape[:2], cfg)
        scale = np.array([ratio_w, ratio_h], dtype=np.float32)
        return [b * scale for b in boxes], scores, work

    def recognize(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(text, confidence) for each BGR crop; batched by aspect ratio like PP-OCR."""
        if self.rec is None:
            raise ArtifactError("no recognition model given. Pass --rec MODEL or --bundle DIR.")
        cfg = self.rec.rec_cfg
        charset = self.rec.charset
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        order = np.argsort([c.shape[1] / max(c.shape[0], 1) for c in crops], kind="stable")
        for start in range(0, len(crops), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            batch = rec_preprocess([crops[i] for i in idx], cfg)
            probs = self.rec.runner(batch)
            if not self._checked:
                if probs.ndim != 3 or probs.shape[2] != len(charset):
                    raise ArtifactError(
                        f"{self.rec.source}: model outputs {probs.shape[-1]} classes but the dictionary gives "
                        f"{len(charset)} (with blank and space). Pass the model's own dictionary with --dict."
                    )
                self._checked = True
            for i, res in zip(idx, ctc_greedy_decode(probs, charset)):
                results[int(i)] = res
        return results

    def read(self, img: np.ndarray) -> list[Line]:
        """Full OCR of one BGR image, lines in reading order."""
        return self.read_boxes(img, *self.detect(img))

    def read_boxes(self, img: np.ndarray, boxes: Sequence[np.ndarray], scores: Sequence[float]) -> list[Line]:
        """Recognise already-detected boxes (original pixels) of one image, in reading order.

        Crops are cut from the image capped to ``det_cfg.max_side_len``, as detection saw it.
        """
        cfg = self.det.det_cfg if self.det is not None else None
        work, ratio_h, ratio_w = cap_image(img, cfg) if cfg is not None else (img, 1.0, 1.0)
        scale = np.array([ratio_w, ratio_h], dtype=np.float32)
        order = reading_order(boxes)
        crops = [crop_quad(work, boxes[i] / scale) for i in order]
        texts = self.recognize(crops) if crops else []
        return [Line(boxes[i], t, c, scores[i]) for i, (t, c) in zip(order, texts)]


__all__ = [
    "BACKENDS", "Line", "Model", "OCR", "model_meta", "open_bundle", "open_model",
    "write_manifest",
]
