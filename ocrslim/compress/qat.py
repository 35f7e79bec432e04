"""Quantization-aware training for MNN: LSQ fake-quant in torch, INT8 scales handed to MNNConvert.

``prepare_qat`` puts fake-quant on a model's ``Conv2d``/``Linear`` layers exactly where MNN's INT8
convolution will quantize: the layer input (per tensor), the weight (per output channel) and the
layer output (per tensor, after a following BatchNorm, which MNN folds). The step sizes are
learnable (LSQ: straight-through rounding, gradient-scaled step sizes) and start from calibration
batches, so the model can be fine-tuned (KD from the FP32 teacher) and then exported.
``export_qat_mnn`` writes the float ONNX plus an ``MNN.Compression.Pipeline`` protobuf holding every
layer's scales and converts with ``--compressionParamsFile``: MNNConvert then stores int8 weights and
the activation scales from training, nothing recalibrated (its ``FullQuantAndCoding``).
``strip_qat`` turns the model back into a plain float model.

Why this path and not a QDQ ONNX (QuantizeLinear/DequantizeLinear): MNN 3.6.1 converts a QDQ graph
by folding each weight's DequantizeLinear back into a float weight and keeping each activation QDQ
pair as FloatToInt8/Int8ToFloat ops; the file stays FP32-sized and every conv runs in float
(``tests/test_qat.py`` checks both facts).

What MNN does, and what the fake-quant model mirrors (read off MNN's source, checked on MNN 3.6.1 with
the runtime's per-op callback, :func:`mnn_runtime_ops`):

- A conv op is named after its ONNX output tensor (``/backbone/conv1/Conv_output_0``; a ``Linear``'s
  MatMul+Add becomes ``<Add output>__matmul_converted``), a following ReLU/ReLU6 and BatchNorm are
  fused into it, and the params are matched by the op's output tensor. ``prepare_qat`` converts the
  float model once to read that graph and checks every layer-to-op pairing numerically (the module's
  input/output against the MNN FP32 model's tensors).
- Only ``Convolution``/``ConvolutionDepthwise`` with a constant weight get int8 weights and int8
  compute. ``ConvTranspose2d`` (``Deconvolution``), attention MatMuls, LayerNorm, Softmax and the
  elementwise ops compute in float; the weights of the float convs/deconvs/Linears can still be
  stored as int8 (``int8_weights_elsewhere``, MNN's ``--weightQuantBits 8``, modelled by
  :class:`WeightOnlyQuant`). ``Linear`` layers with >= 64Ki weights (the rec head) stay float: the
  converter moves their weights to an external buffer first and then writes garbage int8 codes.
- A tensor has one scale, so layers that read/write the same tensor share one quantizer. At load time
  the runtime copies scales to neighbouring tensors through pooling, ReLU, Interp and data-movement
  ops (``Pipeline.cpp``), then runs an op in int8 when all its inputs and its output have scales
  (``CPUBackend.cpp``, ``_supportQuant``): for such an op a float input gets a rounded copy, and an
  average pool floors its mean. ``prepare_qat`` emulates both on the MNN graph and mirrors the
  roundings that matter at module boundaries: an SE block's pool gets its input rounded with the
  squeeze conv's input scale (which is then calibrated on that larger tensor too, else MNN clips it)
  and floors like MNN (:class:`_AvgPoolInt8`). A layer whose scale would clip a tensor that no module
  boundary exposes is kept float (``QatPlan.kept_float`` says why). The other roundings are copies
  (reshape, permute, nearest resize) of values a layer's own input fake-quant rounds the same way.
- The int8 depthwise kernel adds a truncated integer bias; the fake-quant model does the same
  (:class:`_DepthwiseBiasShift`).

Rounding: symmetric int8 in [-127, 127] (zero point 0) for weights (per output channel) and
activations (per tensor). On tiny models the MNN INT8 output equals the fake-quant output for >= 99%
of the values and is one quantization step off for the rest (``tests/test_qat.py``). Every layer of
the PP-OCRv4 models agrees to within one step given the same input; an un-fine-tuned int8 network
amplifies those steps (one +1 step in the rec's first conv output moves its softmax by up to 1.0),
which QAT is there to make it robust to.

>>> plan = prepare_qat(student, calib_batches, keep_float=["head.*"])  # doctest: +SKIP
>>> ... fine-tune student ...                                          # doctest: +SKIP
>>> report = export_qat_mnn(student, "artifacts/quantize/rec_int8.mnn", torch.rand(1, 3, 48, 320))  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import json
import math
import platform
import re
import tempfile
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from ocrslim.core.errors import ConfigError, OcrslimError
from ocrslim.core.fsutil import atomic_path
from ocrslim.export.mnn import _run_tool, convert_onnx_to_mnn
from ocrslim.export.onnx import export_onnx

__all__ = [
    "QMAX",
    "ActQuant",
    "QatError",
    "QatLayer",
    "QatPlan",
    "WeightOnlyQuant",
    "WeightQuant",
    "calibrate",
    "compression_params",
    "export_qat_mnn",
    "fake_quant",
    "mnn_precision",
    "mnn_runtime_ops",
    "prepare_qat",
    "qat_disabled",
    "qat_plan",
    "strip_qat",
]

QMAX = 127  # symmetric int8, [-127, 127]: the clamp mnncompress writes and MNN's converter applies
QUANT_TYPES = (nn.Conv2d, nn.Linear)  # nn.ConvTranspose2d: MNN 3.6.1 keeps Deconvolution float
MNN_INT8_OPS = ("Convolution", "ConvolutionDepthwise")  # what MNN's FullQuantAndCoding quantizes
_MATMUL_SUFFIX = "__matmul_converted"
_ATTR = "_ocrslim_qat"  # the QatPlan lives on the model under this attribute
_QUANTIZERS = "qat_quantizers"  # the activation quantizers (a submodule: saved, trained)
_CALIB_SAMPLES = 1 << 15  # |x| values kept per quantizer, per batch and in all, for the MSE step-size search
_SAMPLE_SEED = 20241205  # seeds each quantizer's subsampling of |x| (calibration is deterministic)
# ConvertMatMulToConv2D stores MatMul weights of >= 64Ki elements externally (config.hpp externalTreshold);
# FullQuantAndCoding then reads an empty weight and writes garbage int8 data (MNN 3.6.1).
_MNN_EXTERNAL_WEIGHTS = 1 << 16

# MNN runtime ops that pass a tensor's quant scale on to their neighbours (Pipeline.cpp,
# _getQuantPropagateOp). The data-movement ops are converter-level names of what the runtime
# turns into Raster ops.
_PROPAGATE_OPS = {
    "Pooling",
    "Pooling3D",
    "ReLU",
    "ReLU6",
    "Interp",
    "CropAndResize",
    "ROIPooling",
    "Raster",
    "Reshape",
    "Permute",
    "Transpose",
    "Concat",
    "Slice",
    "SliceTf",
    "StridedSlice",
    "Squeeze",
    "Unsqueeze",
    "ExpandDims",
    "ConvertTensor",
    "Flatten",
    "GatherV2",
    "Gather",
    "Pack",
    "Unpack",
    "Identity",
    "Crop",
    "Tile",
    "BroadcastTo",
}
# Going backwards (output scale → input) through these can clip: the input holds values the output
# lacks (averages, negatives, a slice's other elements).
_CLIPPING_BACKWARD = _PROPAGATE_OPS - {
    # pure data movement: every input value reaches the output
    "Raster",
    "Reshape",
    "Permute",
    "Transpose",
    "Concat",
    "Squeeze",
    "Unsqueeze",
    "ExpandDims",
    "ConvertTensor",
    "Flatten",
    "Pack",
    "Identity",
    "Tile",
    "BroadcastTo",
}
_INT_SOURCES = {"Shape", "Rank", "Size"}


class QatError(OcrslimError):
    """The model cannot be prepared or exported for quantization-aware training."""


# --------------------------------------------------------------------------- fake quantization


def fake_quant(x: torch.Tensor, scale: torch.Tensor, grad_scale: float) -> torch.Tensor:
    """LSQ fake quantization: ``round(clamp(x / s, -127, 127)) * s`` with straight-through rounding.

    Args:
        x: tensor to quantize.
        scale: step size ``s``, broadcastable to ``x`` (a scalar, or one value per output channel).
        grad_scale: LSQ's gradient scale for ``s``, ``1 / sqrt(elements per step size * 127)``.

    Returns:
        A tensor like ``x`` holding multiples of ``s``. ``d out / d x`` is 1 inside the clamp range
        and 0 outside; ``d out / d s`` follows LSQ (Esser et al., 2020).

    >>> fake_quant(torch.tensor([0.26, -3.0]), torch.tensor(0.01), 1.0)
    tensor([ 0.2600, -1.2700])
    """
    s = scale.abs().clamp_min(1e-12)
    s = (s - s * grad_scale).detach() + s * grad_scale  # value s, gradient scaled by grad_scale
    q = torch.clamp(x / s, -QMAX, QMAX)
    q = (torch.round(q) - q).detach() + q
    return q * s


class ActQuant(nn.Module):
    """Per-tensor symmetric int8 fake-quant of an activation, with a learnable LSQ step size.

    While ``observing`` it passes ``x`` through and records ``|x|`` samples; ``init_scale`` then sets
    the step size. While ``enabled`` is False it is the identity.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0 / QMAX))
        self.enabled = True
        self.observing = False
        self._samples: list[torch.Tensor] = []
        self._max = 0.0
        # Its own seeded generator: subsampling with the global RNG made two runs of the same calibration give
        # other step sizes (the global RNG's state depends on what ran before in the process).
        self._rng = torch.Generator().manual_seed(_SAMPLE_SEED)

    def forward(self, x: torch.Tensor, observe: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Fake-quantize ``x``; while observing, record ``observe(x)`` (default ``x``) instead."""
        if self.observing:
            self.observe(observe(x) if observe is not None else x)
            return x
        if not self.enabled:
            return x
        return fake_quant(x, self.scale, 1.0 / math.sqrt(x.numel() * QMAX))

    def observe(self, x: torch.Tensor) -> None:
        """Record ``|x|`` (a random subset of large tensors) for :meth:`init_scale`."""
        a = x.detach().abs().flatten().float()
        if a.numel() == 0:
            return
        self._max = max(self._max, float(a.max()))
        if a.numel() > _CALIB_SAMPLES:
            a = a[torch.randint(a.numel(), (_CALIB_SAMPLES,), generator=self._rng).to(a.device)]
        self._samples.append(a.cpu())

    @torch.no_grad()
    def init_scale(self, method: str = "mse") -> None:
        """Set the step size from the recorded values: ``max|x| / 127`` (``"max"``), or the clip
        value in ``[0.05, 1] * max|x|`` that minimises the mean squared quantization error (``"mse"``)."""
        if not self._samples or self._max <= 0.0:
            self.scale.fill_(1.0 / QMAX)  # never saw a non-zero value: any step size is exact
        elif method == "max":
            self.scale.fill_(self._max / QMAX)
        else:
            a = torch.cat(self._samples)
            if a.numel() > _CALIB_SAMPLES:
                a = a[torch.randperm(a.numel(), generator=self._rng)[:_CALIB_SAMPLES]]
            self.scale.fill_(_mse_scale(a, self._max))
        self._samples, self._max = [], 0.0


def _mse_scale(a: torch.Tensor, amax: float) -> float:
    """The step size ``c / 127`` (clip value ``c`` in ``[0.05, 1] * amax``) minimising
    ``mean((fq(a) - a)^2)`` over the sampled magnitudes ``a``: a 24-point grid, then 16 points
    around the best one."""

    def err(frac: float) -> float:
        s = frac * amax / QMAX
        return float(((torch.clamp(torch.round(a / s), max=QMAX) * s - a) ** 2).mean())

    grid = np.linspace(0.05, 1.0, 24)
    best = float(grid[int(np.argmin([err(float(f)) for f in grid]))])
    width = float(grid[1] - grid[0])
    fine = np.clip(np.linspace(best - width, best + width, 16), 0.05, 1.0)
    best = float(fine[int(np.argmin([err(float(f)) for f in fine]))])
    return best * amax / QMAX


class WeightQuant(nn.Module):
    """Per-output-channel symmetric int8 fake-quant of a weight (a ``torch.nn.utils.parametrize``
    parametrization). Axis 0 is the output channel of ``Conv2d`` (O×I×kh×kw) and ``Linear`` (O×I);
    the step sizes start at ``max|w_c| / 127`` and are learnable."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        amax = weight.detach().abs().flatten(1).amax(dim=1)
        self.scale = nn.Parameter(torch.where(amax > 0, amax / QMAX, torch.full_like(amax, 1.0 / QMAX)))
        self.enabled = True
        self._shape = (-1,) + (1,) * (weight.dim() - 1)
        self._grad_scale = 1.0 / math.sqrt(weight[0].numel() * QMAX)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        return fake_quant(w, self.scale.view(self._shape), self._grad_scale)


class WeightOnlyQuant(nn.Module):
    """What ``--weightQuantBits 8`` does to a layer MNN keeps float: asymmetric int8 per chunk of the
    flat weight (one chunk per output channel: rows of a Conv2d/Linear weight; for a ConvTranspose2d
    MNN chunks the in×out×kh×kw buffer as stored), ``scale = (max - min) / 255``. No learnable
    parameters: MNN recomputes min and max from the exported weight. Straight-through gradient."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.enabled = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        flat = w.reshape(self.out_channels, -1)
        lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
        scale = ((hi - lo) / 255).detach()
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.clamp(torch.round((flat - lo.detach()) / safe) - 128, -128, 127)
        deq = torch.where(scale > 0, (q + 128) * safe + lo.detach(), flat)
        return w + (deq.reshape(w.shape) - w).detach()


# --------------------------------------------------------------------------- the plan


@dataclass
class QatLayer:
    """One quantized layer: the torch module, the MNN op it becomes and the tensors it reads/writes."""

    module: str  # torch module path, e.g. "backbone.conv1.conv"
    mnn_op: str  # MNN op name, e.g. "/backbone/conv1/conv/Conv_output_0"
    input_tensor: str  # MNN tensor names; activation quantizers are keyed by them
    output_tensor: str
    output_site: str  # module whose output gets the output fake-quant: the layer, or its BatchNorm
    fused_relu: str = ""  # "relu" / "relu6" if MNN fused one into the op (observed after it)
    mnn_type: str = "Convolution"  # or "ConvolutionDepthwise"


@dataclass
class QatPlan:
    """What :func:`prepare_qat` did: quantized layers, extra fake-quant sites, layers kept float."""

    layers: list[QatLayer] = field(default_factory=list)
    kept_float: dict[str, str] = field(default_factory=dict)  # module -> reason
    # Other places MNN quantizes with a propagated scale: (tensor, scale-owning tensor, "out:<module>"/"in:<module>").
    propagated: list[tuple[str, str, str]] = field(default_factory=list)
    unmodeled: list[str] = field(default_factory=list)  # such places no module boundary exposes (re-rounded only)
    int8_pools: dict[str, str] = field(default_factory=dict)  # avg-pool module -> scale-owning tensor (int8 in MNN)
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    int8_weights_elsewhere: bool = True  # float layers get MNN's weight-only int8 (modelled by WeightOnlyQuant)
    handles: list[Any] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-able: how many layers are int8, which stayed float and why, the extra rounding sites."""
        return {
            "quantized_layers": len(self.layers),
            "kept_float": dict(self.kept_float),
            "extra_sites": len(self.propagated),
            "int8_pools": len(self.int8_pools),
            "unexposed_roundings": len(self.unmodeled),
        }


def qat_plan(model: nn.Module) -> QatPlan:
    """The :class:`QatPlan` of a model prepared by :func:`prepare_qat`.

    Raises:
        QatError: the model was not prepared.
    """
    plan = getattr(model, _ATTR, None)
    if not isinstance(plan, QatPlan):
        raise QatError(
            "model: not prepared for QAT. Call ocrslim.compress.qat.prepare_qat(model, calib_batches) first."
        )
    return plan


def default_dynamic_axes(sample: torch.Tensor, output_rank: int) -> dict[str, dict[int, str]]:
    """Every input axis but the channel one, and every output axis, dynamic (I/O names ``x``/``y``)."""
    return {
        "x": {i: f"x{i}" for i in range(sample.dim()) if i != 1},
        "y": {i: f"y{i}" for i in range(output_rank)},
    }


def prepare_qat(
    model: nn.Module,
    calib_batches: Iterable[torch.Tensor],
    keep_float: Sequence[str] = (),
    *,
    init: str = "mse",
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    int8_weights_elsewhere: bool = True,
) -> QatPlan:
    """Insert LSQ fake-quant into ``model`` (in place) where MNN will run INT8, and calibrate it.

    Exports the float model to ONNX and converts it to MNN FP32 in a temporary folder (which module
    becomes which MNN op, which tensors share a scale, where the runtime propagates scales), puts a
    :class:`WeightQuant` on each quantizable layer's weight and an :class:`ActQuant` per MNN tensor
    scale (forward hooks), then runs ``calib_batches`` in eval mode to set the activation step sizes.

    Args:
        model: a float model whose ``forward`` takes one NCHW tensor and returns one tensor
            (``exportable=True``). A BatchNorm right after a conv is kept (MNN folds it; the
            exported weight scales are folded to match).
        calib_batches: float32 N×C×H×W input batches, preprocessed as for inference. The first
            one's first sample is also the export sample.
        keep_float: ``fnmatch`` globs of ``Conv2d``/``Linear`` module names to keep float
            (``"head.*"``, ``"backbone.conv1.*"``).
        init: activation step-size initialisation: ``"mse"`` (default) or ``"max"`` (``max|x| / 127``).
        dynamic_axes: ``export_onnx`` dynamic axes of input ``x`` and output ``y``; default: all but
            the input's channel axis. :func:`export_qat_mnn` reuses them.
        int8_weights_elsewhere: the export will store the weights of the layers left float as int8
            (MNN's ``--weightQuantBits 8``; they still compute in float): model that rounding
            (:class:`WeightOnlyQuant`). On PP-OCRv4 rec this takes the file from 5.3 to 3.0 MB.

    Returns:
        The :class:`QatPlan` (also kept on the model; :func:`qat_plan`).

    Raises:
        ConfigError: ``init`` is unknown, or a ``keep_float`` glob matches no quantizable layer.
        QatError: the model is already prepared, or ``calib_batches`` is empty.
        ToolError: MNN cannot convert the model.

    >>> plan = prepare_qat(rec_model, [torch.rand(2, 3, 48, 320)] * 8, keep_float=["head.*"])  # doctest: +SKIP
    >>> plan.summary()["quantized_layers"]  # doctest: +SKIP
    46
    """
    if init not in ("mse", "max"):
        raise ConfigError(f"init={init!r}: unknown step-size initialisation. Use 'mse' or 'max'.")
    if isinstance(getattr(model, _ATTR, None), QatPlan):
        raise QatError("model: already prepared for QAT. Call strip_qat(model) first to start over.")
    batches = [b.detach() for b in calib_batches]
    if not batches:
        raise QatError("calib_batches: empty. Pass at least one input batch to calibrate the activation scales.")

    modules = dict(model.named_modules())
    candidates = [n for n, m in modules.items() if n and isinstance(m, QUANT_TYPES)]
    plan = QatPlan(int8_weights_elsewhere=int8_weights_elsewhere)
    for name, m in modules.items():
        if isinstance(m, nn.ConvTranspose2d):
            plan.kept_float[name] = "ConvTranspose2d: MNN 3.6.1 runs Deconvolution in float"
    for pattern in keep_float:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in candidates):
            raise ConfigError(
                f"keep_float: {pattern!r} matches no Conv2d/Linear module. Use module paths such as {candidates[:3]}."
            )
    for n in candidates:
        if any(fnmatch.fnmatchcase(n, p) for p in keep_float):
            plan.kept_float[n] = "keep_float"
        elif isinstance(modules[n], nn.Linear) and modules[n].weight.numel() >= _MNN_EXTERNAL_WEIGHTS:
            plan.kept_float[n] = (
                f"Linear with >= {_MNN_EXTERNAL_WEIGHTS} weights: MNNConvert 3.6.1 moves them to an "
                "external buffer before int8 coding and writes garbage"
            )

    sample = batches[0][:1]
    calls = _module_calls(model, sample)
    out_rank = calls[""].out_rank
    plan.dynamic_axes = {k: dict(v) for k, v in (dynamic_axes or default_dynamic_axes(sample, out_rank)).items()}
    with tempfile.TemporaryDirectory(prefix="ocrslim_qat.") as tmp:
        onnx_path, mnn_path = Path(tmp) / "float.onnx", Path(tmp) / "float.mnn"
        export_onnx(model, onnx_path, sample, plan.dynamic_axes, simplify=False)
        convert_onnx_to_mnn(onnx_path, mnn_path)
        graph = _MnnGraph(_mnn_dump(mnn_path))
        scopes = _OnnxScopes(onnx.load(str(onnx_path), load_external_data=False), set(modules))
        probe = _SiteProbe(model, sample, mnn_path)

        layers: dict[str, QatLayer] = {}
        ops = _conv_ops(graph, scopes)
        for name in candidates:
            if name in plan.kept_float:
                continue
            op = ops.get(name)
            if op is None:
                plan.kept_float[name] = "did not become one MNN Convolution with a constant weight"
                continue
            layers[name] = QatLayer(
                name,
                op["name"],
                op["input"],
                op["output"],
                output_site=calls[name].bn_follower or name,
                fused_relu=op["relu"],
                mnn_type=op["type"],
            )
        probe.fetch(
            [t for x in layers.values() for t in (x.input_tensor, x.output_tensor)],
            [s for x in layers.values() for s in (f"in:{x.module}", f"out:{x.output_site}")],
        )
        for name, layer in list(layers.items()):
            relu = _RELU_VIEW.get(layer.fused_relu)
            if probe.matches(layer.input_tensor, f"in:{name}") and probe.matches(
                layer.output_tensor, f"out:{layer.output_site}", relu
            ):
                continue
            plan.kept_float[name] = "its MNN op's input/output differ from the module's (layer-to-op map failed)"
            del layers[name]
        # Emulate the runtime: scale propagation, then which ops run int8 and where it quantizes a float
        # tensor for them. Layers whose scale would clip a tensor no module boundary exposes stay float.
        while True:
            anchors = {t for layer in layers.values() for t in (layer.input_tensor, layer.output_tensor)}
            spread = _propagate(graph, anchors)
            owner = {t: t for t in anchors} | {t: o for t, (o, _) in spread.items()}
            clips = {t: c for t, (_, c) in spread.items()}
            points = _quant_points(graph, owner, {layer.mnn_op for layer in layers.values()})
            options = [
                (tensor, op, _point_sites(graph, scopes, calls, tensor, op, kind))
                for kind, tensor, op in points
                if kind != "pool"
            ]
            probe.fetch([t for t, _, _ in options], [c for _, _, cs in options for c in cs])
            plan.propagated, plan.unmodeled, blocked = [], [], set()
            for tensor, op, cands in options:
                site = next((c for c in cands if probe.matches(tensor, c)), "")
                if site:
                    plan.propagated.append((tensor, owner[tensor], site))
                elif clips.get(tensor):
                    blocked.add(owner[tensor])
                else:
                    plan.unmodeled.append(f"{tensor} -> {op['type']} {op['name']}")
            if not blocked:
                break
            for name, layer in list(layers.items()):
                if layer.input_tensor in blocked or layer.output_tensor in blocked:
                    plan.kept_float[name] = "its scale would clip a tensor MNN propagates it to (avg-pool/ReLU/slice)"
                    del layers[name]
        pools = [op for kind, _, op in points if kind == "pool"]
        plan.int8_pools = _int8_pools(graph, scopes, probe, calls, modules, owner, pools)
    plan.layers = list(layers.values())
    _install(model, plan, modules)
    setattr(model, _ATTR, plan)
    calibrate(model, batches, init=init)
    return plan


def _install(model: nn.Module, plan: QatPlan, modules: Mapping[str, nn.Module]) -> None:
    """Register the quantizers and the hooks the plan describes."""
    quantizers = nn.ModuleDict()

    def quantizer(tensor: str) -> ActQuant:
        key = _tensor_key(tensor)
        if key not in quantizers:
            quantizers[key] = ActQuant()
        q = quantizers[key]
        assert isinstance(q, ActQuant)
        return q

    for layer in plan.layers:
        mod = modules[layer.module]
        assert isinstance(mod, QUANT_TYPES)
        parametrize.register_parametrization(mod, "weight", WeightQuant(mod.weight))
        plan.handles.append(mod.register_forward_pre_hook(_input_hook(quantizer(layer.input_tensor))))
        # Symmetric fake-quant commutes with a ReLU, so quantizing before MNN's fused ReLU is exact;
        # only the observed range is taken after it.
        out_q = quantizer(layer.output_tensor)
        shift = None
        if layer.mnn_type == "ConvolutionDepthwise":
            bn = modules[layer.output_site] if layer.output_site != layer.module else None
            shift = _DepthwiseBiasShift(mod, bn, quantizer(layer.input_tensor))
        hook = _output_hook(out_q, _RELU_VIEW.get(layer.fused_relu), shift)
        plan.handles.append(modules[layer.output_site].register_forward_hook(hook))
    for _tensor, owner, site in plan.propagated:
        kind, name = site.split(":", 1)
        q = quantizer(owner)
        if kind == "out":
            plan.handles.append(modules[name].register_forward_hook(_output_hook(q, None)))
        else:  # before a layer's own input quantizer: MNN rounds a propagated tensor first, then requantizes
            plan.handles.append(modules[name].register_forward_pre_hook(_input_hook(q), prepend=True))
    for name, owner in plan.int8_pools.items():
        plan.handles.append(modules[name].register_forward_hook(_AvgPoolInt8(quantizer(owner))))
    if plan.int8_weights_elsewhere:
        for name in plan.kept_float:
            mod = modules[name]
            if isinstance(mod, (*QUANT_TYPES, nn.ConvTranspose2d)):
                channels = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
                parametrize.register_parametrization(mod, "weight", WeightOnlyQuant(channels))
    model.add_module(_QUANTIZERS, quantizers)


def _int8_pools(
    graph: _MnnGraph,
    scopes: _OnnxScopes,
    probe: _SiteProbe,
    calls: Mapping[str, _Call],
    modules: Mapping[str, nn.Module],
    owner: Mapping[str, str],
    pools: Sequence[dict[str, Any]],
) -> dict[str, str]:
    """The torch modules of the average pools MNN runs in int8: module → scale-owning tensor."""
    found: dict[str, str] = {}
    for op in pools:
        dst = op["outputs"][0]
        sites = [
            c
            for c in scopes.sites([dst, graph.onnx_name(dst, scopes)], calls)
            if c.startswith("out:") and _pool_kernel(modules[c[4:]], (1, 1, 1, 1)) is not None
        ]
        probe.fetch([dst], sites)
        site = next((c for c in sites if probe.matches(dst, c)), "")
        if site:
            found[site[4:]] = owner[dst]
    return found


def _pool_kernel(module: nn.Module, in_shape: Sequence[int]) -> int | None:
    """Elements an average-pool module averages per output (None: not a plain average pool)."""
    if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
        return int(in_shape[-2]) * int(in_shape[-1])
    if isinstance(module, nn.AvgPool2d) and not module.ceil_mode and module.padding in (0, (0, 0)):
        k = module.kernel_size
        return int(k[0] * k[1]) if isinstance(k, tuple) else int(k) * int(k)
    return None


_X86 = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}


class _AvgPoolInt8:
    """Forward hook: an average pool's output as MNN's int8 pool computes it.

    ``CPUPoolInt8`` sums the int8 inputs and multiplies by ``f = floor(2^24 / K)``, then shifts right
    by 24: a floor, not a rounding (x86 kernels work on ``value + 128`` bytes, ARM on signed ones).
    The value follows MNN, the gradient is LSQ's (of a rounding fake-quant).
    """

    def __init__(self, q: ActQuant) -> None:
        self.q = q

    def __call__(self, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        q = self.q
        if q.observing or not q.enabled:
            return None
        k = _pool_kernel(module, args[0].shape)
        if k is None:
            return None
        s = q.scale.detach().abs().clamp_min(1e-12).double()
        total = torch.round(out.detach().double() / s * k)  # the int8 inputs' sum
        f = float((1 << 24) // k)
        if _X86:
            ints = torch.floor((total + 128 * k) * f / (1 << 24)) - 128
        else:
            ints = torch.floor(total * f / (1 << 24))
        exact = (ints.clamp(-QMAX, QMAX) * s).to(out.dtype)
        fq = fake_quant(out, q.scale, 1.0 / math.sqrt(out.numel() * QMAX))
        return fq + (exact - fq).detach()


def _tensor_key(name: str) -> str:
    """MNN tensor name → a ModuleDict key: readable, no dots, stable across runs, collision-free."""
    return "t_" + re.sub(r"[^0-9A-Za-z]", "_", name) + f"_{zlib.crc32(name.encode()):08x}"


def _input_hook(q: ActQuant) -> Any:
    def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (q(args[0]), *args[1:])

    return hook


def _output_hook(
    q: ActQuant,
    observe: Callable[[torch.Tensor], torch.Tensor] | None,
    shift: Callable[[], torch.Tensor] | None = None,
) -> Any:
    def hook(_module: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        if shift is not None and q.enabled and not q.observing:
            out = out + shift().view(1, -1, *([1] * (out.dim() - 2)))
        return q(out, observe)

    return hook


class _DepthwiseBiasShift:
    """MNN's int8 depthwise kernel adds the bias as ``trunc(b / (s_in * s_w))`` integer steps (C++
    ``static_cast<int32_t>``; dense convs keep it in float): the per-channel correction
    ``trunc(b / u) * u - b`` with ``u = s_in * s_w`` on the BatchNorm-folded bias ``b`` and weight
    step ``s_w``. Without it ~1% of a depthwise layer's outputs land one step off MNN's."""

    def __init__(self, conv: nn.Module, bn: nn.Module | None, in_q: ActQuant) -> None:
        weight_quant = conv.parametrizations.weight[0]  # type: ignore[index,union-attr]
        assert isinstance(weight_quant, WeightQuant) and isinstance(conv, nn.Conv2d)
        self.conv, self.weight_quant, self.bn, self.in_q = conv, weight_quant, bn, in_q

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        bn = self.bn
        w_scale = self.weight_quant.scale.abs()
        b = self.conv.bias if self.conv.bias is not None else torch.zeros_like(w_scale)
        if isinstance(bn, nn.BatchNorm2d) and bn.running_var is not None and bn.running_mean is not None:
            k = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                k = k * bn.weight
            b = (b - bn.running_mean) * k + (bn.bias if bn.bias is not None else 0.0)
            w_scale = w_scale * k.abs()
        unit = (self.in_q.scale.abs() * w_scale).clamp_min(1e-30)
        return torch.trunc(b / unit) * unit - b


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], init: str = "mse") -> None:
    """(Re)initialise every activation step size of a prepared model from ``batches``.

    Runs in eval mode with the weights fake-quantized and the activations observed in float (no
    activation fake-quant while observing), then sets each step size (``init``: "mse" or "max").

    Raises:
        QatError: the model is not prepared, or ``batches`` is empty.
    """
    quantizers = _act_quantizers(model)
    was_training = model.training
    model.eval()
    n = 0
    try:
        for q in quantizers:
            q.observing = True
        for x in batches:
            model(x)
            n += 1
    finally:
        for q in quantizers:
            q.observing = False
        model.train(was_training)
    if n == 0:
        raise QatError("calib_batches: empty. Pass at least one input batch to calibrate the activation scales.")
    for q in quantizers:
        q.init_scale(init)


def _act_quantizers(model: nn.Module) -> list[ActQuant]:
    qat_plan(model)
    return [q for q in getattr(model, _QUANTIZERS).values() if isinstance(q, ActQuant)]


@contextmanager
def qat_disabled(model: nn.Module) -> Iterator[None]:
    """Run a prepared model in float (every fake-quant off) inside the block.

    >>> with qat_disabled(model):  # doctest: +SKIP
    ...     y_float = model(x)
    """
    qs: list[Any] = [
        *_act_quantizers(model),
        *(m for m in model.modules() if isinstance(m, WeightQuant | WeightOnlyQuant)),
    ]
    states = [q.enabled for q in qs]
    for q in qs:
        q.enabled = False
    try:
        yield
    finally:
        for q, s in zip(qs, states):
            q.enabled = s


def strip_qat(model: nn.Module, bake_weights: bool = False) -> nn.Module:
    """Remove the fake-quant from a prepared model (in place): a plain float model again.

    Args:
        model: a model prepared by :func:`prepare_qat`.
        bake_weights: keep the fake-quantized weights (multiples of their step sizes) instead of the
            latent float ones. Activations are float either way.

    Returns:
        ``model``, with its original parameter names and no extra submodules or hooks.
    """
    plan = qat_plan(model)
    for h in plan.handles:
        h.remove()
    modules = dict(model.named_modules())
    for name in [layer.module for layer in plan.layers] + list(plan.kept_float):
        if parametrize.is_parametrized(modules[name], "weight"):
            parametrize.remove_parametrizations(modules[name], "weight", leave_parametrized=bake_weights)
    delattr(model, _QUANTIZERS)
    delattr(model, _ATTR)
    return model


# --------------------------------------------------------------------------- graphs


@dataclass
class _Call:
    """What one forward call of a module looked like (from a hooked forward pass)."""

    count: int = 0
    tensor_args: int = 0
    returns_tensor: bool = False
    out_rank: int = 0
    bn_follower: str = ""  # Conv2d only: the BatchNorm2d that reads its output directly


def _module_calls(model: nn.Module, sample: torch.Tensor) -> dict[str, _Call]:
    """Run ``model(sample)`` once in eval mode and record each module's calls, tensor arguments,
    whether it returns one tensor, and which BatchNorm2d reads each Conv2d's output directly."""
    calls: dict[str, _Call] = defaultdict(_Call)
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id(conv output) -> (conv, tensor kept alive)
    handles = []

    def pre(name: str, module: nn.Module) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            c = calls[name]
            c.count += 1
            c.tensor_args = sum(isinstance(a, torch.Tensor) for a in args)
            if isinstance(module, nn.BatchNorm2d) and args:
                hit = produced.get(id(args[0]))
                if hit is not None and hit[1] is args[0]:
                    calls[hit[0]].bn_follower = name

        return hook

    def post(name: str, module: nn.Module) -> Any:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            c = calls[name]
            c.returns_tensor = isinstance(out, torch.Tensor)
            c.out_rank = out.dim() if isinstance(out, torch.Tensor) else 0
            if isinstance(module, nn.Conv2d) and isinstance(out, torch.Tensor):
                produced[id(out)] = (name, out)

        return hook

    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(pre(name, m)))
        handles.append(m.register_forward_hook(post(name, m)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not calls[""].returns_tensor:
        raise QatError("model: forward must return one tensor for QAT export. Build it with exportable=True.")
    return dict(calls)


def _mnn_dump(mnn_path: str | Path) -> dict[str, Any]:
    """An MNN model's graph as JSON: ops with their parameters, tensor names, tensor quant info; the
    weights left out (re-saved with ``--saveExternalData`` first, which keeps the graph as it is: a
    full dump of the rec model is ~100 MB of JSON). Both steps run the converter in a child process."""
    src = Path(mnn_path)
    fix = "Re-convert the model with this MNN version"
    with tempfile.TemporaryDirectory(prefix="ocrslim_qat.") as tmp:
        slim, dump = Path(tmp) / "graph.mnn", Path(tmp) / "graph.json"
        args = ["-f", "MNN", "--modelFile", str(src), "--MNNModel", str(slim), "--saveExternalData"]
        _run_tool("mnnconvert", [*args, "--bizCode", "ocrslim"], output=slim, subject=src, fix=fix)
        args = ["-f", "MNN", "--modelFile", str(slim), "--JsonFile", str(dump), "--bizCode", "ocrslim"]
        _run_tool("mnnconvert", args, output=dump, subject=src, fix=fix)
        text = dump.read_text(encoding="utf-8")
    try:
        return dict(json.loads(text))
    except json.JSONDecodeError:  # NaN scales are dumped as bare nan/inf
        return dict(json.loads(re.sub(r"(?<=[\s,\[:])-?(?:nan|inf)\b", "0", text)))


class _MnnGraph:
    """An MNN model's ops with tensor names, producers, consumers and float/int tensor types."""

    def __init__(self, dump: Mapping[str, Any]) -> None:
        names = dump.get("tensorName", [])
        self.ops: list[dict[str, Any]] = []
        for op in dump.get("oplists", []):
            self.ops.append(
                {
                    "type": op.get("type", ""),
                    "name": op.get("name", ""),
                    "inputs": [names[i] for i in op.get("inputIndexes") or [] if 0 <= i < len(names)],
                    "outputs": [names[i] for i in op.get("outputIndexes") or [] if 0 <= i < len(names)],
                    "main": op.get("main") if isinstance(op.get("main"), dict) else {},
                }
            )
        self.quant = {
            names[d["index"]]: d["quantInfo"]
            for d in dump.get("extraTensorDescribe") or []
            if d.get("quantInfo") and 0 <= d.get("index", -1) < len(names)
        }
        self.producer = {t: op for op in self.ops for t in op["outputs"]}
        self.is_float: dict[str, bool] = {}
        for op in self.ops:  # execution order: inputs are typed before outputs
            if op["type"] in _INT_SOURCES:
                flt = False
            elif op["type"] == "Const":
                flt = op["main"].get("dataType", "DT_FLOAT") == "DT_FLOAT"
            elif op["type"] == "Cast":
                flt = op["main"].get("dstT", "DT_FLOAT") == "DT_FLOAT"
            elif op["inputs"]:
                flt = self.is_float.get(op["inputs"][0], True)
            else:
                flt = True
            for t in op["outputs"]:
                self.is_float[t] = flt

    def onnx_name(self, tensor: str, scopes: _OnnxScopes) -> str:
        """The ONNX tensor that MNN tensor ``tensor`` holds the value of, or ``""`` if unknown.

        MNN names an op after the ONNX output it computes but may reorder and rename tensors around
        fused ops (``fc1 → SiLU`` becomes a conv, a SILU op named ``/mlp/act/Mul_output_0`` writing
        ``ConvertTensor630``, then a layout op writing ``/mlp/fc1/Add_output_0``): the producing op's
        name, not the tensor's, says which value it is.
        """
        op = self.producer.get(tensor)
        if op is None:
            return ""
        name = str(op["name"])
        return name if name in scopes.producer or name in scopes.graph_inputs else ""


class _OnnxScopes:
    """Maps ONNX tensors to torch modules through the TorchScript exporter's node names
    (``/backbone/blocks6/blocks6.0/se/pool/GlobalAveragePool`` → ``backbone.blocks6.0.se.pool``)."""

    def __init__(self, proto: onnx.ModelProto, module_names: set[str]) -> None:
        self.modules = module_names
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in proto.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in proto.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.graph_outputs = {o.name for o in proto.graph.output}
        self.graph_inputs = {i.name for i in proto.graph.input}

    def module_of(self, node: onnx.NodeProto) -> str | None:
        """The module whose forward ran ``node``; ``""`` for the root, None if unresolvable."""
        path = ""
        for part in node.name.strip("/").split("/")[:-1]:
            chain = path.split(".") if path else []
            for depth in range(len(chain), -1, -1):  # a Sequential child is scoped "blocks6/blocks6.0"
                cand = ".".join([*chain[:depth], part])
                if cand in self.modules:
                    path = cand
                    break
            else:
                return None
        return path

    def sites(self, tensors: Sequence[str], calls: Mapping[str, _Call]) -> list[str]:
        """Hook points that may see one of the ONNX ``tensors``, best first: ``"out:<module>"`` where it
        leaves the module that computed it, ``"in:<module>"`` where it enters a module with one tensor
        argument (outermost first). Modules called more than once are skipped. Candidates only: the
        names MNN gives tensors around fused ops can mislead (see :meth:`_MnnGraph.onnx_name`)."""

        def inside(m: str | None, parent: str) -> bool:
            return m is not None and (parent == "" or m == parent or m.startswith(parent + "."))

        def once(m: str) -> _Call | None:
            c = calls.get(m)
            return c if c is not None and c.count == 1 else None

        found: list[str] = []
        for tensor in dict.fromkeys(t for t in tensors if t):
            node = self.producer.get(tensor)
            src = self.module_of(node) if node is not None else None
            if src and (c := once(src)) and c.returns_tensor:
                users = [self.module_of(n) for n in self.consumers.get(tensor, [])]
                if tensor in self.graph_outputs or any(not inside(u, src) for u in users):
                    found.append(f"out:{src}")
            for consumer in self.consumers.get(tensor, []):
                chain: list[str] = []
                user = self.module_of(consumer)
                while user and not inside(src, user):  # every module the tensor enters on its way in
                    c = once(user)
                    if c and c.tensor_args == 1:
                        chain.append(user)
                    user = user.rsplit(".", 1)[0] if "." in user else ""
                found += [f"in:{u}" for u in reversed(chain)]
        return list(dict.fromkeys(found))


_RELU_VIEW: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": lambda x: x.clamp_min(0),
    "relu6": lambda x: x.clamp(0, 6),
}


class _SiteProbe:
    """Checks that a torch hook point sees the same values as a tensor of the MNN FP32 model, on the
    export sample (same element count and order, max error ≤ 1e-3 of the tensor's range).

    :meth:`fetch` runs the MNN model and the float torch model once for a batch of questions.
    """

    def __init__(self, model: nn.Module, sample: torch.Tensor, mnn_path: Path) -> None:
        self.model, self.sample, self.mnn_path = model, sample, mnn_path
        self._mnn: dict[str, np.ndarray | None] = {}
        self._torch: dict[str, np.ndarray | None] = {}

    def fetch(self, tensors: Iterable[str], sites: Iterable[str]) -> None:
        """Read the MNN ``tensors`` and the torch ``sites`` not read yet, in one run of each model."""
        from ocrslim.infer.runners import MnnRunner

        todo = [t for t in dict.fromkeys(tensors) if t not in self._mnn]
        if todo:
            try:
                got = MnnRunner(self.mnn_path, threads=1, outputs=todo).tensors(self.sample.detach().cpu().numpy())
            except OcrslimError:
                got = {}
            self._mnn.update({t: got.get(t) for t in todo})
        todo = [s for s in dict.fromkeys(sites) if s not in self._torch]
        if not todo:
            return
        modules = dict(self.model.named_modules())
        seen: dict[str, list[Any]] = defaultdict(list)
        handles = []
        for site in todo:
            kind, name = site.split(":", 1)
            module = modules.get(name)
            if module is None:
                continue
            if kind == "out":
                handles.append(module.register_forward_hook(lambda _m, _a, out, k=site: seen[k].append(out)))
            else:
                handles.append(module.register_forward_pre_hook(lambda _m, args, k=site: seen[k].append(args[0])))
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(self.sample)
        finally:
            self.model.train(was)
            for h in handles:
                h.remove()
        for site in todo:
            v = seen.get(site, [])
            self._torch[site] = v[0].detach().cpu().numpy() if len(v) == 1 and isinstance(v[0], torch.Tensor) else None

    def matches(self, tensor: str, site: str, view: Callable[[torch.Tensor], torch.Tensor] | None = None) -> bool:
        self.fetch([tensor], [site])
        a, b = self._mnn.get(tensor), self._torch.get(site)
        if a is None or b is None or a.size != b.size:
            return False
        if view is not None:
            b = view(torch.from_numpy(b)).numpy()
        a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
        return bool(np.abs(a - b).max(initial=0.0) <= 1e-3 * max(1.0, float(np.abs(b).max(initial=0.0))))


def _conv_ops(graph: _MnnGraph, scopes: _OnnxScopes) -> dict[str, dict[str, str]]:
    """For each torch module that became exactly one MNN Convolution/ConvolutionDepthwise op with one
    input and a constant weight: the op's name, input and output tensors, fused ReLU."""
    found: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    for op in graph.ops:
        has_weight = op["main"].get("weight") or op["main"].get("external")
        if op["type"] not in MNN_INT8_OPS or len(op["inputs"]) != 1 or not has_weight:
            continue
        node = scopes.producer.get(op["name"].removesuffix(_MATMUL_SUFFIX))
        module = scopes.module_of(node) if node is not None else None
        if not module:
            continue
        if module in seen:  # one module, several ops (called twice): quantize none of them
            found.pop(module, None)
            continue
        seen.add(module)
        common = op["main"].get("common") or {}
        relu = "relu6" if common.get("relu6") else "relu" if common.get("relu") else ""
        found[module] = {
            "name": op["name"],
            "input": op["inputs"][0],
            "output": op["outputs"][0],
            "relu": relu,
            "type": op["type"],
        }
    return found


def _propagate(graph: _MnnGraph, anchors: set[str]) -> dict[str, tuple[str, bool]]:
    """Emulate the MNN runtime's quant-scale propagation (``Pipeline.cpp``, MNN 3.6.1).

    Args:
        graph: the float model's MNN graph.
        anchors: tensors that will carry a scale of their own (quantized layers' inputs/outputs).

    Returns:
        ``{tensor: (anchor whose scale it takes, clips)}`` for every tensor that gets a scale by
        propagation; ``clips`` is True if a backward step could clip its values.
    """
    owner: dict[str, str] = {a: a for a in anchors}
    clips: dict[str, bool] = {}
    fwd: dict[str, list[tuple[str, str]]] = defaultdict(list)
    bwd: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for op in graph.ops:
        if op["type"] not in _PROPAGATE_OPS:
            continue
        ins = [t for t in op["inputs"] if graph.is_float.get(t, True)]
        outs = [t for t in op["outputs"] if graph.is_float.get(t, True)]
        # Nearest-neighbour resize copies values, so going backwards through it cannot clip.
        kind = "Raster" if op["type"] == "Interp" and op["main"].get("resizeType") == 1 else op["type"]
        if len(ins) == 1:
            fwd[ins[0]] += [(t, kind) for t in outs if t not in anchors]
        if len(outs) == 1:
            bwd[outs[0]] += [(t, kind) for t in ins if t not in anchors]

    def starts(prop: dict[str, list[tuple[str, str]]], anti: dict[str, list[tuple[str, str]]]) -> list[str]:
        for targets in anti.values():  # a tensor fed by an N-to-1 op takes no scale from it
            if len(targets) > 1:
                for t, _ in targets:
                    prop.pop(t, None)
        leaves = {t for targets in prop.values() for t, _ in targets}
        return [t for t in prop if t not in leaves]

    def spread(prop: dict[str, list[tuple[str, str]]], roots: list[str], backward: bool) -> bool:
        changed = False
        stack = list(roots)
        visiting: set[str] = set()
        while stack:
            t = stack.pop()
            if t not in owner or t in visiting:
                continue
            visiting.add(t)
            for x, op_type in prop.get(t, []):
                risk = clips.get(t, False) or (backward and op_type in _CLIPPING_BACKWARD)
                if owner.get(x) != owner[t]:
                    owner[x], clips[x] = owner[t], risk
                    changed = True
                stack.append(x)
        return changed

    fstart, bstart = starts(fwd, bwd), starts(bwd, fwd)
    for _ in range(3):
        if not (spread(fwd, fstart, False) or spread(bwd, bstart, True)):
            break
    return {t: (o, clips.get(t, False)) for t, o in owner.items() if t not in anchors}


_RASTER_OPS = _PROPAGATE_OPS - {"Pooling", "Pooling3D", "ReLU", "ReLU6", "Interp", "CropAndResize", "ROIPooling"}
# Ops the CPU backend runs in int8 when every input and the output carry a scale (CPUBackend.cpp
# _supportQuant; the wheel is built with MNN_SUPPORT_QUANT_EXTEND). Convolutions are the layers.
_INT8_ANY = {"Softmax", "LayerNorm", "BinaryOp", "Interp", "Scale", "PReLU"}


def _runs_int8(graph: _MnnGraph, op: Mapping[str, Any], owner: Mapping[str, str], layer_ops: set[str]) -> bool:
    """Whether the MNN CPU runtime executes ``op`` in int8, given each tensor's scale owner and the
    names of the convolutions that get int8 weights."""
    outs = [t for t in op["outputs"] if graph.is_float.get(t, True)]
    ins = [t for t in op["inputs"] if graph.is_float.get(t, True)]
    if len(outs) != 1 or outs[0] not in owner or any(t not in owner for t in ins):
        return False
    kind, out = op["type"], owner[outs[0]]
    if kind in MNN_INT8_OPS:
        return op["name"] in layer_ops
    if kind in _RASTER_OPS or kind in ("Pooling", "Pooling3D", "ReLU"):
        return all(owner[t] == out for t in ins)
    return kind in _INT8_ANY


def _quant_points(
    graph: _MnnGraph, owner: Mapping[str, str], layer_ops: set[str]
) -> list[tuple[str, str, dict[str, Any]]]:
    """Where the MNN runtime rounds a tensor with a scale it got by propagation, besides the layers.

    Returns ``(kind, tensor, op)`` triples: ``"cast"`` - a float-computed ``tensor`` is quantized for the
    int8 ``op`` that reads it (only that op sees the rounded copy); ``"output"`` - an int8 ``op``
    (BinaryOp, LayerNorm, ...) writes ``tensor`` requantized; ``"pool"`` - an int8 average pool.
    """
    int8 = {id(op): _runs_int8(graph, op, owner, layer_ops) for op in graph.ops}
    points: list[tuple[str, str, dict[str, Any]]] = []
    for op in graph.ops:
        if not int8[id(op)] or op["type"] in MNN_INT8_OPS:
            continue
        for t in op["inputs"]:
            producer = graph.producer.get(t)
            if graph.is_float.get(t, True) and producer is not None and not int8[id(producer)]:
                if producer["type"] != "Const":
                    points.append(("cast", t, op))
        out = op["outputs"][0]
        if op["type"] in ("Pooling", "Pooling3D"):
            if op["main"].get("type") == "AVEPOOL":
                points.append(("pool", out, op))
        elif op["type"] in _INT8_ANY and not (op["type"] == "Interp" and op["main"].get("resizeType") == 1):
            points.append(("output", out, op))
    return points


def _point_sites(
    graph: _MnnGraph,
    scopes: _OnnxScopes,
    calls: Mapping[str, _Call],
    tensor: str,
    op: Mapping[str, Any],
    kind: str,
) -> list[str]:
    """Candidate hook points for a quantization point: for a cast, the modules the tensor enters on
    its way to ``op`` only (innermost first: outer ones may feed the tensor to float ops too); for an
    output, where the tensor leaves the module that computed it."""
    names = [tensor, graph.onnx_name(tensor, scopes)]
    if kind == "output":
        return [c for c in scopes.sites(names, calls) if c.startswith("out:")]
    node = scopes.producer.get(str(op["name"]))
    if node is None:
        return []
    inner = scopes.module_of(node)
    found = []
    for c in scopes.sites(names, calls):
        mod = c[3:]
        if c.startswith("in:") and inner is not None and (inner == mod or inner.startswith(mod + ".")):
            found.append(c)
    return found[::-1]


# --------------------------------------------------------------------------- export


@lru_cache(maxsize=1)
def _pipeline_class() -> Any:
    """``MNN.Compression.Pipeline``: the subset of MNN's ``MNN_compression.proto`` (proto2) that QAT
    writes, with MNN's field numbers and defaults, built from a descriptor at run time (no protoc)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(
        name="ocrslim_mnn_compression.proto", package="MNN.Compression", syntax="proto2"
    )

    def add(
        msg: Any,
        name: str,
        number: int,
        ftype: int,
        label: int = F.LABEL_OPTIONAL,
        type_name: str | None = None,
        default: str | None = None,
    ) -> None:
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = ".MNN.Compression." + type_name
        if default is not None:
            f.default_value = default

    def enum(msg: Any, name: str, values: Sequence[str]) -> None:
        e = msg.enum_type.add(name=name)
        for i, v in enumerate(values):
            e.value.add(name=v, number=i)

    qp = fd.message_type.add(name="QuantizeParams")
    enum(qp, "RoundMode", ["ROUND_TOWARDS_ZERO", "ROUND_AWAY_FROM_ZERO", "ROUND_HALF_TO_EVEN"])
    add(qp, "round_mode", 1, F.TYPE_ENUM, type_name="QuantizeParams.RoundMode", default="ROUND_AWAY_FROM_ZERO")
    add(qp, "layer", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED, "LayerQuantizeParams")
    lq = fd.message_type.add(name="LayerQuantizeParams")
    act = lq.nested_type.add(name="ActivationParams")
    add(act, "name", 1, F.TYPE_STRING, F.LABEL_REQUIRED)
    add(act, "bits", 2, F.TYPE_INT32, default="8")
    add(act, "scales", 3, F.TYPE_FLOAT, F.LABEL_REPEATED)
    add(act, "zero_point", 4, F.TYPE_INT32, default="0")
    add(act, "clamp_min", 5, F.TYPE_INT32, default="-128")
    add(act, "clamp_max", 6, F.TYPE_INT32, default="127")
    wt = lq.nested_type.add(name="WeightParams")
    add(wt, "name", 1, F.TYPE_STRING, F.LABEL_REQUIRED)
    add(wt, "bits", 2, F.TYPE_INT32, default="8")
    add(wt, "scales", 3, F.TYPE_FLOAT, F.LABEL_REPEATED)
    add(wt, "clamp_min", 4, F.TYPE_INT32, default="-128")
    add(wt, "clamp_max", 5, F.TYPE_INT32, default="127")
    enum(lq, "QuantMethod", ["QAT", "OverflowAware", "WinogradAware"])
    add(lq, "input", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, "LayerQuantizeParams.ActivationParams")
    add(lq, "weight", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, "LayerQuantizeParams.WeightParams")
    add(lq, "output", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, "LayerQuantizeParams.ActivationParams")
    add(lq, "method", 4, F.TYPE_ENUM, type_name="LayerQuantizeParams.QuantMethod", default="QAT")
    algo = fd.message_type.add(name="CompressionAlgo")
    enum(algo, "CompressionType", ["QUANTIZE", "PRUNE"])
    add(algo, "type", 1, F.TYPE_ENUM, type_name="CompressionAlgo.CompressionType", default="QUANTIZE")
    add(algo, "quant_params", 2, F.TYPE_MESSAGE, type_name="QuantizeParams")
    pipe = fd.message_type.add(name="Pipeline")
    add(pipe, "version", 1, F.TYPE_STRING, F.LABEL_REQUIRED, default="0.0.0")
    add(pipe, "algo", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, "CompressionAlgo")
    add(pipe, "mnn_uuid", 3, F.TYPE_STRING)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("MNN.Compression.Pipeline"))


def _fold_factors(torch_weight: np.ndarray, onnx_weight: np.ndarray, module: str) -> np.ndarray:
    """Per-output-channel ``k`` with ``onnx_weight[c] == k[c] * torch_weight[c]``: the folded
    BatchNorm's ``gamma / sqrt(var + eps)`` (1 without one). Checks the match, so a wrong
    layer-to-op map fails loudly instead of writing wrong scales."""
    t = torch_weight.reshape(torch_weight.shape[0], -1).astype(np.float64)
    o = onnx_weight.reshape(onnx_weight.shape[0], -1).astype(np.float64) if onnx_weight.ndim else onnx_weight
    if t.shape != o.shape:
        raise QatError(
            f"{module}: its ONNX weight has shape {onnx_weight.shape}, the module's {torch_weight.shape}. "
            "Keep the layer float (keep_float) and report this."
        )
    tt = (t * t).sum(1)
    k = np.where(tt > 0, (t * o).sum(1) / np.where(tt > 0, tt, 1.0), 1.0)
    resid = float(np.abs(o - k[:, None] * t).max()) if t.size else 0.0
    if resid > 1e-4 * max(1.0, float(np.abs(o).max())):
        raise QatError(
            f"{module}: its ONNX weight is not a per-channel multiple of the module's (max error {resid:.2g}): "
            "something besides a BatchNorm was folded into it. Keep the layer float (keep_float)."
        )
    return k


def compression_params(model: nn.Module, onnx_path: str | Path) -> Any:
    """The ``MNN.Compression.Pipeline`` message for a prepared model and its float ONNX export.

    Each quantized layer gets its input and output activation step sizes (bits 8, zero point 0, clamp
    [-127, 127]) and its per-output-channel weight step sizes, multiplied by the BatchNorm factors the
    export folded into the weight. ``output[0].name`` is the MNN output tensor of the layer's op, the
    key MNNConvert matches on (ops named ``<x>__matmul_converted`` match ``<x>``).

    Raises:
        QatError: the model is not prepared, or a layer's ONNX weight does not match the module's.
    """
    plan = qat_plan(model)
    proto = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    consts = {n.output[0]: n for n in proto.graph.node if n.op_type == "Constant"}
    modules = dict(model.named_modules())
    scopes = _OnnxScopes(proto, set(modules))
    quantizers = getattr(model, _QUANTIZERS)
    msg = _pipeline_class()()
    msg.version = "0.0.0"
    msg.mnn_uuid = str(uuid.uuid4())
    algo = msg.algo.add()
    algo.type = 0  # QUANTIZE
    for layer in plan.layers:
        mod = modules[layer.module]
        node = scopes.producer.get(layer.mnn_op.removesuffix(_MATMUL_SUFFIX))
        if node is not None and node.op_type == "Add":  # Linear: MatMul + bias Add, weight on the MatMul
            node = next(
                (
                    scopes.producer[i]
                    for i in node.input
                    if i in scopes.producer and scopes.producer[i].op_type == "MatMul"
                ),
                node,
            )
        if node is None or node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2:
            raise QatError(
                f"{layer.module}: no Conv/MatMul node writes {layer.mnn_op!r} in {onnx_path}. "
                "Export with export_qat_mnn, the same way prepare_qat did."
            )
        w_onnx = _constant(node.input[1], inits, consts, layer.module)
        if node.op_type == "MatMul" or (node.op_type == "Gemm" and not _attr(node, "transB")):
            w_onnx = w_onnx.T  # (in, out) → (out, in)
        w_torch = mod.parametrizations.weight.original.detach().cpu().numpy()
        k = _fold_factors(w_torch, w_onnx, layer.module)
        scale = mod.parametrizations.weight[0].scale.detach().abs().cpu().numpy().astype(np.float64)
        w_scales = scale * np.abs(k)
        w_scales = np.where(w_scales > 0, w_scales, 1.0 / QMAX)

        entry = algo.quant_params.layer.add()
        for kind, tensor in (("input", layer.input_tensor), ("output", layer.output_tensor)):
            p = getattr(entry, kind).add()
            p.name = tensor.removesuffix(_MATMUL_SUFFIX) if kind == "output" else tensor
            p.bits, p.zero_point, p.clamp_min, p.clamp_max = 8, 0, -QMAX, QMAX
            p.scales.append(float(quantizers[_tensor_key(tensor)].scale.detach().abs().clamp_min(1e-12)))
        wp = entry.weight.add()
        wp.name, wp.bits, wp.clamp_min, wp.clamp_max = node.input[1], 8, -QMAX, QMAX
        wp.scales.extend(float(s) for s in w_scales)
    return msg


def _attr(node: onnx.NodeProto, name: str) -> Any:
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _constant(
    name: str, inits: Mapping[str, np.ndarray], consts: Mapping[str, onnx.NodeProto], module: str
) -> np.ndarray:
    if name in inits:
        return inits[name]
    if name in consts:
        return numpy_helper.to_array(consts[name].attribute[0].t)
    raise QatError(f"{module}: its ONNX weight {name!r} is not a constant. Keep the layer float (keep_float).")


def export_qat_mnn(
    model: nn.Module,
    mnn_path: str | Path,
    sample: torch.Tensor,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    onnx_path: str | Path | None = None,
    params_path: str | Path | None = None,
    int8_weights_elsewhere: bool | None = None,
) -> dict[str, Any]:
    """Export a prepared model to an INT8 MNN file whose scales are the model's fake-quant scales.

    Writes the float ONNX (fake-quant off; ``simplify=False`` keeps the module-path node names the
    plan refers to), the compression-params protobuf, and converts with ``--compressionParamsFile``.
    The model stays prepared (it can train on and be exported again).

    Args:
        model: a model prepared by :func:`prepare_qat` (and possibly fine-tuned).
        mnn_path: destination ``.mnn``, written atomically.
        sample: example input, e.g. ``torch.rand(1, 3, 48, 320)``.
        dynamic_axes: default: the ones :func:`prepare_qat` used.
        onnx_path, params_path: where to keep the float ONNX and the protobuf (temporary if None).
        int8_weights_elsewhere: store the weights of the layers left float (``plan.kept_float``: the
            rec head's big Linear, ConvTranspose2d) as int8 too (``--weightQuantBits 8``); default: as
            given to :func:`prepare_qat`, which models it.

    Returns:
        :meth:`QatPlan.summary` plus :func:`mnn_precision` of the written file and ``mnn_bytes``.

    Raises:
        QatError: the model is not prepared, a layer's weight does not match its ONNX weight, or MNN
            did not quantize every planned layer.
        ToolError: the converter failed.
    """
    plan = qat_plan(model)
    axes = {k: dict(v) for k, v in (dynamic_axes or plan.dynamic_axes).items()}
    with tempfile.TemporaryDirectory(prefix="ocrslim_qat.") as tmp:
        onnx_file = Path(onnx_path) if onnx_path else Path(tmp) / "float.onnx"
        params_file = Path(params_path) if params_path else Path(tmp) / "compress.pb"
        with qat_disabled(model):
            export_onnx(model, onnx_file, sample, axes, simplify=False)
        msg = compression_params(model, onnx_file)
        with atomic_path(params_file) as p:
            p.write_bytes(msg.SerializeToString())
        # MNNConvert *creates* a missing params file (and then quantizes nothing): it exists by now.
        extra = ["--compressionParamsFile", str(params_file)]
        if plan.int8_weights_elsewhere if int8_weights_elsewhere is None else int8_weights_elsewhere:
            extra += ["--weightQuantBits", "8"]
        convert_onnx_to_mnn(onnx_file, mnn_path, extra_args=extra)
    precision = mnn_precision(mnn_path)
    if precision["int8_ops"] != len(plan.layers):
        raise QatError(
            f"{mnn_path}: MNN quantized {precision['int8_ops']} ops, the plan has {len(plan.layers)} layers. "
            "Re-run prepare_qat on this model (the graph changed since) and export again."
        )
    return {**plan.summary(), **precision, "mnn_bytes": Path(mnn_path).stat().st_size}


def mnn_precision(mnn_path: str | Path) -> dict[str, Any]:
    """Which ops of an MNN file compute in int8, which only store int8 weights, which stay float.

    Returns:
        ``{"int8_ops": n, "int8_weight_only_ops": n, "float_ops": {op type: count},
        "quantized_tensors": n}``: ``int8_ops`` are full-INT8 convolutions (int8 weights and
        activations), ``int8_weight_only_ops`` keep float activations (``--weightQuantBits``),
        ``float_ops`` counts float ops with weights (conv, deconv, LayerNorm, ...) and MatMul/Softmax;
        ``quantized_tensors`` counts tensors stored with an int8 scale (before runtime propagation).
    """
    graph = _MnnGraph(_mnn_dump(mnn_path))
    full = weight_only = 0
    floats: dict[str, int] = defaultdict(int)
    for op in graph.ops:
        main = op["main"]
        quant = main.get("quanParameter") or {}
        if main.get("symmetricQuan") or quant.get("scaleIn"):
            full += 1
        elif quant:
            weight_only += 1
        elif (
            main.get("weight")
            or main.get("external")
            or op["type"] in ("MatMul", "BatchMatMul", "Softmax", "LayerNorm")
        ):
            floats[op["type"]] += 1
    return {
        "int8_ops": full,
        "int8_weight_only_ops": weight_only,
        "float_ops": dict(floats),
        "quantized_tensors": len(graph.quant),
    }


def mnn_runtime_ops(mnn_path: str | Path, shape: Sequence[int]) -> dict[str, int]:
    """What MNN's CPU runtime actually executes for an input of ``shape``: op type → count, with
    ``" int8"`` appended to the ops that run in int8 (``{"Convolution int8": 46, "LayerNorm": 5,
    "FloatToInt8 int8": 12, ...}``), read from the session's per-op callback.

    >>> mnn_runtime_ops("rec_int8.mnn", (1, 3, 48, 320))["Convolution int8"]  # doctest: +SKIP
    46
    """
    from ocrslim.infer.runners import stdout_to_stderr

    counts: dict[str, int] = defaultdict(int)

    def before(_tensors: Any, info: Any) -> bool:
        kind = str(info.getType())
        name = kind.split("[", 1)[0].strip()
        counts[name + (" int8" if "DT_INT8" in kind else "")] += 1
        return True

    with stdout_to_stderr():
        import MNN

        interp = MNN.Interpreter(str(mnn_path))
        session = interp.createSession({"numThread": 1, "precision": "high"})
        x = interp.getSessionInput(session)
        interp.resizeTensor(x, tuple(shape))
        interp.resizeSession(session)
        data = np.zeros(tuple(shape), dtype=np.float32)
        x.copyFrom(MNN.Tensor(tuple(shape), MNN.Halide_Type_Float, data, MNN.Tensor_DimensionType_Caffe))
        interp.runSessionWithCallBackInfo(session, before, lambda _t, _i: True)
    return dict(counts)
