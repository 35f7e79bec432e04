"""Export targets beside the MNN bundle, from its manifest: an ONNX Runtime bundle and TorchScript students.

Both take the MNN bundle's manifest as their description — the det and rec pre/post-processing (input size
policy, mean/std, DB thresholds, rec height and batching) and the dictionary are copied from it, never
restated — and replace its model files:

- ``artifacts/bundle_onnx``: the students' FP32 ONNX files (``det.onnx``, ``rec.onnx``), read with ONNX Runtime
  (the x86 / server target): ``ocrslim read --bundle artifacts/bundle_onnx`` and a runtime-only install read it.
- ``artifacts/torchscript``: ``torch.jit.trace`` of the native student modules in export mode (``det.pt``,
  ``rec.pt``, each carrying its metadata as the extra file ``ocrslim.json``), for PyTorch / PyTorch Mobile apps.
  ocrslim itself never loads a TorchScript file a user hands over (loading one can run code): the only load is
  the parity check right after writing it.

Each target is written atomically and only after a parity check against the MNN bundle's output on real pages
(:func:`parity_pages`): the lines found (box IoU ≥ 0.5 matching), the text read on matched lines, box IoU,
and the max |difference| of the det probability maps and rec probabilities on the same inputs. The gate
(``targets.min_line_agreement``, ``targets.min_text_agreement``) fails the stage, writing nothing, when a
target reads the pages differently — a wrong dictionary, preprocessing or broken trace — while an INT8 MNN
bundle's small differences from the FP32 targets pass and are reported.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ocrslim.core.artifacts import (
    MANIFEST,
    TORCHSCRIPT_RUNTIME,
    model_meta,
    read_dict_file,
    read_manifest,
    with_postprocessing,
    write_manifest,
)
from ocrslim.core.config import DetConfig, ExportConfig, RecConfig, from_dict
from ocrslim.core.errors import ArtifactError, ParityError
from ocrslim.core.fsutil import atomic_path, sha256_file

__all__ = ["ONNX_RUNTIME", "build_onnx_bundle", "build_torchscript", "parity_gate_pages", "parity_pages",
           "save_torchscript"]

ONNX_RUNTIME = "onnxruntime"
IOU_MATCH = 0.5  # a target's line matches a reference line at box IoU >= this (the ICDAR matching threshold)


# ------------------------------------------------------------------------------------------ parity on pages
def _lines(ocr: Any, img: np.ndarray) -> list[Any]:
    """The lines a user sees (``ocrslim read``): confidence at least rec.drop_score, non-blank text."""
    drop = ocr.rec.rec_cfg.drop_score
    return [ln for ln in ocr.read(img) if ln.score >= drop and ln.text.strip()]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    from shapely.geometry import Polygon

    pa, pb = Polygon(a).buffer(0), Polygon(b).buffer(0)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union > 0 else 0.0


def _match(ref: Sequence[np.ndarray], cand: Sequence[np.ndarray]) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU (best pairs first), pairs at IoU >= IOU_MATCH."""
    pairs = sorted(((_iou(a, b), i, j) for i, a in enumerate(ref) for j, b in enumerate(cand)), reverse=True)
    used_i: set[int] = set()
    used_j: set[int] = set()
    out = []
    for iou, i, j in pairs:
        if iou < IOU_MATCH:
            break
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out.append((i, j, iou))
    return out


def parity_pages(reference: Any, candidate: Any, images: Sequence[str | Path]) -> dict[str, Any]:
    """Compare two OCR pipelines (:class:`ocrslim.infer.pipeline.OCR`) page by page.

    Returns (flat, JSON-able): ``pages``, ``lines_reference``, ``lines``, ``lines_matched``, ``line_agreement``
    (2 matched / (reference + candidate lines); 1.0 when neither finds a line), ``text_agreement`` (matched lines
    read the same; absent when none matched), ``mean_box_iou`` / ``min_box_iou`` of matched lines,
    ``det_map_max_abs_diff`` (both detectors on the reference's det input of each page) and
    ``rec_max_abs_diff`` (both recognisers on one batch of the reference's line crops per page).
    """
    from ocrslim.infer.preprocess import cap_image, crop_quad, det_preprocess, read_image, rec_preprocess

    n_ref = n_cand = matched = same = pages = 0
    ious: list[float] = []
    det_diff = rec_diff = 0.0
    for path in images:
        img = read_image(path)
        if img is None:
            raise ArtifactError(f"{path}: unreadable page in the parity set. Remove it or fix the set path.")
        pages += 1
        ref, cand = _lines(reference, img), _lines(candidate, img)
        pairs = _match([ln.box for ln in ref], [ln.box for ln in cand])
        n_ref, n_cand, matched = n_ref + len(ref), n_cand + len(cand), matched + len(pairs)
        same += sum(ref[i].text == cand[j].text for i, j, _ in pairs)
        ious += [iou for _, _, iou in pairs]
        det_cfg, rec_cfg = reference.det.det_cfg, reference.rec.rec_cfg
        work, ratio_h, ratio_w = cap_image(img, det_cfg)
        x = det_preprocess(work, det_cfg)
        det_diff = max(det_diff, float(np.abs(reference.det.runner(x) - candidate.det.runner(x)).max()))
        if ref:
            scale = np.array([ratio_w, ratio_h], dtype=np.float32)
            crops = [crop_quad(work, ln.box / scale) for ln in ref[: rec_cfg.batch_size]]
            batch = rec_preprocess(crops, rec_cfg)
            rec_diff = max(rec_diff, float(np.abs(reference.rec.runner(batch) - candidate.rec.runner(batch)).max()))
    report: dict[str, Any] = {
        "pages": pages, "lines_reference": n_ref, "lines": n_cand, "lines_matched": matched,
        "line_agreement": round(2 * matched / (n_ref + n_cand), 4) if n_ref + n_cand else 1.0,
        "det_map_max_abs_diff": det_diff, "rec_max_abs_diff": rec_diff,
    }
    if matched:
        report.update(text_agreement=round(same / matched, 4), mean_box_iou=round(float(np.mean(ious)), 4),
                      min_box_iou=round(float(np.min(ious)), 4))
    return report


def parity_gate_pages(name: str, report: dict[str, Any], min_line_agreement: float, min_text_agreement: float) -> None:
    """Raise :class:`ParityError` when a target's lines or texts agree less with the MNN bundle's than allowed."""
    problems = []
    if report["line_agreement"] < min_line_agreement:
        problems.append(f"line agreement {report['line_agreement']:.3f} < {min_line_agreement:g}")
    if report.get("text_agreement") is not None and report["text_agreement"] < min_text_agreement:
        problems.append(f"text agreement {report['text_agreement']:.3f} < {min_text_agreement:g}")
    if problems:
        raise ParityError(f"{name}: reads the parity pages unlike the MNN bundle ({', '.join(problems)}; "
                          f"{report['lines_matched']} of {report['lines_reference']} reference lines matched). "
                          "Check that the target was built from the bundle's student, or lower "
                          "targets.min_line_agreement / min_text_agreement if the bundle's INT8 explains it.")


# ------------------------------------------------------------------------------------------ target bundles
def _base(mnn_bundle: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The MNN bundle's verified manifest and dictionary."""
    manifest = read_manifest(mnn_bundle, verify=True)
    return manifest, read_dict_file(manifest["rec"]["dict_path"])


def _target_manifest(base: dict[str, Any], mnn_bundle: str | Path, files: dict[str, str], sources: dict[str, str],
                     runtime: str, target: str) -> dict[str, Any]:
    """A manifest for new model files, the pre/post-processing copied from the MNN bundle's."""
    out: dict[str, Any] = {"runtime": runtime, "target": target,
                           "derived_from": {"bundle": str(mnn_bundle),
                                            "manifest_sha256": sha256_file(Path(mnn_bundle) / MANIFEST)}}
    for task in ("det", "rec"):
        out[task] = {"file": files[task], "config": base[task]["config"], "precision": "fp32",
                     "source": sources[task]}
    return out


def _check(name: str, report: dict[str, Any], cfg: Any) -> None:
    parity_gate_pages(name, report, cfg.min_line_agreement, cfg.min_text_agreement)


def build_onnx_bundle(mnn_bundle: str | Path, det_onnx: str | Path, rec_onnx: str | Path, out_dir: str | Path,
                      pages: Sequence[str | Path], cfg: Any) -> dict[str, Any]:
    """Write the ONNX Runtime bundle ``out_dir`` (``det.onnx``, ``rec.onnx``, ``dict.txt``, ``manifest.json``) from
    the MNN bundle's manifest, after checking it reads ``pages`` like the MNN bundle.

    Args:
        mnn_bundle: the shipped MNN bundle (its manifest gives the pre/post-processing and dictionary).
        det_onnx, rec_onnx: the students' FP32 ONNX files.
        out_dir: the ONNX bundle directory (replaced atomically; untouched when the parity gate fails).
        pages: page images for the parity check.
        cfg: a :class:`ocrslim.core.config.TargetsConfig` (gate thresholds, threads).

    Returns:
        ``{"manifest": ..., "parity": parity_pages report}``.
    """
    from ocrslim.infer.pipeline import OCR, open_bundle

    base, chars = _base(mnn_bundle)
    sources = {"det": Path(det_onnx), "rec": Path(rec_onnx)}
    for src in sources.values():
        if not src.is_file():
            raise ArtifactError(f"{src}: not found. Run dvc repro export first.")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for task, src in sources.items():
            shutil.copy2(src, tmp / f"{task}.onnx")
        manifest = write_manifest(tmp, _target_manifest(base, mnn_bundle, {"det": "det.onnx", "rec": "rec.onnx"},
                                                        {t: str(s) for t, s in sources.items()}, ONNX_RUNTIME,
                                                        "x86-server"), chars)
        report = parity_pages(OCR(*open_bundle(mnn_bundle, threads=cfg.threads)),
                              OCR(*open_bundle(tmp, threads=cfg.threads)), pages)
        _check(f"{out_dir} (ONNX Runtime)", report, cfg)
    return {"manifest": manifest, "parity": report}


def trace_student(model: Any, task: str, export_cfg: ExportConfig, meta: dict[str, Any] | None = None
                  ) -> tuple[Any, dict[str, float]]:
    """``torch.jit.trace`` a native model in export mode (eval: tensors only), gated like the ONNX export.

    The trace is checked against the eager module at every probe shape of ``export_cfg`` (det: several H×W;
    rec: several widths and batch sizes), so shape-dependent code frozen by tracing fails here, not in an app.

    Returns:
        (the traced module, ``{shape: max |eager − traced|}``).
    """
    import torch

    from ocrslim.export.onnx import compare_runners, parity_gate
    from ocrslim.export.steps import probe_inputs
    from ocrslim.infer.runners import TorchRunner

    model = model.eval()
    inputs = probe_inputs(task, export_cfg, meta)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, torch.from_numpy(inputs[0]), check_trace=False)
    diffs = compare_runners(TorchRunner(model), TorchRunner(traced), inputs)
    parity_gate(f"torchscript {task}: eager vs traced", diffs, export_cfg.det_tol if task == "det" else
                export_cfg.rec_tol)
    return traced, diffs


def save_torchscript(traced: Any, path: str | Path, extra_files: dict[str, str]) -> None:
    """``torch.jit.save``, made reproducible: the same module gives the same bytes on any machine.

    ``torch.jit.save`` writes a random ``.data/serialization_id`` and, in ``*.debug_pkl`` records, the absolute
    paths of the Python files the module was traced from (two clones of the repo gave two files). The archive is
    rewritten without the debug records (they only add source lines to TorchScript error messages) and with
    an id derived from the other records' bytes, every record stored with a fixed timestamp.
    """
    import hashlib
    import io
    import zipfile

    import torch

    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files=extra_files)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src:
        records = {i.filename: src.read(i) for i in src.infolist() if not i.filename.endswith(".debug_pkl")}
    digest = hashlib.sha256()
    for name in sorted(records):
        if not name.endswith("/.data/serialization_id"):
            digest.update(name.encode() + b"\0" + records[name])
    with open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as out:
        for name, data in records.items():
            if name.endswith("/.data/serialization_id"):  # decimal digits, as torch writes it
                data = str(int(digest.hexdigest(), 16)).encode()[: len(data)]
            out.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


def build_torchscript(mnn_bundle: str | Path, det_model: str | Path, rec_model: str | Path, out_dir: str | Path,
                      pages: Sequence[str | Path], cfg: Any, export_cfg: ExportConfig | None = None) -> dict[str, Any]:
    """Write ``out_dir`` with TorchScript students (``det.pt``, ``rec.pt``), ``dict.txt`` and a manifest (runtime
    ``torchscript``) from the MNN bundle's manifest, after checking the traces read ``pages`` like the MNN bundle.

    Args:
        mnn_bundle: the shipped MNN bundle.
        det_model, rec_model: the students' ``.safetensors`` (native modules; loading runs no code).
        out_dir: the TorchScript directory (replaced atomically; untouched when a gate fails).
        pages: page images for the parity check.
        cfg: a :class:`ocrslim.core.config.TargetsConfig`.
        export_cfg: probe shapes and tolerances of the eager-vs-traced gate (``params.yaml:export``).

    Returns:
        ``{"manifest": ..., "parity": parity_pages report, "trace_max_abs_diff": {task: max}}``.
    """
    import torch

    from ocrslim.infer.pipeline import OCR, Model, open_bundle
    from ocrslim.infer.runners import TorchRunner
    from ocrslim.models.io import load_task_model

    base, chars = _base(mnn_bundle)
    export_cfg = export_cfg or ExportConfig()
    det_cfg = from_dict(DetConfig, base["det"]["config"], "det")
    rec_cfg = from_dict(RecConfig, base["rec"]["config"], "rec")
    sources = {"det": Path(det_model), "rec": Path(rec_model)}
    trace_diff: dict[str, float] = {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for task, src in sources.items():
            module, meta, _ = load_task_model(src, task)
            traced, diffs = trace_student(module, task, export_cfg, meta)
            trace_diff[task] = max(diffs.values())
            # what an exported model file holds: task, dictionary, the manifest's pre- and post-processing
            file_meta = with_postprocessing(model_meta(task, chars, det_cfg, rec_cfg), det_cfg if task == "det"
                                            else rec_cfg)
            extra = {"ocrslim.json": json.dumps(file_meta, ensure_ascii=False)}
            save_torchscript(traced, tmp / f"{task}.pt", extra)
        manifest = write_manifest(tmp, _target_manifest(base, mnn_bundle, {"det": "det.pt", "rec": "rec.pt"},
                                                        {t: str(s) for t, s in sources.items()}, TORCHSCRIPT_RUNTIME,
                                                        "pytorch"), chars)
        # The one TorchScript load: the files just written, for the parity check.
        loaded = {task: torch.jit.load(str(tmp / f"{task}.pt")) for task in sources}
        candidate = OCR(Model("det", TorchRunner(loaded["det"], cfg.threads), str(tmp / "det.pt"), det_cfg=det_cfg),
                        Model("rec", TorchRunner(loaded["rec"], cfg.threads), str(tmp / "rec.pt"), characters=chars,
                              rec_cfg=rec_cfg))
        report = parity_pages(OCR(*open_bundle(mnn_bundle, threads=cfg.threads)), candidate, pages)
        _check(f"{out_dir} (TorchScript)", report, cfg)
    return {"manifest": manifest, "parity": report, "trace_max_abs_diff": trace_diff}
