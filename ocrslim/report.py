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
    for name, set_name, res in sorted(rows, key=lambda r: r[1]):  # by set; variants in the order given
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


def sample_sheet(det_dir: str | Path, rec_dir: str | Path, out: str | Path, pages: int = 3, lines: int = 12,
                 font_path: str | None = None) -> Path:
    """A PNG contact sheet of a det/rec data set: pages with their GT quads drawn, crops with labels.

    Args:
        det_dir: detection set (any layout ``load_det_dataset`` reads).
        rec_dir: recognition set (any layout ``load_rec_dataset`` reads).
        out: PNG path to write.
        pages: how many pages (the first N).
        lines: how many crops (the first N).
        font_path: a font able to draw the labels (e.g. a CJK font); Pillow's default otherwise.
    """
    import cv2
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from ocrslim.data.datasets import load_det_dataset, load_rec_dataset, read_sample_image
    from ocrslim.fsutil import atomic_path

    height = 420
    tiles = []
    for s in load_det_dataset(det_dir, limit=pages):
        img = read_sample_image(s)
        if img is None:
            continue
        for poly, ignore in zip(s.polys, s.ignore):
            color = (128, 128, 128) if ignore else (0, 0, 255)
            cv2.polylines(img, [np.round(poly).astype(np.int32).reshape(-1, 1, 2)], True, color, 2)
        scale = height / img.shape[0]
        tiles.append(cv2.resize(img, (max(1, int(img.shape[1] * scale)), height)))
    top = np.concatenate(tiles, axis=1) if tiles else np.full((height, 600, 3), 255, np.uint8)
    width = top.shape[1]
    font = ImageFont.truetype(font_path, 18) if font_path else ImageFont.load_default(size=18)
    rows = []
    for s in load_rec_dataset(rec_dir, limit=lines):
        img = read_sample_image(s)
        if img is None:
            continue
        crop = cv2.resize(img, (max(1, int(img.shape[1] * 40 / img.shape[0])), 40))[:, : width // 2]
        row = Image.new("RGB", (width, 48), "white")
        row.paste(Image.fromarray(crop[:, :, ::-1]), (4, 4))
        ImageDraw.Draw(row).text((width // 2 + 12, 12), s.text, font=font, fill=(0, 0, 160))
        rows.append(np.asarray(row)[:, :, ::-1])
    sheet = np.concatenate([top, *rows], axis=0) if rows else top
    out = Path(out)
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp.with_suffix(".png")), sheet):
            raise OSError(f"{out}: could not write PNG")
        tmp.with_suffix(".png").rename(tmp)
    return out
