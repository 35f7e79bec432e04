"""Calibration set: stratification, pre-sized images, quant JSON derived from DetConfig/RecConfig, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from ocrslim.core.config import CalibrateConfig, DetConfig, RecConfig
from ocrslim.core.errors import DataError
from ocrslim.data.calibration import build_calibration, rec_calibration_image, rec_pad_value, stratified_pick
from ocrslim.infer.preprocess import normalize


def test_stratified_pick_covers_every_bucket_and_is_deterministic() -> None:
    keys = ["a"] * 50 + ["b"] * 3 + ["c"] * 1 + ["d"] * 20
    picks = stratified_pick(keys, 8, seed=0)
    assert len(picks) == 8 == len(set(picks)) and picks == stratified_pick(keys, 8, seed=0)
    got = Counter(keys[i] for i in picks)
    assert set(got) == {"a", "b", "c", "d"} and got["a"] > got["b"]


@pytest.fixture()
def pool(tmp_path: Path) -> Path:
    """det: 4 pages in 2 orientation buckets; rec: 6 crops, CJK and Latin, various widths."""
    det = tmp_path / "pool" / "det"
    (det / "images").mkdir(parents=True)
    (det / "gt").mkdir()
    for i, (h, w) in enumerate([(400, 300), (420, 300), (300, 500), (310, 520)]):
        cv2.imwrite(str(det / "images" / f"{i}.jpg"), np.full((h, w, 3), 200, np.uint8))
        (det / "gt" / f"gt_{i}.txt").write_text("1,1,9,1,9,9,1,9,ab\n", encoding="utf-8")
    rec = tmp_path / "pool" / "rec"
    (rec / "images").mkdir(parents=True)
    labels = []
    crops = [(40, "中文"), (200, "中文字符"), (60, "ab"), (300, "hello world"), (90, "xy"), (20, "a")]
    for i, (w, text) in enumerate(crops):
        cv2.imwrite(str(rec / "images" / f"{i}.png"), np.full((32, w, 3), 30 * i, np.uint8))
        labels.append(f"{i}.png\t{text}\n")
    (rec / "labels.tsv").write_text("".join(labels), encoding="utf-8")
    return tmp_path / "pool"


def _cfg(pool: Path, **kw: object) -> CalibrateConfig:
    base = {"det_pool": (str(pool / "det"),), "rec_pool": (str(pool / "rec"),), "det_count": 2, "rec_count": 4,
            "det_size": 64}
    base.update(kw)
    return CalibrateConfig(**base)  # type: ignore[arg-type]


def test_build_calibration_strata_images_and_quant_json(pool: Path, tmp_path: Path) -> None:
    out = tmp_path / "calib"
    manifest = build_calibration(_cfg(pool), DetConfig(), RecConfig(), out)
    det, rec = manifest["tasks"]["det"], manifest["tasks"]["rec"]
    assert det["buckets"] == {"landscape/small": 1, "portrait/small": 1}
    assert {b.split("/")[0] for b in rec["buckets"]} == {"cjk", "latin"} and rec["count"] == 4
    assert all(len(e["sha256"]) == 64 for e in det["images"] + rec["images"])
    assert cv2.imread(str(out / det["images"][0]["file"])).shape == (64, 64, 3)
    assert cv2.imread(str(out / rec["images"][0]["file"])).shape == (48, 320, 3)
    for task, pre, (w, h) in (("det", DetConfig(), (64, 64)), ("rec", RecConfig(), (320, 48))):
        q = json.loads((out / f"{task}.quant.json").read_text())
        assert q["format"] == "BGR" and (q["width"], q["height"]) == (w, h)
        assert q["mean"] == pytest.approx([255 * m for m in pre.mean])
        assert q["normal"] == pytest.approx([1 / (255 * s) for s in pre.std])
        assert q["path"] == str(out / task) and q["used_image_num"] == manifest["tasks"][task]["count"]
        assert {"feature_quantize_method", "weight_quantize_method"} <= q.keys()


def test_rec_calibration_image_is_padded_with_the_value_that_normalizes_to_zero() -> None:
    cfg = RecConfig()
    img = rec_calibration_image(np.zeros((32, 64, 3), np.uint8), cfg)
    assert img.shape == (cfg.height, cfg.min_width, 3)
    pad = img[:, -10:]
    assert (pad == rec_pad_value(cfg)).all()
    assert np.abs(normalize(pad, cfg.mean, cfg.std)).max() <= 0.5 / 127.5 + 1e-6  # 127.5 rounds to 128


@pytest.mark.parametrize(
    ("kind", "fix"),
    [("missing_source", "calibrate.source"), ("empty_source", "no readable det images"),
     ("too_few", "lower calibrate.det_count")],
)
def test_bad_input_is_one_line_naming_the_fix(kind: str, fix: str, pool: Path, tmp_path: Path) -> None:
    if kind == "missing_source":
        cfg = _cfg(pool, source=str(tmp_path / "nowhere"))
    elif kind == "empty_source":
        (tmp_path / "mine" / "det").mkdir(parents=True)
        cfg = _cfg(pool, source=str(tmp_path / "mine"))
    else:
        cfg = _cfg(pool, det_count=9)
    with pytest.raises(DataError, match=fix) as e:
        build_calibration(cfg, DetConfig(), RecConfig(), tmp_path / "calib")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "calib").exists()


def test_a_pool_with_broken_images_passes_its_share_on(pool: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "det"  # 3 pages, 2 of them not images: 1 readable
    (broken / "images").mkdir(parents=True)
    (broken / "gt").mkdir()
    cv2.imwrite(str(broken / "images" / "ok.jpg"), np.full((400, 300, 3), 90, np.uint8))
    for name in ("bad1.jpg", "bad2.jpg"):
        (broken / "images" / name).write_bytes(b"not a jpeg")
    for name in ("ok", "bad1", "bad2"):
        (broken / "gt" / f"gt_{name}.txt").write_text("1,1,9,1,9,9,1,9,ab\n", encoding="utf-8")
    # 4 of 5 readable images asked for: an equal split by file counts would ask the broken pool for 2
    cfg = _cfg(pool, det_pool=(str(pool / "det"), str(broken)), det_count=4)
    det = build_calibration(cfg, DetConfig(), RecConfig(), tmp_path / "calib")["tasks"]["det"]
    from_broken = sum("broken" in Path(e["source"]).parts for e in det["images"])
    assert det["count"] == 4 and from_broken == 1 and det["unreadable_skipped"] == 2
    assert det["pool_size"] == 7
    with pytest.raises(DataError, match=r"5 readable det images, but calibrate.det_count asks for 6"):
        build_calibration(_cfg(pool, det_pool=(str(pool / "det"), str(broken)), det_count=6), DetConfig(),
                          RecConfig(), tmp_path / "calib2")
