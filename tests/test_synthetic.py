"""Synthetic data: determinism, GT that holds the text, dictionary-only labels, readable layouts, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ocrslim.core.config import DataConfig
from ocrslim.core.errors import DataError
from ocrslim.data.datasets import load_det_dataset, load_rec_dataset
from ocrslim.data.fonts import discover_fonts
from ocrslim.data.synthetic import (
    generate_synthetic,
    is_doc_page,
    make_context,
    render_det_page,
    render_doc_page,
    sample_rng,
)
from ocrslim.data.text import build_corpus, load_charset

TINY = DataConfig(
    fonts=("default",), cjk_ratio=0.0, det_train=2, det_val=1, det_test=1, rec_train=4, rec_val=1, rec_test=1,
    page_size=(256, 320), lines_per_page=(2, 4), line_height=(14, 24), max_chars=12, workers=1,
)


@pytest.fixture(scope="module")
def charset() -> list[str]:
    return load_charset("ppocrv4_mobile_rec")


@pytest.fixture(scope="module")
def ctx(charset: list[str]):
    return make_context(TINY, charset)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_for_1_and_2_workers_and_other_seed_differs(ctx, tmp_path: Path) -> None:
    generate_synthetic(TINY, tmp_path / "a", ctx)
    ctx2 = dataclasses.replace(ctx, cfg=dataclasses.replace(TINY, workers=2))
    generate_synthetic(ctx2.cfg, tmp_path / "b", ctx2)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b and len(a) > 10
    ctx3 = dataclasses.replace(ctx, cfg=dataclasses.replace(TINY, seed=1))
    generate_synthetic(ctx3.cfg, tmp_path / "c", ctx3)
    c = _files(tmp_path / "c")
    assert c.keys() == a.keys() and c["rec/train/images/000000.jpg"] != a["rec/train/images/000000.jpg"]


def test_layouts_load_and_labels_stay_in_dictionary(ctx, charset: list[str], tmp_path: Path) -> None:
    manifest = generate_synthetic(TINY, tmp_path / "s", ctx)
    allowed = set(charset) | {" "}
    det = load_det_dataset(tmp_path / "s" / "det" / "train")
    rec = load_rec_dataset(tmp_path / "s" / "rec" / "train")
    assert len(det) == 2 and len(rec) == 4
    assert all(s.polys and all(set(t) <= allowed for t in s.texts) for s in det)
    assert all(s.text and set(s.text) <= allowed and s.text == s.text.strip() for s in rec)
    assert manifest["fonts"] and all(len(f["sha256"]) == 64 for f in manifest["fonts"])
    assert 0 < manifest["coverage"]["rec/train"]["chars_seen"] <= len(set(charset))
    assert (tmp_path / "s" / "manifest.json").is_file()


def test_gt_quads_contain_the_rendered_text(ctx) -> None:
    import cv2

    clean = dataclasses.replace(ctx, cfg=dataclasses.replace(TINY, aug=0.0, max_angle=10.0))
    for i in range(3):
        page, quads, texts, _ = render_det_page(clean, sample_rng(7, "det", "train", i))
        assert quads and len(quads) == len(texts)
        dark = page.min(axis=2) < 125  # ink is darker than every background (>= 135 without augmentation)
        inside = np.zeros(dark.shape, np.uint8)
        cv2.fillPoly(inside, [np.round(q).astype(np.int32) for q in quads], 1)
        inside = cv2.dilate(inside, np.ones((3, 3), np.uint8)).astype(bool)
        assert dark[inside].sum() > 0 and dark[~inside].sum() <= 0.01 * dark.sum()
        for q in quads:  # each box holds ink of its own
            one = np.zeros(dark.shape, np.uint8)
            cv2.fillPoly(one, [np.round(q).astype(np.int32)], 1)
            assert dark[one.astype(bool)].mean() > 0.05


def test_doc_pages_are_dense_non_overlapping_rows_with_ink_in_every_box(ctx) -> None:
    import cv2

    clean = dataclasses.replace(ctx, cfg=dataclasses.replace(TINY, aug=0.0, page_size=(480, 640)))
    for i in range(3):
        page, quads, texts, _ = render_doc_page(clean, sample_rng(3, "det", "train", i))
        assert len(quads) == len(texts) >= 8  # rows fill the sheet, not 2-4 scattered lines
        dark = page.min(axis=2) < 125
        masks = []
        for q in quads:
            one = np.zeros(dark.shape, np.uint8)
            cv2.fillPoly(one, [np.round(q).astype(np.int32)], 1)
            masks.append(one.astype(bool))
            assert dark[masks[-1]].mean() > 0.05  # each box holds ink of its own
        union = np.logical_or.reduce(masks)
        assert sum(int(m.sum()) for m in masks) <= 1.02 * int(union.sum())  # boxes do not overlap
        inside = cv2.dilate(union.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert dark[~inside].sum() <= 0.01 * dark.sum()  # no ink outside the labelled boxes


def test_doc_ratio_picks_pages_without_changing_scene_pages(ctx, tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, det_train=8, det_val=0, det_test=0, rec_train=0, rec_val=0, rec_test=0)
    picks = [is_doc_page(dataclasses.replace(cfg, doc_ratio=0.5), "train", i) for i in range(200)]
    assert 70 < sum(picks) < 130
    assert not any(is_doc_page(dataclasses.replace(cfg, doc_ratio=0.0), "train", i) for i in range(50))
    none = generate_synthetic(dataclasses.replace(cfg, doc_ratio=0.0), tmp_path / "a",
                              dataclasses.replace(ctx, cfg=dataclasses.replace(cfg, doc_ratio=0.0)))
    half_cfg = dataclasses.replace(cfg, doc_ratio=0.5)
    half = generate_synthetic(half_cfg, tmp_path / "b", dataclasses.replace(ctx, cfg=half_cfg))
    assert none["doc_pages"]["train"] == 0 and half["doc_pages"]["train"] == sum(
        is_doc_page(half_cfg, "train", i) for i in range(8))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    for i in range(8):
        same = a[f"det/train/images/{i:06d}.jpg"] == b[f"det/train/images/{i:06d}.jpg"]
        assert same != is_doc_page(half_cfg, "train", i)


def test_cjk_lines_use_a_cjk_font(charset: list[str]) -> None:
    try:
        fonts = [f for f in discover_fonts(DataConfig().fonts) if f.cjk]
    except DataError:
        fonts = []
    if not fonts:
        pytest.skip("no CJK system font (apt-get install fonts-wqy-microhei)")
    ctx = make_context(dataclasses.replace(TINY, fonts=(fonts[0].path, "default"), cjk_ratio=1.0), charset)
    from ocrslim.data.synthetic import render_rec_line

    img, text, font = render_rec_line(ctx, sample_rng(0, "rec", "train", 0))
    assert img.ndim == 3 and set(text) <= set(charset) | {" "} and font == fonts[0].name


def test_missing_font_is_one_line_naming_the_package(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        discover_fonts([str(tmp_path / "nope.ttf")])
    assert "\n" not in str(e.value) and "apt-get install fonts-" in str(e.value)
    bad = tmp_path / "bad.ttf"
    bad.write_bytes(b"not a font")
    with pytest.raises(DataError, match="apt-get install --reinstall"):
        discover_fonts([str(bad)])


def test_no_cjk_font_and_empty_corpus_are_one_line_errors() -> None:
    with pytest.raises(DataError, match="fonts-wqy-microhei") as e:
        discover_fonts(["default"], need_cjk=True)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="data.dictionary") as e:
        build_corpus(["☃"], cjk_ratio=0.0)
    assert "\n" not in str(e.value)
