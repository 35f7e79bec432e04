"""One OCR pipeline over any runner: open models by spec, detect, crop, recognise.

A model spec is a registered teacher name (``ppocrv4_mobile_det``), ``onnx:<path>``, or a ``.safetensors``
(torch) / ``.onnx`` / ``.mnn`` file; the runner and the file's metadata follow from its suffix
(:func:`ocrslim.infer.runners.open_model_file`).
Pre/post-processing settings travel with the model (``.safetensors`` meta, ONNX ``metadata_props``, ``.mnn.json``
sidecar, the bundle ``manifest.json``; :mod:`ocrslim.core.artifacts`) and default to the dataclasses in
:mod:`ocrslim.core.config` — they are defined nowhere else.

This is the inference core: it imports neither torch nor onnx2torch (a ``.safetensors`` model or
``backend="torch"`` loads them on demand).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ocrslim.core.artifacts import TORCHSCRIPT_RUNTIME, configs_of, onnx_characters, read_dict_file, read_manifest
from ocrslim.core.config import DetConfig, RecConfig
from ocrslim.core.errors import ArtifactError
from ocrslim.infer.postprocess import ctc_charset, ctc_greedy_decode, db_boxes
from ocrslim.infer.preprocess import cap_image, crop_quad, det_resize, normalize, reading_order, rec_preprocess
from ocrslim.infer.runners import MnnRunner, Runner, TorchRunner, open_model_file
from ocrslim.models.registry import REGISTRY, lookup, teacher_onnx_path

BACKENDS = ("onnx", "torch")


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


def _teacher_module(name: str, task: str) -> Any:
    """A registered teacher as a torch module (native where ocrslim has its architecture, else onnx2torch)."""
    entry = lookup(name, "teacher", task)
    path = teacher_onnx_path(name)
    if entry.native:
        from ocrslim.models.ppocr import load_ppocrv4

        return load_ppocrv4(task, path)
    from ocrslim.models.onnx2torch import onnx_to_torch

    return onnx_to_torch(path)


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
        spec: registered teacher name, ``onnx:<path>``, or a path ending in .safetensors / .onnx / .mnn.
        task: "det" or "rec".
        backend: for teacher names only: "onnx" (default, ONNX Runtime on the shipped file) or "torch"
            (native ocrslim module where one exists, else onnx2torch). For MNN, convert first
            (``ocrslim read --backend mnn`` does: :func:`ocrslim.export.mnn.zoo_as_mnn`).
        dict_path: character list for a recogniser that carries none.
        threads: intra-op threads for the runtime.
    """
    if backend is not None and backend not in BACKENDS:
        raise ArtifactError(f"--backend {backend}: not a runtime for registered names here. Use one of "
                            f"{', '.join(BACKENDS)} (MNN: convert with ocrslim.export.mnn.zoo_as_mnn).")
    spec = spec.removeprefix("onnx:")
    path = Path(spec)
    meta: dict[str, Any]
    runner: Runner
    if spec in REGISTRY or (path.suffix == "" and not path.exists()):
        entry = lookup(spec, "teacher", what="model")
        if entry.task != task:
            raise ArtifactError(f"{spec}: is a {entry.task} model, given for {task}. Pass a {task} model.")
        onnx_path = teacher_onnx_path(spec)
        backend = backend or "onnx"
        source = f"{spec} ({backend})"
        if backend == "onnx":
            runner, meta = open_model_file(onnx_path, threads)
        else:
            runner = TorchRunner(_teacher_module(spec, task), threads=threads)
            meta = {"characters": onnx_characters(onnx_path)} if task == "rec" else {}
    else:
        if not path.is_file():
            raise ArtifactError(f"{path}: model file not found. Check the path, or run dvc repro to build it.")
        source = str(path)
        runner, meta = open_model_file(path, threads)
        if meta.get("task") not in (None, task):
            raise ArtifactError(f"{path}: is a {meta['task']} model, given for {task}. Pass a {task} model.")
    chars: list[str] | None = None
    if task == "rec":
        if dict_path is not None:
            chars = read_dict_file(dict_path)
        elif meta.get("characters"):
            chars = list(meta["characters"])
    return Model(task=task, runner=runner, source=source, characters=chars, **configs_of(meta))


def open_bundle(path: str | Path, threads: int | None = None, verify: bool = True) -> tuple[Model, Model]:
    """Open a bundle directory (``manifest.json`` naming the det and rec files and the dictionary).

    Every file is checked against the manifest first (sha256, size, inside the directory:
    :func:`ocrslim.core.artifacts.read_manifest`); the models run with the pre/post-processing the
    manifest records (the det input policy ``limit_type`` / ``limit_side_len`` / ``max_side_len`` included),
    on the runtime their suffix names: MNN for ``.mnn`` (``artifacts/bundle``), ONNX Runtime for ``.onnx``
    (``artifacts/bundle_onnx``). A TorchScript bundle is refused.
    """
    manifest = read_manifest(path, verify=verify)
    if manifest.get("runtime") == TORCHSCRIPT_RUNTIME:
        raise ArtifactError(f"{path}: a TorchScript bundle, for PyTorch / PyTorch Mobile apps; ocrslim never loads "
                            "TorchScript (loading it can run code). Read the MNN bundle (artifacts/bundle) or the "
                            "ONNX Runtime one (artifacts/bundle_onnx).")
    models = []
    for task in ("det", "rec"):
        entry = manifest[task]
        dict_path = entry["dict_path"] if task == "rec" else None
        model = open_model(str(entry["path"]), task, dict_path=dict_path, threads=threads)
        if entry.get("config"):
            model = dataclasses.replace(model, **configs_of({"config": {task: entry["config"]}}))
        models.append(model)
    return models[0], models[1]


@dataclasses.dataclass
class Line:
    """One recognised text line."""

    box: np.ndarray  # 4x2 float32, original-image pixels, tl tr br bl
    text: str
    score: float  # mean CTC confidence
    det_score: float


def _round_up32(v: float) -> int:
    return int(math.ceil(v / 32) * 32)


def strip_rows(cfg: DetConfig, scale: float = 1.0) -> tuple[int, int]:
    """(strip height, context rows) at the detector's input for a page resized by ``scale``; (0, 0): whole page.

    ``det.tile_height`` / ``det.tile_overlap`` are rows of the page as given (or as capped): a page the input policy
    scales *up* (a small image, ``limit_type: min``) has its text scaled up too, so its strips grow with it, on the
    stride grid — a word image read at 20× would otherwise be cut into strips shorter than its letters.
    """
    if cfg.tile_height <= 0:
        return 0, 0
    up = max(1.0, scale)
    margin = _round_up32(cfg.tile_overlap * up) if cfg.tile_overlap else 0
    return max(_round_up32(cfg.tile_height * up), 2 * margin + 32), margin


def det_forward(runner: Runner, img: np.ndarray, cfg: DetConfig, scale: float = 1.0) -> np.ndarray:
    """The detector's probability map (1×1×H×W) for ``img``, a BGR page already at its input size
    (:func:`ocrslim.infer.preprocess.det_resize`, which scaled it by ``scale``), read whole or in strips
    (``cfg.tile_height``, :func:`strip_rows`).

    In strips, each window is the strip height (the last one shifted up to fit), normalised on its own (the
    float copy of the whole page is never made), and keeps only its middle rows: the context rows at each
    inner edge are run and dropped. Windows start on multiples of 32, so every kept row sees the
    convolution grid the whole page would give it; what differs is the context beyond the overlap (and what
    the detector pools over the whole input, e.g. its squeeze-and-excitation blocks).
    """
    h = img.shape[0]
    tile, margin = strip_rows(cfg, scale)
    if tile <= 0 or h <= tile:
        return runner(normalize(img, cfg.mean, cfg.std)[None])
    out: np.ndarray | None = None
    keep_from = 0
    while keep_from < h:
        start = max(0, min(keep_from - margin, h - tile))
        stop = start + tile
        keep_to = h if stop >= h else stop - margin
        prob = runner(normalize(img[start:stop], cfg.mean, cfg.std)[None])
        if out is None:
            out = np.empty(prob.shape[:2] + (h, prob.shape[3]), dtype=np.float32)
        out[:, :, keep_from:keep_to] = prob[:, :, keep_from - start : keep_to - start]
        keep_from = keep_to
    assert out is not None
    return out


def _release(runner: Runner) -> None:
    """Free the working memory a runtime keeps between calls (MNN's activation buffers: tens of MB for a strip)."""
    if isinstance(runner, MnnRunner):
        runner.release()


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
        resized = det_resize(work, cfg)
        prob = det_forward(self.det.runner, resized, cfg, scale=resized.shape[0] / max(1, work.shape[0]))
        del resized
        _release(self.det.runner)  # a page's peak memory is then the larger of det and rec, not their sum
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
        if self.rec is not None:
            _release(self.rec.runner)
        return [Line(boxes[i], t, c, scores[i]) for i, (t, c) in zip(order, texts)]


__all__ = ["BACKENDS", "Line", "Model", "OCR", "det_forward", "open_bundle", "open_model", "strip_rows"]
