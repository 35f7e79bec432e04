"""Validation splits of training sets: grouped, disjoint, deterministic, read like any set, nothing copied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ocrslim.core.errors import DataError
from ocrslim.data.datasets import detect_layout, load_det_dataset, load_rec_dataset
from ocrslim.data.splits import group_of, split_path, write_splits

from .test_dag import _make_sets


def test_group_of_keeps_a_receipt_together_and_blocks_scene_words() -> None:
    assert group_of("160_003.jpg", 20) == group_of("160.jpg", 20) == "160"
    assert group_of("word_45.png", 20) == group_of("word_59.png", 20) == "b2" != group_of("word_60.png", 20)
    assert group_of("cover.png", 20) == "cover.png"


def test_splits_are_disjoint_grouped_and_deterministic(tmp_path: Path) -> None:
    root = _make_sets(tmp_path / "set", pages=6, crops=tuple(f"line {i}" for i in range(6)), unreadable=False)[0].parent
    sets = {"det": [str(root)], "rec": [str(root)]}
    first = write_splits(sets, tmp_path / "a", 0.3, 0, 20)
    write_splits(sets, tmp_path / "b", 0.3, 0, 20)
    for task, loader in (("det", load_det_dataset), ("rec", load_rec_dataset)):
        val_file, train_file = (split_path(tmp_path / "a", root, task, part) for part in ("val", "train"))
        assert detect_layout(val_file, task).kind == "split" and detect_layout(val_file, "rec" if task == "det"
                                                                               else "det").kind == "none"
        val, train = loader(val_file), loader(train_file)
        groups = lambda samples: {group_of(s.image.name, 20) for s in samples}  # noqa: E731
        assert val and train and not groups(val) & groups(train)
        assert len(val) + len(train) == 6
        assert val_file.read_bytes() == split_path(tmp_path / "b", root, task, "val").read_bytes()
        assert "/" not in "".join(json.loads(val_file.read_text())["samples"])  # names only, no copied paths
    # the same receipt is held out of both tasks
    det_val = {group_of(s.image.name, 20) for s in load_det_dataset(split_path(tmp_path / "a", root, "det", "val"))}
    rec_val = {group_of(s.image.name, 20) for s in load_rec_dataset(split_path(tmp_path / "a", root, "rec", "val"))}
    assert det_val == rec_val and first["sets"][f"{root.name}/det"]["val"] == len(det_val)


def test_a_small_set_keeps_one_group_on_each_side_and_one_group_is_an_error(tmp_path: Path) -> None:
    two = _make_sets(tmp_path / "two", pages=2, crops=("a", "b"), unreadable=False)[0].parent
    m = write_splits({"det": [str(two)]}, tmp_path / "o", 0.01, 0, 20)
    assert m["sets"][f"{two.name}/det"]["val"] == 1 and m["sets"][f"{two.name}/det"]["train"] == 1
    one = _make_sets(tmp_path / "one", pages=1, crops=("a",), unreadable=False)[0].parent
    with pytest.raises(DataError, match="splits into"):
        write_splits({"rec": [str(one)]}, tmp_path / "p", 0.5, 0, 20)


def test_a_stale_split_file_is_one_line(tmp_path: Path) -> None:
    root = _make_sets(tmp_path / "set", pages=3, crops=("a", "b", "c"), unreadable=False)[0].parent
    write_splits({"det": [str(root)]}, tmp_path / "o", 0.3, 0, 20)
    val = split_path(tmp_path / "o", root, "det", "val")
    data = json.loads(val.read_text())
    data["samples"].append("gone.png")
    val.write_text(json.dumps(data))
    with pytest.raises(DataError, match="not in .* any more") as info:
        load_det_dataset(val)
    assert "\n" not in str(info.value)
