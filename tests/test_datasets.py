"""Dataset readers on tiny layouts built in tmp_path, plus the real dev sets when they are present."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ocrslim.core.errors import ConfigError, DataError
from ocrslim.data.datasets import DetSample, RecSample, load_det_dataset, load_rec_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the shared/ dir beside the repo


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.zeros((1, 1, 3), dtype=np.uint8))
    return path


def write_text(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def assert_line_error(load_from: Path, bad_file: Path, problem: str, loader: Callable[[Path], Any] = load_det_dataset
                      ) -> None:
    """Loading ``load_from`` fails with one line, ``<bad_file>:2: ...``, naming ``problem``."""
    with pytest.raises(DataError) as info:
        loader(load_from)
    message = str(info.value)
    assert message.startswith(f"{bad_file}:2: ") and problem in message and "\n" not in message, message


def make_icdar_det(root: Path) -> Path:
    for name in ("b.png", "a.png"):
        write_image(root / "images" / name)
    (root / "images" / "notes.txt").write_text("not an image")  # non-image files are not samples
    write_text(
        root / "gt" / "gt_a.txt",
        "0,0,10,0,10,5,0,5,NO 290, JALAN\r\n\r\n1.5,2,11,2,11,7,1,7,###\r\n20,0,30,0,30,5,20,5, spaced \r\n",
        bom=True,
    )
    write_text(root / "gt" / "gt_b.txt", "")  # an image with no text
    return root


# ------------------------------------------------------------------------------------ detection, ICDAR


def test_icdar_det_layout(tmp_path: Path) -> None:
    root = make_icdar_det(tmp_path / "set")
    samples = load_det_dataset(root)
    assert [s.image for s in samples] == [root / "images" / "a.png", root / "images" / "b.png"]
    a, b = samples
    assert isinstance(a, DetSample)
    assert a.texts == ("NO 290, JALAN", "###", " spaced ")  # BOM and \r gone, commas and spaces kept
    assert a.ignore == (False, True, False)
    assert all(p.shape == (4, 2) and p.dtype == np.float32 for p in a.polys)
    np.testing.assert_array_equal(a.polys[1], [[1.5, 2], [11, 2], [11, 7], [1, 7]])
    assert not a.polys[0].flags.writeable
    assert (b.polys, b.texts, b.ignore) == ((), (), ())


def test_icdar_det_via_parent_and_limit(tmp_path: Path) -> None:
    make_icdar_det(tmp_path / "set" / "det")
    samples = load_det_dataset(str(tmp_path / "set"), limit=1)
    assert [s.image.name for s in samples] == ["a.png"]
    assert load_det_dataset(tmp_path / "set", limit=0) == []


def test_icdar_det_missing_gt(tmp_path: Path) -> None:
    root = make_icdar_det(tmp_path / "set")
    (root / "gt" / "gt_b.txt").unlink()
    with pytest.raises(DataError, match="gt_b.txt: not found"):
        load_det_dataset(root)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("0,0,10,0,10,5,0,text", "expected 8 coordinates and a transcription, found 8"),
        ("0,0,10,0,10,5,0,5", "found 8 comma-separated fields"),  # no transcription at all
        ("0,0,10,x,10,5,0,5,text", "coordinate 'x' is not a number"),
        ("0,0,10,nan,10,5,0,5,text", "coordinate 'nan' is not finite"),
    ],
)
def test_icdar_det_malformed_line(tmp_path: Path, line: str, problem: str) -> None:
    root = make_icdar_det(tmp_path / "set")
    assert_line_error(root, write_text(root / "gt" / "gt_b.txt", f"0,0,1,0,1,1,0,1,ok\n{line}\n"), problem)


# ----------------------------------------------------------------------------------- detection, Paddle


def paddle_line(name: str, boxes: list[tuple[str, list[list[float]]]]) -> str:
    return name + "\t" + json.dumps([{"transcription": t, "points": p} for t, p in boxes], ensure_ascii=False)


def test_paddle_det_label_file(tmp_path: Path) -> None:
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "b.png")
    pentagon = [[0, 0], [10, 0], [12, 5], [5, 9], [0, 5]]
    label = write_text(
        tmp_path / "label.txt",
        paddle_line("imgs/b.png", [("Tab\there, comma", [[0, 0], [1, 0], [1, 1], [0, 1]])])
        + "\n\n"
        + paddle_line("imgs/a.png", [("###", pentagon), ("x", [[0, 0], [2, 0], [2, 2], [0, 2]])])
        + "\n",
        bom=True,
    )
    a, b = load_det_dataset(label)
    assert (a.image, b.image) == (tmp_path / "imgs" / "a.png", tmp_path / "imgs" / "b.png")
    assert a.polys[0].shape == (5, 2) and a.polys[0].dtype == np.float32
    assert a.texts == ("###", "x") and a.ignore == (True, False)
    assert b.texts == ("Tab\there, comma",)
    assert [s.image.name for s in load_det_dataset(label, limit=1)] == ["a.png"]


def test_paddle_det_paths_resolve_against_parent(tmp_path: Path) -> None:
    """PaddleOCR's data_dir is often the label file's parent: entries like imgs/a.png beside labels/."""
    write_image(tmp_path / "imgs" / "a.png")
    label = write_text(tmp_path / "labels" / "det.txt", paddle_line("imgs/a.png", []) + "\n")
    write_text(tmp_path / "labels" / "missing.txt", paddle_line("nowhere/c.png", []) + "\n")
    assert load_det_dataset(label)[0].image == tmp_path / "imgs" / "a.png"
    # A missing image is not an error here; the path is resolved beside the label file for the loop to skip.
    assert load_det_dataset(tmp_path / "labels" / "missing.txt")[0].image == tmp_path / "labels" / "nowhere" / "c.png"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('imgs/a.png [{"transcription": "x", "points": [[0, 0], [1, 0], [1, 1]]}]', "no tab"),
        ('imgs/a.png\t[{"transcription": "x", "points": [[0, 0], [1, 0]', "bad JSON"),
        ('imgs/a.png\t{"transcription": "x"}', "expected a JSON list"),
        ('imgs/a.png\t[{"points": [[0, 0], [1, 0], [1, 1]]}]', "box 0 needs a string 'transcription'"),
        ('imgs/a.png\t[{"transcription": "x", "points": [[0, 0], [1, 0, 2], [1, 1]]}]', "at least 3 [x, y] pairs"),
        ('imgs/a.png\t[{"transcription": "x", "points": [[0, 0], [1, 0]]}]', "at least 3 [x, y] pairs"),
        ('imgs/a.png\t[{"transcription": "x", "points": [[0, 0], ["a", 0], [1, 1]]}]', "'a' is not a number"),
        ("imgs/b.png\t[]", "already listed on line 1"),
    ],
)
def test_paddle_det_malformed_line(tmp_path: Path, line: str, problem: str) -> None:
    label = write_text(tmp_path / "label.txt", f"imgs/b.png\t[]\n{line}\n")
    assert_line_error(label, label, problem)


# ----------------------------------------------------------------------------------------- recognition


def test_rec_directory_layout(tmp_path: Path) -> None:
    root = tmp_path / "set" / "rec"
    for name in ("b.png", "a.png"):
        write_image(root / "images" / name)
    write_text(root / "labels.tsv", "b.png\tHello world\twith tab\r\na.png\t  spaced  \n\n", bom=True)
    samples = load_rec_dataset(tmp_path / "set")  # the parent holding rec/
    assert samples == [
        RecSample(image=root / "images" / "a.png", text="  spaced  "),
        RecSample(image=root / "images" / "b.png", text="Hello world\twith tab"),
    ]
    assert load_rec_dataset(root, limit=1) == samples[:1]


def test_rec_paddle_label_file(tmp_path: Path) -> None:
    write_image(tmp_path / "ic15" / "train" / "word_1.png")
    label = write_text(tmp_path / "ic15" / "rec_gt.txt", "train/word_2.png\tB\ntrain/word_1.png\tJOINT\n")
    nested = write_text(tmp_path / "ic15" / "lists" / "rec_gt.txt", "train/word_1.png\tJOINT\n")
    samples = load_rec_dataset(label)
    assert [s.text for s in samples] == ["JOINT", "B"]
    assert samples[0].image == tmp_path / "ic15" / "train" / "word_1.png"
    assert load_rec_dataset(nested)[0].image == tmp_path / "ic15" / "train" / "word_1.png"


@pytest.mark.parametrize("layout", ["dir", "file"])
def test_rec_line_without_tab(tmp_path: Path, layout: str) -> None:
    write_image(tmp_path / "images" / "a.png")
    labels = write_text(tmp_path / ("labels.tsv" if layout == "dir" else "rec.txt"), "a.png\tok\nb.png text\n")
    assert_line_error(tmp_path if layout == "dir" else labels, labels, "no tab", load_rec_dataset)


# -------------------------------------------------------------------------------------- bad paths


@pytest.mark.parametrize("loader", [load_det_dataset, load_rec_dataset])
def test_missing_path_and_unknown_layout(tmp_path: Path, loader: object) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=re.escape(f"{missing}: not found") + ".*expected"):
        loader(missing)  # type: ignore[operator]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a .* set layout.*expected a directory with images/"):
        loader(tmp_path / "empty")  # type: ignore[operator]
    with pytest.raises(ConfigError, match="limit=-1"):
        loader(tmp_path / "empty", limit=-1)  # type: ignore[operator]


# --------------------------------------------------------------------------------------- real dev sets


def test_real_dev_sets() -> None:
    if not (SHARED_DATA / "sroie_dev").is_dir() or not (SHARED_DATA / "ic15_words_dev").is_dir():
        pytest.skip(f"{SHARED_DATA}: shared dev sets not present")
    det = load_det_dataset(SHARED_DATA / "sroie_dev")
    assert len(det) == 60
    assert all(s.image.is_file() and len(s.polys) == len(s.texts) == len(s.ignore) > 0 for s in det)
    assert all(p.shape == (4, 2) for s in det for p in s.polys)
    rec = load_rec_dataset(SHARED_DATA / "ic15_words_dev")
    assert len(rec) == 1039
    assert all(s.image.is_file() for s in rec)
    assert [s.image.name for s in rec] == sorted(s.image.name for s in rec)


def test_relative_sets_resolve_from_a_dvc_experiment_workspace(tmp_path, monkeypatch):
    """`dvc exp run --queue` runs in <repo>/.dvc/tmp/exps/<run>/: ../shared/data must still be found."""
    from ocrslim.data.datasets import resolve_data_path

    repo = tmp_path / "repo"
    shared = tmp_path / "shared" / "data" / "set"
    shared.mkdir(parents=True)
    run = repo / ".dvc" / "tmp" / "exps" / "tmpabc"
    run.mkdir(parents=True)
    monkeypatch.chdir(run)
    assert resolve_data_path("../shared/data/set").resolve() == shared.resolve()
    assert resolve_data_path("../shared/data/missing") == Path("../shared/data/missing")  # reported as given
    monkeypatch.chdir(repo)
    assert resolve_data_path("../shared/data/set").resolve() == shared.resolve()  # the ordinary case
