"""torch → ONNX export with fixed I/O names and dynamic axes, plus the parity gate between runtimes."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
import torch

from ocrslim.core.errors import ParityError, ToolError
from ocrslim.core.fsutil import atomic_path
from ocrslim.infer.runners import OrtRunner, Runner, TorchRunner

PathLike = str | os.PathLike[str]

DEFAULT_PARITY_HINT = (
    "Check that the model was exported in eval mode from the same weights, then bisect: export the "
    "model cut after each block and compare again"
)


def export_onnx(
    model: torch.nn.Module,
    dest: PathLike,
    sample: torch.Tensor,
    dynamic_axes: dict[str, dict[int, str]],
    input_name: str = "x",
    output_name: str = "y",
    opset: int = 17,
    simplify: bool = True,
) -> None:
    """Export ``model`` to ONNX at ``dest`` (atomically), simplified and checked.

    Uses the TorchScript exporter (``dynamo=False``): the dynamo exporter fails on the rec models
    (PROBE.md). The export traces in eval mode, so BatchNorm statistics never move; the model's
    train/eval mode is restored afterwards. onnxsim keeps the dynamic axes (no input shapes are
    fixed).

    Args:
        model: the module; ``forward`` must return tensors only (``exportable=True``).
        dest: output ``.onnx`` path.
        sample: example input, e.g. ``torch.rand(1, 3, 64, 64)``; only its rank and dtype matter
            for the dynamic axes.
        dynamic_axes: ``{name: {axis: label}}`` for ``input_name``/``output_name``, e.g.
            ``{"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}``.
        input_name: graph input name.
        output_name: name of the first graph output.
        opset: ONNX opset.
        simplify: run onnxsim.

    >>> export_onnx(model, "artifacts/onnx/det.onnx", torch.rand(1, 3, 64, 64),
    ...             {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}})  # doctest: +SKIP
    """
    unknown = set(dynamic_axes) - {input_name, output_name}
    if unknown:
        raise ValueError(f"dynamic_axes names {sorted(unknown)} are neither {input_name!r} nor {output_name!r}")

    was_training = model.training
    model.eval()
    try:
        with atomic_path(dest) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(
                model,
                (sample,),
                str(tmp),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
            proto = onnx.load(str(tmp))
            if simplify:
                proto = _simplify(proto, Path(dest))
            onnx.checker.check_model(proto, full_check=True)
            onnx.save(proto, str(tmp))
    finally:
        model.train(was_training)


def _simplify(proto: onnx.ModelProto, dest: Path) -> onnx.ModelProto:
    try:
        import onnxsim
    except ImportError:
        raise ToolError("onnxsim: not installed. pip install onnxsim, or export with simplify=False.") from None
    # No overwrite_input_shapes: the dynamic axes must survive simplification.
    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise ToolError(f"{dest}: onnxsim's simplified graph failed its check. Export with simplify=False.")
    return simplified


def shape_key(x: np.ndarray) -> str:
    """``(1, 3, 64, 96)`` → ``"1x3x64x96"``, the key used in parity reports."""
    return "x".join(str(d) for d in x.shape)


def compare_runners(a: Runner, b: Runner, inputs: Iterable[np.ndarray]) -> dict[str, float]:
    """Max |a(x) - b(x)| per input shape (``{"1x3x64x96": 2.4e-06}``); NaN if either output has NaN.

    Raises:
        ParityError: the two runners return different output shapes.
    """
    diffs: dict[str, float] = {}
    for x in inputs:
        ya, yb = a(x), b(x)
        key = shape_key(x)
        if ya.shape != yb.shape:
            raise ParityError(
                f"{a.name} vs {b.name}: output shapes {ya.shape} and {yb.shape} differ at input shape {key}. "
                "Check the dynamic axes given to export_onnx."
            )
        d = float(np.abs(ya.astype(np.float64) - yb.astype(np.float64)).max()) if ya.size else 0.0
        diffs[key] = d if key not in diffs or math.isnan(d) else max(diffs[key], d)
    return diffs


def max_abs_diff_torch_onnx(model: torch.nn.Module, onnx_path: PathLike, inputs: list[np.ndarray]) -> float:
    """Max |torch - onnxruntime| over ``inputs`` (float32 NCHW arrays); NaN if any output has NaN."""
    diffs = compare_runners(TorchRunner(model), OrtRunner(onnx_path), inputs)
    return _worst(diffs)[1]


def parity_gate(name: str, diffs: Mapping[str, float], tol: float, hint: str = DEFAULT_PARITY_HINT) -> None:
    """Raise ``ParityError`` if any per-shape max abs diff exceeds ``tol`` (NaN always fails).

    Args:
        name: what is compared, e.g. ``"artifacts/onnx/det.onnx"`` or ``"det torch vs onnx"``.
        diffs: ``{shape_key: max abs diff}``, as returned by ``compare_runners``.
        tol: largest allowed difference.
        hint: the fix sentence appended to the message.

    >>> parity_gate("det.onnx", {"1x3x64x96": 3.2e-2}, 1e-3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ocrslim.core.errors.ParityError: det.onnx: max |a-b| = 3.2e-02 at shape 1x3x64x96 exceeds tolerance 1e-03. ...
    """
    if not diffs:
        raise ValueError(f"{name}: parity_gate got no measurements")
    shape, worst = _worst(diffs)
    if worst <= tol:
        return
    raise ParityError(
        f"{name}: max |a-b| = {worst:.1e} at shape {shape} exceeds tolerance {_fmt_tol(tol)}. {hint.rstrip('.')}."
    )


def _worst(diffs: Mapping[str, float]) -> tuple[str, float]:
    """The (shape, diff) with the largest diff, NaN counting as the largest."""
    return max(diffs.items(), key=lambda kv: math.inf if math.isnan(kv[1]) else kv[1])


def _fmt_tol(tol: float) -> str:
    short = f"{tol:.0e}"
    return short if float(short) == tol else f"{tol:.2e}"
