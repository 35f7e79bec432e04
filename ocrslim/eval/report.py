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

    from ocrslim.core.fsutil import atomic_path
    from ocrslim.data.datasets import load_det_dataset, load_rec_dataset, read_sample_image

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


def headline(entry: dict[str, Any], pages: str = "sroie_dev") -> dict[str, Any]:
    """One reader's headline numbers from its ``metrics/bench.json`` entry (:mod:`ocrslim.eval.pages`): set
    ``pages`` (else its first set) at its largest thread count —
    ``{"size_mb", "p50_ms", "p90_ms", "pages_per_s", "peak_rss_mb", "set", "threads"}`` (what was measured)."""
    sets = [k for k, v in entry.items() if isinstance(v, dict)]
    if not sets:
        return {k: v for k, v in entry.items() if k == "size_mb"}
    key = pages if pages in sets else sets[0]
    rows = {int(k[1:]): v for k, v in entry[key].items() if k[:1] == "t" and k[1:].isdigit() and isinstance(v, dict)}
    out: dict[str, Any] = {"set": key}
    if "size_mb" in entry:
        out["size_mb"] = entry["size_mb"]
    if rows:
        threads = max(rows)
        out["threads"] = threads
        out.update({k: rows[threads][k] for k in ("p50_ms", "p90_ms", "pages_per_s", "peak_rss_mb")
                    if k in rows[threads]})
    return out


# Evaluated variants (metrics/eval_<name>.json) and the bench rows that give their size/speed.
VARIANTS: tuple[tuple[str, str, str], ...] = (
    # (eval name, bench name, label in the table)
    ("teacher", "teacher_onnx", "teacher, ONNX Runtime FP32"),
    ("teacher", "teacher_mnn", "teacher, MNN FP32"),
    ("pruned", "", "pruned, no KD (ONNX Runtime)"),
    ("student", "student_mnn", "student, MNN FP32"),
    ("bundle", "bundle", "bundle (shipped)"),
)
# summary.json variant → (eval name, bench name): latency and size of the teacher are its MNN FP32 build,
# the runtime the bundle uses, so ratios compare models, not runtimes.
SUMMARY = {"teacher": ("teacher", "teacher_mnn"), "pruned": ("pruned", ""), "student": ("student", "student_mnn"),
           "bundle": ("bundle", "bundle")}


def _read(path: str | Path | None) -> dict[str, Any]:
    if path is None or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _params_m(prune: dict[str, dict[str, Any]], key: str) -> float | None:
    vals = [prune.get(t, {}).get(key) for t in ("det", "rec")]
    return None if any(v is None for v in vals) else round(sum(vals) / 1e6, 3)


def _headline_set(ev: dict[str, Any], section: str, preferred: str) -> str:
    """The set whose ``section`` numbers are the headline: ``preferred`` (a real dev set) when evaluated,
    else the first other set that has the section (e.g. a user's own set, or the tiny profile's)."""
    names = [n for n, r in ev.items() if isinstance(r, dict) and section in r]
    if preferred in names:
        return preferred
    real = [n for n in names if not n.startswith("synth_")]
    return (real or names or [preferred])[0]


def variant_row(ev: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    """Flat numbers of one variant: size/latency/memory from its bench entry (per page, end to end, on SROIE at
    the largest thread count: :func:`headline`), accuracy from its eval
    (``det_hmean``/``e2e_f1`` on SROIE, ``rec_acc`` on ICDAR 2015 words, or on the sets evaluated instead)."""
    page = headline(bench) if bench else {}
    row = {
        "size_mb": page.get("size_mb"), "latency_ms": page.get("p50_ms"), "latency_p90_ms": page.get("p90_ms"),
        "peak_rss_mb": page.get("peak_rss_mb"),
        "det_hmean": _get(ev, _headline_set(ev, "det", "sroie_dev"), "det", "hmean"),
        "e2e_f1": _get(ev, _headline_set(ev, "e2e", "sroie_dev"), "e2e", "f1"),
        "rec_acc": _get(ev, _headline_set(ev, "rec", "ic15_words_dev"), "rec", "accuracy_ci_alnum"),
        "sroie_rec_acc": _get(ev, "sroie_dev", "rec", "accuracy_ci_alnum"),
        "synth_det_hmean": _get(ev, "synth_test", "det", "hmean"),
        "synth_rec_1ned": _get(ev, "synth_test", "rec", "one_minus_ned"),
        "synth_1ned_cjk": _get(ev, "synth_test", "rec", "one_minus_ned_cjk"),  # its lines with CJK characters
    }
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}


def summary_metrics(evals: dict[str, str | Path], bench_file: str | Path, prune_files: dict[str, str | Path],
                    quant_files: dict[str, str | Path] | None = None) -> dict[str, dict[str, Any]]:
    """``metrics/summary.json``: ``{teacher|pruned|student|bundle: {size_mb, params_m, latency_ms, ...}}``.

    Keys are flat and stable so ``dvc metrics diff`` / ``dvc exp show`` and ``ocrslim select`` read them;
    a number that was not measured is absent, never 0.
    """
    evs = {n: _read(p) for n, p in evals.items() if Path(p).is_file()}
    quant = {t: _read(p) for t, p in (quant_files or {}).items()}
    return _summary(evs, _read(bench_file), {t: _read(p) for t, p in prune_files.items()}, quant)


def _summary(evs: dict[str, dict[str, Any]], bench: dict[str, Any], prune: dict[str, dict[str, Any]],
             quant: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`summary_metrics` of already-read metrics files."""
    out: dict[str, dict[str, Any]] = {}
    for name, (ev_name, bench_name) in SUMMARY.items():
        if ev_name not in evs:
            continue
        row = variant_row(evs[ev_name], bench.get(bench_name, {}) if bench_name else {})
        row["params_m"] = _params_m(prune, "params_before" if name == "teacher" else "params_after")
        if name == "bundle":
            for t in ("det", "rec"):
                if quant.get(t, {}).get("precision"):
                    row[f"{t}_precision"] = quant[t]["precision"]
        out[name] = {k: v for k, v in row.items() if v is not None}
    return out


def _pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats (x lower-or-equal and y higher-or-equal, one strictly)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2 in points):
            front.append(i)
    return front


def tradeoff_plot(rows: list[dict[str, Any]], key: str, xlabel: str, out: str | Path, ykey: str = "e2e_f1",
                  ylabel: str = "SROIE end-to-end F1", hlines: dict[str, float] | None = None,
                  highlight: str | None = None) -> Path:
    """Scatter of ``rows`` (each with ``name``, ``key``, ``ykey``), Pareto front drawn and labelled;
    optional labelled horizontal lines (teacher, budget) and one point circled (``highlight``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ocrslim.core.fsutil import atomic_path

    pts = [r for r in rows if r.get(key) is not None and r.get(ykey) is not None]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    front = _pareto([(r[key], r[ykey]) for r in pts])
    for i, r in enumerate(pts):
        on = i in front
        ax.scatter(r[key], r[ykey], s=60 if on else 35, c="tab:red" if on else "tab:blue", zorder=3)
        ax.annotate(r["name"], (r[key], r[ykey]), textcoords="offset points", xytext=(6, 4 + 10 * (i % 3)),
                    fontsize=8)
    for r in pts:
        if r["name"] == highlight:
            ax.scatter(r[key], r[ykey], s=220, facecolors="none", edgecolors="black", lw=1.5, zorder=4,
                       label=f"picked: {highlight}")
    for (label, y), style in zip((hlines or {}).items(), (":", "-.", "--")):
        ax.axhline(y, ls=style, c="gray", lw=1, label=label)
    if len(front) > 1:
        fp = sorted((pts[i][key], pts[i][ykey]) for i in front)
        ax.plot([p[0] for p in fp], [p[1] for p in fp], "--", c="tab:red", lw=1, label="Pareto front", zorder=2)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(left=0)  # sizes and latencies compare as ratios: start the axis at zero
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out)


def summary_report(evals: dict[str, str | Path], bench_file: str | Path, prune_files: dict[str, str | Path],
                   out_dir: str | Path, distill_files: dict[str, str | Path] | None = None,
                   quant_files: dict[str, str | Path] | None = None,
                   summary_json: str | Path | None = None) -> Path:
    """Write ``summary.md``, ``size_vs_accuracy.png``, ``latency_vs_accuracy.png`` (and ``summary_json``).

    Args:
        evals: ``{teacher|pruned|student|bundle: metrics/eval_<name>.json}`` (missing ones are skipped).
        bench_file: the bench stage's ``{reader: {size_mb, <set>: {..., t<threads>: {p50_ms, p90_ms, ...}}}}``.
        prune_files, distill_files, quant_files: ``{task: metrics json}`` of those stages.
        out_dir: directory of the Markdown report and plots.
        summary_json: where to write :func:`summary_metrics` (``metrics/summary.json`` in the DAG).
    """
    from ocrslim.core.fsutil import atomic_path, write_json

    bench = _read(bench_file)
    prune = {t: _read(p) for t, p in prune_files.items()}
    distill = {t: _read(p) for t, p in (distill_files or {}).items()}
    quant = {t: _read(p) for t, p in (quant_files or {}).items()}
    evs = {n: _read(p) for n, p in evals.items() if Path(p).is_file()}
    summary = _summary(evs, bench, prune, quant)

    def f(v: Any, digits: int = 3) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    rows = []
    for ev_name, bench_name, label in VARIANTS:
        if ev_name not in evs:
            continue
        b = bench.get(bench_name, {}) if bench_name else {}
        if bench_name and not b:
            continue
        row = variant_row(evs[ev_name], b)
        row["name"] = label
        row["params_m"] = summary.get(ev_name, {}).get("params_m")
        rows.append(row)

    lines = [
        "# ocrslim summary",
        "",
        "Written by the `report` stage of `dvc repro` from `metrics/*.json` (numbers also in `metrics/summary.json`).",
        "",
        "- **size**: det + rec model files. **latency**: one page end to end (decode → det → crops → rec → text),",
        "  median and p90 over the SROIE dev pages on this host's CPU at the bench stage's largest thread count",
        "  (`metrics/bench.json` has every set and thread count). **peak memory**: peak RSS of a fresh process",
        "  reading those pages. Host x86 figures: phones (ARM, int8 dot products) behave differently.",
        "- **accuracy** on the real dev sets: SROIE detection hmean and end-to-end F1, word accuracy",
        "  (case-insensitive alphanumeric) on ICDAR 2015 words; on the synthetic Chinese/English test split,",
        "  detection hmean and 1−NED. The teacher's three runtimes share one evaluation (ONNX Runtime); the",
        "  export/convert parity gates bound their differences.",
        "",
        "| variant | params (M) | size (MB) | latency p50 / p90 (ms) | peak memory (MB) | SROIE det hmean | "
        "SROIE e2e F1 | SROIE rec acc | IC15 rec acc | synth det hmean | synth 1−NED |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lat = "–" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} / {r['latency_p90_ms']:.1f}"
        lines.append(
            f"| {r['name']} | {f(r['params_m'], 2)} | {f(r['size_mb'], 2)} | {lat} | {f(r['peak_rss_mb'], 0)} | "
            f"{f(r['det_hmean'])} | {f(r['e2e_f1'])} | {f(r.get('sroie_rec_acc'))} | {f(r['rec_acc'])} | "
            f"{f(r['synth_det_hmean'])} | "
            f"{f(r['synth_rec_1ned'])} |"
        )
    t, b = summary.get("teacher", {}), summary.get("bundle", {})
    if t and b:
        lines += ["", "**Bundle vs teacher (MNN FP32):** " + ", ".join(
            s for s in (
                f"size ×{t['size_mb'] / b['size_mb']:.1f} smaller" if t.get("size_mb") and b.get("size_mb") else "",
                f"latency ×{t['latency_ms'] / b['latency_ms']:.2f}" if t.get("latency_ms") and b.get("latency_ms")
                else "",
                f"params ×{t['params_m'] / b['params_m']:.2f} fewer" if t.get("params_m") and b.get("params_m")
                else "",
            ) if s)]
        deltas = [f"{label} {100 * (b[k] - t[k]):+.1f}" for k, label in (
            ("det_hmean", "SROIE det hmean"), ("e2e_f1", "SROIE e2e F1"), ("sroie_rec_acc", "SROIE rec acc"),
            ("rec_acc", "IC15 rec acc"), ("synth_rec_1ned", "synth 1−NED"))
            if isinstance(t.get(k), (int, float)) and isinstance(b.get(k), (int, float))]
        if deltas:
            lines[-1] += ", " + ", ".join(deltas) + " points"
        lines[-1] += "."
    if prune:
        lines += ["", "## Compression steps", "",
                  "| task | prune ratio | params | MACs | ONNX MB | distill steps | CPU min | val (synthetic) |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for task, m in prune.items():
            d = distill.get(task, {})
            val = ", ".join(f"{k[4:]} {v:.3f}" for k, v in d.items()
                            if k in ("val_hmean", "val_accuracy", "val_one_minus_ned") and isinstance(v, float))
            lines.append(
                f"| {task} | {m.get('ratio')} | {m['params_before'] / 1e6:.2f} M → {m['params_after'] / 1e6:.2f} M | "
                f"{m['macs_before'] / 1e6:.0f} M → {m['macs_after'] / 1e6:.0f} M | "
                f"{m['onnx_bytes_before'] / 2**20:.2f} → {m['onnx_bytes_after'] / 2**20:.2f} | "
                f"{d.get('steps', '–')} | {d.get('cpu_minutes', '–')} | {val or '–'} |"
            )
    if quant:
        lines += ["", "## Quantization (MNN, gated against the student's MNN FP32 build)", "",
                  "| task | precision | size (MB) | float layers | gate |", "|---|---|---:|---:|---|"]
        for task, q in quant.items():
            drops = ", ".join(f"{k[5:]} {v:+.2f}" for k, v in q.items() if k.startswith("drop_")
                              and isinstance(v, (int, float)))
            lines.append(f"| {task} | {q.get('precision', '–')} | {f(q.get('size_mb'), 2)} | "
                         f"{q.get('float_layers', '–')} | drop (points) {drops or '–'} |")
    lines += ["", "![size vs accuracy](size_vs_accuracy.png) ![latency vs accuracy](latency_vs_accuracy.png)", ""]

    out_dir = Path(out_dir)
    plot_rows = [r for r in rows if "PyTorch" not in r["name"] and "ONNX Runtime" not in r["name"]]
    tradeoff_plot(plot_rows, "size_mb", "model size, det + rec (MB)", out_dir / "size_vs_accuracy.png")
    tradeoff_plot(plot_rows, "latency_ms", "latency per page, p50 (ms, host CPU)", out_dir / "latency_vs_accuracy.png")
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    if summary_json is not None:
        write_json(summary_json, summary)
    return out_dir / "summary.md"
