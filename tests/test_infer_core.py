"""The inference core stands alone: reading an image with a bundle never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ocrslim.core.artifacts import model_meta, sidecar_path
from ocrslim.core.config import DetConfig, RecConfig
from ocrslim.export.bundle import build_bundle
from ocrslim.export.onnx import export_onnx

from .conftest import REPO, render_page
from .test_runtime import TinyDet, TinyRec, _randomize_bn

pytest.importorskip("MNN")

CHARS = ["a", "b", "c"]  # + blank + space = TinyRec's 5 classes


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of two tiny MNN models (det: a probability map; rec: 8 px high lines) with real manifests."""
    from ocrslim.export.mnn import convert_onnx_to_mnn

    root = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    det_cfg, rec_cfg = DetConfig(limit_side_len=64, limit_type="max"), RecConfig(height=8, min_width=16, min_side=0)
    files = {}
    for task, model, shape, axes in (
        ("det", TinyDet(), (1, 3, 32, 32), {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}),
        ("rec", TinyRec(len(CHARS) + 2), (1, 3, 8, 32), {"x": {0: "n", 3: "w"}, "y": {0: "n", 1: "t"}}),
    ):
        onnx_path, mnn_path = root / f"{task}.onnx", root / "src" / f"{task}.mnn"
        export_onnx(_randomize_bn(model), onnx_path, torch.rand(shape), axes)
        convert_onnx_to_mnn(onnx_path, mnn_path)
        meta = {**model_meta(task, CHARS if task == "rec" else None, det_cfg, rec_cfg), "precision": "fp32"}
        sidecar_path(mnn_path).write_text(json.dumps(meta), encoding="utf-8")
        files[task] = mnn_path
    build_bundle(files["det"], files["rec"], root / "bundle")
    return root / "bundle"


READ = """
import sys, numpy as np
from ocrslim.infer.pipeline import OCR, open_bundle
from ocrslim.infer.preprocess import read_image
ocr = OCR(*open_bundle(sys.argv[1], threads=1))
lines = ocr.read(read_image(sys.argv[2]))
heavy = sorted(m for m in ("torch", "onnx2torch", "torchvision", "torch_pruning") if m in sys.modules)
print(len(lines), ",".join(heavy) or "none")
"""


def test_reading_with_a_bundle_never_imports_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    import cv2

    img, _ = render_page()
    page = tmp_path / "page.png"
    cv2.imwrite(str(page), img)
    out = subprocess.run([sys.executable, "-c", READ, str(tiny_bundle), str(page)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    n_lines, heavy = out.stdout.split()
    assert heavy == "none", f"reading with a bundle imported {heavy}"
    assert int(n_lines) >= 0


def test_the_cli_read_path_stays_torch_free(tiny_bundle: Path, tmp_path: Path) -> None:
    """`ocrslim read --bundle` (what a user runs) also never loads torch."""
    import cv2

    img, _ = render_page()
    cv2.imwrite(str(tmp_path / "p.png"), img)
    code = ("import sys, runpy; sys.argv = ['ocrslim', 'read', '--bundle', sys.argv[1], sys.argv[2], '--json'];"
            "from ocrslim.cli import main; rc = main(sys.argv[1:]);"
            "print('TORCH' if 'torch' in sys.modules else 'CLEAN', file=sys.stderr); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_bundle), str(tmp_path / "p.png")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == "CLEAN"
    json.loads(out.stdout)  # machine-readable: MNN's banners went to stderr
