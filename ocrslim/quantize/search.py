"""The candidate search of ``quantize_task``: full INT8, repairs, fallbacks, each gated; the chosen one written."""

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

from ocrslim.core.artifacts import read_sidecar, sidecar_path
from ocrslim.core.config import QuantizeConfig
from ocrslim.core.errors import ArtifactError, OcrslimError, ToolError
from ocrslim.core.fsutil import atomic_path, sha256_file, write_json
from ocrslim.export.mnn import convert_onnx_to_mnn, mnn_graph, quantize_mnn
from ocrslim.infer.pipeline import Model, open_model
from ocrslim.quantize.gate import Gate, Log, gate_sets, print_log, worst_bound
from ocrslim.quantize.graph import (
    NOT_QUANTIZED,
    group_sensitivity,
    output_error,
    runs_at_other_shapes,
    sensitivity_inputs,
)

__all__ = ["PRECISIONS", "QuantizeError", "fixed_shape_onnx", "quantize_task"]

PRECISIONS = ("int8", "int8-weights", "fp16", "fp32")
_MB_FLOOR = 0.05  # repair ranks groups by sensitivity / (FP32 MB of the group + this): cheap groups first


class QuantizeError(OcrslimError):
    """No candidate passes the accuracy gate and no fallback is left."""


class _Unusable(Exception):
    """A built candidate cannot be deployed as is (recorded as the attempt's error, next option tried)."""


def fixed_shape_onnx(src: Path, dst: Path, dims: Sequence[int]) -> None:
    """Copy an ONNX model with its input fixed to ``dims`` (``onnx.tools.update_model_dims``); the
    output dims become symbolic and inferred shapes are dropped, so nothing stale remains."""
    import onnx
    from onnx.tools import update_model_dims

    model = onnx.load(str(src))
    inp = model.graph.input[0]
    if len(inp.type.tensor_type.shape.dim) != len(dims):
        raise ArtifactError(f"{src}: input has rank {len(inp.type.tensor_type.shape.dim)}, cannot fix it to "
                            f"{list(dims)}.")
    outputs = {o.name: [f"{o.name}_d{i}" for i in range(len(o.type.tensor_type.shape.dim))] for o in model.graph.output}
    model = update_model_dims.update_inputs_outputs_dims(model, {inp.name: [int(v) for v in dims]}, outputs)
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
                 work: Path, log: Log, rec_mnn: Path | None = None) -> None:
        self.task, self.onnx, self.float_mnn, self.qcfg, self.cfg = task, onnx_path, float_mnn, quant_cfg, cfg
        self.work, self.log = work, log
        self.base = open_model(str(float_mnn), task, threads=cfg.threads)
        rec = open_model(str(rec_mnn), "rec", threads=cfg.threads) if task == "det" and rec_mnn else None
        sets = gate_sets(task, cfg, log)
        self.gate = Gate.build(task, self.base, cfg, sets, rec)
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
        parts = [f"{name}/{m} {d['cand']:.4f} (drop {d['drop']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}])"
                 for name, ms in r["drops"].items() for m, d in ms.items() if d.get("drop") is not None]
        speed = ""
        if r.get("speed"):
            speed = f", {r['speed']['ms']:.1f} ms vs fp32 {r['speed']['fp32_ms']:.1f} ms (x{r['speed']['ratio']:.2f})"
        verdict = "pass" if r["passed"] else ("FAIL (slower than fp32)" if r.get("slower") else "FAIL")
        return f"quantize {self.task}: {what}{size}: {', '.join(parts)}{speed}: {verdict}"

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
                result = self.gate.evaluate(model)
                rec.update(metrics=result.values, drops=result.drops, passed=result.passed, failed=result.failed)
                if result.passed and self.cfg.target == "x86":
                    rec["speed"] = self.speed(path, c)
                    rec["slower"] = rec["speed"]["ratio"] > self.cfg.speed_margin
                    rec["passed"] = not rec["slower"]
        except (ToolError, _Unusable) as exc:
            rec["error"] = str(exc)
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        self.log(self._line(c))
        return c

    def speed(self, path: Path, c: _Candidate) -> dict[str, float]:
        """Median latency of ``path`` and of the FP32 student on the sensitivity inputs, calls interleaved."""
        inputs = self._inputs(c)
        cand, ref = _mnn_runner(path, self.cfg.threads), _mnn_runner(self.float_mnn, self.cfg.threads)
        for r in (cand, ref):  # warm-up: each shape planned once
            for x in inputs:
                r(x)
        times: dict[str, list[float]] = {"cand": [], "ref": []}
        for _ in range(self.cfg.speed_runs):
            for key, r in (("ref", ref), ("cand", cand)):
                t0 = time.perf_counter()
                for x in inputs:
                    r(x)
                times[key].append(time.perf_counter() - t0)
        ms, fp32_ms = (1000 * float(np.median(times[k])) for k in ("cand", "ref"))
        return {"ms": round(ms, 2), "fp32_ms": round(fp32_ms, 2), "ratio": round(ms / fp32_ms, 3)}

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

    def qat(self, qat_mnn: Path) -> _Candidate:
        """The ``qat`` stage's INT8 model (scales learnt in training), gated like any other candidate."""
        meta = read_sidecar(qat_mnn)
        float_ops = list(meta.get("float_layers") or [])
        c = _Candidate("int8", None, {"method": "QAT", "float_ops": len(float_ops)}, {}, float_ops=float_ops)
        return self.try_candidate(c, lambda dst: shutil.copyfile(qat_mnn, dst))

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
            ref = self.gate.reference()
            c.record.update(kind="fp32", params={}, size_mb=_size_mb(self.float_mnn), output_error=0.0,
                            metrics=ref.values, drops=ref.drops, passed=True, failed=[],
                            note="the MNN FP32 reference itself", seconds=0.0)
            self.log(self._line(c))
            return c
        kw: dict[str, Any] = {"weight_quant_bits": 8, "hqq": True} if kind == "int8-weights" else {"fp16": True}
        c.params = dict(kw)
        return self.try_candidate(c, lambda dst: convert_onnx_to_mnn(self.onnx, dst, **kw))


def _mnn_runner(path: Path, threads: int) -> Any:
    from ocrslim.infer.runners import MnnRunner

    return MnnRunner(path, threads)


def _float_ops(graph: dict[str, Any], patterns: Sequence[str]) -> list[str]:
    """Op names of ``graph`` matching any glob in ``patterns`` (quantizable ops only)."""
    return [op["name"] for op in graph["ops"] if op["type"] not in NOT_QUANTIZED
            and any(fnmatch.fnmatchcase(op["name"], p) for p in patterns)]


def quantize_task(
    task: str,
    onnx_path: str | Path,
    float_mnn: str | Path,
    calib_config: str | Path,
    out: str | Path,
    cfg: QuantizeConfig | None = None,
    log: Log = print_log,
    *,
    rec_mnn: str | Path | None = None,
    qat_mnn: str | Path | None = None,
) -> dict[str, Any]:
    """Produce the smallest-precision MNN model of ``task`` that passes the accuracy gate.

    Candidates in order: post-training full INT8 (``quantize.method_<task>``, then repairs), the ``qat`` stage's
    INT8 model (``qat_mnn``), then ``quantize.fallbacks``; the first that passes ships.

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
        rec_mnn: det: the FP32 recogniser (``.mnn`` + sidecar) that reads the boxes for the gate's e2e F1.
        qat_mnn: an INT8 model from quantization-aware training (``.mnn`` + sidecar), or None.

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
    float_layers: list[dict[str, Any]] = []  # the post-training rounds' repairs (kept in the report even if INT8 lost)
    shipped_layers = float_layers  # what the shipped INT8 model keeps float
    with tempfile.TemporaryDirectory(prefix=f"ocrslim_quant_{task}.") as tmp:
        run = _Run(task, onnx_path, float_mnn, qcfg, cfg, Path(tmp), log, Path(rec_mnn) if rec_mnn else None)
        log(f"quantize {task}: fp32 {_size_mb(float_mnn)} MB: "
            + ", ".join(f"{k}/{m} {v:.4f}" for k, ms in run.gate.fp32.items() for m, v in ms.items() if v is not None))
        if cfg.full_int8:
            chosen = _full_int8(run, method, attempts, float_layers)
        else:
            chosen = None
            log(f"quantize {task}: post-training full INT8 skipped (quantize.full_int8 false)")
        if chosen is None and qat_mnn is not None and Path(qat_mnn).is_file():
            c = run.qat(Path(qat_mnn))
            attempts.append(c)
            chosen = c if c.record["passed"] else None
            if chosen is not None:
                method = "QAT"
                shipped_layers = [{"group": "kept float by QAT (module paths of the student)", "ops": c.float_ops,
                                   "round": 0, "why": "qat stage: MNN runs these in float (ConvTranspose, large "
                                   "MatMul weights, attention) or qat.keep_float_<task>"}]
        for kind in cfg.fallbacks:
            if chosen is not None:
                break
            c = run.fallback(kind)
            attempts.append(c)
            chosen = c if c.record["passed"] else None
        if chosen is None:
            raise QuantizeError(_failure_message(task, run.gate, attempts, cfg))
        report = _write(run, chosen, out, method, shipped_layers if chosen.kind == "int8" else [])
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
        if c.record["passed"] or c.path is None or c.record.get("slower"):
            break  # (slower than FP32 on an x86 target: keeping layers float cannot make it faster)
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
    """One line: which candidate came closest, on which set and metric it lost how much, and the fix."""
    fix = ("Add fallbacks (quantize.fallbacks: [int8-weights, fp16, fp32]), raise quantize.max_repairs, enable the "
           "qat stage, or check the calibration config's mean/normal against the model's preprocessing")

    def worst(c: _Candidate) -> tuple[str, float]:
        return worst_bound(c.record["drops"]) or ("?", float("inf"))

    gated = [c for c in attempts if c.record.get("drops")]
    if gated:
        best = min(gated, key=lambda c: worst(c)[1])
        name, bound = worst(best)
        slower = " and is slower than fp32 (quantize.target x86)" if best.record.get("slower") else ""
        return (f"quantize {task}: no candidate passes the accuracy gate (best: {best.kind}, {name} drop up to "
                f"{bound:.2f} points at {cfg.confidence:.0%} > max_drop {cfg.max_drop}{slower}). {fix}.")
    screened = [c for c in attempts if c.record.get("screened")]
    if screened:
        err = min(c.record["output_error"] for c in screened)
        return (f"quantize {task}: no candidate passes the accuracy gate (every candidate is broken, output error vs "
                f"fp32 >= {err:.3f} > screen_error {cfg.screen_error}; drop not measured). {fix}.")
    errors = [c.record["error"] for c in attempts if c.record.get("error")]
    return f"quantize {task}: no candidate could be built ({errors[-1] if errors else 'no attempt'}). {fix}."


def _write(run: _Run, chosen: _Candidate, out: Path, method: str, float_layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the chosen model and its sidecar atomically; return the report's summary part."""
    assert chosen.path is not None
    meta = read_sidecar(run.float_mnn)
    meta.update(
        precision=chosen.kind,
        quant_method=method if chosen.kind == "int8" else None,
        float_layers=chosen.float_ops if chosen.kind == "int8" else [],
        fixed_input_shape=chosen.fixed_shape,
        target=run.cfg.target,
    )
    if chosen.fixed_shape is not None and run.task == "rec":  # the runner must then feed exactly N x 3 x H x W
        n, _, _, w = chosen.fixed_shape
        meta.setdefault("config", {}).setdefault("rec", {}).update(batch_size=n, min_width=w, max_width=w)
    with atomic_path(out) as tmp:
        shutil.copyfile(chosen.path, tmp)
    write_json(sidecar_path(out), meta)
    return {
        "task": run.task,
        "precision": chosen.kind,
        "method": meta["quant_method"],
        "target": run.cfg.target,
        "metrics": list(run.gate.metrics),
        "max_drop": run.cfg.max_drop,
        "confidence": run.cfg.confidence,
        "limit": run.gate.limit,
        "gate_sets": {k: str(v) for k, v in run.gate.sets.items()},
        "fp32": run.gate.fp32,
        "final": chosen.record["metrics"],
        "drop": chosen.record["drops"],
        "speed": chosen.record.get("speed"),
        "size_mb": _size_mb(out),
        "fp32_size_mb": _size_mb(run.float_mnn),
        "sha256": sha256_file(out),
        "float_layers": [{k: v for k, v in layer.items()} for layer in float_layers],
        "fixed_input_shape": chosen.fixed_shape,
    }
