"""Read OCR detection and recognition sets as they are on disk, into plain sample records.

Layouts are detected from what is at ``path``:

Detection (``load_det_dataset``):
    - ICDAR 2015 directory: ``images/<img>`` and ``gt/gt_<img stem>.txt``; each gt line is
      ``x1,y1,x2,y2,x3,y3,x4,y4,transcription``. The text after the 8th comma is kept verbatim (it may contain
      commas; no quote stripping). ``###`` marks don't care.
    - A directory holding a ``det/`` subfolder (e.g. ``/work/shared/data/sroie_dev``): that subfolder.
    - PaddleOCR det label file: ``<image path>\\t[{"transcription": "...", "points": [[x, y], ...]}, ...]``.

Recognition (``load_rec_dataset``):
    - Directory with ``images/`` and ``labels.tsv`` (``<filename>\\t<text>``).
    - A directory holding a ``rec/`` subfolder: that subfolder.
    - PaddleOCR rec label file: ``<image path>\\t<text>``.
    - CRNN-style LMDB directory (holds ``data.mdb``): ``num-samples``, ``image-%09d``, ``label-%09d``, 1-based.
      Samples point into the LMDB (``RecSample.lmdb``); read them with :func:`read_sample_image`.

Text files are read as UTF-8 with an optional BOM; blank lines are skipped; a line is split on its first tab
only, so later tabs and all spaces belong to the text. Image paths in a PaddleOCR label file are resolved
against the label file's directory, and if no file exists there, against its parent (PaddleOCR configs set
``data_dir`` to either, e.g. ``train_data/ic15_data/`` with entries ``train/word_1.png``). Images are never
opened here: a missing or unreadable image is the evaluation loop's to skip and count.

GT coordinates that are not numbers, not finite or beyond any image size (``|x| > MAX_PIXELS``) are one-line
errors here; coordinates outside their image (negative, past its width) are clipped when the image is known
(:func:`fit_gt_to_image`), and a box wholly outside it is dropped and counted by the evaluation.

Samples are sorted by image name (the path as written in a label file), and ``limit`` keeps the first N.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ocrslim.core.errors import ConfigError, DataError
from ocrslim.infer.preprocess import MAX_PIXELS

__all__ = [
    "LABELLED",
    "DetSample",
    "Layout",
    "ImageStats",
    "RecSample",
    "check_training_sets",
    "coverage_summary",
    "detect_layout",
    "dictionary_coverage",
    "icdar_gt_text",
    "image_files",
    "iter_sample_images",
    "load_det_dataset",
    "load_rec_dataset",
    "load_rec_images",
    "fit_gt_to_image",
    "read_sample_image",
    "read_sample_image_checked",
    "rec_labels_text",
    "resolve_data_path",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
DONT_CARE = "###"

_DET_LAYOUTS = (
    "expected a directory with images/ and gt/gt_<image stem>.txt (ICDAR 2015), a directory with a det/ "
    "subfolder in that layout, or a PaddleOCR det label file (<image path>\\t<JSON list of boxes>)"
)
_REC_LAYOUTS = (
    "expected a directory with images/ and labels.tsv (<filename>\\t<text>), a directory with a rec/ "
    "subfolder in that layout, or a PaddleOCR rec label file (<image path>\\t<text>)"
)


@dataclass(frozen=True)
class DetSample:
    """One detection image and its ground truth (the image itself is not loaded).

    Attributes:
        image: path of the image file.
        polys: one read-only (K, 2) float32 array of x, y points per box (K = 4 in ICDAR files).
        texts: transcription of each box, verbatim.
        ignore: per box, True for don't care (transcription ``###``).
        labelled: False for an image read by :func:`load_det_images` (no ground truth at all, as opposed
            to a labelled page without text).
    """

    image: Path
    polys: tuple[np.ndarray, ...]
    texts: tuple[str, ...]
    ignore: tuple[bool, ...]
    labelled: bool = True


@dataclass(frozen=True)
class RecSample:
    """One cropped word/line image and its transcription (the image itself is not loaded).

    For an LMDB set, ``lmdb`` is the LMDB directory and ``image`` is ``<lmdb>/image-%09d`` (its key).
    """

    image: Path
    text: str
    lmdb: Path | None = None
    labelled: bool = True  # False for a crop read by load_rec_images (no transcription at all)


# --------------------------------------------------------------------------------------------- helpers


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ConfigError(f"limit={limit}: must be >= 0 or None. Pass None to load the whole set.")


def _short(text: str, width: int = 60) -> str:
    """``repr`` of ``text`` cut to ``width`` characters, so an error message stays on one line."""
    r = repr(text)
    return r if len(r) <= width else r[: width - 3] + "..."


def _lines(file: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for the non-blank lines of a UTF-8 text file (BOM allowed), 1-based."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{file}: not valid UTF-8 ({e.reason} at byte {e.start}). Re-save the file as UTF-8.") from e
    # split("\n") rather than splitlines(): the latter also splits on \x1c, \u2028 etc. inside transcriptions.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def _split_tab(file: Path, number: int, line: str, what: str) -> tuple[str, str]:
    name, sep, rest = line.partition("\t")
    if not sep:
        raise DataError(
            f"{file}:{number}: no tab in {_short(line)}. Write each line as <image path><TAB>{what}."
        )
    if not name:
        raise DataError(f"{file}:{number}: empty image path. Write each line as <image path><TAB>{what}.")
    return name, rest


def _resolve_image(label_file: Path, name: str) -> Path:
    """Resolve a label-file image path: next to the label file, else one level up (PaddleOCR ``data_dir``)."""
    here = label_file.parent / name
    if here.exists():
        return here
    above = label_file.parent.parent / name
    return above if above.exists() else here


def _coord(file: Path, number: int, value: Any, fix: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{file}:{number}: coordinate {_short(str(value))} is not a number. {fix}.") from None
    if not math.isfinite(x):
        raise DataError(f"{file}:{number}: coordinate {_short(str(value))} is not finite. {fix}.")
    if abs(x) > MAX_PIXELS:  # longer than any side of an image ocrslim reads: a corrupt file, not a box
        raise DataError(f"{file}:{number}: coordinate {_short(str(value))} is out of range (|x| <= {MAX_PIXELS:.0e}, "
                        f"no readable image is larger). {fix}.")
    return x


def _frozen(points: list[float], shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float32).reshape(shape)
    arr.setflags(write=False)  # samples are frozen dataclasses: keep their arrays unchangeable too
    return arr


# ------------------------------------------------------------------------------------------- detection


def _parse_icdar_gt(file: Path) -> tuple[tuple[np.ndarray, ...], tuple[str, ...], tuple[bool, ...]]:
    fix = "Write each box as x1,y1,x2,y2,x3,y3,x4,y4,transcription (### for don't care)"
    polys: list[np.ndarray] = []
    texts: list[str] = []
    for number, line in _lines(file):
        fields = line.split(",", 8)
        if len(fields) < 9:
            raise DataError(
                f"{file}:{number}: expected 8 coordinates and a transcription, found {len(fields)} "
                f"comma-separated fields in {_short(line)}. {fix}."
            )
        coords = [_coord(file, number, v.strip(), fix) for v in fields[:8]]
        polys.append(_frozen(coords, (4, 2)))
        texts.append(fields[8])
    return tuple(polys), tuple(texts), tuple(t == DONT_CARE for t in texts)


def _load_icdar_det(root: Path, limit: int | None) -> list[DetSample]:
    images = sorted(
        (p for p in (root / "images").iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )
    samples = []
    for image in images[:limit]:
        gt = root / "gt" / f"gt_{image.stem}.txt"
        if not gt.is_file():
            raise DataError(
                f"{gt}: not found (ground truth for {image}). Add it, or remove the image from {root / 'images'}."
            )
        polys, texts, ignore = _parse_icdar_gt(gt)
        samples.append(DetSample(image=image, polys=polys, texts=texts, ignore=ignore))
    return samples


def _parse_paddle_boxes(
    file: Path, number: int, payload: str
) -> tuple[tuple[np.ndarray, ...], tuple[str, ...], tuple[bool, ...]]:
    fix = 'Write the boxes as a JSON list like [{"transcription": "text", "points": [[x1, y1], [x2, y2], ...]}]'
    try:
        boxes = json.loads(payload)
    except json.JSONDecodeError as e:
        raise DataError(f"{file}:{number}: bad JSON after the tab ({e.msg} at column {e.colno}). {fix}.") from None
    if not isinstance(boxes, list):
        raise DataError(f"{file}:{number}: expected a JSON list of boxes, got {type(boxes).__name__}. {fix}.")
    polys: list[np.ndarray] = []
    texts: list[str] = []
    for k, box in enumerate(boxes):
        if not isinstance(box, dict) or not isinstance(box.get("transcription"), str) or "points" not in box:
            raise DataError(f"{file}:{number}: box {k} needs a string 'transcription' and 'points'. {fix}.")
        points = box["points"]
        if (
            not isinstance(points, list)
            or len(points) < 3
            or not all(isinstance(p, list | tuple) and len(p) == 2 for p in points)
        ):
            raise DataError(f"{file}:{number}: box {k} 'points' must be a list of at least 3 [x, y] pairs. {fix}.")
        coords = [_coord(file, number, v, fix) for p in points for v in p]
        polys.append(_frozen(coords, (len(points), 2)))
        texts.append(box["transcription"])
    return tuple(polys), tuple(texts), tuple(t == DONT_CARE for t in texts)


def _load_paddle_det(file: Path, limit: int | None) -> list[DetSample]:
    entries: dict[str, tuple[int, str]] = {}
    for number, line in _lines(file):
        name, payload = _split_tab(file, number, line, "a JSON list of boxes")
        if name in entries:
            raise DataError(
                f"{file}:{number}: image {_short(name)} already listed on line {entries[name][0]}. "
                "Merge its boxes into one line."
            )
        entries[name] = (number, payload)
    samples = []
    for name in sorted(entries)[:limit]:
        number, payload = entries[name]
        polys, texts, ignore = _parse_paddle_boxes(file, number, payload)
        samples.append(DetSample(image=_resolve_image(file, name), polys=polys, texts=texts, ignore=ignore))
    return samples


def resolve_data_path(path: str | Path) -> Path:
    """``path`` as given, or, when it is relative and missing because the process runs in a DVC
    experiment's temporary workspace (``<repo>/.dvc/tmp/exps/<run>/``, used by ``dvc exp run --queue``),
    the same path relative to ``<repo>``, so sets beside the repo (``../shared/data``) are found."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    parts = Path.cwd().resolve().parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            alt = Path(*parts[:i]) / p
            return alt if alt.exists() else p
    return p


LABELLED = {"det": ("icdar", "paddle_det", "split"), "rec": ("labels_tsv", "paddle_rec", "lmdb", "split")}
SPLIT_SUFFIX = ".split.json"  # a split file of ocrslim.data.splits: a set's path and the samples one part holds


@dataclass(frozen=True)
class Layout:
    """What ocrslim finds at a path for one task (:func:`detect_layout`).

    Attributes:
        kind: det ``icdar`` | ``paddle_det``; rec ``labels_tsv`` | ``paddle_rec`` | ``lmdb``; either task
            ``split`` (part of a set, :mod:`ocrslim.data.splits`) | ``images`` (a folder of images without
            labels: KD-only training, calibration) | ``none``.
        root: what the reader opens: the set folder (``<path>/det`` or ``<path>/rec`` when present) or the
            label file.
    """

    kind: str
    root: Path

    @property
    def labelled(self) -> bool:
        return self.kind not in ("images", "none")


def _label_file_task(file: Path) -> str:
    """A PaddleOCR label file's task: det when the text after the first tab is a JSON list of boxes (or
    looks like one but does not parse: the det reader then names the bad line), else rec."""
    for _, line in _lines(file):
        text = line.partition("\t")[2]
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            return "det" if text.lstrip().startswith("[{") else "rec"
        return "det" if isinstance(payload, list) and all(isinstance(b, dict) for b in payload) else "rec"
    return "rec"


def _read_split(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"{file}: not a readable split file. Re-run dvc repro split.") from None
    if not isinstance(data, dict) or data.get("task") not in ("det", "rec") \
            or not isinstance(data.get("samples"), list):
        raise DataError(f"{file}: not a split file (source, task, samples). Re-run dvc repro split.")
    return data


def _load_split(file: Path, task: str, limit: int | None) -> list[Any]:
    """The samples of a split file: its source set, read by the task's loader, filtered to the listed names."""
    data = _read_split(file)
    keep = set(data["samples"])
    source = load_det_dataset(data["source"]) if task == "det" else load_rec_dataset(data["source"])
    picked = [s for s in source if s.image.name in keep]
    if len(picked) != len(keep):
        raise DataError(f"{file}: {len(keep) - len(picked)} of its samples are not in {data['source']} any more. "
                        "Re-run dvc repro split.")
    return picked[:limit]


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def detect_layout(path: str | Path, task: str) -> Layout:
    """The one layout detector: how the set at ``path`` is stored for ``task`` ("det" or "rec").

    Every reader, the calibration pool and the training-set checks go through it (see the module docstring
    for the layouts). A missing path is ``none``.
    """
    root = resolve_data_path(path)
    if root.is_file() and root.name.endswith(SPLIT_SUFFIX):
        return Layout("split", root) if _read_split(root)["task"] == task else Layout("none", root)
    if root.is_file():
        kind = _label_file_task(root)
        return Layout(f"paddle_{kind}", root) if kind == task else Layout("none", root)
    if not root.is_dir():
        return Layout("none", root)
    if task == "rec" and (root / "data.mdb").is_file():
        return Layout("lmdb", root)
    sub = root / task
    if sub.is_dir():
        root = sub
    if task == "det" and (root / "images").is_dir() and (root / "gt").is_dir():
        return Layout("icdar", root)
    if task == "rec" and (root / "data.mdb").is_file():
        return Layout("lmdb", root)
    if task == "rec" and (root / "images").is_dir() and (root / "labels.tsv").is_file():
        return Layout("labels_tsv", root)
    for folder in (root / "images", root):
        if _has_images(folder):
            return Layout("images", folder)
    return Layout("none", root)


def load_det_dataset(path: str | Path, limit: int | None = None) -> list[DetSample]:
    """Load a text detection set (ICDAR 2015 directory or PaddleOCR det label file; see the module docstring).

    Args:
        path: the set directory (or its parent holding ``det/``), or a PaddleOCR det label file.
        limit: keep only the first ``limit`` images after sorting by name; ``None`` keeps all.

    Returns:
        One ``DetSample`` per image, sorted by image name.

    Raises:
        DataError: the path is missing or in no known layout, a gt file is missing, or a line is malformed
            (the message names ``<file>:<line>``).

    >>> samples = load_det_dataset("/work/shared/data/sroie_dev", limit=2)  # doctest: +SKIP
    >>> samples[0].polys[0].shape  # doctest: +SKIP
    (4, 2)
    """
    _check_limit(limit)
    found = detect_layout(path, "det")
    if found.kind == "split":
        return _load_split(found.root, "det", limit)
    if found.kind == "paddle_det":
        return _load_paddle_det(found.root, limit)
    if found.kind == "icdar":
        return _load_icdar_det(found.root, limit)
    if not found.root.exists():
        raise DataError(f"{found.root}: not found. Pass a detection set: {_DET_LAYOUTS}.")
    raise DataError(f"{found.root}: not a detection set layout. Pass a detection set: {_DET_LAYOUTS}.")


def load_det_images(path: str | Path, limit: int | None = None) -> list[DetSample]:
    """Unlabelled detection images (for KD-only training): a directory of images, or its ``images/``.

    Returns:
        One ``DetSample`` per image (sorted by name) with no boxes and ``labelled=False``.

    Raises:
        DataError: the path is not a directory holding images.
    """
    _check_limit(limit)
    return [DetSample(image=p, polys=(), texts=(), ignore=(), labelled=False) for p in image_files(path)[:limit]]


def load_rec_images(path: str | Path, limit: int | None = None) -> list[RecSample]:
    """Unlabelled crops (for KD-only training): a directory of images, or its ``images/``; text is empty."""
    _check_limit(limit)
    return [RecSample(image=p, text="", labelled=False) for p in image_files(path)[:limit]]


def image_files(path: str | Path) -> list[Path]:
    """The images of a plain image folder (or its ``images/``), sorted by name.

    Raises:
        DataError: the path holds no image.
    """
    found = detect_layout(path, "det")
    folder = found.root if found.kind == "images" else None
    if folder is None:
        for cand in (found.root / "images", found.root):
            if _has_images(cand):
                folder = cand
                break
    if folder is None:
        raise DataError(f"{found.root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}). Pass a directory of images.")
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.name)


def is_labelled_det_set(path: str | Path) -> bool:
    """Whether ``path`` is in a labelled detection layout (ICDAR 2015 directory or PaddleOCR label file)."""
    return detect_layout(path, "det").labelled


# ----------------------------------------------------------------------------------------- recognition


def _read_rec_labels(file: Path) -> list[tuple[str, str]]:
    entries = []
    for number, line in _lines(file):
        name, text = _split_tab(file, number, line, "<text>")
        entries.append((name, text))
    # Stable sort: a crop listed twice keeps its file order.
    return sorted(entries, key=lambda e: e[0])


def load_rec_dataset(path: str | Path, limit: int | None = None) -> list[RecSample]:
    """Load a text recognition set (``images/`` + ``labels.tsv``, or a PaddleOCR rec label file).

    Args:
        path: the set directory (or its parent holding ``rec/``), or a PaddleOCR rec label file.
        limit: keep only the first ``limit`` samples after sorting by image name; ``None`` keeps all.

    Returns:
        One ``RecSample`` per label line, sorted by image name.

    Raises:
        DataError: the path is missing or in no known layout, or a line has no tab (``<file>:<line>`` named).

    >>> samples = load_rec_dataset("/work/shared/data/ic15_words_dev")  # doctest: +SKIP
    >>> len(samples)  # doctest: +SKIP
    1039
    """
    _check_limit(limit)
    found = detect_layout(path, "rec")
    root = found.root
    if found.kind == "split":
        return _load_split(root, "rec", limit)
    if found.kind == "lmdb":
        return _load_lmdb_rec(root, limit)
    if found.kind == "paddle_rec":
        return [RecSample(image=_resolve_image(root, n), text=t) for n, t in _read_rec_labels(root)[:limit]]
    if found.kind == "labels_tsv":
        return [RecSample(image=root / "images" / n, text=t) for n, t in _read_rec_labels(root / "labels.tsv")[:limit]]
    if not root.exists():
        raise DataError(f"{root}: not found. Pass a recognition set: {_REC_LAYOUTS}.")
    raise DataError(f"{root}: not a recognition set layout. Pass a recognition set: {_REC_LAYOUTS}.")


# --------------------------------------------------------------------------------------------- writers


def icdar_gt_text(quads: Sequence[np.ndarray], texts: Sequence[str]) -> str:
    """An ICDAR 2015 gt file's text: ``x1,y1,...,x4,y4,transcription`` per box, coordinates rounded
    (the layout :func:`load_det_dataset` reads)."""
    lines = [",".join(str(int(round(float(v)))) for v in np.asarray(q).reshape(-1)) + "," + t
             for q, t in zip(quads, texts, strict=True)]
    return "".join(f"{ln}\n" for ln in lines)


def rec_labels_text(rows: Sequence[tuple[str, str]]) -> str:
    """A ``labels.tsv``'s text: ``<file>\\t<text>`` per crop (the layout :func:`load_rec_dataset` reads)."""
    for name, text in rows:
        if "\t" in name or "\n" in name or "\n" in text:
            raise DataError(f"labels.tsv: {name!r} / {text!r} holds a tab or newline. Rename the file or fix "
                            "the label.")
    return "".join(f"{name}\t{text}\n" for name, text in rows)


# ---------------------------------------------------------------------------------------------- LMDB


_LMDB_ENVS: dict[tuple[int, Path], Any] = {}


def _open_lmdb(root: Path) -> Any:
    """The read-only LMDB environment of ``root``, one per process (LMDB refuses a second open)."""
    key = (os.getpid(), root.resolve())
    if key in _LMDB_ENVS:
        return _LMDB_ENVS[key]
    try:
        import lmdb
    except ImportError:
        raise DataError(f"{root}: an LMDB set needs the lmdb package. pip install lmdb, then re-run.") from None
    try:
        env = lmdb.open(str(root), readonly=True, lock=False, readahead=False, meminit=False, max_readers=64)
    except lmdb.Error as e:
        raise DataError(f"{root}: not a readable LMDB ({type(e).__name__}: {e}). Rebuild it, or remove it.") from None
    _LMDB_ENVS[key] = env
    return env


def _load_lmdb_rec(root: Path, limit: int | None) -> list[RecSample]:
    """CRNN-style LMDB: ``num-samples``, then ``image-%09d`` / ``label-%09d`` for 1..N (labels UTF-8)."""
    env = _open_lmdb(root)
    with env.begin(write=False) as txn:
        raw = txn.get(b"num-samples")
        if raw is None or not raw.strip().isdigit():
            raise DataError(
                f"{root}: LMDB has no integer 'num-samples' key. Write num-samples, image-%09d and label-%09d "
                "(1-based), as CRNN's create_dataset does."
            )
        n = int(raw)
        samples = []
        for i in range(1, (n if limit is None else min(n, limit)) + 1):
            label = txn.get(f"label-{i:09d}".encode())
            if label is None:
                raise DataError(f"{root}: label-{i:09d} missing (num-samples = {n}). Rebuild the LMDB.")
            try:
                text = label.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{root}: label-{i:09d} is not UTF-8. Rebuild the LMDB with UTF-8 labels.") from None
            samples.append(RecSample(image=root / f"image-{i:09d}", text=text, lmdb=root))
    return samples


def read_sample_image_checked(sample: DetSample | RecSample) -> tuple[np.ndarray | None, str | None]:
    """A sample's image as BGR uint8 HxWx3 (files and LMDB entries alike, one decoder:
    :func:`ocrslim.infer.preprocess.decode_image`), or ``(None, why it cannot be used)``."""
    from ocrslim.infer.preprocess import decode_image, read_image_checked

    lmdb_root = getattr(sample, "lmdb", None)
    if lmdb_root is None:
        return read_image_checked(sample.image)
    env = _open_lmdb(lmdb_root)
    with env.begin(write=False) as txn:
        data = txn.get(sample.image.name.encode())
    if not data:
        return None, "no image under this LMDB key"
    return decode_image(bytes(data))


def read_sample_image(sample: DetSample | RecSample) -> np.ndarray | None:
    """A sample's image as BGR uint8 HxWx3 (files and LMDB entries alike), or ``None`` if it cannot be used."""
    return read_sample_image_checked(sample)[0]


def fit_gt_to_image(sample: DetSample, height: int, width: int) -> tuple[DetSample, int, int]:
    """``sample`` with its GT boxes clipped to the image: ``(sample, boxes clipped, boxes dropped)``.

    Coordinates outside ``[0, width] x [0, height]`` are clipped onto the border; a box with no area left
    (it lay wholly outside the image, e.g. negative or huge coordinates) is dropped and counted, so it is
    neither a miss nor a match. Boxes inside the image are returned unchanged (the same arrays).
    """
    polys, texts, ignore = [], [], []
    clipped = dropped = 0
    for poly, text, ign in zip(sample.polys, sample.texts, sample.ignore):
        inside = (poly[:, 0] >= 0) & (poly[:, 0] <= width) & (poly[:, 1] >= 0) & (poly[:, 1] <= height)
        if not inside.all():
            fit = np.stack([np.clip(poly[:, 0], 0, width), np.clip(poly[:, 1], 0, height)], axis=1)
            x, y = fit[:, 0].astype(np.float64), fit[:, 1].astype(np.float64)
            if abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) < 1e-6:
                dropped += 1
                continue
            clipped += 1
            poly = _frozen(fit.reshape(-1).tolist(), fit.shape)
        polys.append(poly)
        texts.append(text)
        ignore.append(ign)
    if not clipped and not dropped:
        return sample, 0, 0
    fitted = DetSample(sample.image, tuple(polys), tuple(texts), tuple(ignore), sample.labelled)
    return fitted, clipped, dropped


@dataclass
class ImageStats:
    """Counts kept by :func:`iter_sample_images`: images read, and unreadable ones skipped (first few named)."""

    read: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.read} images read"
        return f"{self.read} images read, {self.skipped} unreadable skipped (e.g. {', '.join(self.examples)})"


def iter_sample_images(
    samples: list[DetSample] | list[RecSample], stats: ImageStats | None = None
) -> Iterator[tuple[DetSample | RecSample, np.ndarray]]:
    """Yield ``(sample, image)``, skipping and counting unreadable images (as the evaluation loop does)."""
    stats = stats if stats is not None else ImageStats()
    for s in samples:
        img = read_sample_image(s)
        if img is None:
            stats.skipped += 1
            if len(stats.examples) < 3:
                stats.examples.append(str(s.image))
            continue
        stats.read += 1
        yield s, img


# ------------------------------------------------------------------------------------ dictionary coverage


def dictionary_coverage(samples: list[DetSample] | list[RecSample], charset: Iterable[str]) -> dict[str, int]:
    """Characters of the labels that are not in ``charset`` (space always allowed), with their counts.

    Don't-care boxes (``###``) are not counted. Returns ``{char: count}``, most frequent first.

    >>> dictionary_coverage([RecSample(Path("a.png"), "héllo")], "helo")
    {'é': 1}
    """
    allowed = set(charset) | {" "}
    counts: Counter[str] = Counter()
    for s in samples:
        if isinstance(s, RecSample):
            texts = [s.text]
        else:
            texts = [t for t, ign in zip(s.texts, s.ignore, strict=True) if not ign]
        for t in texts:
            counts.update(c for c in t if c not in allowed)
    return dict(counts.most_common())


def coverage_summary(name: str, samples: list[DetSample] | list[RecSample], missing: dict[str, int]) -> str:
    """One line: how many labels hold characters outside the dictionary, and the most frequent of them."""
    if not missing:
        return f"{name}: {len(samples)} samples, every label character is in the dictionary"
    top = ", ".join(f"{c!r} x{n}" for c, n in list(missing.items())[:8])
    return (
        f"{name}: {len(samples)} samples, {sum(missing.values())} label characters outside the dictionary "
        f"({len(missing)} distinct: {top}); the recogniser cannot emit them"
    )


def check_training_sets(paths: Sequence[str | Path], charset: Sequence[str], key: str) -> list[dict[str, Any]]:
    """Validate real training sets given by path (params ``key``): load them, report dictionary coverage.

    Each path may hold a detection set, a recognition set (any layout ``load_*_dataset`` reads, LMDB
    included), or a folder with both. Nothing is copied: later stages read them by path.

    Raises:
        DataError: a path is missing, in no known layout, or has a malformed line (``<file>:<line>`` named).
    """
    report = []
    for p in paths:
        path = resolve_data_path(p)
        if not path.exists():
            raise DataError(f"{key}: {path} not found. Fix the path in conf/, or remove it.")
        entry: dict[str, Any] = {"path": str(path)}
        layouts = {task: detect_layout(path, task) for task in ("det", "rec")}
        if not any(lay.labelled for lay in layouts.values()):
            raise DataError(
                f"{key}: {path} is neither a detection nor a recognition set. Give a folder with "
                "images/ + gt/ or images/ + labels.tsv (or det/, rec/ inside), an LMDB, or a PaddleOCR label file."
            )
        for task, loader in (("det", load_det_dataset), ("rec", load_rec_dataset)):
            if not layouts[task].labelled:
                continue
            samples = loader(path)
            missing = dictionary_coverage(samples, charset)
            entry[task] = {"samples": len(samples), "outside_dictionary": sum(missing.values()),
                           "summary": coverage_summary(f"{path} ({task})", samples, missing)}
        report.append(entry)
    return report
