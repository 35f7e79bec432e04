"""MNN graph analysis for quantization repair: layer groups, their boundaries, and each group's own error.

An INT8 candidate and its FP32 model run side by side in the MNN runtime with every layer-group boundary
as an output (:class:`ocrslim.infer.runners.MnnRunner` ``outputs=``); a group's sensitivity is the
relative error of its outputs minus that of its inputs, so the groups that add error are kept float.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ocrslim.core.errors import DataError
from ocrslim.export.mnn import mnn_graph
from ocrslim.infer.pipeline import Model
from ocrslim.infer.runners import MnnRunner

__all__ = ["NOT_QUANTIZED", "SKIPPABLE", "group_key", "group_sensitivity", "layer_groups", "output_error",
           "runs_at_other_shapes", "sensitivity_inputs"]

NOT_QUANTIZED = ("Input", "Const")  # op types that never go into a skip list or a layer group
# What skip_quant_op_names demonstrably acts on in mnnquant 3.6.1 (KL/ADMM): conv/deconv weights stay float,
# and a skipped Softmax loses KL's clipped output scale (v4 rec: max probability 0.063 -> 0.999). A skipped
# sigmoid does not: fed by an int8 tensor it still runs as an int8 lookup table with the clipped scale. Only
# groups holding one of these ops are repair candidates.
SKIPPABLE = ("Convolution", "ConvolutionDepthwise", "Deconvolution", "DeconvolutionDepthwise", "Softmax")
_SENS_SIDE = 736  # det sensitivity inputs are centre-cropped to at most this square (memory: all tensors kept)


def group_key(op_name: str, depth: int) -> str:
    """Layer group of an op: its first ``depth`` name path components.

    >>> group_key("/backbone/blocks2/blocks2.0/dw_conv/conv/Conv_output_0", 3)
    '/backbone/blocks2/blocks2.0'
    >>> group_key("BinaryOp163", 3)
    'BinaryOp163'
    """
    if not op_name.startswith("/"):
        return op_name
    parts = op_name.split("/")
    return "/".join(parts[: depth + 1]) if len(parts) > depth + 1 else op_name


def layer_groups(graph: dict[str, Any], depth: int) -> dict[str, list[str]]:
    """Quantizable op names by layer group, groups in execution order."""
    groups: dict[str, list[str]] = {}
    for op in graph["ops"]:
        if op["type"] not in NOT_QUANTIZED:
            groups.setdefault(group_key(op["name"], depth), []).append(op["name"])
    return groups


def _boundaries(graph: dict[str, Any], groups: dict[str, list[str]]) -> dict[str, tuple[list[str], list[str]]]:
    """Per group: (tensors it reads from other groups, tensors it hands to other groups or the caller)."""
    op_group = {name: g for g, names in groups.items() for name in names}
    producer: dict[str, str] = {}
    const: set[str] = set()
    for op in graph["ops"]:
        for t in op["outputs"]:
            producer[t] = op_group.get(op["name"], "")
            if op["type"] == "Const":
                const.add(t)
    consumers: dict[str, set[str]] = {}
    for op in graph["ops"]:
        for t in op["inputs"]:
            consumers.setdefault(t, set()).add(op_group.get(op["name"], ""))
    outputs = set(graph["outputs"])
    out: dict[str, tuple[list[str], list[str]]] = {}
    for g, names in groups.items():
        ins: list[str] = []
        outs: list[str] = []
        members = set(names)
        for op in graph["ops"]:
            if op["name"] not in members:
                continue
            ins += [t for t in op["inputs"] if t not in const and producer.get(t) != g and t not in ins]
            outs += [t for t in op["outputs"] if t not in outs and (t in outputs or consumers.get(t, set()) - {g})]
        out[g] = (ins, outs)
    return out


def _rel_error(ref: np.ndarray, out: np.ndarray) -> float:
    """``|out - ref| / |ref|`` capped at 1 (0 when both are ~0, 1 when only ``ref`` is)."""
    if ref.shape != out.shape:
        return 1.0
    ref64, out64 = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    norm = float(np.linalg.norm(ref64))
    diff = float(np.linalg.norm(out64 - ref64))
    if not np.isfinite(diff):
        return 1.0
    if norm < 1e-8:
        return 0.0 if diff < 1e-6 else 1.0
    return min(1.0, diff / norm)


def sensitivity_inputs(task: str, base: Model, sets: dict[str, Path], count: int) -> list[np.ndarray]:
    """``count`` model inputs from the gate sets, round robin, preprocessed as the runner does:
    det pages (capped, resized by ``det_cfg``), rec batches of ``rec_cfg.batch_size`` crops."""
    from ocrslim.data.datasets import load_det_dataset, load_rec_dataset, read_sample_image
    from ocrslim.infer.preprocess import cap_image, det_preprocess, read_image, rec_preprocess

    per_set = -(-count // len(sets))
    pools: list[list[np.ndarray]] = []
    for path in sets.values():
        xs = []
        if task == "det":
            for s in load_det_dataset(path, limit=per_set):
                img = read_image(s.image)
                if img is not None:
                    xs.append(_centre_crop(det_preprocess(cap_image(img, base.det_cfg)[0], base.det_cfg)))
        else:
            bs = base.rec_cfg.batch_size
            samples = load_rec_dataset(path, limit=per_set * bs)
            crops = [c for c in (read_sample_image(s) for s in samples) if c is not None]
            xs = [rec_preprocess(crops[i : i + bs], base.rec_cfg) for i in range(0, len(crops), bs)]
        pools.append(xs)
    out: list[np.ndarray] = []
    for i in range(per_set):
        out += [xs[i] for xs in pools if i < len(xs)]
    if not out:
        raise DataError(f"quantize.gate_{task}: no readable sample in {', '.join(map(str, sets.values()))}.")
    return out[:count]


def _centre_crop(x: np.ndarray, side: int = _SENS_SIDE) -> np.ndarray:
    """Centre crop of an NCHW det input to at most ``side`` x ``side`` (multiples of 32 kept)."""
    h, w = x.shape[2:]
    ch, cw = min(h, side), min(w, side)
    y0, x0 = (h - ch) // 2 // 32 * 32, (w - cw) // 2 // 32 * 32
    return np.ascontiguousarray(x[:, :, y0 : y0 + ch, x0 : x0 + cw])


def output_error(ref_path: Path, cand_path: Path, inputs: Sequence[np.ndarray], threads: int) -> float:
    """Mean relative L2 error of the candidate's output vs the reference model's (1 = unrelated or broken).

    A candidate that cannot run at an input's shape counts as 1 on it.
    """
    from ocrslim.infer.runners import MnnRunner

    ref, cand = MnnRunner(ref_path, threads), MnnRunner(cand_path, threads)
    errs = []
    for x in inputs:
        try:
            errs.append(_rel_error(ref(x), cand(x)))
        except Exception:  # noqa: BLE001 - MNN raises bare errors on shapes a fixed model cannot take
            errs.append(1.0)
    return float(np.mean(errs))


def runs_at_other_shapes(ref_path: Path, cand_path: Path, dims: Sequence[int], threads: int) -> bool:
    """Whether a model quantized at input ``dims`` (N, C, H, W) also runs at another size with output
    shapes matching the reference model's (det: other H and W; rec: other N and W)."""
    from ocrslim.infer.runners import MnnRunner

    n, c, h, w = (int(v) for v in dims)
    other = (n + 1, c, h, w + 64) if h <= 64 else (n, c, h + 64 if h <= 256 else h - 64, w + 32)
    rng = np.random.default_rng(0)
    ref, cand = MnnRunner(ref_path, threads), MnnRunner(cand_path, threads)
    for shape in ((n, c, h, w), other):
        x = rng.normal(0.0, 0.5, size=shape).astype(np.float32)
        try:
            if cand(x).shape != ref(x).shape:
                return False
        except Exception:  # noqa: BLE001 - MNN raises bare errors on shapes a model cannot take
            return False
    return True


def group_sensitivity(
    float_mnn: Path, quant_mnn: Path, graph: dict[str, Any], depth: int, inputs: Sequence[np.ndarray], threads: int,
    quant_graph: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Each layer group's own error in the quantized model, worst first.

    Both models run in the MNN runtime with every group-boundary tensor as an output; a group's
    error at a tensor is ``|quant - fp32| / |fp32|`` (mean over ``inputs``), and its sensitivity
    is the error of its outputs minus that of its inputs: what quantizing this group adds.

    Returns:
        ``[{"group", "sensitivity", "error_in", "error_out", "float_mb", "skippable", "ops"}, ...]``, worst
        first; ``float_mb``: FP32 size of the group's parameters, ``skippable``: it holds an op whose
        quantization ``skip_quant_op_names`` undoes (``SKIPPABLE``).
    """
    groups = layer_groups(graph, depth)
    bounds = _boundaries(graph, groups)
    skippable = {op["name"] for op in graph["ops"] if op["type"] in SKIPPABLE}
    op_weights = {op["name"]: op.get("weights", 0) for op in graph["ops"]}
    const_weights = {t: op.get("weights", 0) for op in graph["ops"] if op["type"] == "Const" for t in op["outputs"]}
    consumed: dict[str, set[str]] = {}
    for op in graph["ops"]:
        for t in op["inputs"]:
            if t in const_weights:
                consumed.setdefault(group_key(op["name"], depth), set()).add(t)
    quant_tensors = {t for op in (quant_graph or mnn_graph(quant_mnn))["ops"] for t in op["outputs"]}
    wanted = sorted({t for ins, outs in bounds.values() for t in ins + outs} & quant_tensors)
    ref = MnnRunner(float_mnn, threads, outputs=wanted)
    cand = MnnRunner(quant_mnn, threads, outputs=wanted)
    sums: dict[str, list[float]] = {}
    for x in inputs:  # one input at a time: det boundary tensors of a page take hundreds of MB
        a, b = ref.tensors(x), cand.tensors(x)
        for t in a.keys() & b.keys():
            sums.setdefault(t, []).append(_rel_error(a[t], b[t]))
        del a, b
    err = {t: float(np.mean(v)) for t, v in sums.items()}
    rows = []
    for g, (ins, outs) in bounds.items():
        e_in = max([err[t] for t in ins if t in err] + [0.0])
        e_out = max([err[t] for t in outs if t in err] + [0.0])
        n_weights = sum(op_weights[op] for op in groups[g]) + sum(const_weights[t] for t in consumed.get(g, ()))
        rows.append({"group": g, "sensitivity": round(e_out - e_in, 4), "error_in": round(e_in, 4),
                     "error_out": round(e_out, 4), "float_mb": round(4 * n_weights / 2**20, 4),
                     "skippable": bool(set(groups[g]) & skippable), "ops": groups[g]})
    rows.sort(key=lambda r: -r["sensitivity"])
    return rows
