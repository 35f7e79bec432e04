"""PP-OCRv4 mobile teachers as native PyTorch modules, with weights copied from the shipped ONNX.

The ONNX graphs (rapidocr_onnxruntime 1.4.4, opset 12, weights in ``Constant`` nodes) are the
spec. :func:`load_ppocrv4` builds the matching native model, then pairs the graph's weight groups
(Conv, BatchNormalization, ConvTranspose+bias Add, MatMul+bias Add, decomposed LayerNorm affine,
LearnableAffineBlock Mul/Add pairs), taken in graph order, with the model's weight layers, taken in
the order the forward pass calls them. Every pair is checked (kind, shapes, conv attributes, eps)
and every weight tensor on both sides must be used exactly once; any mismatch raises an
``ArtifactError`` that names the layer and the ONNX node.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from torch import nn

from ocrslim.core.artifacts import onnx_characters
from ocrslim.core.config import RecConfig
from ocrslim.core.errors import ArtifactError, ConfigError
from ocrslim.models.det import DBNet, build_dbnet
from ocrslim.models.layers import LearnableAffineBlock
from ocrslim.models.rec import CTCRecognizer, build_ctc_recognizer
from ocrslim.models.registry import teacher_onnx_path as _registered_onnx

__all__ = ["PPOCRV4_DET", "PPOCRV4_REC", "load_ppocrv4", "onnx_charset", "teacher_onnx_path"]

#: Component specs of PP-OCRv4 mobile det (read off ch_PP-OCRv4_det_infer.onnx).
PPOCRV4_DET: dict[str, dict[str, Any]] = {
    "backbone": {"name": "PPLCNetV3", "scale": 0.75, "det": True},
    "neck": {"name": "RSEFPN", "out_channels": 96, "shortcut": True},
    "head": {"name": "DBHead", "with_threshold": False, "k": 50.0},
}

#: Component specs of PP-OCRv4 mobile rec; ``num_classes`` comes from the graph's last MatMul.
PPOCRV4_REC: dict[str, dict[str, Any]] = {
    "backbone": {"name": "PPLCNetV3", "scale": 0.95, "det": False},
    "neck": {
        "name": "EncoderWithSVTR",
        "dims": 120,
        "depth": 2,
        "hidden_dims": 120,
        "num_heads": 8,
        "mlp_ratio": 2.0,
        "kernel_size": (1, 3),
        "use_guide": True,
    },
    "head": {"name": "CTCHead"},
}

_TASKS = ("det", "rec")

# Native weight layers and the ONNX weight-group kind each one takes.
_SLOT_KIND: dict[type[nn.Module], str] = {
    nn.Conv2d: "conv",
    nn.BatchNorm2d: "bn",
    nn.ConvTranspose2d: "deconv",
    nn.Linear: "linear",
    nn.LayerNorm: "layernorm",
    LearnableAffineBlock: "lab",
}

# Ops whose float constant inputs are weights (anything else must be a structural scalar).
_ARITH_OPS = {"Add", "Sub", "Mul", "Div", "MatMul", "Conv", "ConvTranspose", "BatchNormalization", "Gemm"}


def _check_task(task: str) -> None:
    if task not in _TASKS:
        raise ConfigError(f"PP-OCRv4 task {task!r} is unknown (known: {', '.join(_TASKS)}). Pass 'det' or 'rec'.")


def teacher_onnx_path(task: str) -> Path:
    """Path of the PP-OCRv4 mobile ``task`` ONNX shipped in the rapidocr_onnxruntime wheel (zoo lookup).

    >>> teacher_onnx_path("rec").name
    'ch_PP-OCRv4_rec_infer.onnx'
    """
    _check_task(task)
    return _registered_onnx(f"ppocrv4_mobile_{task}")


def _load_onnx(onnx_path: str | Path) -> onnx.ModelProto:
    path = Path(onnx_path)
    if not path.is_file():
        raise ArtifactError(
            f"{path}: not found. Pass a PP-OCRv4 mobile ONNX file, e.g. ocrslim.models.ppocr.teacher_onnx_path('det')."
        )
    try:
        return onnx.load(str(path))
    except (DecodeError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable ONNX model ({type(exc).__name__}). Re-download the file.") from exc


def onnx_charset(onnx_path: str | Path) -> list[str]:
    """Character list stored in a PP-OCR rec ONNX (``metadata_props['character']``), no blank/space added."""
    chars = onnx_characters(onnx_path)
    if chars is None:
        raise ArtifactError(
            f"{onnx_path}: has no 'character' metadata. Pass a PP-OCR rec ONNX, or supply the character list yourself."
        )
    return chars


@dataclass
class _Group:
    """One weight-carrying unit of the ONNX graph."""

    kind: str
    node: str
    tensors: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


def _onnx_groups(model: onnx.ModelProto, path: str | Path) -> list[_Group]:
    """Weight groups of ``model`` in graph order; raises if a weight-like constant stays unused."""
    graph = model.graph
    consts: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        else:
            nodes.append(node)
    producer = {out: node for node in nodes for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in nodes:
        for name in node.input:
            consumers[name].append(node)

    claimed: set[str] = set()
    absorbed: set[int] = set()
    groups: list[_Group] = []

    def const_inputs(node: onnx.NodeProto) -> list[str]:
        return [name for name in node.input if name in consts]

    def bias_add(node: onnx.NodeProto) -> tuple[onnx.NodeProto, str] | None:
        """The ``Add(out, const)`` that directly and solely follows ``node``, if any."""
        nxt = consumers.get(node.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Add":
            names = const_inputs(nxt[0])
            if len(names) == 1:
                return nxt[0], names[0]
        return None

    def take(name: str) -> np.ndarray:
        """A constant, marked as used by a group."""
        claimed.add(name)
        return consts[name]

    def absorb_bias(node: onnx.NodeProto) -> np.ndarray | None:
        """The constant of the bias ``Add`` after ``node`` (that Add is then part of ``node``'s group), if any."""
        if (found := bias_add(node)) is None:
            return None
        add, name = found
        absorbed.add(id(add))
        return take(name)

    def conv_tensors(node: onnx.NodeProto) -> dict[str, np.ndarray]:
        """A Conv / ConvTranspose's weight and, when it has one, its bias input."""
        t = {"weight": take(node.input[1])}
        if len(node.input) > 2 and node.input[2]:
            t["bias"] = take(node.input[2])
        return t

    for node in nodes:
        if id(node) in absorbed:
            continue
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op == "Conv":
            groups.append(_Group("conv", _node_label(node), conv_tensors(node), attrs))
        elif op == "BatchNormalization":
            keys = ("weight", "bias", "running_mean", "running_var")
            t = {k: consts[name] for k, name in zip(keys, node.input[1:5], strict=True)}
            claimed.update(node.input[1:5])
            groups.append(_Group("bn", _node_label(node), t, attrs))
        elif op == "ConvTranspose":
            t = conv_tensors(node)
            if "bias" not in t and (bias := absorb_bias(node)) is not None:
                t["bias"] = bias.reshape(-1)
            groups.append(_Group("deconv", _node_label(node), t, attrs))
        elif op == "MatMul" and node.input[1] in consts:
            t = {"weight": take(node.input[1]).T}
            if (bias := absorb_bias(node)) is not None:
                t["bias"] = bias
            groups.append(_Group("linear", _node_label(node), t, attrs))
        elif op == "Mul" and len(const_inputs(node)) == 1 and (found := bias_add(node)) is not None:
            scale_name = const_inputs(node)[0]
            add, bias_name = found
            scale, bias = consts[scale_name], consts[bias_name]
            data_in = next(name for name in node.input if name != scale_name)
            src = producer.get(data_in)
            if scale.size == 1 and bias.size == 1:
                groups.append(_Group("lab", _node_label(node), {"scale": scale, "bias": bias}))
            elif src is not None and src.op_type == "Div":
                # Decomposed LayerNorm: (x - mean) / Sqrt(var + eps) * weight + bias.
                sqrt = producer.get(src.input[1])
                eps_add = producer.get(sqrt.input[0]) if sqrt is not None and sqrt.op_type == "Sqrt" else None
                eps_names = const_inputs(eps_add) if eps_add is not None else []
                eps = float(consts[eps_names[0]].reshape(-1)[0]) if eps_names else float("nan")
                groups.append(_Group("layernorm", _node_label(node), {"weight": scale, "bias": bias}, {"epsilon": eps}))
            else:
                continue  # not a weight pattern; the leftover check below decides
            claimed.update((scale_name, bias_name))
            absorbed.add(id(add))

    leftovers = [
        (name, consumers[name][0])
        for name, arr in consts.items()
        if name not in claimed
        and arr.dtype.kind == "f"
        and arr.size > 1
        and any(c.op_type in _ARITH_OPS for c in consumers.get(name, []))
    ]
    if leftovers:
        name, node = leftovers[0]
        raise ArtifactError(
            f"{path}: {len(leftovers)} weight tensor(s) match no known layer pattern, first {name!r} "
            f"{list(consts[name].shape)} feeding {_node_label(node)}. Pass an unmodified PP-OCRv4 mobile ONNX."
        )
    return groups


def _native_slots(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Weight layers of ``model`` in the order its forward pass calls them."""
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def hook(module: nn.Module, _args: Any) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            order.append((names[module], module))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if type(m) in _SLOT_KIND]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return order


def _pads_of(module: nn.Conv2d | nn.ConvTranspose2d) -> list[int]:
    ph, pw = module.padding if isinstance(module.padding, tuple) else (module.padding, module.padding)
    return [int(ph), int(pw), int(ph), int(pw)]


def _copy_group(name: str, module: nn.Module, group: _Group, path: str | Path) -> None:
    """Check ``group`` against ``module`` (kind, shapes, attributes) and copy its tensors in."""

    def fail(problem: str) -> ArtifactError:
        return ArtifactError(
            f"{path}: layer '{name}' ({type(module).__name__}) does not match ONNX {group.node}: {problem}. "
            "Pass the PP-OCRv4 mobile model of the requested task, or fix the native architecture."
        )

    kind = _SLOT_KIND[type(module)]
    if kind != group.kind:
        raise fail(f"expected a {kind} weight group, found {group.kind}")

    a = group.attrs
    if kind in ("conv", "deconv"):
        conv: nn.Conv2d | nn.ConvTranspose2d = module  # type: ignore[assignment]
        checks = {
            "kernel_shape": (list(a.get("kernel_shape", [])), list(conv.kernel_size)),
            "strides": (list(a.get("strides", [1, 1])), list(conv.stride)),
            "pads": (list(a.get("pads", [0, 0, 0, 0])), _pads_of(conv)),
            "group": (int(a.get("group", 1)), conv.groups),
            "dilations": (list(a.get("dilations", [1, 1])), list(conv.dilation)),
        }
        if kind == "deconv":
            checks["output_padding"] = (list(a.get("output_padding", [0, 0])), list(conv.output_padding))
        for attr, (want, have) in checks.items():
            if want != have:
                raise fail(f"{attr} {want} in the graph, {have} in the module")
        if ("bias" in group.tensors) != (conv.bias is not None):
            raise fail(f"bias {'present' if 'bias' in group.tensors else 'absent'} in the graph, not in the module")
    if kind == "bn":
        if not np.isclose(float(a.get("epsilon", 1e-5)), module.eps, rtol=1e-3):  # type: ignore[arg-type]
            raise fail(f"epsilon {a.get('epsilon')} in the graph, {module.eps} in the module")
    if kind == "layernorm":
        if not np.isclose(float(a["epsilon"]), module.eps, rtol=1e-3):  # type: ignore[arg-type]
            raise fail(f"epsilon {a['epsilon']} in the graph, {module.eps} in the module")
    if kind == "linear" and ("bias" in group.tensors) != (module.bias is not None):
        raise fail("bias presence differs")

    targets: dict[str, torch.Tensor] = dict(module.named_parameters(recurse=False))
    targets.update({k: v for k, v in module.named_buffers(recurse=False) if k != "num_batches_tracked"})
    targets = {k: v for k, v in targets.items() if v is not None}
    if set(targets) != set(group.tensors):
        raise fail(f"tensors {sorted(group.tensors)} in the graph, {sorted(targets)} in the module")
    for key, arr in group.tensors.items():
        dst = targets[key]
        if tuple(arr.shape) != tuple(dst.shape):
            raise fail(f"{key} shape {list(arr.shape)} in the graph, {list(dst.shape)} in the module")
        with torch.no_grad():
            dst.copy_(torch.from_numpy(np.array(arr, dtype=np.float32, copy=True)))


def _load_weights(
    model: nn.Module, groups: list[_Group], example: torch.Tensor, path: str | Path, fresh: tuple[str, ...] = ()
) -> None:
    """Copy ``groups`` into ``model`` pairwise; ``fresh`` module prefixes are allowed to stay untouched."""
    slots = _native_slots(model, example)
    for (name, module), group in zip(slots, groups, strict=False):
        _copy_group(name, module, group, path)
    if len(slots) != len(groups):
        if len(slots) > len(groups):
            raise ArtifactError(
                f"{path}: the graph has {len(groups)} weight groups but the model {len(slots)}; "
                f"layer '{slots[len(groups)][0]}' and later got no weights. Pass the matching PP-OCRv4 mobile ONNX."
            )
        raise ArtifactError(
            f"{path}: the graph has {len(groups)} weight groups but the model {len(slots)}; ONNX "
            f"{groups[len(slots)].node} and later were not consumed. Pass the matching PP-OCRv4 mobile ONNX."
        )
    filled = {name for name, _ in slots}
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        if own and name not in filled and not any(name == p or name.startswith(p + ".") for p in fresh):
            raise ArtifactError(
                f"{path}: layer '{name}' ({type(module).__name__}) was not reached by the forward pass and got "
                "no weights. Fix the native architecture."
            )


def load_ppocrv4(task: str, onnx_path: str | Path, *, with_threshold: bool = False) -> nn.Module:
    """Build the native PP-OCRv4 mobile ``task`` model and copy the ONNX weights into it.

    Args:
        task: "det" (:class:`~ocrslim.models.det.DBNet`) or "rec"
            (:class:`~ocrslim.models.rec.CTCRecognizer`).
        onnx_path: the shipped ONNX (see :func:`teacher_onnx_path`).
        with_threshold: det only: add a freshly initialised DB threshold branch for training.

    Returns:
        The model in eval mode. det: N×3×H×W → N×1×H×W probabilities; rec: N×3×48×W →
        N×(W/8)×C softmax.

    >>> model = load_ppocrv4("rec", teacher_onnx_path("rec"))
    >>> model.num_classes
    6625
    """
    _check_task(task)
    onnx_model = _load_onnx(onnx_path)
    groups = _onnx_groups(onnx_model, onnx_path)
    model: DBNet | CTCRecognizer
    if task == "det":
        head = {**PPOCRV4_DET["head"], "with_threshold": with_threshold}
        model = build_dbnet(PPOCRV4_DET["backbone"], PPOCRV4_DET["neck"], head)
        example = torch.zeros(1, 3, 64, 64)
        fresh: tuple[str, ...] = ("head.thresh",)
    else:
        linears = [g for g in groups if g.kind == "linear"]
        if not linears:
            raise ArtifactError(f"{onnx_path}: has no MatMul weights, so it is not a PP-OCRv4 rec model. Pass one.")
        head = {**PPOCRV4_REC["head"], "num_classes": int(linears[-1].tensors["weight"].shape[0])}
        model = build_ctc_recognizer(PPOCRV4_REC["backbone"], PPOCRV4_REC["neck"], head)
        example = torch.zeros(1, 3, RecConfig().height, 64)
        fresh = ()
    _load_weights(model, groups, example, onnx_path, fresh)
    return model.eval()
