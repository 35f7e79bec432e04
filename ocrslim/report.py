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


def _get(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def summary_report(eval_files: dict[str, str | Path], bench_file: str | Path, prune_files: dict[str, str | Path],
                   out_dir: str | Path) -> Path:
    """Write ``summary.md`` (the variant table, pruning table) and PNG plots into ``out_dir``.

    Args:
        eval_files: ``{variant: metrics json of the evaluate stage}``.
        bench_file: metrics json of the bench stage (``{variant: {det|rec: {size_mb, p50_ms, ...}}}``).
        prune_files: ``{task: metrics/prune_<task>.json}``.
        out_dir: where ``summary.md``, ``size_vs_accuracy.png`` and ``latency_vs_accuracy.png`` go.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ocrslim.fsutil import atomic_path

    bench = json.loads(Path(bench_file).read_text(encoding="utf-8"))
    rows = []
    for name, path in eval_files.items():
        ev = json.loads(Path(path).read_text(encoding="utf-8"))
        b = bench.get(name, {})
        size = sum(_get(b, t, "size_mb") or 0.0 for t in ("det", "rec"))
        lat = sum(_get(b, t, "p50_ms") or 0.0 for t in ("det", "rec"))
        rss = max(_get(b, t, "peak_rss_mb") or 0.0 for t in ("det", "rec"))
        rows.append({
            "name": name, "size": size, "lat": lat, "rss": rss,
            "f1": _get(ev, "sroie_dev", "e2e", "f1"), "hmean": _get(ev, "sroie_dev", "det", "hmean"),
            "ic15": _get(ev, "ic15_words_dev", "rec", "accuracy_ci_alnum"),
            "sroie_rec": _get(ev, "sroie_dev", "rec", "accuracy_ci_alnum"),
            "synth": _get(ev, "synth_test", "rec", "one_minus_ned"),
        })

    def f(v: float | None, digits: int = 3) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    lines = [
        "# ocrslim summary",
        "",
        "Written by the `report` stage of `dvc repro` from `metrics/*.json`. Size is det + rec model files;",
        "latency is det (1×3×736×736) + rec (6×3×48×320) median on this host's CPU (`metrics/bench.json`);",
        "peak memory is the larger of the two models' peak RSS in a fresh process. Accuracy on the real dev",
        "sets: SROIE end-to-end F1 and detection hmean, word accuracy (case-insensitive alphanumeric) on",
        "ICDAR 2015 and SROIE lines, and 1−NED on the synthetic Chinese/English test split.",
        "",
        "| variant | size (MB) | latency (ms) | peak memory (MB) | SROIE e2e F1 | SROIE det hmean | "
        "IC15 rec acc | SROIE rec acc | synth 1−NED |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {f(r['size'], 2)} | {f(r['lat'], 1)} | {f(r['rss'], 0)} | {f(r['f1'])} | "
                     f"{f(r['hmean'])} | {f(r['ic15'])} | {f(r['sroie_rec'])} | {f(r['synth'])} |")
    if prune_files:
        lines += ["", "## Structured pruning (before → after, no accuracy recovery yet)", "",
                  "| task | ratio | params | MACs | ONNX MB |", "|---|---:|---:|---:|---:|"]
        for task, path in prune_files.items():
            m = json.loads(Path(path).read_text(encoding="utf-8"))
            lines.append(
                f"| {task} | {m['ratio']} | {m['params_before'] / 1e6:.2f} M → {m['params_after'] / 1e6:.2f} M | "
                f"{m['macs_before'] / 1e6:.0f} M → {m['macs_after'] / 1e6:.0f} M | "
                f"{m['onnx_bytes_before'] / 2**20:.2f} → {m['onnx_bytes_after'] / 2**20:.2f} |"
            )
    lines += ["", "![size vs accuracy](size_vs_accuracy.png) ![latency vs accuracy](latency_vs_accuracy.png)", ""]

    out_dir = Path(out_dir)
    for key, label, fname in (("size", "model size, det + rec (MB)", "size_vs_accuracy.png"),
                              ("lat", "latency, det + rec p50 (ms, host CPU)", "latency_vs_accuracy.png")):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for i, r in enumerate(rows):
            if r["f1"] is not None:
                ax.scatter(r[key], r["f1"], s=40)
                # stagger labels: variants of one model often sit on the same point
                ax.annotate(r["name"], (r[key], r["f1"]), textcoords="offset points", xytext=(6, 6 + 11 * i),
                            fontsize=8, arrowprops={"arrowstyle": "-", "lw": 0.5})
        ax.set_xlim(left=0)  # sizes and latencies compare as ratios: start the axis at zero
        ax.set_xlabel(label)
        ax.set_ylabel("SROIE end-to-end F1")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(out_dir / fname) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return out_dir / "summary.md"
