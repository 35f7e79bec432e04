"""The quantize stage's metrics file: the report of ``quantize_task`` flattened for ``dvc metrics``."""

from __future__ import annotations

from typing import Any

__all__ = ["quantize_metrics"]


def quantize_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The metrics file: flat keys first (``shipped_<set>_<metric>`` is the chosen model's number, of the
    ``precision`` it has; ``drop_<set>_<metric>`` and ``drop_hi_<set>_<metric>`` its drop against MNN FP32 in
    points and the upper bound of its interval; ``float_layers`` counts the ops it keeps float), then the
    attempts and repairs."""
    flat: dict[str, Any] = {
        "precision": report["precision"],
        "method": report["method"],
        "target": report["target"],
        "size_mb": report["size_mb"],
        "fp32_size_mb": report["fp32_size_mb"],
        "float_layers": sum(len(layer["ops"]) for layer in report["float_layers"]),
        "fixed_input_shape": report["fixed_input_shape"],
        "sha256": report["sha256"],  # the bytes the gate measured are the bytes shipped
    }
    for name, values in report["fp32"].items():
        for metric, value in values.items():
            flat[f"fp32_{name}_{metric}"] = value
            d = (report["drop"].get(name) or {}).get(metric) or {}
            flat[f"shipped_{name}_{metric}"] = d.get("cand")
            flat[f"drop_{name}_{metric}"] = d.get("drop")
            flat[f"drop_hi_{name}_{metric}"] = d.get("hi")
    flat["max_drop"] = report["max_drop"]
    flat["confidence"] = report["confidence"]
    if report.get("speed"):
        flat.update({f"speed_{k}": v for k, v in report["speed"].items()})
    # no wall times: the metrics file stays identical when the same inputs are quantized again
    flat["attempts"] = [{k: v for k, v in a.items() if k not in ("seconds", "speed")} for a in report["attempts"]]
    flat["repair"] = report["repair"]  # every group a repair kept float (ops counted), also when INT8 lost
    return flat
