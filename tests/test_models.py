"""Native PP-OCRv4 mobile modules: parity with onnxruntime, save/load, export, trainability."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ocrslim.core.errors import ArtifactError, ConfigError
from ocrslim.models.det import DBNet
from ocrslim.models.io import load_model, save_model
from ocrslim.models.layers import build_component
from ocrslim.models.ppocr import load_ppocrv4, onnx_charset, teacher_onnx_path
from ocrslim.models.rec import CTCRecognizer

pytest.importorskip("rapidocr_onnxruntime")


def _options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    # Idle ORT threads otherwise spin and steal the 2 cores from the torch forwards that follow.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _session(path: str | Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), _options(), providers=["CPUExecutionProvider"])


def _image_like(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random input in [-1, 1], i.e. shaped like an image normalised with mean 0.5 / std 0.5."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def det() -> DBNet:
    model = load_ppocrv4("det", teacher_onnx_path("det"))
    assert isinstance(model, DBNet)
    return model


@pytest.fixture(scope="module")
def rec() -> CTCRecognizer:
    model = load_ppocrv4("rec", teacher_onnx_path("rec"))
    assert isinstance(model, CTCRecognizer)
    return model


@pytest.fixture(scope="module")
def det_ort() -> ort.InferenceSession:
    """The teacher det graph with the pre-sigmoid logits exposed as a second output.

    On random inputs the probability map is ~0 everywhere, so comparing probabilities alone
    would prove little; the logits (about -50..-5 there) are compared too.
    """
    model = onnx.load(str(teacher_onnx_path("det")))
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    model.graph.output.append(onnx.helper.make_tensor_value_info(sigmoid.input[0], onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString(), _options(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def rec_ort() -> ort.InferenceSession:
    return _session(teacher_onnx_path("rec"))


@pytest.mark.parametrize("shape", [(1, 3, 320, 320), (1, 3, 256, 416)])
def test_det_matches_onnx(det: DBNet, det_ort: ort.InferenceSession, shape: tuple[int, ...]) -> None:
    x = _image_like(*shape)
    logits: list[torch.Tensor] = []
    handle = det.head.binarize.conv3.register_forward_hook(lambda _m, _i, out: logits.append(out))
    try:
        with torch.no_grad():
            ours = det(x).numpy()
    finally:
        handle.remove()
    ref, ref_logits = det_ort.run(None, {"x": x.numpy()})
    assert ours.shape == ref.shape == (shape[0], 1, shape[2], shape[3])
    assert np.abs(ours - ref).max() <= 1e-3
    assert np.abs(logits[0].numpy() - ref_logits).max() <= 1e-3


@pytest.mark.parametrize("width", [320, 160])
def test_rec_matches_onnx(rec: CTCRecognizer, rec_ort: ort.InferenceSession, width: int) -> None:
    x = _image_like(2, 3, 48, width)
    with torch.no_grad():
        ours = rec(x).numpy()
    ref = rec_ort.run(None, {"x": x.numpy()})[0]
    assert ours.shape == ref.shape == (2, width // 8, 6625)
    assert np.abs(ours - ref).max() <= 1e-4


def test_rec_probabilities_and_logits(rec: CTCRecognizer) -> None:
    x = _image_like(2, 3, 48, 96, seed=1)
    with torch.no_grad():
        probs = rec(x)
        logits = rec(x, return_logits=True)
    assert rec.num_classes == 6625
    torch.testing.assert_close(probs.sum(dim=2), torch.ones(2, 12), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.softmax(logits, dim=2), probs)


def test_charset_matches_head() -> None:
    chars = onnx_charset(teacher_onnx_path("rec"))
    assert len(chars) == 6623
    assert "" not in chars and " " not in chars
    # CTC blank + charset + the space PP-OCR appends = the head width.
    assert len(chars) + 2 == 6625


def test_param_counts(det: DBNet, rec: CTCRecognizer) -> None:
    n_det = sum(p.numel() for p in det.parameters())
    n_rec = sum(p.numel() for p in rec.parameters())
    assert 1.15e6 < n_det < 1.19e6
    assert 2.67e6 < n_rec < 2.71e6


@pytest.mark.parametrize("task", ["det", "rec"])
def test_save_load_round_trip(det: DBNet, rec: CTCRecognizer, task: str, tmp_path: Path) -> None:
    model = det if task == "det" else rec
    x = _image_like(1, 3, 64, 64) if task == "det" else _image_like(1, 3, 48, 64)
    save_model(model, tmp_path / "model.safetensors", meta={"task": task})
    loaded, meta = load_model(tmp_path / "model.safetensors")
    assert meta == {"task": task}
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="bad.safetensors"):
        load_model(bad)


def test_load_ppocrv4_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_ppocrv4("det", tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="junk.onnx"):
        load_ppocrv4("det", junk)
    # The rec graph is not a det model: the first disagreeing layer is named.
    with pytest.raises(ArtifactError, match="layer '"):
        load_ppocrv4("det", teacher_onnx_path("rec"))
    with pytest.raises(ArtifactError, match="not a PP-OCRv4 rec model"):
        load_ppocrv4("rec", teacher_onnx_path("det"))
    with pytest.raises(ConfigError, match="known: det, rec"):
        load_ppocrv4("cls", teacher_onnx_path("det"))
    with pytest.raises(ConfigError, match="not registered"):
        build_component({"name": "NoSuchNeck"})


def _export(model: torch.nn.Module, x: torch.Tensor, path: Path, dynamic: dict[int, str]) -> None:
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": dynamic, "y": {0: "n"}},
    )


def test_det_onnx_export(det: DBNet, tmp_path: Path) -> None:
    path = tmp_path / "det.onnx"
    _export(det, _image_like(1, 3, 64, 64), path, {0: "n", 2: "h", 3: "w"})
    x = _image_like(2, 3, 96, 160, seed=2)  # another batch and size than the export example
    with torch.no_grad():
        ours = det(x).numpy()
    ref = _session(path).run(None, {"x": x.numpy()})[0]
    assert ref.shape == (2, 1, 96, 160)
    assert np.abs(ours - ref).max() <= 1e-4


def test_rec_onnx_export(rec: CTCRecognizer, tmp_path: Path) -> None:
    path = tmp_path / "rec.onnx"
    _export(rec, _image_like(1, 3, 48, 64), path, {0: "n", 3: "w"})
    x = _image_like(3, 3, 48, 200, seed=3)  # W = 200: a multiple of 8, not of 16
    with torch.no_grad():
        ours = rec(x).numpy()
    ref = _session(path).run(None, {"x": x.numpy()})[0]
    assert ref.shape == (3, 25, 6625)
    assert np.abs(ours - ref).max() <= 1e-5


def test_det_threshold_branch_and_gradients(det: DBNet) -> None:
    model = copy.deepcopy(det)
    model.head.enable_threshold()
    model.train()
    out = model(_image_like(2, 3, 64, 64))
    assert isinstance(out, dict) and set(out) == {"prob", "thresh", "binary"}
    for value in out.values():
        assert value.shape == (2, 1, 64, 64)
    torch.testing.assert_close(out["binary"], 1 / (1 + torch.exp(-50 * (out["prob"] - out["thresh"]))))
    (out["prob"].mean() + out["thresh"].mean() + out["binary"].mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    model.eval()
    with torch.no_grad():
        assert isinstance(model(_image_like(1, 3, 64, 64)), torch.Tensor)


@pytest.mark.filterwarnings("ignore:Unwrapped parameters")  # the scalar LAB scale/bias: nothing to prune
def test_threshold_branch_after_pruning(det: DBNet) -> None:
    """The DB threshold branch must be added after pruning: torch-pruning traces in eval mode,
    where the branch does not run, so a branch created earlier keeps the unpruned input width."""
    tp = pytest.importorskip("torch_pruning")
    model = copy.deepcopy(det)
    example = _image_like(1, 3, 64, 64)
    importance = tp.importance.MagnitudeImportance(p=1)
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=0.3, ignored_layers=[model.head])
    pruner.step()
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in det.parameters())
    model.head.enable_threshold()
    out = model.train()(example)
    assert isinstance(out, dict) and out["thresh"].shape == (1, 1, 64, 64)


def test_rec_gradients(rec: CTCRecognizer) -> None:
    model = copy.deepcopy(rec).train()
    logits = model(_image_like(2, 3, 48, 64), return_logits=True)
    logits.logsumexp(dim=2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
