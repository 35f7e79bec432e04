"""Markdown tables from evaluation metrics files (``metrics/*.json`` and ``ocrslim eval --json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (section, key, column title) in table order
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("det", "precision", "det P"),
    ("det", "recall", "det R"),
    ("det", "hmean", "det hmean"),
    ("e2e", "f1", "e2e F1"),
    ("rec", "accuracy_ci_alnum", "rec acc"),
    ("rec", "accuracy", "rec exact"),
    ("rec", "one_minus_ned", "1−NED"),
    ("rec", "cer", "CER"),
)


def load_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{set: {section: {...}}}`` from a metrics file (flat single-set files are keyed ``-``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if any(k in data for k in ("det", "rec", "e2e")):
        return {"-": data}
    return data


def eval_table(files: Sequence[str | Path], names: Sequence[str] | None = None, digits: int = 3) -> str:
    """One row per (variant, set), one column per metric present; fractions shown as 0..1."""
    names = list(names) if names else [Path(f).stem for f in files]
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for name, f in zip(names, files):
        for set_name, res in load_results(f).items():
            rows.append((name, set_name, res))
    cols = [c for c in COLUMNS if any(c[0] in r and r[c[0]].get(c[1]) is not None for _, _, r in rows)]
    head = "| variant | set | " + " | ".join(c[2] for c in cols) + " |"
    sep = "|---|---|" + "---:|" * len(cols)
    lines = [head, sep]
    for name, set_name, res in sorted(rows, key=lambda r: (r[1], r[0])):
        cells = []
        for section, key, _ in cols:
            v = res.get(section, {}).get(key)
            cells.append("" if v is None else f"{v:.{digits}f}")
        lines.append(f"| {name} | {set_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def max_spread(files: Sequence[str | Path]) -> float:
    """Largest difference (in points, 0..100) between variants on any metric of any set."""
    spread = 0.0
    results = [load_results(f) for f in files]
    for set_name in set().union(*results):
        for section, key, _ in COLUMNS:
            vals = [r[set_name][section][key] for r in results
                    if set_name in r and section in r[set_name] and r[set_name][section].get(key) is not None]
            if len(vals) > 1:
                spread = max(spread, 100 * (max(vals) - min(vals)))
    return spread
