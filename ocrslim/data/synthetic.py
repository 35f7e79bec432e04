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

import dataclasses
import math
import multiprocessing
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ocrslim.config import DataConfig
from ocrslim.data.fonts import Font, discover_fonts
from ocrslim.data.render import (
    augment_photometric,
    background,
    composite,
    encode_jpeg,
    perspective,
    text_colour,
    text_mask,
)
from ocrslim.data.text import Corpus, build_corpus, load_charset
from ocrslim.errors import DataError
from ocrslim.fsutil import atomic_path, write_json

__all__ = [
    "SPLITS",
    "SynthContext",
    "check_extra_train",
    "generate_synthetic",
    "is_doc_page",
    "make_context",
    "render_det_page",
    "render_doc_page",
    "render_rec_line",
]

SPLITS = ("train", "val", "test")
_TASK_ID = {"det": 0, "rec": 1}
_SPLIT_ID = {s: i for i, s in enumerate(SPLITS)}


@dataclasses.dataclass
class SynthContext:
    """What every worker needs: the config, the filtered corpus and the fonts."""

    cfg: DataConfig
    corpus: Corpus
    fonts: list[Font]
    charset: list[str]


def make_context(cfg: DataConfig, charset: Sequence[str] | None = None) -> SynthContext:
    """Resolve the dictionary, discover the fonts and build the corpus (done once, in the parent process).

    Raises:
        DataError: no usable font, no CJK font while ``cfg.cjk_ratio > 0``, or an empty corpus.
    """
    chars = list(charset) if charset is not None else load_charset(cfg.dictionary)
    fonts = discover_fonts(cfg.fonts, cfg.font_exclude, need_cjk=cfg.cjk_ratio > 0)
    drawable = set().union(*(f.chars for f in fonts))
    corpus = build_corpus(chars, drawable, cjk_ratio=cfg.cjk_ratio, max_chars=cfg.max_chars)
    return SynthContext(cfg, corpus, fonts, chars)


def sample_rng(seed: int, task: str, split: str, index: int) -> np.random.Generator:
    """The generator of one sample: a function of (seed, task, split, index) only."""
    return np.random.default_rng([seed, _TASK_ID[task], _SPLIT_ID[split], index])


def is_doc_page(cfg: DataConfig, split: str, index: int) -> bool:
    """Whether det page ``index`` of ``split`` is a printed document: drawn from its own stream, so the
    scene pages render the same bytes whatever ``cfg.doc_ratio`` is."""
    return bool(np.random.default_rng([cfg.seed, 2, _SPLIT_ID[split], index]).random() < cfg.doc_ratio)


# ------------------------------------------------------------------------------------------ rendering


def _text_and_font(ctx: SynthContext, rng: np.random.Generator, max_chars: int) -> tuple[str, Font]:
    """A line and a font that has a glyph for each of its characters."""
    for _ in range(50):
        text = ctx.corpus.line(rng, max_chars=max_chars)
        need = set(text) - {" "}
        fonts = [f for f in ctx.fonts if need <= f.chars]
        if fonts:
            return text, fonts[int(rng.integers(len(fonts)))]
    raise DataError(  # pragma: no cover - the corpus only holds characters some font draws
        "data.fonts: no font draws the generated lines. apt-get install fonts-wqy-microhei fonts-dejavu-core."
    )


def _size(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, max(lo, hi) + 1))


def _line_mask(
    ctx: SynthContext, rng: np.random.Generator, size: int, max_chars: int
) -> tuple[str, Font, np.ndarray, tuple[int, int, int, int]]:
    text, font = _text_and_font(ctx, rng, max_chars)
    spacing = int(rng.integers(1, max(2, size // 4))) if rng.random() < 0.2 else 0
    mask, ink = text_mask(text, font.path, size, spacing)
    return text, font, mask, ink


def _rotate(mask: np.ndarray, box: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``mask`` by ``angle`` degrees (counter-clockwise) with expansion; ``box`` (4, 2) goes along."""
    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(math.ceil(h * sin + w * cos)), int(math.ceil(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(mask, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    pts = np.hstack([box, np.ones((4, 1), np.float32)]) @ m.T
    return out, pts.astype(np.float32)


def render_rec_line(ctx: SynthContext, rng: np.random.Generator) -> tuple[np.ndarray, str, str]:
    """One recognition crop: (BGR image, text, font name)."""
    cfg = ctx.cfg
    size = _size(rng, *cfg.line_height)
    text, font, mask, (x0, y0, x1, y1) = _line_mask(ctx, rng, size, cfg.max_chars)
    # Crop to the ink with a random margin, as a detector's box would be (tight to loose).
    px0, px1 = (int(rng.uniform(0.05, 0.5) * size) for _ in range(2))
    py0, py1 = (int(rng.uniform(0.05, 0.3) * size) for _ in range(2))
    mh, mw = mask.shape
    padded = np.zeros((mh + 2 * size, mw + 2 * size), np.float32)
    padded[size : size + mh, size : size + mw] = mask
    mask = padded[size + y0 - py0 : size + y1 + py1, size + x0 - px0 : size + x1 + px1]
    if cfg.rec_max_angle > 0 and rng.random() < 0.5 * cfg.aug:
        angle = rng.uniform(-cfg.rec_max_angle, cfg.rec_max_angle)
        mask, _ = _rotate(mask, np.zeros((4, 2), np.float32), angle)
    h, w = mask.shape
    bg = background(rng, h, w)
    img = composite(bg, mask, text_colour(rng, float(bg.mean())))
    if rng.random() < 0.3 * cfg.aug:
        img, _ = perspective(img, np.zeros((1, 2), np.float32), rng, 0.04 * cfg.aug, border=bg.reshape(-1, 3).mean(0))
    img = augment_photometric(img, rng, cfg.aug)
    return img, text, font.name


def render_det_page(
    ctx: SynthContext, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray], list[str], list[str]]:
    """One detection page: (BGR image, quads (4, 2) as tl tr br bl, texts, font names).

    Lines are placed at random positions and angles without overlapping; each quad is the rotated
    bounding box of the line's drawn pixels.
    """
    cfg = ctx.cfg
    long_side = _size(rng, *cfg.page_size)
    short_side = int(long_side / rng.uniform(1.0, 1.5))
    h, w = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    page = background(rng, h, w)
    taken = np.zeros((h, w), np.uint8)
    quads: list[np.ndarray] = []
    texts: list[str] = []
    fonts: list[str] = []
    for _ in range(_size(rng, *cfg.lines_per_page)):
        for _attempt in range(4):
            size = _size(rng, cfg.line_height[0], min(cfg.line_height[1], max(cfg.line_height[0], h // 8)))
            fit = max(1, int(0.85 * w / size))  # a CJK glyph is about `size` wide
            text, font, mask, (x0, y0, x1, y1) = _line_mask(ctx, rng, size, min(cfg.max_chars, fit))
            if x1 <= x0:
                continue
            box = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
            angle = rng.uniform(-cfg.max_angle, cfg.max_angle) if rng.random() < 0.7 else 0.0
            rot, quad = _rotate(mask, box, angle)
            rh, rw = rot.shape
            if rw >= w or rh >= h:
                continue
            ox, oy = int(rng.integers(0, w - rw)), int(rng.integers(0, h - rh))
            quad = quad + np.float32([ox, oy])
            region = np.zeros_like(taken)
            cv2.fillPoly(region, [np.round(quad).astype(np.int32)], 1)
            region = cv2.dilate(region, np.ones((5, 5), np.uint8))
            if (region & taken).any():
                continue
            taken |= region
            patch = page[oy : oy + rh, ox : ox + rw]
            page[oy : oy + rh, ox : ox + rw] = composite(patch, rot, text_colour(rng, float(patch.mean())))
            quads.append(quad)
            texts.append(text)
            fonts.append(font.name)
            break
    if quads and rng.random() < 0.3 * cfg.aug:
        warped, pts = perspective(page, np.concatenate(quads), rng, 0.04 * cfg.aug, border=page.reshape(-1, 3).mean(0))
        page, quads = warped, list(pts.reshape(-1, 4, 2))
    page = augment_photometric(page, rng, cfg.aug)
    return page, quads, texts, fonts


def _paper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Near-white paper: a flat or slightly textured sheet (thermal receipts, printed forms)."""
    base = rng.uniform(215, 255) + rng.uniform(-8, 8, size=3)
    img = np.broadcast_to(base.astype(np.float32), (h, w, 3)).copy()
    if rng.random() < 0.5:
        small = rng.normal(0, 1, size=(max(2, h // 48), max(2, w // 48), 1)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] * rng.uniform(2, 8)
    return np.clip(img, 0, 255).astype(np.uint8)


def _doc_row(rng: np.random.Generator) -> str:
    """A row kind of a printed document: one left/centred/right segment, an item with a right amount, or a
    table row of short cells."""
    r = rng.random()
    return "left" if r < 0.25 else "centre" if r < 0.4 else "pair" if r < 0.7 else "right" if r < 0.78 else "table"


def _cell(rng: np.random.Generator) -> str:
    """A short table cell: a quantity, an amount, a code or a short word (1-8 characters)."""
    r = rng.random()
    if r < 0.3:
        return str(int(rng.integers(1, 20)))
    if r < 0.65:
        return f"{rng.random() * 10 ** int(rng.integers(1, 4)):.2f}"
    if r < 0.85:
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        return "".join(letters[int(i)] for i in rng.integers(0, 26, size=int(rng.integers(1, 4))))
    return str(int(rng.integers(1000, 100000)))


_DOC_KINDS = ("en", "mixed", "date", "number", "price")
_DOC_P = (0.5, 0.2, 0.1, 0.1, 0.1)


def _doc_kind(rng: np.random.Generator, latin: bool) -> str | None:
    """Text kind of a document segment: Latin-script kinds, or None (the corpus' mix, CJK included)."""
    return _DOC_KINDS[int(rng.choice(len(_DOC_KINDS), p=_DOC_P))] if latin else None


def render_doc_page(
    ctx: SynthContext, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray], list[str], list[str]]:
    """One printed-document page (receipt/form style): (BGR image, quads, texts, font names).

    Dense rows of dark text on near-white paper, top to bottom: left-aligned, centred, right-aligned
    or an item with its right-aligned amount (two boxes, as receipt annotations split them), one font
    per page at one size (±10%). Half the pages are photos of the sheet: paper on a textured
    background, the sheet narrower than the frame. A whole-page rotation (±2°), the perspective warp
    and the photometric augmentation of :func:`render_det_page` follow.
    """
    cfg = ctx.cfg
    long_side = _size(rng, *cfg.page_size)
    h = long_side
    w = int(long_side / rng.uniform(1.2, 2.2))  # documents are portrait, receipts narrow
    photo = rng.random() < 0.5
    page = background(rng, h, w) if photo else _paper(rng, h, w)
    if photo:  # a sheet inside the frame
        pw, ph = int(w * rng.uniform(0.6, 0.95)), int(h * rng.uniform(0.75, 1.0))
        px, py = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        page[py : py + ph, px : px + pw] = _paper(rng, ph, pw)
    else:
        px, py, pw, ph = 0, 0, w, h
    base = _size(rng, cfg.line_height[0], min(cfg.line_height[1], max(cfg.line_height[0], pw // 14)))
    margin = int(pw * rng.uniform(0.04, 0.12))
    left, right = px + margin, px + pw - margin
    gap = rng.uniform(0.25, 1.0)
    latin = rng.random() < 1.0 - 0.5 * cfg.cjk_ratio  # documents lean Latin; else the corpus' own mix
    ink = text_colour(rng, 230.0)
    fonts_ok = ctx.fonts
    y = py + int(rng.integers(margin // 2, margin + 1))
    quads: list[np.ndarray] = []
    texts: list[str] = []
    fonts: list[str] = []
    font = fonts_ok[int(rng.integers(len(fonts_ok)))]

    def place(text_kind: str | None, x_anchor: str, limit: int, size: int, hi: int | None = None,
              lo: int | None = None, text: str | None = None) -> tuple[int, int] | None:
        """Draw one segment on the current row between ``lo`` and ``hi`` (default the margins); returns its
        (x0, x1), or None (nothing drawn) when it does not fit."""
        nonlocal font
        hi = right if hi is None else hi
        lo = left if lo is None else lo
        if text is None:
            text = ctx.corpus.line(rng, kind=text_kind, max_chars=max(1, limit))
            if rng.random() < 0.15 and len(text) < limit:  # a label: "Total :", "Cashier:"
                text += " :" if rng.random() < 0.5 else ":"
        if not set(text) - {" "} <= font.chars:
            text, font = _text_and_font(ctx, rng, max(1, limit))
        mask, (x0, y0, x1, y1) = text_mask(text, font.path, size)
        if x1 <= x0 or x1 - x0 > hi - lo or y + (y1 - y0) >= py + ph:
            return None
        tw = x1 - x0
        ox = {"left": lo, "right": hi - tw, "centre": (lo + hi - tw) // 2}[x_anchor] - x0
        oy = y - y0
        mh, mw = mask.shape
        # clip the mask's margins to the page
        cx0, cy0 = max(0, -ox), max(0, -oy)
        cx1, cy1 = min(mw, w - ox), min(mh, h - oy)
        patch = page[oy + cy0 : oy + cy1, ox + cx0 : ox + cx1]
        page[oy + cy0 : oy + cy1, ox + cx0 : ox + cx1] = composite(patch, mask[cy0:cy1, cx0:cx1], ink)
        gx0, gy0, gx1, gy1 = ox + x0, oy + y0, ox + x1, oy + y1
        quads.append(np.float32([[gx0, gy0], [gx1, gy0], [gx1, gy1], [gx0, gy1]]))
        texts.append(text)
        fonts.append(font.name)
        return gx0, gx1

    while y < py + ph - base:
        size = max(cfg.line_height[0], int(base * rng.uniform(0.9, 1.1)))
        fit = max(1, int(1.6 * (right - left) / size))  # a Latin glyph is about 0.6 × size wide
        row = _doc_row(rng)
        if row == "pair":
            placed = place("price" if rng.random() < 0.7 else "number", "right", 12, size)
            room = placed[0] - left - 2 * size if placed is not None else 0
            if placed is not None and room > 2 * size:
                place(_doc_kind(rng, latin), "left", min(cfg.max_chars, int(1.6 * room / size)), size, hi=left + room)
        elif row == "table":  # 2-5 short cells in equal columns (quantities, prices, codes)
            cols = int(rng.integers(2, 6))
            edges = np.linspace(left, right, cols + 1).astype(int)
            for c in range(cols):
                if rng.random() < 0.85:
                    anchor = "right" if c == cols - 1 else ("left", "centre", "right")[int(rng.integers(3))]
                    place(None, anchor, 8, size, lo=int(edges[c]) + size // 2, hi=int(edges[c + 1]) - size // 2,
                          text=_cell(rng))
        else:
            place(_doc_kind(rng, latin), row, min(cfg.max_chars, fit), size)
        y += int(size * (1.0 + gap * rng.uniform(0.8, 1.2)))
        if rng.random() < 0.08:  # a blank line / separator gap
            y += size
    if rng.random() < 0.7:
        page, quads = _rotate_page(page, quads, rng.uniform(-2.0, 2.0))
    if quads and rng.random() < 0.3 * cfg.aug:
        warped, pts = perspective(page, np.concatenate(quads), rng, 0.04 * cfg.aug, border=page.reshape(-1, 3).mean(0))
        page, quads = warped, list(pts.reshape(-1, 4, 2))
    page = augment_photometric(page, rng, cfg.aug)
    return page, quads, texts, fonts


def _rotate_page(page: np.ndarray, quads: list[np.ndarray], angle: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rotate the page about its centre (same size, edge colour filled); quads go along."""
    h, w = page.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    fill = tuple(float(v) for v in page.reshape(-1, 3).mean(0))
    out = cv2.warpAffine(page, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    moved = [np.hstack([q, np.ones((4, 1), np.float32)]) @ m.T for q in quads]
    return out, [q.astype(np.float32) for q in moved]


# ---------------------------------------------------------------------------------------------- driver

_CTX: SynthContext | None = None
_ROOT: Path | None = None


def _init_worker(ctx: SynthContext, root: Path) -> None:
    global _CTX, _ROOT
    _CTX, _ROOT = ctx, root
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def _init_worker_threads() -> None:
    cv2.setNumThreads(1)


def _make_sample(job: tuple[str, str, int]) -> tuple[int, list[str], list[str]]:
    """Render sample ``job = (task, split, index)``, write its image (and det gt); return (index, texts, fonts)."""
    task, split, index = job
    assert _CTX is not None and _ROOT is not None  # set by _init_worker
    cfg = _CTX.cfg
    rng = sample_rng(cfg.seed, task, split, index)
    split_dir = _ROOT / task / split
    name = f"{index:06d}"
    if task == "rec":
        img, text, font = render_rec_line(_CTX, rng)
        texts, fonts = [text], [font]
    else:
        render = render_doc_page if is_doc_page(cfg, split, index) else render_det_page
        img, quads, texts, fonts = render(_CTX, rng)
        lines = [
            ",".join(str(int(round(float(v)))) for v in q.reshape(-1)) + "," + t
            for q, t in zip(quads, texts, strict=True)
        ]
        (split_dir / "gt" / f"gt_{name}.txt").write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    (split_dir / "images" / f"{name}.jpg").write_bytes(encode_jpeg(img, quality))
    return index, texts, fonts


def _run_jobs(ctx: SynthContext, root: Path, jobs: list[tuple[str, str, int]], desc: str) -> Iterator[Any]:
    """Results of ``_make_sample`` over ``jobs``, in job order, on ``ctx.cfg.workers`` processes."""
    workers = min(ctx.cfg.workers, max(1, len(jobs)))
    bar = tqdm(total=len(jobs), desc=desc, unit="img", leave=False, mininterval=1.0)
    try:
        if workers == 1:
            _init_worker(ctx, root)
            for job in jobs:
                yield _make_sample(job)
                bar.update()
            return
        # Set in the parent, inherited by the forked workers: pickling the 450k-word corpus costs seconds.
        _init_worker(ctx, root)
        with multiprocessing.get_context("fork").Pool(workers, _init_worker_threads) as pool:
            for res in pool.imap(_make_sample, jobs, chunksize=8):
                yield res
                bar.update()
    finally:
        bar.close()


def coverage_stats(texts: Sequence[str], charset: Sequence[str]) -> dict[str, Any]:
    """How much of the dictionary a set of labels uses: distinct characters seen, and their share."""
    seen = set().union(*(set(t) for t in texts)) - {" "} if texts else set()
    n = len(set(charset))
    hit = len(seen & set(charset))
    return {"chars_seen": hit, "dictionary_size": n, "ratio": round(hit / n, 4)}


def check_extra_train(paths: Sequence[str], charset: Sequence[str]) -> list[dict[str, Any]]:
    """Validate real training sets given by path (``data.extra_train``): load them, report dictionary coverage.

    Each path may hold a detection set, a recognition set (any layout ``load_*_dataset`` reads, LMDB
    included), or a folder with both. Nothing is copied: later stages read them by path.

    Raises:
        DataError: a path is missing, in no known layout, or has a malformed line (``<file>:<line>`` named).
    """
    from ocrslim.data.datasets import coverage_summary, dictionary_coverage, load_det_dataset, load_rec_dataset

    report = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise DataError(f"data.extra_train: {path} not found. Fix the path in conf/data/, or remove it.")
        entry: dict[str, Any] = {"path": str(path)}
        root = path
        is_det = path.is_dir() and ((path / "det").is_dir() or (path / "gt").is_dir())
        is_rec = path.is_file() or any((path / n).exists() for n in ("rec", "labels.tsv", "data.mdb"))
        if path.is_file():  # a PaddleOCR label file: det if its payload is JSON
            first = next((ln for ln in path.read_text(encoding="utf-8-sig").split("\n") if ln.strip()), "")
            is_det = first.partition("\t")[2].lstrip().startswith("[")
            is_rec = not is_det
        if not (is_det or is_rec):
            raise DataError(
                f"data.extra_train: {root} is neither a detection nor a recognition set. Give a folder with "
                "images/ + gt/ or images/ + labels.tsv (or det/, rec/ inside), an LMDB, or a PaddleOCR label file."
            )
        for task, ok, loader in (("det", is_det, load_det_dataset), ("rec", is_rec, load_rec_dataset)):
            if not ok:
                continue
            samples = loader(path)
            missing = dictionary_coverage(samples, charset)
            entry[task] = {"samples": len(samples), "outside_dictionary": sum(missing.values()),
                           "summary": coverage_summary(f"{path} ({task})", samples, missing)}
        report.append(entry)
    return report


def generate_synthetic(
    cfg: DataConfig, out: str | Path | None = None, ctx: SynthContext | None = None
) -> dict[str, Any]:
    """Render every split of both tasks into ``out`` (default ``cfg.out``), atomically; return the manifest.

    Args:
        cfg: sizes, seed, workers, fonts, dictionary (see :class:`~ocrslim.config.DataConfig`).
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
                labels: list[str] = []
                all_texts: list[str] = []
                for index, texts, fonts in _run_jobs(ctx, root, jobs, f"{task}/{split}"):
                    font_use.update(fonts)
                    all_texts += texts
                    if task == "rec":
                        labels.append(f"{index:06d}.jpg\t{texts[0]}\n")
                if task == "rec":
                    (split_dir / "labels.tsv").write_text("".join(labels), encoding="utf-8")
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
            "extra_train": check_extra_train(cfg.extra_train, ctx.charset),
        }
        write_json(root / "manifest.json", manifest)
    return manifest
