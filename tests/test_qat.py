"""Quantization-aware training for MNN (ocrslim.compress.qat) on tiny models.

Fake-quant in torch → float ONNX + compression params → MNN INT8, checked in MNN: the INT8 file runs
at two input shapes, matches the fake-quant torch model (>= 99% of outputs identical, the rest one
quantization step off: the tolerance is stated below), differs from the FP32 model by the
quantization noise (it really is quantized), and is under a third of the FP32 file (~0.30).
Also: the QDQ ONNX route, which MNN 3.6.1 converts to float convs, so this module does not take it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ocrslim.core.errors import ConfigError

pytest.importorskip("MNN")

from ocrslim.compress.qat import (  # noqa: E402
    QMAX,
    ActQuant,
    QatError,
    _pipeline_class,
    _tensor_key,
    compression_params,
    export_qat_mnn,
    fake_quant,
    mnn_precision,
    mnn_runtime_ops,
    prepare_qat,
    qat_disabled,
    qat_plan,
    strip_qat,
)
from ocrslim.export.mnn import convert_onnx_to_mnn  # noqa: E402
from ocrslim.export.onnx import export_onnx  # noqa: E402
from ocrslim.infer.runners import MnnRunner  # noqa: E402

AXES = {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 1: "h", 2: "w"}}

# Tolerance, MNN INT8 vs the fake-quant torch model (measured on MNN 3.6.1, x86, both test models,
# 4 inputs x 3 shapes): >= 99.6% of the outputs are identical and the rest are one output step off
# (rounding ties, float accumulation order); the mean difference is <= 1.6% of the quantization
# noise |fake-quant - float|. Asserted with some margin:
MAX_STEPS = 1.01  # max |mnn - fake-quant|, in steps of the output's quantization scale
MIN_EXACT = 0.99  # fraction of outputs that agree exactly
MEAN_FRACTION = 0.05  # mean |mnn - fake-quant| / mean |fake-quant - float|


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(c, c // 4, 1)
        self.conv2 = nn.Conv2d(c // 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(self.pool(x)))
        return x * F.hardsigmoid(self.conv2(y))


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MobileNet(nn.Module):
    """Shaped like the PP-OCR models: conv+BN+hardswish, depthwise, SE, deconv, a Linear head."""

    def __init__(self, c: int = 48) -> None:
        super().__init__()
        self.stem = ConvBN(3, c, 3, stride=2)
        self.dw = ConvBN(c, c, 3, groups=c)
        self.se = SE(c)
        self.pw = ConvBN(c, 2 * c, 1)
        self.up = nn.ConvTranspose2d(2 * c, c, 2, 2)
        self.head = nn.Conv2d(c, c, 3, 1, 1)
        self.fc = nn.Linear(c, 40)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.se(self.dw(self.stem(x))))
        x = self.head(F.relu(self.up(x)))
        return self.fc(x.permute(0, 2, 3, 1))


class PlainNet(nn.Module):
    """A few convs and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, 1, 1)
        self.bn = nn.BatchNorm2d(32)
        self.c2 = nn.Conv2d(32, 64, 3, 2, 1)
        self.c3 = nn.Conv2d(64, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.c1(x)))
        x = F.relu(self.c3(F.relu(self.c2(x))))
        return self.fc(x.permute(0, 2, 3, 1))


def _init(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial BatchNorms, so the folded scales are exercised
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _calib(seed: int, n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(4, 3, 32, 32, generator=g) * 2 - 1 for _ in range(n)]


@pytest.fixture(scope="module", params=["mobile", "plain"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    model = _init(MobileNet() if request.param == "mobile" else PlainNet(), seed=0)
    calib = _calib(1)
    plan = prepare_qat(model, calib, dynamic_axes=AXES)
    out = tmp_path_factory.mktemp(f"qat_{request.param}")
    report = export_qat_mnn(model, out / "int8.mnn", calib[0][:1], onnx_path=out / "float.onnx")
    with qat_disabled(model):
        export_onnx(model, out / "fp32.onnx", calib[0][:1], AXES, simplify=False)
    convert_onnx_to_mnn(out / "fp32.onnx", out / "fp32.mnn")
    return {"name": request.param, "model": model, "plan": plan, "report": report, "dir": out}


def test_fake_quant_rounds_clamps_and_passes_gradients() -> None:
    x = torch.tensor([0.004, 0.026, -3.0, 0.5], requires_grad=True)
    s = torch.tensor(0.01, requires_grad=True)
    y = fake_quant(x, s, grad_scale=1.0)
    assert torch.allclose(y, torch.tensor([0.0, 0.03, -1.27, 0.5]))
    y.sum().backward()
    assert x.grad is not None and s.grad is not None
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 1.0]  # straight-through inside the range, 0 where clamped
    assert s.grad.item() != 0.0


def test_activation_step_size_does_not_depend_on_the_global_rng() -> None:
    # a tensor larger than the subsample, with a long tail: which values are kept moves the MSE step size
    x = torch.from_numpy(np.random.default_rng(0).standard_t(2, size=(4, 1 << 16)).astype(np.float32))
    scales = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # what ran before in the process
        torch.rand(seed)
        q = ActQuant()
        q.observe(x)
        q.observe(x * 0.5)
        q.init_scale("mse")
        scales.append(q.scale.item())
    assert scales[0] == scales[1] and scales[0] > 0


def test_plan_maps_layers_to_mnn_ops(exported: dict) -> None:
    plan, report = exported["plan"], exported["report"]
    modules = dict(exported["model"].named_modules())
    quantized = {layer.module for layer in plan.layers}
    if exported["name"] == "mobile":
        assert quantized == {"stem.conv", "dw.conv", "se.conv1", "se.conv2", "pw.conv", "head", "fc"}
        assert "ConvTranspose2d" in plan.kept_float["up"]
        # The depthwise conv is followed by a BatchNorm: its output fake-quant sits after it.
        assert {layer.module: layer.output_site for layer in plan.layers}["dw.conv"] == "dw.bn"
        # MNN hands the SE squeeze conv's input scale back to the pool's input and runs the pool in
        # int8 (a rounded copy of the block's input for the pool only, then a floor-average): the
        # fake-quant model quantizes the pool's input with the same quantizer and floors like MNN.
        se_in = next(layer.input_tensor for layer in plan.layers if layer.module == "se.conv1")
        assert ("/dw/act/HardSwish_output_0", se_in, "in:se.pool") in plan.propagated
        assert plan.int8_pools == {"se.pool": se_in}
    else:
        assert quantized == {"c1", "c2", "c3", "fc"} and not plan.kept_float
    assert all(isinstance(modules[m], nn.Conv2d | nn.Linear) for m in quantized)
    assert report["int8_ops"] == len(plan.layers)
    assert report["float_ops"] == {}  # the deconv keeps float activations but int8 weights
    assert report["int8_weight_only_ops"] == (1 if exported["name"] == "mobile" else 0)
    # The emulation of MNN's runtime agrees with what the runtime runs in int8.
    runtime = mnn_runtime_ops(exported["dir"] / "int8.mnn", (1, 3, 32, 32))
    assert runtime.get("Convolution int8", 0) + runtime.get("ConvolutionDepthwise int8", 0) == len(plan.layers)
    assert runtime.get("Pooling int8", 0) == len(plan.int8_pools)
    assert runtime.get("Convolution", 0) == runtime.get("ConvolutionDepthwise", 0) == 0


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 48, 64)])
def test_mnn_int8_matches_fake_quant(exported: dict, shape: tuple[int, ...]) -> None:
    model, out = exported["model"], exported["dir"]
    int8, fp32 = MnnRunner(out / "int8.mnn", threads=1), MnnRunner(out / "fp32.mnn", threads=1)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(*shape, generator=g) * 2 - 1
    with torch.no_grad():
        fq = model(x).numpy()
        with qat_disabled(model):
            f = model(x).numpy()
    mq, mf = int8(x.numpy()), fp32(x.numpy())
    assert mq.shape == fq.shape
    assert np.abs(mf - f).max() < 1e-4  # the FP32 build is the float model
    fc_out = next(layer.output_tensor for layer in exported["plan"].layers if layer.module == "fc")
    step = float(model.qat_quantizers[_tensor_key(fc_out)].scale.detach())
    noise = np.abs(fq - f).mean()
    assert np.abs(mq - fq).max() <= MAX_STEPS * step
    assert np.mean(np.abs(mq - fq) < 1e-6) >= MIN_EXACT
    assert np.abs(mq - fq).mean() <= MEAN_FRACTION * noise
    # Really quantized: the INT8 build is off the float model by the quantization noise.
    assert np.abs(mq - mf).mean() >= 0.5 * noise > 0


def test_int8_file_is_a_quarter_of_fp32(exported: dict) -> None:
    out = exported["dir"]
    assert (out / "int8.mnn").stat().st_size < 0.33 * (out / "fp32.mnn").stat().st_size


def test_compression_params_message(exported: dict) -> None:
    model, plan = exported["model"], exported["plan"]
    msg = compression_params(model, exported["dir"] / "float.onnx")
    parsed = _pipeline_class()()
    parsed.ParseFromString(msg.SerializeToString())
    layers = parsed.algo[0].quant_params.layer
    assert len(layers) == len(plan.layers)
    modules = dict(model.named_modules())
    for layer, entry in zip(plan.layers, layers):
        assert entry.output[0].name == layer.output_tensor.removesuffix("__matmul_converted")
        assert len(entry.weight[0].scales) == modules[layer.module].weight.shape[0]  # per output channel
        for p in (entry.input[0], entry.output[0], entry.weight[0]):
            assert (p.bits, p.clamp_min, p.clamp_max) == (8, -QMAX, QMAX)


def test_training_moves_the_scales_and_lowers_the_loss() -> None:
    torch.set_num_threads(1)
    teacher = _init(PlainNet(), seed=3)
    student = _init(PlainNet(), seed=3)
    calib = _calib(4, n=2)
    prepare_qat(student, calib, dynamic_axes=AXES)
    params = list(student.parameters())
    scales = [p for n, p in student.named_parameters() if n.endswith("scale")]
    before = [s.detach().clone() for s in scales]
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.cat(calib)
    with torch.no_grad():
        target = teacher(x)
    losses = []
    student.train()
    for _ in range(15):
        loss = F.mse_loss(student(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, scales))  # step sizes learn (LSQ)


def test_strip_restores_the_float_model() -> None:
    model = _init(MobileNet(), seed=5)
    keys = set(model.state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    prepare_qat(model, _calib(6, n=1), keep_float=["head"], dynamic_axes=AXES)
    assert qat_plan(model).kept_float["head"] == "keep_float"
    with torch.no_grad():
        assert not torch.equal(model(x), ref)
    strip_qat(model)
    assert set(model.state_dict()) == keys
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    with pytest.raises(QatError, match="not prepared"):
        qat_plan(model)


def test_bad_arguments_are_one_line_errors() -> None:
    model = _init(PlainNet(), seed=0)
    with pytest.raises(ConfigError, match="keep_float: 'nope.*' matches no Conv2d/Linear"):
        prepare_qat(model, _calib(0, n=1), keep_float=["nope.*"])
    with pytest.raises(QatError, match="calib_batches: empty"):
        prepare_qat(model, [])
    with pytest.raises(ConfigError, match="init='kl'"):
        prepare_qat(model, _calib(0, n=1), init="kl")


def test_qdq_onnx_becomes_float_convs_in_mnn(tmp_path: Path) -> None:
    """Why export_qat_mnn does not write a QDQ ONNX: MNNConvert 3.6.1 folds the weight
    DequantizeLinear back into float weights (no int8 conv, FP32-sized file). If this starts failing,
    MNN has learnt QDQ: worth re-measuring."""
    model = _init(PlainNet(), seed=0)
    x = torch.rand(1, 3, 32, 32)
    export_onnx(model, tmp_path / "fp32.onnx", x, AXES, simplify=False)
    convert_onnx_to_mnn(tmp_path / "fp32.onnx", tmp_path / "fp32.mnn")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            scale = m.weight.detach().abs().flatten(1).amax(1) / QMAX
            m.register_forward_pre_hook(
                lambda _m, a: (torch.fake_quantize_per_tensor_affine(a[0], 0.02, 0, -128, 127),)
            )
            torch.nn.utils.parametrize.register_parametrization(m, "weight", _PerChannelQDQ(scale))
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(tmp_path / "qdq.onnx"),
            input_names=["x"],
            output_names=["y"],
            opset_version=13,
            dynamo=False,
        )
    convert_onnx_to_mnn(tmp_path / "qdq.onnx", tmp_path / "qdq.mnn")
    precision = mnn_precision(tmp_path / "qdq.mnn")
    assert precision["int8_ops"] == precision["int8_weight_only_ops"] == 0
    assert precision["float_ops"]["Convolution"] == 4  # c1, c2, c3 and the Linear as a 1x1 conv
    assert (tmp_path / "qdq.mnn").stat().st_size > 0.9 * (tmp_path / "fp32.mnn").stat().st_size


def _qdq_input(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
    return (torch.fake_quantize_per_tensor_affine(args[0], 0.02, 0, -128, 127),)


class _PerChannelQDQ(nn.Module):
    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros_like(self.scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, self.scale, zero, 0, -128, 127)
