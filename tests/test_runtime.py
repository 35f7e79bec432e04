"""Runners: torch, onnxruntime and MNN agree on tiny det/rec-like nets at several input shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ocrslim.core.errors import ArtifactError
from ocrslim.export.onnx import export_onnx
from ocrslim.infer.runners import OrtRunner, TorchRunner, open_model_file, open_runner


class TinyDet(nn.Module):
    """Conv-BN-ReLU-Conv-Sigmoid: a probability map the size of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TinyRec(nn.Module):
    """N×3×8×W → N×C×1×W → N×W×C (width-dependent reshape) → Linear → softmax, like CRNN's head."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d((8, 1)))
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        n, c, h, w = f.shape
        seq = f.reshape(n, c, h * w).permute(0, 2, 1)
        return self.fc(seq).softmax(-1)


def _randomize_bn(model: nn.Module) -> nn.Module:
    # Non-trivial running statistics, so a BN folding mistake shows up as a difference.
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


CASES = {
    "det": (TinyDet, (1, 3, 32, 48), {"x": {0: "n", 2: "h", 3: "w"}}, [(1, 3, 32, 48), (2, 3, 64, 96), (1, 3, 40, 24)]),
    "rec": (TinyRec, (1, 3, 8, 40), {"x": {0: "n", 3: "w"}}, [(1, 3, 8, 40), (3, 3, 8, 72), (2, 3, 8, 16)]),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """(name, torch module, onnx path, input shapes), exported once per module."""
    name = request.param
    factory, sample_shape, axes, shapes = CASES[name]
    torch.manual_seed(0)
    model = _randomize_bn(factory())
    out_axes = {0: "n", 2: "h", 3: "w"} if name == "det" else {0: "n", 1: "t"}
    onnx_path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    export_onnx(model, onnx_path, torch.rand(sample_shape), {**axes, "y": out_axes})
    return name, model, onnx_path, shapes


@pytest.fixture(scope="module")
def mnn_path(exported: tuple) -> Path:
    """The exported ONNX file converted to MNN FP32, once per case."""
    pytest.importorskip("MNN")
    from ocrslim.export.mnn import convert_onnx_to_mnn

    onnx_path = exported[2]
    convert_onnx_to_mnn(onnx_path, onnx_path.with_suffix(".mnn"))
    return onnx_path.with_suffix(".mnn")


def _inputs(shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random(s, dtype=np.float32) for s in shapes]


def test_torch_and_onnx_agree_at_several_shapes(exported: tuple) -> None:
    name, model, onnx_path, shapes = exported
    torch_runner, ort_runner = TorchRunner(model, threads=1), open_runner(onnx_path, threads=1)
    assert isinstance(ort_runner, OrtRunner) and ort_runner.name == "onnx"
    for x in _inputs(shapes):
        a, b = torch_runner(x), ort_runner(x)
        assert a.dtype == b.dtype == np.float32
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_all_three_runners_agree_and_shapes_can_change(exported: tuple, mnn_path: Path) -> None:
    name, model, onnx_path, shapes = exported
    runners = [TorchRunner(model, threads=1), open_runner(onnx_path, threads=1), open_runner(mnn_path, threads=1)]
    assert [r.name for r in runners] == ["torch", "onnx", "mnn"]
    # Third shape after the first two, then the first again: the MNN module must re-plan each time.
    xs = _inputs(shapes)
    for x in [*xs, xs[0]]:
        ref, *others = [r(x) for r in runners]
        expected_shape = (x.shape[0], 1, *x.shape[2:]) if name == "det" else (x.shape[0], x.shape[3], 5)
        assert ref.shape == expected_shape
        for out in others:
            assert out.dtype == np.float32 and out.shape == ref.shape
            np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_mnn_output_is_not_overwritten_by_next_call(exported: tuple, mnn_path: Path) -> None:
    """MNN's read() is a view of its buffer; the runner must return a copy."""
    runner = open_runner(mnn_path)
    x = _inputs(exported[3][:1])[0]
    first = runner(x)
    kept = first.copy()
    runner(np.zeros_like(x))
    np.testing.assert_array_equal(first, kept)


def test_one_suffix_dispatch_returns_the_runner_and_the_files_metadata(tmp_path: Path) -> None:
    """``open_model_file`` is the one place a suffix picks a runtime; each file's metadata comes with it."""
    from ocrslim.core.fsutil import write_json
    from ocrslim.export.steps import _embed_meta
    from ocrslim.models.io import save_model
    from ocrslim.models.seed import build_seed_student

    torch.manual_seed(0)
    st = tmp_path / "det.safetensors"
    save_model(build_seed_student("det").eval(), st, {"task": "det", "seed": True})
    runner, got = open_model_file(st)
    assert isinstance(runner, TorchRunner) and got == {"task": "det", "seed": True}
    model = _randomize_bn(TinyRec())
    meta = {"task": "rec", "characters": ["a", "b", "c"]}
    onnx_path = tmp_path / "rec.onnx"
    export_onnx(model, onnx_path, torch.rand(1, 3, 8, 40), CASES["rec"][2])
    _embed_meta(onnx_path, meta)
    runner, got = open_model_file(onnx_path)  # characters from PP-OCR's `character` key, task from ocrslim's
    assert isinstance(runner, OrtRunner) and got == meta
    if importlib.util.find_spec("MNN") is not None:
        from ocrslim.core.artifacts import sidecar_path
        from ocrslim.export.mnn import convert_onnx_to_mnn

        convert_onnx_to_mnn(onnx_path, tmp_path / "rec.mnn")
        write_json(sidecar_path(tmp_path / "rec.mnn"), meta)
        runner, got = open_model_file(tmp_path / "rec.mnn")
        assert runner.name == "mnn" and got == meta


def test_torch_runner_runs_on_the_modules_device_and_returns_numpy() -> None:
    model = TinyDet()
    runner = TorchRunner(model)
    assert runner.device == next(model.parameters()).device and not model.training
    x = np.zeros((1, 3, 8, 8), np.float32)
    explicit = TorchRunner(model, device="cpu")(x)
    assert isinstance(explicit, np.ndarray) and explicit.dtype == np.float32
    np.testing.assert_array_equal(runner(x), explicit)
    if torch.cuda.is_available():
        on_gpu = TorchRunner(TinyDet().to("cuda").eval())
        assert on_gpu.device.type == "cuda" and on_gpu(x).shape == (1, 1, 8, 8)


def test_torch_runner_restores_thread_count() -> None:
    before = torch.get_num_threads()
    TorchRunner(TinyDet(), threads=1)(np.zeros((1, 3, 8, 8), np.float32))
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("name", ["model.tflite", "model"])
def test_open_runner_rejects_unknown_suffix(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\0")
    with pytest.raises(ArtifactError, match=r"expected \.onnx, \.mnn, \.safetensors") as info:
        open_runner(tmp_path / name)
    assert "\n" not in str(info.value)


def test_open_runner_refuses_a_torch_pickle(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(ArtifactError, match="convert-model") as info:
        open_runner(tmp_path / "model.pt")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", [".onnx", ".mnn"])
def test_open_runner_missing_file(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        open_runner(tmp_path / f"missing{suffix}")


@pytest.mark.parametrize("suffix", [".onnx", ".mnn"])
def test_open_runner_garbage_file(tmp_path: Path, suffix: str) -> None:
    if suffix == ".mnn":
        pytest.importorskip("MNN")
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ArtifactError, match="cannot load"):
        open_runner(path)
