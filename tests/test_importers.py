"""Real-set importers: CRNN LMDB, skipping unreadable images, dictionary coverage."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ocrslim.core.errors import DataError
from ocrslim.data.datasets import (
    ImageStats,
    RecSample,
    coverage_summary,
    dictionary_coverage,
    iter_sample_images,
    load_rec_dataset,
    read_sample_image,
)

lmdb = pytest.importorskip("lmdb")


def _write_lmdb(root: Path, items: list[tuple[bytes, str]], num: int | None = None) -> None:
    env = lmdb.open(str(root), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i, (img, label) in enumerate(items, start=1):
            txn.put(f"image-{i:09d}".encode(), img)
            txn.put(f"label-{i:09d}".encode(), label.encode("utf-8"))
        txn.put(b"num-samples", str(len(items) if num is None else num).encode())
    env.close()


def _png(value: int) -> bytes:
    return cv2.imencode(".png", np.full((16, 40, 3), value, np.uint8))[1].tobytes()


def test_lmdb_round_trip_and_corrupt_image_skipped_and_counted(tmp_path: Path) -> None:
    _write_lmdb(tmp_path / "db", [(_png(10), "abc"), (b"broken", "价格 12"), (_png(200), "x y")])
    samples = load_rec_dataset(tmp_path / "db")
    assert [s.text for s in samples] == ["abc", "价格 12", "x y"]
    assert samples[0].image.name == "image-000000001" and samples[0].lmdb == tmp_path / "db"
    img = read_sample_image(samples[2])
    assert img is not None and img.shape == (16, 40, 3) and int(img[0, 0, 0]) == 200
    stats = ImageStats()
    read = [s.text for s, _ in iter_sample_images(samples, stats)]
    assert read == ["abc", "x y"] and (stats.read, stats.skipped) == (2, 1)
    assert "1 unreadable skipped" in stats.summary() and "image-000000002" in stats.summary()
    assert len(load_rec_dataset(tmp_path / "db", limit=1)) == 1


def test_lmdb_with_missing_label_is_one_line_error(tmp_path: Path) -> None:
    _write_lmdb(tmp_path / "db", [(_png(10), "a")], num=2)
    with pytest.raises(DataError, match="label-000000002 missing") as e:
        load_rec_dataset(tmp_path / "db")
    assert "\n" not in str(e.value) and "Rebuild" in str(e.value)


def test_dictionary_coverage_counts_and_summary() -> None:
    samples = [RecSample(Path("a.png"), "héllo wörld"), RecSample(Path("b.png"), "ééé")]
    missing = dictionary_coverage(samples, "helowrd")
    assert missing == {"é": 4, "ö": 1}
    line = coverage_summary("set", samples, missing)
    assert "\n" not in line and "5 label characters outside" in line and "2 distinct" in line
    assert "every label character" in coverage_summary("set", samples, {})
