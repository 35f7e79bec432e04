"""Synthetic Chinese/English OCR data: detection pages and recognition line crops, written in ocrslim's layouts.

Output (``generate_synthetic``), readable by :func:`ocrslim.data.datasets.load_det_dataset` and
:func:`~ocrslim.data.datasets.load_rec_dataset`::

    <out>/det/<split>/images/<i:06d>.jpg + gt/gt_<i:06d>.txt   (ICDAR 2015: x1,y1,...,x4,y4,text; tl tr br bl)
    <out>/rec/<split>/images/<i:06d>.jpg + labels.tsv          (<file>\\t<text>)
    <out>/manifest.json                                        (counts, seed, fonts + sha256, char coverage)

Sample ``i`` of a split is drawn from its own generator seeded with ``(seed, task, split, i)``, so the bytes
written do not depend on the number of workers or on the order in which they finish. A fraction
``doc_ratio`` of the det pages are printed documents (:func:`render_doc_page`: receipts and forms), the
rest scattered scene lines (:func:`render_det_page`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocrslim.core.config import DataConfig
from ocrslim.core.fsutil import atomic_path, write_json
from ocrslim.data.datasets import icdar_gt_text, rec_labels_text
from ocrslim.data.synthetic.context import SPLITS, SynthContext, is_doc_page, make_context, sample_rng
from ocrslim.data.synthetic.docs import render_doc_page
from ocrslim.data.synthetic.lines import render_rec_line
from ocrslim.data.synthetic.pages import render_det_page
from ocrslim.data.synthetic.pool import imap_forked
from ocrslim.data.synthetic.render import encode_jpeg

__all__ = [
    "SPLITS",
    "SynthContext",
    "coverage_stats",
    "generate_synthetic",
    "is_doc_page",
    "make_context",
    "render_det_page",
    "render_doc_page",
    "render_rec_line",
]


def _make_sample(state: tuple[SynthContext, Path], job: tuple[str, str, int]) -> tuple[int, list[str], list[str]]:
    """Render sample ``job = (task, split, index)``, write its image (and det gt); return (index, texts, fonts)."""
    ctx, root = state
    task, split, index = job
    cfg = ctx.cfg
    rng = sample_rng(cfg.seed, task, split, index)
    split_dir = root / task / split
    name = f"{index:06d}"
    if task == "rec":
        img, text, font = render_rec_line(ctx, rng)
        texts, fonts = [text], [font]
    else:
        render = render_doc_page if is_doc_page(cfg, split, index) else render_det_page
        img, quads, texts, fonts = render(ctx, rng)
        (split_dir / "gt" / f"gt_{name}.txt").write_text(icdar_gt_text(quads, texts), encoding="utf-8")
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    (split_dir / "images" / f"{name}.jpg").write_bytes(encode_jpeg(img, quality))
    return index, texts, fonts


def coverage_stats(texts: Sequence[str], charset: Sequence[str]) -> dict[str, Any]:
    """How much of the dictionary a set of labels uses: distinct characters seen, and their share."""
    seen = set().union(*(set(t) for t in texts)) - {" "} if texts else set()
    n = len(set(charset))
    hit = len(seen & set(charset))
    return {"chars_seen": hit, "dictionary_size": n, "ratio": round(hit / n, 4)}


def generate_synthetic(
    cfg: DataConfig, out: str | Path | None = None, ctx: SynthContext | None = None
) -> dict[str, Any]:
    """Render every split of both tasks into ``out`` (default ``cfg.out``), atomically; return the manifest.

    Args:
        cfg: sizes, seed, workers, fonts, dictionary (see :class:`~ocrslim.core.config.DataConfig`).
        out: output directory; replaced as a whole when generation succeeds.
        ctx: a prepared :func:`make_context` (tests and benchmarks reuse one); built from ``cfg`` if None.

    Returns:
        The manifest also written to ``<out>/manifest.json``.

    >>> manifest = generate_synthetic(DataConfig(det_train=2, rec_train=4), "/tmp/synth")  # doctest: +SKIP
    """
    ctx = ctx or make_context(cfg)
    counts = {
        "det": {"train": cfg.det_train, "val": cfg.det_val, "test": cfg.det_test},
        "rec": {"train": cfg.rec_train, "val": cfg.rec_val, "test": cfg.rec_test},
    }
    font_use: Counter[str] = Counter()
    coverage: dict[str, Any] = {}
    boxes: dict[str, int] = {}
    with atomic_path(Path(out or cfg.out)) as root:
        for task, splits in counts.items():
            for split, n in splits.items():
                split_dir = root / task / split
                (split_dir / "images").mkdir(parents=True)
                if task == "det":
                    (split_dir / "gt").mkdir()
                jobs = [(task, split, i) for i in range(n)]
                labels: list[tuple[str, str]] = []
                all_texts: list[str] = []
                for index, texts, fonts in imap_forked(_make_sample, (ctx, root), jobs, cfg.workers, f"{task}/{split}"):
                    font_use.update(fonts)
                    all_texts += texts
                    if task == "rec":
                        labels.append((f"{index:06d}.jpg", texts[0]))
                if task == "rec":
                    (split_dir / "labels.tsv").write_text(rec_labels_text(labels), encoding="utf-8")
                else:
                    boxes[split] = len(all_texts)
                coverage[f"{task}/{split}"] = coverage_stats(all_texts, ctx.charset)
        manifest = {
            "seed": cfg.seed,
            "dictionary": {"spec": cfg.dictionary, "size": len(ctx.charset)},
            "counts": counts,
            "det_boxes": boxes,
            "doc_pages": {s: sum(is_doc_page(cfg, s, i) for i in range(n)) for s, n in counts["det"].items()},
            "corpus": {
                "allowed_chars": len(ctx.corpus.allowed),
                "zh_words": len(ctx.corpus.zh_words),
                "en_words": len(ctx.corpus.en_words),
                "source": "jieba dict.txt (word frequencies), english-words gcide_alpha",
            },
            "fonts": [
                {"name": f.name, "path": f.path, "sha256": f.sha256, "cjk": f.cjk, "lines": font_use[f.name]}
                for f in ctx.fonts
                if font_use[f.name]
            ],
            "coverage": coverage,
        }
        write_json(root / "manifest.json", manifest)
    return manifest
