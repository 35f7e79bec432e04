"""The accuracy gate of one task: the gate sets, the metric, and the MNN FP32 reference it is measured against."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from ocrslim.core.config import QuantizeConfig
from ocrslim.core.errors import DataError
from ocrslim.infer.pipeline import Model

__all__ = ["Gate", "Log", "gate_sets", "print_log"]

Log = Callable[[str], None]


def print_log(msg: str) -> None:
    """The default log: one line per attempt on stdout (the stage log)."""
    print(msg, flush=True)


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
        from ocrslim.eval.evaluate import evaluate_det, evaluate_rec
        from ocrslim.infer.pipeline import OCR

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


def gate_sets(task: str, cfg: QuantizeConfig, log: Log = print_log) -> dict[str, Path]:
    """The existing gate sets of ``task`` by short name; a missing one is reported in one line and skipped.

    Raises:
        DataError: none of the configured sets exists.
    """
    from ocrslim.eval.evaluate import set_name

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
