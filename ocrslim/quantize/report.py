"""The quantize stage's metrics file: the report of ``quantize_task`` flattened for ``dvc metrics``."""

from __future__ import annotations

from typing import Any

__all__ = ["quantize_metrics"]


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
