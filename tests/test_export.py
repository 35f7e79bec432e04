"""torch → ONNX export, parity gate, and the MNN converter/quantizer wrappers."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from ocrslim.core.errors import ConfigError, ParityError, ToolError
from ocrslim.export.mnn import convert_onnx_to_mnn, mnn_version, onnx_op_types, quantize_mnn
from ocrslim.export.onnx import compare_runners, export_onnx, max_abs_diff_torch_onnx, parity_gate
from ocrslim.infer.runners import OrtRunner, open_runner

DET_AXES = {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}


def tiny_det(act: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), act or nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid()
    )
    bn = model[1]
    bn.running_mean.normal_(0, 0.1)
    bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


class SqueezeExcite(nn.Module):
    """Conv + SE gate (global mean → 1×1 conv → sigmoid): mnnquant 3.6.1 segfaults on it (PROBE.md)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * torch.sigmoid(self.gate(y.mean((2, 3), keepdim=True)))


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.fixture(scope="module")
def det_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("det") / "det.onnx"
    export_onnx(tiny_det(), path, torch.rand(1, 3, 32, 32), DET_AXES)
    return path


# ---------------------------------------------------------------- ONNX export


def test_export_keeps_dynamic_axes_and_passes_checker(det_onnx: Path) -> None:
    proto = onnx.load(str(det_onnx))
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("x", "y")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["n", 3, "h", "w"]
    # onnxsim folded BN into the conv: no BatchNormalization left.
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    assert sorted(p.name for p in det_onnx.parent.iterdir()) == ["det.onnx"], "temp files left behind"


def test_export_restores_mode_and_leaves_bn_stats(tmp_path: Path) -> None:
    model = tiny_det().train()
    stats = model[1].running_mean.clone()
    export_onnx(model, tmp_path / "m.onnx", torch.rand(2, 3, 16, 16), DET_AXES, simplify=False)
    assert model.training
    torch.testing.assert_close(model[1].running_mean, stats, rtol=0, atol=0)


def test_export_rejects_unknown_dynamic_axes_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="images"):
        export_onnx(tiny_det(), tmp_path / "m.onnx", torch.rand(1, 3, 16, 16), {"images": {0: "n"}})
    assert not (tmp_path / "m.onnx").exists()


def test_max_abs_diff_torch_onnx_is_small(det_onnx: Path) -> None:
    diff = max_abs_diff_torch_onnx(tiny_det(), det_onnx, [_rand(1, 3, 32, 32), _rand(2, 3, 48, 80)])
    assert 0.0 <= diff < 1e-5


def test_compare_runners_keys_by_shape(det_onnx: Path) -> None:
    runner = OrtRunner(det_onnx)
    diffs = compare_runners(runner, runner, [_rand(1, 3, 64, 96), _rand(1, 3, 32, 32)])
    assert diffs == {"1x3x64x96": 0.0, "1x3x32x32": 0.0}


# ---------------------------------------------------------------- parity gate


def test_parity_gate_passes_within_tolerance() -> None:
    parity_gate("det.onnx", {"1x3x64x96": 2e-6, "1x3x32x32": 1e-3}, tol=1e-3)


def test_parity_gate_message_names_worst_shape_and_diff() -> None:
    with pytest.raises(ParityError) as info:
        parity_gate("det.onnx", {"1x3x32x32": 1e-5, "1x3x64x96": 3.2e-2}, tol=1e-3, hint="Re-export in eval mode")
    assert str(info.value) == (
        "det.onnx: max |a-b| = 3.2e-02 at shape 1x3x64x96 exceeds tolerance 1e-03. Re-export in eval mode."
    )


def test_parity_gate_fails_on_nan() -> None:
    """NaN compares false with everything, so a naive `diff > tol` check would let it through."""
    with pytest.raises(ParityError, match="nan at shape 1x3x8x8"):
        parity_gate("rec.mnn", {"1x3x4x4": 1e-7, "1x3x8x8": float("nan")}, tol=1e-3)


# ---------------------------------------------------------------- MNN conversion

mnn_only = pytest.mark.usefixtures("_mnn")


@pytest.fixture
def _mnn() -> None:
    pytest.importorskip("MNN")


def _assert_clean_tool_error(err: ToolError, tool: str) -> None:
    msg = str(err)
    assert "\n" not in msg and "Traceback" not in msg
    assert tool in msg


@mnn_only
def test_convert_fp32_matches_onnxruntime(det_onnx: Path, tmp_path: Path) -> None:
    mnn_path = tmp_path / "det.mnn"
    convert_onnx_to_mnn(det_onnx, mnn_path)
    diffs = compare_runners(open_runner(det_onnx), open_runner(mnn_path), [_rand(1, 3, 32, 32), _rand(2, 3, 40, 56)])
    parity_gate(str(mnn_path), diffs, tol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.mnn"], "temp files left behind"


@mnn_only
@pytest.mark.parametrize("content", [None, b"not a model", bytes(range(256)) * 8])
def test_convert_bad_onnx_raises_tool_error_and_writes_nothing(tmp_path: Path, content: bytes | None) -> None:
    src = tmp_path / "bad.onnx"
    if content is not None:
        src.write_bytes(content)
    dst = tmp_path / "out" / "bad.mnn"
    with pytest.raises(ToolError) as info:
        convert_onnx_to_mnn(src, dst)
    _assert_clean_tool_error(info.value, "mnnconvert" if content is not None else "bad.onnx")
    assert not dst.exists()
    assert not dst.parent.exists() or list(dst.parent.iterdir()) == []


@mnn_only
def test_convert_failure_keeps_previous_output(tmp_path: Path) -> None:
    src, dst = tmp_path / "bad.onnx", tmp_path / "model.mnn"
    src.write_bytes(b"garbage")
    dst.write_bytes(b"previous good model")
    with pytest.raises(ToolError):
        convert_onnx_to_mnn(src, dst)
    assert dst.read_bytes() == b"previous good model"


@mnn_only
def test_convert_unsupported_op_names_it(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"]), helper.make_node("FooBar", ["t"], ["y"], domain="my.ops")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    src = tmp_path / "foo.onnx"
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), src)
    with pytest.raises(ToolError, match="FooBar") as info:
        convert_onnx_to_mnn(src, tmp_path / "foo.mnn")
    _assert_clean_tool_error(info.value, "mnnconvert")


@mnn_only
def test_convert_gelu_uses_exact_erf(tmp_path: Path) -> None:
    """MNN's default GELU is the tanh approximation (4.7e-4 off here, 0.02 on PP-OCRv6); Erf graphs must turn it off."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU()).eval()  # GELU output unsquashed
    src = tmp_path / "gelu.onnx"
    export_onnx(model, src, torch.rand(1, 3, 16, 16), DET_AXES)
    assert "Erf" in onnx_op_types(src)
    convert_onnx_to_mnn(src, tmp_path / "gelu.mnn")
    x = [_rand(1, 3, 24, 24) * 8 - 4]
    parity_gate("gelu.mnn", compare_runners(open_runner(src), open_runner(tmp_path / "gelu.mnn"), x), tol=1e-4)


@mnn_only
def test_convert_compressed_variants(det_onnx: Path, tmp_path: Path) -> None:
    convert_onnx_to_mnn(det_onnx, tmp_path / "fp16.mnn", fp16=True)
    convert_onnx_to_mnn(det_onnx, tmp_path / "w8.mnn", weight_quant_bits=8, hqq=True)
    x = [_rand(1, 3, 32, 32)]
    ort = open_runner(det_onnx)
    for name in ("fp16.mnn", "w8.mnn"):
        diff = compare_runners(ort, open_runner(tmp_path / name), x)["1x3x32x32"]
        assert diff < 0.05, name


def test_convert_rejects_hqq_without_bits(det_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="weight_quant_bits"):
        convert_onnx_to_mnn(det_onnx, tmp_path / "x.mnn", hqq=True)


def test_child_crash_becomes_one_line_tool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A segfaulting tool must surface as ToolError with the signal and its last words, not kill the caller."""
    import ocrslim.export.mnn as mnn

    crash = (
        "import os, signal, sys; print('The device supports: i8sdot:0'); print('[10:38:47] @ 1107: quantizing conv_7');"
        "sys.stdout.flush(); os.kill(os.getpid(), signal.SIGSEGV)"
    )
    monkeypatch.setattr(mnn, "_child_command", lambda tool, args: [sys.executable, "-c", crash])
    monkeypatch.setattr(mnn.importlib.util, "find_spec", lambda name: object())
    src = tmp_path / "m.mnn"
    src.write_bytes(b"x")
    with pytest.raises(ToolError) as info:
        mnn.quantize_mnn(src, tmp_path / "q.mnn", {"format": "RGB"})
    msg = str(info.value)
    assert msg.startswith(f"{src}: mnnquant crashed with {signal.SIGSEGV.name} (last output: 'quantizing conv_7').")
    _assert_clean_tool_error(info.value, "mnnquant")
    assert not (tmp_path / "q.mnn").exists()


# ---------------------------------------------------------------- MNN quantization


@pytest.fixture
def calib_dir(tmp_path: Path) -> Path:
    image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _quant_config(calib: Path) -> dict:
    return {
        "format": "RGB",
        "mean": [127.5, 127.5, 127.5],
        "normal": [1 / 127.5] * 3,
        "width": 32,
        "height": 32,
        "path": str(calib),
        "used_image_num": 3,
        "feature_quantize_method": "KL",
        "weight_quantize_method": "MAX_ABS",
    }


@mnn_only
def test_quantize_writes_int8_model(det_onnx: Path, calib_dir: Path, tmp_path: Path) -> None:
    fp32, int8 = tmp_path / "det.mnn", tmp_path / "det_int8.mnn"
    convert_onnx_to_mnn(det_onnx, fp32)
    quantize_mnn(fp32, int8, _quant_config(calib_dir))
    out = open_runner(int8)(_rand(1, 3, 32, 32))
    assert out.shape == (1, 1, 32, 32) and np.all((out >= 0) & (out <= 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "det.mnn", "det_int8.mnn"]


@mnn_only
def test_quantize_se_block_crash_is_tool_error(calib_dir: Path, tmp_path: Path) -> None:
    """mnnquant 3.6.1 segfaults on a squeeze-excite block (PROBE.md); the caller gets a ToolError."""
    src = tmp_path / "se.onnx"
    export_onnx(SqueezeExcite().eval(), src, torch.rand(1, 3, 32, 32), DET_AXES)
    convert_onnx_to_mnn(src, tmp_path / "se.mnn")
    try:
        quantize_mnn(tmp_path / "se.mnn", tmp_path / "se_int8.mnn", _quant_config(calib_dir))
    except ToolError as err:
        _assert_clean_tool_error(err, "mnnquant")
        assert not (tmp_path / "se_int8.mnn").exists()
    else:
        pytest.skip("this MNN build quantizes SE blocks without crashing")


# ---------------------------------------------------------------- the wheel itself


@mnn_only
def test_tools_module_does_not_import_mnn_tools() -> None:
    """MNN.tools pip-installs a logging SDK and uploads usage data; `_tools` must not pull it in."""
    code = "import sys, _tools; print(sorted(m for m in sys.modules if m.startswith('MNN')))"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@mnn_only
def test_mnn_version() -> None:
    assert mnn_version().split(".")[0].isdigit()



def test_post_processing_enters_the_model_files_at_export(tmp_path: Path) -> None:
    """A torch model file carries its preprocessing only; the export stage attaches the params' post-processing,
    so a threshold change re-exports (and re-gates) a model but never retrains one (dvc.yaml: teacher lists the
    preprocessing keys, export the task's section)."""
    from ocrslim.core.artifacts import model_meta, onnx_ocrslim_meta
    from ocrslim.core.config import DetConfig, RecConfig
    from ocrslim.models.io import save_model
    from ocrslim.models.seed import build_seed_student
    from stages.export import main

    meta = model_meta("det", None, DetConfig(limit_side_len=640, box_thresh=0.7), RecConfig())
    assert meta["config"]["det"]["limit_side_len"] == 640 and "box_thresh" not in meta["config"]["det"]
    torch.manual_seed(0)
    save_model(build_seed_student("det").eval(), tmp_path / "det.safetensors", meta)
    params = tmp_path / "params.yaml"
    params.write_text("export:\n  det_shapes: [[64, 64], [64, 96]]\ndet:\n  box_thresh: 0.6\n  limit_side_len: 960\n")
    out = tmp_path / "det.onnx"
    assert main(["--params", str(params), "--task", "det", "--model", str(tmp_path / "det.safetensors"),
                 "--out", str(out), "--metrics", str(tmp_path / "export.json")]) == 0
    det = onnx_ocrslim_meta(out)["config"]["det"]
    assert det["box_thresh"] == 0.6  # the params' post-processing
    assert det["limit_side_len"] == 640  # the model's own preprocessing, not the params'
    assert det["thresh"] == DetConfig().thresh
