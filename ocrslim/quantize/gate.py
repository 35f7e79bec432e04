"""The accuracy gate of one task: the gate sets, the metrics, and the paired statistics against MNN FP32.

A candidate and the task's MNN FP32 model read the same gate samples through the evaluate stage's own scorer
(:func:`ocrslim.eval.evaluate.score_det` / ``score_rec``, the same runner class, preprocessing and
post-processing), so the gate measures what the evaluate stage will measure. For every gate set and metric the
drop ``100 · (fp32 − candidate)`` gets a paired bootstrap interval (:func:`ocrslim.eval.stats.paired_drop`); the
candidate passes when every interval's upper bound is within ``quantize.max_drop`` points. Metrics:

* det: ``hmean`` and ``e2e_f1`` (the end-to-end F1 with the task's FP32 recogniser reading the boxes);
* rec: ``accuracy_ci_alnum``, ``one_minus_ned`` and ``one_minus_ned_cjk`` (1−NED of the crops whose label
  has Chinese characters; sets without any skip it).

The gate sets are the training side's validation splits (the split stage's ``val`` parts and the synthetic val
split), never the dev sets the evaluate stage reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ocrslim.core.config import QuantizeConfig
from ocrslim.core.errors import DataError
from ocrslim.infer.pipeline import OCR, Model

__all__ = ["Gate", "GateResult", "Log", "gate_sets", "print_log", "worst_bound"]

Log = Callable[[str], None]


def print_log(msg: str) -> None:
    """The default log: one line per attempt on stdout (the stage log)."""
    print(msg, flush=True)


def worst_bound(drops: dict[str, dict[str, dict[str, Any]]]) -> tuple[str, float] | None:
    """The ``set/metric`` of a gate's drops (``GateResult.drops``) with the largest upper bound, and that bound."""
    bounds = [(f"{s}/{m}", d["hi"]) for s, ms in drops.items() for m, d in ms.items() if d.get("hi") is not None]
    return max(bounds, key=lambda t: t[1]) if bounds else None


def _fails(d: dict[str, Any], max_drop: float) -> bool:
    """A metric fails when its drop's upper bound exceeds ``max_drop``, or when it has a drop but no interval
    (no bootstrap resample defined it: nothing shows the drop is small). A metric undefined on the set (no
    drop, e.g. the CJK 1−NED of a set without Chinese) does not count."""
    if d["drop"] is None:
        return False
    return d["hi"] is None or d["hi"] > max_drop


@dataclasses.dataclass
class GateResult:
    """One model's gate: metric values per set, the paired drops against FP32 (with intervals), the verdict.

    ``values[set][metric]`` are fractions; ``drops[set][metric]`` is ``{"drop", "lo", "hi", "n"}`` in points.
    """

    values: dict[str, dict[str, float | None]]
    drops: dict[str, dict[str, dict[str, Any]]]
    passed: bool
    failed: list[str] = dataclasses.field(default_factory=list)  # "set/metric" whose upper bound > max_drop


@dataclasses.dataclass
class Gate:
    """The accuracy gate of one task: sets, metrics, and the MNN FP32 model's per-sample results."""

    task: str
    sets: dict[str, Path]  # set name -> path
    limit: int | None
    max_drop: float  # points, against the interval's upper bound
    base: Model  # the FP32 model: its configs and dictionary serve every candidate
    metrics: tuple[str, ...]
    rec: Model | None = None  # det: the FP32 recogniser that reads the boxes (e2e F1)
    n_boot: int = 2000
    level: float = 0.95
    fp32_rows: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    fp32: dict[str, dict[str, float | None]] = dataclasses.field(default_factory=dict)

    @classmethod
    def build(cls, task: str, base: Model, cfg: QuantizeConfig, sets: dict[str, Path], rec: Model | None = None
              ) -> Gate:
        """The gate of ``task`` with the FP32 reference measured."""
        metrics = cfg.gate_metrics(task)
        if task == "det" and rec is None:
            metrics = tuple(m for m in metrics if m != "e2e_f1")
        gate = cls(task, sets, cfg.limit(task), cfg.max_drop, base, metrics, rec, cfg.n_boot, cfg.confidence)
        gate.fp32_rows = {name: gate.rows(base, name) for name in sets}
        for name, rows in gate.fp32_rows.items():
            if not rows["ids"]:
                raise DataError(f"{sets[name]}: the {task} gate set {name!r} has no readable sample (quantize.gate_"
                                f"{task}). Point it at a set with images, or remove it from the list.")
        gate.fp32 = {name: gate._values(rows) for name, rows in gate.fp32_rows.items()}
        return gate

    def rows(self, model: Model, name: str) -> dict[str, Any]:
        """Per-sample rows of ``model`` on gate set ``name`` (the evaluate stage's scorer)."""
        from ocrslim.eval.evaluate import evaluate_det, evaluate_rec

        path = self.sets[name]
        if self.task == "det":
            res = evaluate_det(OCR(model, self.rec), path, self.limit, progress=False, rows=True)
            return res["rows"]["det"]
        return evaluate_rec(OCR(None, model), path, self.limit, progress=False, rows=True)["rows"]["rec"]

    def _metrics_of(self, rows: dict[str, Any]) -> tuple[str, ...]:
        from ocrslim.eval.stats import metric_value

        return tuple(m for m in self.metrics if not m.endswith("_cjk") or metric_value(rows, m) is not None)

    def _values(self, rows: dict[str, Any]) -> dict[str, float | None]:
        from ocrslim.eval.stats import metric_value

        return {m: metric_value(rows, m) for m in self._metrics_of(rows)}

    def evaluate(self, model: Model, stop_on_fail: bool = True) -> GateResult:
        """Every gate set (in order; with ``stop_on_fail`` the rest is skipped after the first failing set)."""
        from ocrslim.eval.stats import paired_drop

        values: dict[str, dict[str, float | None]] = {}
        drops: dict[str, dict[str, dict[str, Any]]] = {}
        failed: list[str] = []
        for name in self.sets:
            rows = self.rows(model, name)
            ref = self.fp32_rows[name]
            drops[name] = {m: paired_drop(ref, rows, self.task, m, n_boot=self.n_boot, level=self.level)
                           for m in self._metrics_of(ref)}
            values[name] = {m: d["cand"] for m, d in drops[name].items()}
            failed += [f"{name}/{m}" for m, d in drops[name].items() if _fails(d, self.max_drop)]
            if failed and stop_on_fail:
                break
        return GateResult(values, drops, not failed, failed)

    def reference(self) -> GateResult:
        """The FP32 model's own gate (every drop 0): the ``fp32`` fallback's record."""
        zero = {"drop": 0.0, "lo": 0.0, "hi": 0.0}
        return GateResult({k: dict(v) for k, v in self.fp32.items()},
                          {s: {m: {**zero, "ref": v, "cand": v, "n": len(self.fp32_rows[s]["ids"])}
                               for m, v in ms.items()} for s, ms in self.fp32.items()}, True)


def gate_sets(task: str, cfg: QuantizeConfig, log: Log = print_log) -> dict[str, Path]:
    """The existing gate sets of ``task`` by short name; a missing one is reported in one line and skipped.

    Raises:
        DataError: none of the configured sets exists.
    """
    from ocrslim.data.datasets import resolve_data_path
    from ocrslim.eval.evaluate import set_name

    sets: dict[str, Path] = {}
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
            f"quantize.gate_{task}: none of {', '.join(cfg.gate(task))} exists. Run dvc repro split data, or point "
            f"quantize.gate_{task} at a {task} set."
        )
    return sets
