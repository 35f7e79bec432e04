"""Validation splits carved from the user's training sets, so defaults are chosen on data nobody reports.

The ``split`` stage writes, per training set and task, two *split files* (``<out>/<set>/<task>/train.split.json``
and ``val.split.json``): the set's path as configured and the sample names that part holds. Readers open a split
file like any set (:func:`ocrslim.data.datasets.detect_layout` kind ``split``): they load the source set, found
with :func:`~ocrslim.data.datasets.resolve_data_path` (so from a queued experiment too), and keep those samples.
Nothing is copied, no absolute path is written, and the bytes depend only on the set and the params.

Samples are split by *group*, not one by one: crops cut from one receipt (``160_000.jpg``, ``160_001.jpg``) and
that receipt's page (``160.jpg``) share the group ``160``, so a validation receipt is held out of both the det and
the rec training sets; scene words numbered in image order (``word_1.png`` ...) go in blocks of
``group_block``. A group is in validation iff a hash of (seed, group) falls below ``val_fraction`` (a set of
two or more groups always keeps at least one on each side).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocrslim.core.errors import DataError
from ocrslim.core.fsutil import write_json

__all__ = ["PARTS", "SPLIT_SUFFIX", "group_of", "in_validation", "make_splits", "split_path", "write_splits"]

SPLIT_SUFFIX = ".split.json"
PARTS = ("train", "val")
_PREFIX = re.compile(r"^(\d+)(?:[_.]|$)")
_NUMBER = re.compile(r"(\d+)")


def group_of(name: str, block: int) -> str:
    """The group a sample belongs to: its leading number (``160_003.jpg`` → ``160``, ``160.jpg`` → ``160``), or
    its number's block of ``block`` (``word_45.png`` → ``b2`` for blocks of 20), else the name itself."""
    stem = Path(name).name
    m = _PREFIX.match(stem)
    if m:
        return str(int(m.group(1)))
    m = _NUMBER.search(stem)
    return f"b{int(m.group(1)) // block}" if m else stem


def _position(group: str, seed: int) -> float:
    """A stable hash of (seed, group) mapped to [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_validation(group: str, seed: int, fraction: float) -> bool:
    """Whether ``group`` is held out: its hash position is below ``fraction``."""
    return _position(group, seed) < fraction


def _val_groups(groups: set[str], seed: int, fraction: float) -> set[str]:
    """The held-out groups; with two or more groups, never none and never all (a small set keeps one of each)."""
    ranked = sorted(groups, key=lambda g: (_position(g, seed), g))
    val = {g for g in ranked if _position(g, seed) < fraction}
    if len(ranked) >= 2:
        if not val:
            val = {ranked[0]}
        if len(val) == len(ranked):
            val.discard(ranked[-1])
    return val


def split_path(out: str | Path, set_path: str | Path, task: str, part: str) -> Path:
    """Where :func:`write_splits` puts ``part`` ("train" | "val") of ``set_path``'s ``task`` samples."""
    return Path(out) / Path(str(set_path)).name / task / f"{part}{SPLIT_SUFFIX}"


def write_splits(sets: dict[str, Sequence[str]], out: str | Path, val_fraction: float, seed: int, block: int
                 ) -> dict[str, Any]:
    """Write the train/val split files of every set and task; return a manifest of the counts.

    Args:
        sets: ``{"det": [set paths], "rec": [set paths]}`` as configured (relative paths stay relative).
        out: output folder (its contents are written; the stage writes it atomically).
        val_fraction: share of groups held out for validation.
        seed: the split's seed.
        block: group size for samples numbered in sequence (scene words).

    Raises:
        DataError: a set has no labelled samples for its task, or validation would be empty or everything.
    """
    from ocrslim.data.datasets import load_det_dataset, load_rec_dataset

    manifest: dict[str, Any] = {"val_fraction": val_fraction, "seed": seed, "group_block": block, "sets": {}}
    for task, paths in sets.items():
        loader = load_det_dataset if task == "det" else load_rec_dataset
        for src in paths:
            samples = loader(src)
            names = [s.image.name for s in samples]
            if not names:
                raise DataError(f"split.{task}_sets: {src} holds no {task} samples. Point it at a labelled set.")
            groups = {n: group_of(n, block) for n in names}
            held = _val_groups(set(groups.values()), seed, val_fraction)
            val = sorted(n for n in names if groups[n] in held)
            train = sorted(n for n in names if n not in set(val))
            if not val or not train:
                raise DataError(f"split.{task}_sets: {src} splits into {len(train)} train / {len(val)} val samples "
                                f"at val_fraction {val_fraction}. Use a set with more groups or another fraction.")
            for part, members in (("train", train), ("val", val)):
                write_json(split_path(out, src, task, part),
                           {"source": str(src), "task": task, "part": part, "samples": members})
            manifest["sets"][f"{Path(str(src)).name}/{task}"] = {
                "source": str(src), "train": len(train), "val": len(val),
                "val_groups": len({groups[n] for n in val}), "groups": len(set(groups.values())),
            }
    return manifest


def make_splits(cfg: Any, charset: Sequence[str], out: str | Path | None = None) -> dict[str, Any]:
    """The ``split`` stage: validate every training set (layout, dictionary coverage), write its train/val split
    files into ``out`` (default ``cfg.out``) atomically, and write and return ``<out>/manifest.json``.

    Args:
        cfg: a :class:`~ocrslim.core.config.SplitConfig`.
        charset: the student's dictionary (labels with other characters are reported; training skips them).
    """
    from ocrslim.core.fsutil import atomic_path
    from ocrslim.data.datasets import check_training_sets

    paths = list(dict.fromkeys([*cfg.det_sets, *cfg.rec_sets]))
    coverage = check_training_sets(paths, charset, "split.det_sets/rec_sets")
    with atomic_path(Path(out or cfg.out)) as tmp:
        tmp.mkdir()
        manifest = write_splits({"det": cfg.det_sets, "rec": cfg.rec_sets}, tmp, cfg.val_fraction, cfg.seed,
                                cfg.group_block)
        manifest["coverage"] = coverage
        write_json(tmp / "manifest.json", manifest)
    return manifest
