"""Accuracy-aware MNN quantization: full INT8 that still reads, or the best fallback that does.

``quantize_task`` takes one task's float ONNX, its MNN FP32 model and the calibration set's
mnnquant config, and tries candidates until one passes the accuracy gate:

1. full INT8 (weights and activations) with mnnquant, feature method ``KL`` | ``EMA`` | ``ADMM``;
2. repair (KL/ADMM only): run the INT8 candidate and the FP32 model side by side in the MNN
   runtime on a few gate inputs, measure each layer group's own error (relative L2 error of its
   outputs minus that of its inputs), keep the worst groups float with ``skip_quant_op_names``,
   re-quantize; at most ``max_repairs`` times;
3. the ``fallbacks`` in order: ``int8-weights`` (weight-only int8, HQQ), ``fp16`` (fp16 weights),
   ``fp32`` (the float model itself).

The gate evaluates candidate and MNN FP32 model on every gate set (first ``limit`` samples): det
hmean, rec ``rec_metric`` (exact accuracy by default: ``accuracy_ci_alnum`` keeps only [0-9a-z]
and so ignores Chinese text entirely). A candidate passes iff ``100 * (fp32 - candidate) <=
max_drop`` on every set. A candidate whose output is far off FP32 on the sensitivity inputs
(relative error > ``screen_error``) is recorded as broken without running the gate; the gate of a
candidate stops at its first failing set. Every attempt prints one line.

What MNN 3.6.1 does (measured on PP-OCRv4 mobile; see also PROBE.md):

- KL runs on dynamic-shape models, and its INT8 model runs at any input shape. KL clips peaky or
  sparse activations hard (threshold near the mode). On v4 det the head's first conv
  (``/head/binarize/conv1``) then breaks the map (its output's runtime cosine vs FP32: 0.62, map
  empty); keeping that one conv float restores it (keeping the two deconvs float as well changes
  nothing). MNN's own per-layer statistics (``"debug": true``) miss it (fake-quant cosine 0.99 there)
  and cost ~1.5 min, hence the side-by-side runtime comparison here.
- The remaining det loss (~3 hmean points on receipts) is spread over the backbone; keeping the
  early, small layers float recovers most of it cheaply (stem to blocks4 float: 1.44 MB).
- v4 rec with KL: blank text. Two causes: all-zero output channels get NaN weight scales (8 convs;
  ``mnn_graph`` flags them, the repair keeps them float first), and the softmax output is clipped to
  a maximum probability of 0.063, so every frame decodes as blank (keeping the Softmax float fixes
  that). The stem conv is clipped too (relative error 0.28), and errors compound: no cheap repair.
- ``skip_quant_op_names`` keeps conv/deconv weights and a Softmax float; a skipped sigmoid still runs
  as an int8 lookup table with its clipped scale.
- EMA needs a fixed input shape (a dynamic model segfaults: "Invalid Tensor, the session may not
  be ready"): overwriting the ONNX input dims (no onnxsim needed) and converting works. The EMA
  model still runs at other shapes (rec at N x 48 x W for any N, W, det at any H x W), with the
  same accuracy as at the calibration shape. EMA ignores ``skip_quant_op_names``: no repair. v4 det
  with EMA: empty map; v4 rec with EMA: synthetic text kept, real scene words lose ~13-30 points.
- Weight-only int8 with HQQ keeps det and rec within a point at ~27% of the FP32 size, and
  runs at FP32 speed on x86 (full INT8 ran 1.5-5x slower there: no VNNI kernels).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ocrslim.config import QuantizeConfig
from ocrslim.errors import ArtifactError, DataError, OcrslimError, ToolError
from ocrslim.export.mnn import convert_onnx_to_mnn, mnn_graph, quantize_mnn
from ocrslim.fsutil import atomic_path, write_json
from ocrslim.pipeline import Model, _sidecar_meta, open_model, sidecar_path

PRECISIONS = ("int8", "int8-weights", "fp16", "fp32")
_NOT_QUANTIZED = ("Input", "Const")  # op types that never go into a skip list or a layer group
# What skip_quant_op_names demonstrably acts on in mnnquant 3.6.1 (KL/ADMM): conv/deconv weights stay float,
# and a skipped Softmax loses KL's clipped output scale (v4 rec: max probability 0.063 -> 0.999). A skipped
# sigmoid does not: fed by an int8 tensor it still runs as an int8 lookup table with the clipped scale. Only
# groups holding one of these ops are repair candidates.
_SKIPPABLE = ("Convolution", "ConvolutionDepthwise", "Deconvolution", "DeconvolutionDepthwise", "Softmax")
_MB_FLOOR = 0.05  # repair ranks groups by sensitivity / (FP32 MB of the group + this): cheap groups first
_SENS_SIDE = 736  # det sensitivity inputs are centre-cropped to at most this square (memory: all tensors kept)

Log = Callable[[str], None]


class QuantizeError(OcrslimError):
    """No candidate passes the accuracy gate and no fallback is left."""


class _Unusable(Exception):
    """A built candidate cannot be deployed as is (recorded as the attempt's error, next option tried)."""


def _print(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------- the gate


@dataclasses.dataclass
class Gate:
    """The accuracy gate of one task: sets, metric, and the MNN FP32 model's reference numbers."""

    task: str
    metric: str  # "hmean" (det) or the rec metric
    sets: dict[str, Path]  # set name -> path
    limit: int
    max_drop: float  # points
    base: Model  # the FP32 model: its configs and dictionary serve every candidate
    fp32: dict[str, float] = dataclasses.field(default_factory=dict)

    def evaluate(self, model: Model, stop_on_fail: bool = True) -> tuple[dict[str, float | None], bool]:
        """Metric per set (``None`` where not evaluated) and whether every drop is within ``max_drop``.

        With ``stop_on_fail`` the remaining sets are skipped after the first failing one.
        """
        from ocrslim.evaluate import evaluate_det, evaluate_rec
        from ocrslim.pipeline import OCR

        ocr = OCR(model, None) if self.task == "det" else OCR(None, model)
        out: dict[str, float | None] = dict.fromkeys(self.sets)
        passed = True
        for name, path in self.sets.items():
            if self.task == "det":
                value = evaluate_det(ocr, path, self.limit, progress=False)["det"][self.metric]
            else:
                value = evaluate_rec(ocr, path, self.limit, progress=False)["rec"][self.metric]
            out[name] = float(value or 0.0)
            if name in self.fp32 and self.drop(name, out[name]) > self.max_drop:
                passed = False
                if stop_on_fail:
                    break
        return out, passed

    def drop(self, name: str, value: float | None) -> float | None:
        """Points lost against FP32 on set ``name`` (negative: the candidate is better)."""
        return None if value is None else round(100.0 * (self.fp32[name] - value), 2)

    def drops(self, metrics: dict[str, float | None]) -> dict[str, float | None]:
        return {name: self.drop(name, v) for name, v in metrics.items()}


def gate_sets(task: str, cfg: QuantizeConfig, log: Log = _print) -> dict[str, Path]:
    """The existing gate sets of ``task`` by short name; a missing one is reported in one line and skipped.

    Raises:
        DataError: none of the configured sets exists.
    """
    from ocrslim.evaluate import set_name

    sets: dict[str, Path] = {}
    from ocrslim.data.datasets import resolve_data_path

    for p in cfg.gate(task):
        path = resolve_data_path(p)  # also from a `dvc exp run --queue` workspace
        if not path.exists():
            log(f"quantize {task}: gate set {path} not found, skipped")
            continue
        name = set_name(path)
        while name in sets:
            name += "_"
        sets[name] = path
    if not sets:
        raise DataError(
            f"quantize.gate_{task}: none of {', '.join(cfg.gate(task))} exists. Run dvc repro data, or point "
            f"quantize.gate_{task} at a {task} set."
        )
    return sets


# ------------------------------------------------------------------------------- layer sensitivity


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
        if op["type"] not in _NOT_QUANTIZED:
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


class _TensorRunner:
    """An MNN model with chosen tensors as extra outputs (float tensors only are read)."""

    def __init__(self, path: Path, input_name: str, tensors: Sequence[str], threads: int) -> None:
        from ocrslim.runtime import _stdout_to_stderr

        with _stdout_to_stderr():
            import MNN.expr as F
            import MNN.nn as nn

            self._F = F
            self._rt = nn.create_runtime_manager(({"backend": "CPU", "precision": "high", "numThread": threads},))
            try:
                self.module = nn.load_module_from_file(
                    str(path), [input_name], list(tensors), runtime_manager=self._rt, shape_mutable=True
                )
            except SystemError as e:
                raise ArtifactError(f"{path}: MNN cannot load it with {len(tensors)} tensors as outputs.") from e
        self.tensors = list(tensors)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from ocrslim.runtime import _stdout_to_stderr

        F = self._F
        x = np.ascontiguousarray(x, dtype=np.float32)
        with _stdout_to_stderr():
            outs = self.module.forward([F.const(x, list(x.shape), F.NCHW)])
            res = {}
            for name, o in zip(self.tensors, outs):
                if o.dtype != F.float:
                    continue
                if o.data_format == F.NC4HW4:
                    o = F.convert(o, F.NCHW)
                res[name] = np.array(o.read(), dtype=np.float32, copy=True)
        return res


def sensitivity_inputs(task: str, base: Model, sets: dict[str, Path], count: int) -> list[np.ndarray]:
    """``count`` model inputs from the gate sets, round robin, preprocessed as the runner does:
    det pages (capped, resized by ``det_cfg``), rec batches of ``rec_cfg.batch_size`` crops."""
    from ocrslim.data.datasets import load_det_dataset, load_rec_dataset, read_sample_image
    from ocrslim.preprocess import cap_image, det_preprocess, read_image, rec_preprocess

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
    from ocrslim.runtime import MnnRunner

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
    from ocrslim.runtime import MnnRunner

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
        quantization ``skip_quant_op_names`` undoes (``_SKIPPABLE``).
    """
    groups = layer_groups(graph, depth)
    bounds = _boundaries(graph, groups)
    skippable = {op["name"] for op in graph["ops"] if op["type"] in _SKIPPABLE}
    op_weights = {op["name"]: op.get("weights", 0) for op in graph["ops"]}
    const_weights = {t: op.get("weights", 0) for op in graph["ops"] if op["type"] == "Const" for t in op["outputs"]}
    consumed: dict[str, set[str]] = {}
    for op in graph["ops"]:
        for t in op["inputs"]:
            if t in const_weights:
                consumed.setdefault(group_key(op["name"], depth), set()).add(t)
    quant_tensors = {t for op in (quant_graph or mnn_graph(quant_mnn))["ops"] for t in op["outputs"]}
    wanted = sorted({t for ins, outs in bounds.values() for t in ins + outs} & quant_tensors)
    input_name = graph["inputs"][0]
    ref = _TensorRunner(float_mnn, input_name, wanted, threads)
    cand = _TensorRunner(quant_mnn, input_name, wanted, threads)
    sums: dict[str, list[float]] = {}
    for x in inputs:  # one input at a time: det boundary tensors of a page take hundreds of MB
        a, b = ref(x), cand(x)
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


# ------------------------------------------------------------------------------------ candidates


def fixed_shape_onnx(src: Path, dst: Path, dims: Sequence[int]) -> None:
    """Copy an ONNX model with its (first) input dims overwritten by ``dims``; stale shapes are dropped."""
    import onnx

    model = onnx.load(str(src))
    shape = model.graph.input[0].type.tensor_type.shape
    if len(shape.dim) != len(dims):
        raise ArtifactError(f"{src}: input has rank {len(shape.dim)}, cannot fix it to {list(dims)}.")
    for d, v in zip(shape.dim, dims):
        d.Clear()
        d.dim_value = int(v)
    for out in model.graph.output:
        for d in out.type.tensor_type.shape.dim:
            d.Clear()
    del model.graph.value_info[:]
    onnx.save(model, str(dst))


def _load_quant_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ArtifactError(f"{path}: calibration quant config not found. Run dvc repro calibrate first.")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}). Re-run dvc repro calibrate.") \
            from None
    missing = [k for k in ("mean", "normal", "width", "height", "path") if k not in cfg]
    if missing:
        raise ArtifactError(f"{path}: missing {', '.join(missing)}. Re-run dvc repro calibrate.")
    return cfg


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 3)


@dataclasses.dataclass
class _Candidate:
    """One built model: what it is, where it is, how its gate went."""

    kind: str  # a PRECISIONS entry
    path: Path | None
    params: dict[str, Any]
    record: dict[str, Any]
    float_ops: list[str] = dataclasses.field(default_factory=list)
    fixed_shape: list[int] | None = None
    graph: dict[str, Any] | None = None  # int8: the quantized model's graph


class _Run:
    """State of one ``quantize_task`` call (temp dir, gate, FP32 reference, log)."""

    def __init__(self, task: str, onnx_path: Path, float_mnn: Path, quant_cfg: dict[str, Any], cfg: QuantizeConfig,
                 work: Path, log: Log) -> None:
        self.task, self.onnx, self.float_mnn, self.qcfg, self.cfg = task, onnx_path, float_mnn, quant_cfg, cfg
        self.work, self.log = work, log
        self.base = open_model(str(float_mnn), task, threads=cfg.threads)
        sets = gate_sets(task, cfg, log)
        metric = "hmean" if task == "det" else cfg.rec_metric
        self.gate = Gate(task, metric, sets, cfg.limit(task), cfg.max_drop, self.base)
        self.gate.fp32, _ = self.gate.evaluate(self.base, stop_on_fail=False)  # type: ignore[assignment]
        self.inputs = sensitivity_inputs(task, self.base, sets, cfg.sensitivity_images)
        self.calib_dims = [1, 3, int(quant_cfg["height"]), int(quant_cfg["width"])]
        self.n = 0

    def _line(self, c: _Candidate) -> str:
        r = c.record
        what = c.kind if c.kind != "int8" else f"int8 {c.params['method']} ({len(c.float_ops)} ops float)"
        size = f" {r['size_mb']} MB" if r.get("size_mb") is not None else ""
        if r.get("error"):
            return f"quantize {self.task}: {what}: error: {r['error']}"
        if r.get("screened"):
            return (f"quantize {self.task}: {what}{size}: broken (output error {r['output_error']:.3f} vs fp32), "
                    "gate skipped")
        parts = [f"{k} {self.gate.metric} {v:.4f} ({-r['drops'][k]:+.2f})"
                 for k, v in r["metrics"].items() if v is not None]
        return f"quantize {self.task}: {what}{size}: {', '.join(parts)}: {'pass' if r['passed'] else 'FAIL'}"

    def try_candidate(self, c: _Candidate, build: Callable[[Path], None]) -> _Candidate:
        """Build, screen and gate one candidate; record everything, print one line."""
        t0 = time.perf_counter()
        rec = c.record
        rec.update(kind=c.kind, params=c.params, size_mb=None, output_error=None, metrics={}, drops={}, passed=False)
        self.n += 1
        path = self.work / f"{self.n:02d}_{c.kind}.mnn"
        try:
            build(path)
            c.path = path
            rec["size_mb"] = _size_mb(path)
            if c.kind == "int8":
                c.graph = mnn_graph(path)
                rec["nonfinite_ops"] = [op["name"] for op in c.graph["ops"] if op["nonfinite_scales"]]
            model = dataclasses.replace(self.base, runner=_mnn_runner(path, self.cfg.threads), source=str(path))
            calibrated_fixed = c.kind == "int8" and c.params.get("method") == "EMA"  # KL/ADMM keep dynamic shapes
            if calibrated_fixed and not runs_at_other_shapes(self.float_mnn, path, self.calib_dims, self.cfg.threads):
                c.fixed_shape = list(self.calib_dims)
                model = self._fixed_shape_model(model)  # det: _Unusable (pages come in any size)
            rec["fixed_input_shape"] = c.fixed_shape
            rec["output_error"] = round(output_error(self.float_mnn, path, self._inputs(c), self.cfg.threads), 4)
            if rec["output_error"] > self.cfg.screen_error:
                rec["screened"] = True
            else:
                metrics, passed = self.gate.evaluate(model)
                rec.update(metrics=metrics, drops=self.gate.drops(metrics), passed=passed)
        except (ToolError, _Unusable) as exc:
            rec["error"] = str(exc)
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        self.log(self._line(c))
        return c

    def _fixed_shape_model(self, model: Model) -> Model:
        """The gate's view of a model that only runs at the calibration shape: rec crops squeezed or
        padded to exactly that width, one per batch; det cannot be fed a fixed size."""
        n, _, h, w = self.calib_dims
        if self.task == "det":
            raise _Unusable(
                f"{model.source}: runs only at {n}x3x{h}x{w}, but det pages are resized to varying sizes. "
                "Use method_det KL (dynamic shapes)"
            )
        if h != model.rec_cfg.height:
            raise _Unusable(f"{model.source}: calibrated at height {h}, rec.height is {model.rec_cfg.height}")
        rec_cfg = dataclasses.replace(model.rec_cfg, batch_size=n, min_width=w, max_width=w)
        return dataclasses.replace(model, rec_cfg=rec_cfg)

    def _inputs(self, c: _Candidate) -> list[np.ndarray]:
        """Sensitivity inputs; at the calibration shape only for a fixed-shape model."""
        if c.fixed_shape is None:
            return self.inputs
        base = self._fixed_shape_model(self.base)
        return sensitivity_inputs(self.task, base, self.gate.sets, self.cfg.sensitivity_images)

    # ----------------------------------------------------------------------------- builders

    def int8(self, method: str, float_ops: list[str], round_: int, src: Path) -> _Candidate:
        cfg = dict(self.qcfg)
        cfg["feature_quantize_method"] = method
        if self.cfg.calib_images is not None:
            cfg["used_image_num"] = min(int(cfg.get("used_image_num") or self.cfg.calib_images), self.cfg.calib_images)
        cfg["skip_quant_op_names"] = sorted(set(cfg.get("skip_quant_op_names") or []) | set(float_ops))
        cfg["debug"] = False
        params = {"method": method, "round": round_, "float_ops": len(cfg["skip_quant_op_names"]),
                  "calib_images": cfg.get("used_image_num")}
        c = _Candidate("int8", None, params, {}, float_ops=list(cfg["skip_quant_op_names"]))
        return self.try_candidate(c, lambda dst: quantize_mnn(src, dst, cfg))

    def fixed_float(self) -> Path:
        """The FP32 model converted at the calibration shape 1x3xHxW (EMA cannot calibrate dynamic shapes)."""
        onnx_fixed = self.work / "fixed.onnx"
        fixed_shape_onnx(self.onnx, onnx_fixed, self.calib_dims)
        dst = self.work / "fixed_fp32.mnn"
        convert_onnx_to_mnn(onnx_fixed, dst)
        return dst

    def fallback(self, kind: str) -> _Candidate:
        c = _Candidate(kind, None, {}, {})
        if kind == "fp32":
            c.path = self.float_mnn
            c.record.update(kind="fp32", params={}, size_mb=_size_mb(self.float_mnn), output_error=0.0,
                            metrics=dict(self.gate.fp32), drops=self.gate.drops(dict(self.gate.fp32)), passed=True,
                            note="the MNN FP32 reference itself", seconds=0.0)
            self.log(self._line(c))
            return c
        kw: dict[str, Any] = {"weight_quant_bits": 8, "hqq": True} if kind == "int8-weights" else {"fp16": True}
        c.params = dict(kw)
        return self.try_candidate(c, lambda dst: convert_onnx_to_mnn(self.onnx, dst, **kw))


def _mnn_runner(path: Path, threads: int) -> Any:
    from ocrslim.runtime import MnnRunner

    return MnnRunner(path, threads)


def _float_ops(graph: dict[str, Any], patterns: Sequence[str]) -> list[str]:
    """Op names of ``graph`` matching any glob in ``patterns`` (quantizable ops only)."""
    return [op["name"] for op in graph["ops"] if op["type"] not in _NOT_QUANTIZED
            and any(fnmatch.fnmatchcase(op["name"], p) for p in patterns)]


# ------------------------------------------------------------------------------------------ driver


def quantize_task(
    task: str,
    onnx_path: str | Path,
    float_mnn: str | Path,
    calib_config: str | Path,
    out: str | Path,
    cfg: QuantizeConfig | None = None,
    log: Log = _print,
) -> dict[str, Any]:
    """Produce the smallest-precision MNN model of ``task`` that passes the accuracy gate.

    Args:
        task: "det" or "rec".
        onnx_path: the float ONNX model (source of the fixed-shape model for EMA and of the
            int8-weights / fp16 fallbacks).
        float_mnn: the MNN FP32 model with its ``.mnn.json`` sidecar (the gate's reference).
        calib_config: the calibration stage's mnnquant config (``calibration/<task>.quant.json``).
        out: destination ``.mnn``; written atomically with its sidecar ``<out>.json``, which
            copies the float model's and adds ``precision``, ``float_layers``, ``quant_method``
            and ``fixed_input_shape``.
        cfg: settings (defaults: ``QuantizeConfig()``).
        log: receives one line per attempt.

    Returns:
        A JSON-able report: ``precision``, ``method``, ``metric``, ``fp32`` / ``final`` / ``drop``
        per gate set, ``size_mb``, ``fp32_size_mb``, ``float_layers`` (the chosen INT8 model's
        groups kept float, with their measured sensitivity and op names), ``repair`` (every group
        the repairs kept float, also when INT8 lost in the end), ``attempts`` (kind, params, size,
        output error, gate metrics, drops, pass/fail or error line, seconds),
        ``fixed_input_shape``, ``seconds``.

    Raises:
        QuantizeError: no candidate passes and no fallback is left (one line: task, metric, drop, fix).
        ArtifactError / DataError: a missing input file or gate set.
    """
    cfg = cfg or QuantizeConfig()
    if task not in ("det", "rec"):
        raise ArtifactError(f"task {task!r}: unknown. Use det or rec.")
    t0 = time.perf_counter()
    onnx_path, float_mnn, out = Path(onnx_path), Path(float_mnn), Path(out)
    for p, fix in ((onnx_path, "dvc repro export"), (float_mnn, "dvc repro convert")):
        if not p.is_file():
            raise ArtifactError(f"{p}: not found. Run {fix} first.")
    qcfg = _load_quant_config(Path(calib_config))
    if not Path(qcfg["path"]).is_dir():
        raise ArtifactError(f"{calib_config}: calibration folder {qcfg['path']} not found. Run dvc repro calibrate.")
    method = cfg.method(task)
    attempts: list[_Candidate] = []
    float_layers: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"ocrslim_quant_{task}.") as tmp:
        run = _Run(task, onnx_path, float_mnn, qcfg, cfg, Path(tmp), log)
        log(f"quantize {task}: fp32 {_size_mb(float_mnn)} MB: "
            + ", ".join(f"{k} {run.gate.metric} {v:.4f}" for k, v in run.gate.fp32.items()))
        if cfg.full_int8:
            chosen = _full_int8(run, method, attempts, float_layers)
        else:
            chosen = None
            log(f"quantize {task}: full INT8 skipped (quantize.full_int8 false), trying {', '.join(cfg.fallbacks)}")
        for kind in cfg.fallbacks:
            if chosen is not None:
                break
            c = run.fallback(kind)
            attempts.append(c)
            chosen = c if c.record["passed"] else None
        if chosen is None:
            raise QuantizeError(_failure_message(task, run.gate, attempts, cfg))
        report = _write(run, chosen, out, method, float_layers if chosen.kind == "int8" else [])
    report["repair"] = [{k: v for k, v in layer.items() if k != "ops"} | {"ops": len(layer["ops"])}
                        for layer in float_layers]
    report["attempts"] = [c.record for c in attempts]
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _full_int8(
    run: _Run, method: str, attempts: list[_Candidate], float_layers: list[dict[str, Any]]
) -> _Candidate | None:
    """Full INT8, then up to ``max_repairs`` re-quantizations with the most sensitive groups float."""
    cfg = run.cfg
    try:
        if method == "EMA":
            src = run.fixed_float()
            graph = None
        else:
            src = run.float_mnn
            graph = mnn_graph(src)
    except ToolError as exc:
        c = _Candidate("int8", None, {"method": method}, {"kind": "int8", "params": {"method": method},
                                                           "passed": False, "error": str(exc)})
        run.log(run._line(c))
        attempts.append(c)
        return None
    float_ops: list[str] = []
    if graph is not None and cfg.keep_float(run.task):
        float_ops = _float_ops(graph, cfg.keep_float(run.task))
        float_layers.append({"group": ", ".join(cfg.keep_float(run.task)), "ops": float_ops, "round": 0,
                             "why": f"quantize.keep_float_{run.task}"})
    elif method == "EMA" and cfg.keep_float(run.task):
        run.log(f"quantize {run.task}: EMA ignores skip_quant_op_names: keep_float_{run.task} has no effect")
    c = run.int8(method, float_ops, 0, src)
    attempts.append(c)
    for round_ in range(1, cfg.max_repairs + 1):
        if c.record["passed"] or c.path is None:
            break
        if graph is None:
            run.log(f"quantize {run.task}: EMA ignores skip_quant_op_names: no repair, trying fallbacks")
            break
        nonfinite = [op for op in c.record.get("nonfinite_ops", []) if op not in float_ops]
        if nonfinite:  # NaN weight scales blank everything downstream: these go first, no measurement needed
            float_layers.append({"group": "non-finite weight scales", "ops": nonfinite, "round": round_,
                                 "why": "mnnquant wrote NaN/inf weight scales (all-zero output channels)"})
            float_ops += nonfinite
            run.log(f"quantize {run.task}: repair {round_}: keep float {len(nonfinite)} ops with NaN weight scales")
        else:
            rows = group_sensitivity(run.float_mnn, c.path, graph, cfg.group_depth, run.inputs, cfg.threads, c.graph)
            done = set(float_ops)
            new = [r for r in rows if r["sensitivity"] > 0 and r["skippable"] and not set(r["ops"]) <= done]
            # Error removed per MB kept float: early layers are both sensitive and small.
            new = sorted(new, key=lambda r: -r["sensitivity"] / (r["float_mb"] + _MB_FLOOR))[: cfg.repair_groups]
            if not new:
                run.log(f"quantize {run.task}: no layer group adds error, nothing left to repair")
                break
            for r in new:
                float_layers.append({**r, "round": round_, "why": "sensitivity: relative error the group adds"})
                float_ops += [op for op in r["ops"] if op not in float_ops]
            run.log(f"quantize {run.task}: repair {round_}: keep float "
                    + ", ".join(f"{r['group']} (+{r['sensitivity']:.3f}, {r['float_mb']:.2f} MB)" for r in new))
        c = run.int8(method, float_ops, round_, src)
        attempts.append(c)
    return c if c.record["passed"] else None


def _failure_message(task: str, gate: Gate, attempts: list[_Candidate], cfg: QuantizeConfig) -> str:
    """One line: which candidate came closest, on which set it lost how much, and the fix."""
    fix = ("Add fallbacks (quantize.fallbacks: [int8-weights, fp16, fp32]), raise quantize.max_repairs, or check "
           "the calibration config's mean/normal against the model's preprocessing")
    gated = [c for c in attempts if c.record.get("drops")]
    if gated:
        def worst(c: _Candidate) -> tuple[str, float]:
            drops = {k: v for k, v in c.record["drops"].items() if v is not None}
            k = max(drops, key=lambda s: drops[s])
            return k, drops[k]

        best = min(gated, key=lambda c: worst(c)[1])
        name, drop = worst(best)
        return (f"quantize {task}: no candidate passes the accuracy gate (best: {best.kind}, {gate.metric} on {name} "
                f"drops {drop:.2f} points > max_drop {cfg.max_drop}). {fix}.")
    screened = [c for c in attempts if c.record.get("screened")]
    if screened:
        err = min(c.record["output_error"] for c in screened)
        return (f"quantize {task}: no candidate passes the accuracy gate ({gate.metric}: every candidate is broken, "
                f"output error vs fp32 >= {err:.3f} > screen_error {cfg.screen_error}; drop not measured). {fix}.")
    errors = [c.record["error"] for c in attempts if c.record.get("error")]
    return f"quantize {task}: no candidate could be built ({errors[-1] if errors else 'no attempt'}). {fix}."


def _write(run: _Run, chosen: _Candidate, out: Path, method: str, float_layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the chosen model and its sidecar atomically; return the report's summary part."""
    assert chosen.path is not None
    meta = _sidecar_meta(run.float_mnn)
    meta.update(
        precision=chosen.kind,
        quant_method=method if chosen.kind == "int8" else None,
        float_layers=chosen.float_ops if chosen.kind == "int8" else [],
        fixed_input_shape=chosen.fixed_shape,
    )
    if chosen.fixed_shape is not None and run.task == "rec":  # the runner must then feed exactly N x 3 x H x W
        n, _, _, w = chosen.fixed_shape
        meta.setdefault("config", {}).setdefault("rec", {}).update(batch_size=n, min_width=w, max_width=w)
    with atomic_path(out) as tmp:
        shutil.copyfile(chosen.path, tmp)
    write_json(sidecar_path(out), meta)
    metrics = {k: v for k, v in chosen.record["metrics"].items()}
    return {
        "task": run.task,
        "precision": chosen.kind,
        "method": meta["quant_method"],
        "metric": run.gate.metric,
        "max_drop": run.cfg.max_drop,
        "limit": run.gate.limit,
        "gate_sets": {k: str(v) for k, v in run.gate.sets.items()},
        "fp32": dict(run.gate.fp32),
        "final": metrics,
        "drop": run.gate.drops(metrics),
        "size_mb": _size_mb(out),
        "fp32_size_mb": _size_mb(run.float_mnn),
        "float_layers": [{k: v for k, v in layer.items()} for layer in float_layers],
        "fixed_input_shape": chosen.fixed_shape,
    }


def quantize_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The metrics file: flat keys first (``shipped_<set>_<metric>`` is the chosen model's number, of
    the ``precision`` it has; ``float_layers`` counts the ops it keeps float), then the attempts and repairs."""
    metric = report["metric"]
    flat: dict[str, Any] = {
        "precision": report["precision"],
        "method": report["method"],
        "size_mb": report["size_mb"],
        "fp32_size_mb": report["fp32_size_mb"],
        "float_layers": sum(len(layer["ops"]) for layer in report["float_layers"]),
        "fixed_input_shape": report["fixed_input_shape"],
    }
    for name in report["fp32"]:
        flat[f"fp32_{name}_{metric}"] = report["fp32"][name]
        flat[f"shipped_{name}_{metric}"] = report["final"].get(name)
        flat[f"drop_{name}"] = report["drop"].get(name)
    flat["max_drop"] = report["max_drop"]
    # no wall times: the metrics file stays identical when the same inputs are quantized again
    flat["attempts"] = [{k: v for k, v in a.items() if k != "seconds"} for a in report["attempts"]]
    flat["repair"] = report["repair"]  # every group a repair kept float (ops counted), also when INT8 lost
    return flat


__all__ = [
    "PRECISIONS", "Gate", "QuantizeError", "fixed_shape_onnx", "gate_sets", "group_key", "group_sensitivity",
    "layer_groups", "output_error", "quantize_metrics", "quantize_task", "runs_at_other_shapes", "sensitivity_inputs",
]
