"""One pipeline, three runners: the teachers read rendered text identically in torch, ORT and MNN."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ocrslim.core.config import ConvertConfig, ExportConfig
from ocrslim.export.mnn import open_model_on
from ocrslim.export.steps import probe_inputs
from ocrslim.infer.pipeline import OCR, open_model
from ocrslim.infer.runners import OrtRunner
from ocrslim.models.onnx2torch import explicit_same_pads
from ocrslim.models.registry import teacher_onnx_path

from .conftest import LINES

pytest.importorskip("MNN")


@pytest.fixture(scope="module")
def v4_runners(tmp_path_factory):
    import os

    os.environ["OCRSLIM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return {
        b: OCR(open_model_on("ppocrv4_mobile_det", "det", b), open_model_on("ppocrv4_mobile_rec", "rec", b))
        for b in ("torch", "onnx", "mnn")
    }


def test_teacher_reads_rendered_page_in_every_runtime(v4_runners, page):
    img, quads = page
    results = {}
    for backend, ocr in v4_runners.items():
        lines = ocr.read(img)
        results[backend] = lines
        texts = [ln.text.replace(" ", "") for ln in lines]
        assert texts == [t.replace(" ", "") for t in LINES], backend
    ref = results["onnx"]
    for backend in ("torch", "mnn"):
        for a, b in zip(ref, results[backend]):
            assert np.abs(a.box - b.box).max() <= 1.0  # boxes agree to a pixel
            assert abs(a.score - b.score) < 1e-3


@pytest.mark.parametrize("task", ["det", "rec"])
def test_native_torch_and_mnn_match_onnxruntime_on_text(v4_runners, task):
    ort = OrtRunner(teacher_onnx_path(f"ppocrv4_mobile_{task}"))
    export, convert = ExportConfig(), ConvertConfig()  # the DAG's gate tolerances
    tols = {"torch": export.det_tol if task == "det" else export.rec_tol,
            "mnn": convert.det_tol if task == "det" else convert.rec_tol}
    for backend, tol in tols.items():
        runner = getattr(v4_runners[backend], task).runner
        for x in probe_inputs(task, ExportConfig()):
            assert np.abs(runner(x) - ort(x)).max() <= tol, (backend, x.shape)


@pytest.mark.parametrize("task", ["det", "rec"])
def test_ppocrv6_through_onnx2torch_matches_onnxruntime(task):
    torch_model = open_model(f"ppocrv6_small_{task}", task, backend="torch").runner
    ort = OrtRunner(teacher_onnx_path(f"ppocrv6_small_{task}"))
    x = probe_inputs(task, ExportConfig())[0]
    assert np.abs(torch_model(x) - ort(x)).max() <= 1e-4


def test_explicit_same_pads_puts_the_odd_pixel_at_the_end():
    """Regression: onnx2torch raises NotImplementedError on PP-OCRv6's SAME_UPPER 2x2 convs."""
    node = onnx.helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="SAME_UPPER")
    graph = onnx.helper.make_graph([node], "g", [], [])
    model = onnx.helper.make_model(graph)
    assert explicit_same_pads(model) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in model.graph.node[0].attribute}
    assert attrs["pads"] == [0, 0, 1, 1] and "auto_pad" not in attrs
