"""Export targets beside the MNN bundle: the ONNX Runtime bundle and TorchScript students, from the bundle's
manifest, each checked against the MNN bundle's output on pages (tiny native models, one rendered page)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest
import torch
from torch import nn

from ocrslim.core.artifacts import model_meta
from ocrslim.core.config import ConvertConfig, DetConfig, ExportConfig, RecConfig, TargetsConfig
from ocrslim.core.errors import ArtifactError, ParityError
from ocrslim.export.bundle import build_bundle
from ocrslim.export.steps import convert_model, export_model
from ocrslim.export.targets import build_onnx_bundle, build_torchscript, parity_gate_pages, parity_pages
from ocrslim.infer.pipeline import OCR, open_bundle
from ocrslim.models.det import build_dbnet
from ocrslim.models.io import save_model
from ocrslim.models.rec import build_ctc_recognizer

from .conftest import REPO, render_page
from .test_infer_core import imported_modules, outside_runtime

pytest.importorskip("MNN")

CHARS = list("abcdefghij")
CFG = TargetsConfig(pages=("unused",), threads=1)


def _randomized(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms: outputs that depend on the input."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
    return model.eval()


def _rec(classes: int) -> nn.Module:
    torch.manual_seed(0)
    neck = {"name": "EncoderWithSVTR", "dims": 16, "hidden_dims": 16, "num_heads": 2}
    return _randomized(build_ctc_recognizer({"name": "PPLCNetV3", "scale": 0.25}, neck,
                                            {"name": "CTCHead", "num_classes": classes}))


def _student(root: Path, task: str, model: nn.Module, chars: list[str]) -> None:
    """``<task>.safetensors`` → ``<task>.onnx`` → ``<task>.mnn`` (+ sidecar), as the DAG's export and convert do."""
    st = root / f"{task}.safetensors"
    save_model(model, st, model_meta(task, chars, DetConfig(limit_type="max", limit_side_len=320), RecConfig()))
    export_model(st, root / f"{task}.onnx", task, ExportConfig())
    convert_model(root / f"{task}.onnx", root / f"{task}.mnn", task, ConvertConfig(), ExportConfig())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny native students (det: DBNet, rec: CTC), their ONNX and MNN FP32 files, the MNN bundle, one page."""
    root = tmp_path_factory.mktemp("targets")
    torch.manual_seed(0)
    det = _randomized(build_dbnet({"name": "PPLCNetV3", "scale": 0.25, "det": True},
                                  {"name": "RSEFPN", "out_channels": 16}, {"name": "DBHead"}))
    _student(root, "det", det, CHARS)
    _student(root, "rec", _rec(len(CHARS) + 2), CHARS)
    build_bundle(root / "det.mnn", root / "rec.mnn", root / "bundle")
    # the manifest's post-processing, tuned so these untrained models find a line (and the targets must copy it)
    manifest = json.loads((root / "bundle" / "manifest.json").read_text())
    manifest["det"]["config"].update(thresh=0.41, box_thresh=0.3)
    manifest["rec"]["config"].update(drop_score=0.0)
    (root / "bundle" / "manifest.json").write_text(json.dumps(manifest))
    cv2.imwrite(str(root / "page.png"), render_page()[0])
    return root


def _read_jsonl(bundle: Path, page: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    return imported_modules(["-m", "ocrslim", "read", "--bundle", str(bundle), str(page), "--jsonl", "--threads", "1"])


def test_onnx_bundle_reads_pages_like_the_mnn_bundle(built: Path) -> None:
    out = built / "bundle_onnx"
    res = build_onnx_bundle(built / "bundle", built / "det.onnx", built / "rec.onnx", out, [built / "page.png"], CFG)
    p = res["parity"]
    assert p["lines_reference"] >= 1 and p["lines"] == p["lines_reference"]
    assert p["line_agreement"] == 1.0 and p["text_agreement"] == 1.0 and p["min_box_iou"] > 0.99
    assert p["det_map_max_abs_diff"] < 1e-3 and p["rec_max_abs_diff"] < 1e-3
    # the same manifest: pre/post-processing and dictionary copied from the MNN bundle, the models replaced
    mnn, onnx = (json.loads((d / "manifest.json").read_text()) for d in (built / "bundle", out))
    assert onnx["runtime"] == "onnxruntime" and onnx["format"] == mnn["format"]
    assert onnx["det"]["config"] == mnn["det"]["config"] and onnx["det"]["config"]["thresh"] == 0.41
    assert onnx["rec"]["config"] == mnn["rec"]["config"]
    assert (out / "dict.txt").read_text() == (built / "bundle" / "dict.txt").read_text()
    assert sorted(f.name for f in out.iterdir()) == ["det.onnx", "dict.txt", "manifest.json", "rec.onnx"]
    # what a user runs on it: the same lines as the MNN bundle, with nothing outside the runtime install
    (a, mods), (b, _) = _read_jsonl(out, built / "page.png"), _read_jsonl(built / "bundle", built / "page.png")
    assert a.returncode == 0, a.stderr[-2000:]
    assert json.loads(a.stdout)["lines"] == json.loads(b.stdout)["lines"] != []
    assert "onnxruntime" in mods and outside_runtime(mods) == []


def test_torchscript_students_are_traced_checked_and_never_read_by_the_cli(built: Path) -> None:
    out = built / "torchscript"
    res = build_torchscript(built / "bundle", built / "det.safetensors", built / "rec.safetensors", out,
                            [built / "page.png"], CFG)
    p = res["parity"]
    assert p["lines_reference"] >= 1 and p["line_agreement"] == 1.0 and p["text_agreement"] == 1.0
    assert p["det_map_max_abs_diff"] < 1e-3 and p["rec_max_abs_diff"] < 1e-3
    assert res["trace_max_abs_diff"]["det"] <= ExportConfig().det_tol
    assert res["trace_max_abs_diff"]["rec"] <= ExportConfig().rec_tol
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"] == "torchscript" and manifest["det"]["file"] == "det.pt"
    # each file carries its metadata (read from the archive, without loading it)
    with zipfile.ZipFile(out / "rec.pt") as z:
        meta = json.loads(z.read(next(n for n in z.namelist() if n.endswith("extra/ocrslim.json"))))
    assert meta["task"] == "rec" and meta["characters"] == CHARS
    assert meta["config"]["rec"] == manifest["rec"]["config"]
    verify = subprocess.run([sys.executable, "-m", "ocrslim", "verify", str(out)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert verify.returncode == 0 and "verified" in verify.stdout
    read = subprocess.run([sys.executable, "-m", "ocrslim", "read", "--bundle", str(out), str(built / "page.png")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert read.returncode == 1 and len(read.stderr.strip().splitlines()) == 1
    assert "a TorchScript bundle" in read.stderr and "never loads TorchScript" in read.stderr


def test_a_target_that_reads_differently_fails_its_gate(built: Path) -> None:
    det, rec = open_bundle(built / "bundle", threads=1)
    blind = OCR(dataclasses.replace(det, det_cfg=dataclasses.replace(det.det_cfg, box_thresh=0.99)), rec)
    report = parity_pages(OCR(det, rec), blind, [built / "page.png"])
    assert report["lines"] == 0 and report["line_agreement"] == 0.0
    with pytest.raises(ParityError, match=r"line agreement 0.000 < 0.9"):
        parity_gate_pages("target", report, 0.9, 0.9)
    parity_gate_pages("target", report, 0.0, 0.0)  # the tiny profile's gate lets it pass


def test_a_recogniser_with_another_dictionary_writes_no_bundle(built: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _student(other, "rec", _rec(len(CHARS) + 5), [*CHARS, "k", "l", "m"])
    out = tmp_path / "bundle_onnx"
    with pytest.raises(ArtifactError, match="classes but the dictionary gives"):
        build_onnx_bundle(built / "bundle", built / "det.onnx", other / "rec.onnx", out, [built / "page.png"], CFG)
    assert not out.exists() and list(tmp_path.glob(".bundle_onnx.*")) == []


def test_torchscript_files_are_reproducible(tmp_path: Path) -> None:
    import zipfile

    import torch

    from ocrslim.export.targets import save_torchscript

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    x = torch.rand(1, 3, 8, 8)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    traced = torch.jit.trace(model, x)  # (a second trace in one process gets other mangled class names)
    save_torchscript(traced, a, {"ocrslim.json": '{"task": "det"}'})
    save_torchscript(traced, b, {"ocrslim.json": '{"task": "det"}'})
    assert a.read_bytes() == b.read_bytes()  # torch.jit.save alone writes a random serialization id
    assert not [n for n in zipfile.ZipFile(a).namelist() if n.endswith(".debug_pkl")]  # source paths
    extra = {"ocrslim.json": ""}
    loaded = torch.jit.load(str(a), _extra_files=extra)
    assert torch.equal(loaded(x), model(x)) and extra["ocrslim.json"] == b'{"task": "det"}'
