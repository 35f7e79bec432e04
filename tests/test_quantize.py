"""Accuracy-gated MNN quantization (ocrslim.quantize) on a tiny handcrafted text detector.

The detector is three convs that turn dark strokes into a text-line probability map, scored by the
real det gate (DB post-processing, ICDAR matching) on pages rendered with Pillow's font. EMA
quantizes it faithfully when the calibration config matches the preprocessing; KL clips its sparse
maps (like v4 det/rec), which exercises the repair loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import onnx
import pytest
import torch
from torch import nn

from ocrslim.core.config import DetConfig, QuantizeConfig, load_section, to_dict
from ocrslim.core.errors import ArtifactError, ConfigError, DataError, ToolError
from tests.conftest import render_page

pytest.importorskip("MNN")

from ocrslim.core.artifacts import sidecar_path
from ocrslim.export.mnn import convert_onnx_to_mnn, mnn_graph, quantize_mnn  # noqa: E402
from ocrslim.export.onnx import export_onnx  # noqa: E402
from ocrslim.infer.pipeline import OCR, open_model  # noqa: E402
from ocrslim.quantize import QuantizeError, quantize_task  # noqa: E402
from ocrslim.quantize.gate import gate_sets  # noqa: E402
from ocrslim.quantize.graph import group_key, runs_at_other_shapes  # noqa: E402
from ocrslim.quantize.search import fixed_shape_onnx  # noqa: E402

AXES = {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}
PAGES = [
    ["Total 42.50", "Hello World", "OCR slim 2026"],
    ["Invoice 7731", "Cash 12.00", "Thank you"],
    ["Apple Pie 3", "Tax 0.60", "Change 1.40"],
    ["Receipt 99", "Date 2026", "Time 10:42"],
]
# Pages are 640 wide: scaled to 320x160 ("max" 320), the map is thresholded close to the strokes.
DET_CFG = DetConfig(limit_side_len=320, limit_type="max", unclip_ratio=0.3)


class TextMap(nn.Module):
    """Darkness (c1, c2) → a horizontal smear joining a line's glyphs into a logit (c3) → sigmoid."""

    def __init__(self, zero_channel: bool = False) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 1)
        self.c3 = nn.Conv2d(4, 1, (3, 9), padding=(1, 4))
        with torch.no_grad():
            self.c1.weight.fill_(-1 / 27)  # x in [-1, 1]: dark text → ~1.9 after the bias, white → 0
            self.c1.bias.fill_(1.0)
            self.c2.weight.fill_(1 / 4)
            self.c2.bias.zero_()
            self.c3.weight.fill_(20 / (4 * 27))  # 20 x (line density of darkness - 0.35)
            self.c3.bias.fill_(-20 * 0.35)
            if zero_channel:  # a dead output channel: mnnquant writes a NaN weight scale for it
                self.c1.weight[2].zero_()
                self.c1.bias[2] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))


def _quant_json(path: Path, calib: Path, **over: object) -> Path:
    cfg = {"format": "BGR", "mean": [127.5] * 3, "normal": [1 / 127.5] * 3, "width": 320, "height": 160,
           "path": str(calib), "used_image_num": 4, "feature_quantize_method": "KL",
           "weight_quantize_method": "MAX_ABS", "feature_clamp_value": 127, "weight_clamp_value": 127,
           "skip_quant_op_names": [], "debug": False}
    cfg.update(over)
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def det(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return build_det(tmp_path_factory.mktemp("quant"), TextMap())


def build_det(root: Path, model: nn.Module) -> SimpleNamespace:
    """ONNX + MNN FP32 (with sidecar) detector, a 4-page ICDAR gate set, calibration images and quant JSONs."""
    data, calib = root / "pages", root / "calib"
    (data / "images").mkdir(parents=True)
    (data / "gt").mkdir()
    calib.mkdir()
    for i, lines in enumerate(PAGES):
        img, quads = render_page(lines)
        cv2.imwrite(str(data / "images" / f"p{i}.png"), img)
        gt = "".join(",".join(str(int(v)) for v in q.ravel()) + f",{t}\n" for q, t in zip(quads, lines))
        (data / "gt" / f"gt_p{i}.txt").write_text(gt, encoding="utf-8")
        cv2.imwrite(str(calib / f"p{i}.png"), cv2.resize(img, (320, 160), interpolation=cv2.INTER_AREA))
    onnx_path, mnn = root / "det.onnx", root / "det.mnn"
    export_onnx(model.eval(), onnx_path, torch.rand(1, 3, 64, 64), AXES)
    convert_onnx_to_mnn(onnx_path, mnn)
    sidecar_path(mnn).write_text(json.dumps({"task": "det", "config": {"det": to_dict(DET_CFG)}}), encoding="utf-8")
    return SimpleNamespace(
        root=root, onnx=onnx_path, mnn=mnn, data=data, calib=calib,
        good=_quant_json(root / "good.quant.json", calib),
        # Calibrated as if pixels were fed raw (0..255): scales ~127x too coarse for the [-1, 1] inputs.
        bad=_quant_json(root / "bad.quant.json", calib, mean=[0.0] * 3, normal=[1.0] * 3),
    )


def _cfg(det: SimpleNamespace, **over: object) -> QuantizeConfig:
    base = {"gate_det": (str(det.data),), "limit_det": 4, "method_det": "EMA", "max_repairs": 0, "fallbacks": (),
            "group_depth": 1, "calib_images": None, "threads": 1}
    base.update(over)
    return QuantizeConfig(**base)  # type: ignore[arg-type]


def _run(det: SimpleNamespace, out: Path, calib: Path, lines: list[str] | None = None, **over: object) -> dict:
    log = lines.append if lines is not None else (lambda _msg: None)
    return quantize_task("det", det.onnx, det.mnn, calib, out, _cfg(det, **over), log=log)


# ---------------------------------------------------------------------------------------- the gate


def test_correct_calibration_passes_as_int8_and_sidecar_says_so(det: SimpleNamespace, tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "q" / "det.mnn"
    report = _run(det, out, det.good, lines)
    assert report["precision"] == "int8" and report["method"] == "EMA"
    assert report["fp32"]["pages"]["hmean"] > 0.5, "the handcrafted detector must find the lines in FP32"
    drop = report["drop"]["pages"]["hmean"]
    assert drop["lo"] <= drop["drop"] <= drop["hi"] <= 1.0 and drop["n"] == 4  # paired interval on 4 pages
    assert list(report["drop"]["pages"]) == ["hmean"]  # no recogniser given: no e2e F1 in the det gate
    assert report["size_mb"] == round(out.stat().st_size / 2**20, 3)
    (attempt,) = report["attempts"]
    assert attempt["kind"] == "int8" and attempt["passed"] and attempt["output_error"] < 0.1
    # EMA calibrates a 1x3x160x320 copy; the result still runs at the gate's other shapes.
    assert attempt["fixed_input_shape"] is None and report["fixed_input_shape"] is None
    assert len(lines) == 2 and lines[-1].endswith(": pass"), lines  # fp32 line + one line per attempt
    side = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert side["precision"] == "int8" and side["quant_method"] == "EMA" and side["float_layers"] == []
    assert side["config"]["det"] == to_dict(DET_CFG)  # the float model's preprocessing travels along
    boxes, _ = OCR(open_model(str(out), "det", threads=1), None).detect(render_page(PAGES[0])[0])
    assert len(boxes) >= 2  # the shipped file reads with its sidecar
    assert sorted(p.name for p in out.parent.iterdir()) == ["det.mnn", "det.mnn.json"], "temp files left behind"


def test_wrong_calibration_fails_the_gate_with_one_line_error(det: SimpleNamespace, tmp_path: Path) -> None:
    """The issue's requirement: a wrong mean/normal must not ship quietly."""
    out = tmp_path / "det.mnn"
    with pytest.raises(QuantizeError) as info:
        _run(det, out, det.bad, screen_error=2.0)  # no screening: the gate itself measures the loss
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("quantize det: no candidate passes the accuracy gate")
    assert "pages/hmean drop up to" in msg and "at 95% > max_drop 1.0" in msg
    assert "mean/normal" in msg and "fallbacks" in msg  # the fix
    assert not out.exists() and not sidecar_path(out).exists()
    with pytest.raises(QuantizeError, match=r"broken, output error vs fp32 >= [01]\.\d+ > screen_error 0\.5") as info:
        _run(det, out, det.bad)  # default screening: the broken output never reaches the gate
    assert "\n" not in str(info.value)


def test_failed_int8_falls_back_and_records_every_attempt(det: SimpleNamespace, tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "det.mnn"
    report = _run(det, out, det.bad, lines, fallbacks=("int8-weights", "fp32"), screen_error=2.0)
    kinds = [(a["kind"], a["passed"]) for a in report["attempts"]]
    assert kinds == [("int8", False), ("int8-weights", True)]
    assert report["precision"] == "int8-weights" and report["method"] is None and report["float_layers"] == []
    assert report["attempts"][0]["drops"]["pages"]["hmean"]["hi"] > 1.0
    assert report["attempts"][1]["params"] == {"weight_quant_bits": 8, "hqq": True}
    assert any(ln.startswith("quantize det: int8 EMA") and ln.endswith("FAIL") for ln in lines)
    assert lines[-1].startswith("quantize det: int8-weights") and lines[-1].endswith("pass")
    side = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert side["precision"] == "int8-weights" and side["float_layers"] == [] and side["quant_method"] is None


def test_full_int8_false_starts_at_the_fallbacks(det: SimpleNamespace, tmp_path: Path) -> None:
    lines: list[str] = []
    report = _run(det, tmp_path / "det.mnn", det.good, lines, full_int8=False, fallbacks=("fp16",))
    assert [a["kind"] for a in report["attempts"]] == ["fp16"] and report["precision"] == "fp16"
    assert any("post-training full INT8 skipped (quantize.full_int8 false)" in ln for ln in lines)


def test_tool_crash_is_reported_and_the_next_option_tried(
    det: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ocrslim.quantize.search as quantize

    def crash(src: Path, dst: Path, config: dict) -> None:
        raise ToolError(f"{src}: mnnquant crashed with SIGSEGV (last output: 'quantizing /c1'). Keep ops float.")

    monkeypatch.setattr(quantize, "quantize_mnn", crash)
    lines: list[str] = []
    report = _run(det, tmp_path / "det.mnn", det.good, lines, fallbacks=("fp16", "fp32"))
    first = report["attempts"][0]
    assert first["kind"] == "int8" and not first["passed"] and "crashed with SIGSEGV" in first["error"]
    assert any(ln.startswith("quantize det: int8 EMA") and "error:" in ln for ln in lines)
    assert report["precision"] == "fp16" and report["attempts"][1]["passed"]


def test_fp32_fallback_is_the_reference_itself(det: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "det.mnn"
    report = _run(det, out, det.bad, fallbacks=("fp32",))
    assert report["precision"] == "fp32"
    assert {k: v for k, v in report["drop"]["pages"]["hmean"].items() if k in ("drop", "lo", "hi")} == \
        {"drop": 0.0, "lo": 0.0, "hi": 0.0}
    assert out.read_bytes() == det.mnn.read_bytes()


# ---------------------------------------------------------------------------------------- KL repair


def test_kl_repair_measures_groups_and_keeps_the_worst_float(det: SimpleNamespace, tmp_path: Path) -> None:
    lines: list[str] = []
    report = _run(det, tmp_path / "det.mnn", det.good, lines, method_det="KL", max_repairs=1, repair_groups=1,
                  fallbacks=("fp32",))
    first, second = report["attempts"][:2]
    assert first["params"]["round"] == 0 and first["params"]["float_ops"] == 0 and not first["passed"]
    (layer,) = report["repair"]
    assert layer["round"] == 1 and layer["sensitivity"] > 0 and layer["skippable"]
    assert layer["group"] in ("/c1", "/c2", "/c3") and layer["ops"] == 1
    assert layer["why"].startswith("sensitivity")
    assert second["params"]["round"] == 1 and second["params"]["float_ops"] == 1
    assert any(ln.startswith(f"quantize det: repair 1: keep float {layer['group']} (+") for ln in lines)


def test_nan_weight_scales_are_found_and_kept_float_first(tmp_path: Path) -> None:
    """An all-zero output channel gets a NaN weight scale from mnnquant 3.6.1 (one cause of blank v4 rec under KL)."""
    dead = build_det(tmp_path, TextMap(zero_channel=True))
    quantize_mnn(dead.mnn, tmp_path / "dead_int8.mnn", json.loads(dead.good.read_text()))
    ops = {op["name"]: op for op in mnn_graph(tmp_path / "dead_int8.mnn")["ops"]}
    assert ops["/c1/Conv_output_0"]["nonfinite_scales"] and not ops["/c2/Conv_output_0"]["nonfinite_scales"]
    float_ops = {op["name"]: op for op in mnn_graph(dead.mnn)["ops"]}
    assert float_ops["/c1/Conv_output_0"]["weights"] == 4 * 3 * 9 + 4
    # A fused Conv+Relu op keeps the conv's output as its name; its tensor is named after the Relu.
    assert float_ops["/c1/Conv_output_0"]["outputs"] == ["/Relu_output_0"]

    report = _run(dead, tmp_path / "q.mnn", dead.good, method_det="KL", max_repairs=1, fallbacks=("fp32",))
    assert report["attempts"][0]["nonfinite_ops"] == ["/c1/Conv_output_0"]
    (layer,) = report["repair"]
    assert layer["group"] == "non-finite weight scales" and layer["ops"] == 1
    assert report["attempts"][1]["nonfinite_ops"] == []


# ---------------------------------------------------------------------------------------- shapes


def test_fixed_shape_only_det_model_is_refused_and_the_next_option_tried(
    det: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ocrslim.quantize.search as quantize

    monkeypatch.setattr(quantize, "runs_at_other_shapes", lambda *a, **k: False)
    report = _run(det, tmp_path / "det.mnn", det.good, fallbacks=("fp32",))
    first = report["attempts"][0]
    assert "runs only at 1x3x160x320" in first["error"] and "det pages are resized" in first["error"]
    assert report["precision"] == "fp32"


def test_fixed_shape_onnx_and_shape_probe(det: SimpleNamespace, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.onnx"
    fixed_shape_onnx(det.onnx, fixed, [1, 3, 64, 96])
    dims = [d.dim_value for d in onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 96]
    convert_onnx_to_mnn(fixed, tmp_path / "fixed.mnn")
    assert runs_at_other_shapes(det.mnn, tmp_path / "fixed.mnn", [1, 3, 64, 96], threads=1)
    with pytest.raises(ArtifactError, match="rank 4"):
        fixed_shape_onnx(det.onnx, fixed, [1, 3, 64])


# ---------------------------------------------------------------------------------------- config / sets


def test_group_key() -> None:
    assert group_key("/backbone/blocks2/blocks2.0/dw_conv/conv/Conv_output_0", 3) == "/backbone/blocks2/blocks2.0"
    assert group_key("/head/binarize/conv1/Conv_output_0", 3) == "/head/binarize/conv1"
    assert group_key("/c2/Conv_output_0", 1) == "/c2"
    assert group_key("BinaryOp163", 3) == "BinaryOp163"


def test_gate_sets_skip_missing_and_need_one(det: SimpleNamespace, tmp_path: Path) -> None:
    lines: list[str] = []
    cfg = QuantizeConfig(gate_det=(str(tmp_path / "nope"), str(det.data)))
    assert gate_sets("det", cfg, lines.append) == {"pages": det.data}
    assert lines == [f"quantize det: gate set {tmp_path / 'nope'} not found, skipped"]
    with pytest.raises(DataError, match="quantize.gate_det"):
        gate_sets("det", QuantizeConfig(gate_det=(str(tmp_path / "nope"),)), lines.append)


def test_composed_defaults_are_the_dataclass_and_bad_values_fail_in_one_line() -> None:
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    assert load_section(params, "quantize", QuantizeConfig) == QuantizeConfig()
    cases = (({"fallbacks": ["int4"]}, "quantize.fallbacks"), ({"method_rec": "MINMAX"}, "quantize.method_rec"),
             ({"gate_metrics_rec": ["cer"]}, "quantize.gate_metrics_rec"), ({"max_drop": -1}, "quantize.max_drop"),
             ({"target": "riscv"}, "quantize.target"),
             ({"rec_metric": "accuracy"}, "renamed to quantize.gate_metrics_rec"))
    for bad, key in cases:
        with pytest.raises(ConfigError, match=key) as info:
            load_section({"quantize": bad}, "quantize", QuantizeConfig)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- gate = evaluate


def test_gate_measures_what_evaluate_measures(det: SimpleNamespace, tmp_path: Path) -> None:
    """The issue's identity: the evaluate stage's scorer on the shipped file gives exactly the gate's numbers."""
    from ocrslim.eval.evaluate import evaluate
    from ocrslim.eval.stats import metric_value

    out = tmp_path / "det.mnn"
    report = _run(det, out, det.good)
    shipped = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert report["sha256"] == __import__("hashlib").sha256(out.read_bytes()).hexdigest()
    res = evaluate(OCR(open_model(str(out), "det", threads=1), None), det_data=[det.data], limit=4, progress=False,
                   rows=True)["pages"]
    assert res["det"]["hmean"] == report["final"]["pages"]["hmean"]
    assert metric_value(res["rows"]["det"], "hmean") == res["det"]["hmean"]
    assert shipped["precision"] == report["precision"] == "int8"


def test_x86_target_times_candidates_and_refuses_slower_ones(
    det: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ocrslim.quantize.search as quantize

    lines: list[str] = []
    report = _run(det, tmp_path / "a.mnn", det.good, lines, target="x86", speed_runs=3, fallbacks=("fp32",))
    timed = report["attempts"][0]["speed"]  # measured on this host, interleaved with the FP32 student
    assert set(timed) == {"ms", "fp32_ms", "ratio"} and timed["ms"] > 0 and timed["fp32_ms"] > 0
    assert report["precision"] == ("int8" if timed["ratio"] <= 1.05 else "fp32")

    monkeypatch.setattr(quantize._Run, "speed", lambda self, path, c: {"ms": 2.0, "fp32_ms": 2.0, "ratio": 1.0})
    assert _run(det, tmp_path / "b.mnn", det.good, target="x86", fallbacks=("fp32",))["precision"] == "int8"
    monkeypatch.setattr(quantize._Run, "speed", lambda self, path, c: {"ms": 9.0, "fp32_ms": 3.0, "ratio": 3.0})
    report = _run(det, tmp_path / "c.mnn", det.good, lines, target="x86", fallbacks=("fp32",))
    assert report["precision"] == "fp32" and report["attempts"][0]["slower"]
    assert any(ln.endswith("FAIL (slower than fp32)") for ln in lines)
    assert json.loads(sidecar_path(tmp_path / "c.mnn").read_text(encoding="utf-8"))["target"] == "x86"


def test_qat_model_is_a_gated_candidate(det: SimpleNamespace, tmp_path: Path) -> None:
    """A quantization-aware INT8 model (scales learnt, here only calibrated) is gated after post-training INT8."""
    from ocrslim.compress.qat import export_qat_mnn, prepare_qat

    model = TextMap().eval()
    pages = [torch.from_numpy(cv2.imread(str(p))[None].transpose(0, 3, 1, 2).astype("float32") / 127.5 - 1.0)
             for p in sorted(det.calib.iterdir())]
    prepare_qat(model, pages)
    qat = tmp_path / "qat" / "model.mnn"
    qat.parent.mkdir()
    export_qat_mnn(model, qat, pages[0])
    sidecar_path(qat).write_text(json.dumps({"task": "det", "config": {"det": to_dict(DET_CFG)}, "precision": "int8",
                                             "float_layers": []}), encoding="utf-8")
    lines: list[str] = []
    report = quantize_task("det", det.onnx, det.mnn, det.bad, tmp_path / "det.mnn",
                           _cfg(det, fallbacks=("fp32",)), log=lines.append, qat_mnn=qat)
    assert [(a["kind"], a["params"].get("method")) for a in report["attempts"]][-1] == ("int8", "QAT")
    assert report["precision"] == "int8" and report["method"] == "QAT"  # post-training INT8 (bad calib) failed
    assert any(ln.startswith("quantize det: int8 QAT") and ln.endswith(": pass") for ln in lines)


def test_a_gate_set_with_no_sample_is_a_one_line_error(tmp_path: Path) -> None:
    from ocrslim.infer.pipeline import Model
    from ocrslim.quantize.gate import Gate

    empty = tmp_path / "empty_rec"
    (empty / "images").mkdir(parents=True)
    (empty / "labels.tsv").write_text("")

    def never(x):
        raise AssertionError("no sample: the model is never run")

    base = Model("rec", never, "stub", characters=["a"])  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"empty_rec: the rec gate set 'empty_rec' has no readable sample "
                                        r"\(quantize\.gate_rec\)"):
        Gate.build("rec", base, QuantizeConfig(), {"empty_rec": empty})
