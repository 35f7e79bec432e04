"""onnx2torch for teachers that have no native ocrslim architecture (forward only).

Two fixes the probe found necessary (PROBE.md): PyPI's torchvision cannot load beside the CPU torch
build, and onnx2torch does not implement ``auto_pad=SAME_UPPER`` (used by PP-OCRv6).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import onnx
import torch

from ocrslim.core.errors import ArtifactError


def import_onnx2torch() -> types.ModuleType:
    """Import onnx2torch even where PyPI's torchvision (a CUDA build) cannot load beside CPU torch.

    onnx2torch imports torchvision only for its NMS/RoIAlign converters, which OCR graphs never
    use. If ``import torchvision`` fails, a stub whose ops raise on use stands in for it.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - e.g. "operator torchvision::nms does not exist"
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        tv = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")

        def _unavailable(*_: Any, **__: Any) -> Any:
            raise RuntimeError("torchvision ops are unavailable in this environment")

        for name in ("nms", "roi_align", "box_convert", "batched_nms"):
            setattr(ops, name, _unavailable)
        tv.ops = ops  # type: ignore[attr-defined]
        sys.modules["torchvision"] = tv
        sys.modules["torchvision.ops"] = ops
    import onnx2torch

    return onnx2torch


def explicit_same_pads(model: onnx.ModelProto) -> int:
    """Rewrite stride-1 ``auto_pad=SAME_UPPER|SAME_LOWER`` Conv/pool nodes to explicit ``pads``, in place.

    With stride 1 the total padding per axis is ``(kernel − 1) · dilation`` whatever the input
    size; SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the start. Returns the number of
    nodes rewritten. Strided SAME padding depends on the input size and is refused.
    """
    changed = 0
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        mode = attrs.get("auto_pad")
        if mode is None or mode.s not in (b"SAME_UPPER", b"SAME_LOWER"):
            continue
        kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else None
        if kernel is None:
            raise ArtifactError(f"node {node.name}: SAME padding without kernel_shape. Export the model with pads.")
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(kernel)
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * len(kernel)
        if any(s != 1 for s in strides):
            raise ArtifactError(
                f"node {node.name}: strided {mode.s.decode()} padding is input-size dependent. "
                "Export with explicit pads."
            )
        total = [(k - 1) * d for k, d in zip(kernel, dilations)]
        small = [t // 2 for t in total]
        big = [t - s for t, s in zip(total, small)]
        begin, end = (small, big) if mode.s == b"SAME_UPPER" else (big, small)
        node.attribute.remove(mode)
        if "pads" in attrs:
            node.attribute.remove(attrs["pads"])
        node.attribute.append(onnx.helper.make_attribute("pads", begin + end))
        changed += 1
    return changed


def onnx_to_torch(path: str | Path) -> torch.nn.Module:
    """Convert an ONNX file to an onnx2torch ``GraphModule`` in eval mode."""
    model = onnx.load(str(path))
    explicit_same_pads(model)
    return import_onnx2torch().convert(model).eval()
