"""Training batches for distillation / fine-tuning: mixed sets, rec crops by width bucket, det crops with DB targets.

A training set is several sets mixed: the user's real data (labelled, or plain image folders that only the
teacher can supervise) and the synthetic data that keeps the scripts the real sets lack (Chinese). Every
batch holds each set's share (``mix``) of its samples, so the mixing ratio is a parameter, not an accident of
the sets' sizes.

Batches are a pure function of ``(seed, step, rank)``: each set is walked through a fresh seeded permutation
per epoch (:func:`batch_indices`), det augmentation draws from a generator seeded with the same triple, and a
rec step's width bucket comes from a seeded schedule. A run resumed from a checkpoint at step ``s`` therefore
sees exactly the batches an uninterrupted one would, with no data-loader state to save, and DDP ranks read
disjoint samples.

Bad data is skipped and counted, never fatal: rec labels with characters outside the student's dictionary are
dropped when the set is built (``skipped_chars``); unreadable images are dropped from the batch that draws
them (``skipped_images``, counted once per image).

Rec: each crop is resized to the rec height keeping its aspect and padded (or squeezed) to the smallest width
bucket that holds it (:func:`ocrslim.infer.preprocess.rec_preprocess`, the runners' own code); a batch holds
crops of one bucket, so short scene words are not padded to a receipt line's width, and a crop's tensor never
depends on its batch mates (what makes the teacher cache exact).

Det: with ``views`` > 0 each page has that many fixed, seeded augmentations (crop position and scale), the
``e``-th time a page is drawn it shows view ``e mod views``: the teacher's map of a view is computed once and
reused. A polygon the window cuts is marked ignore, one outside it is dropped;
:func:`ocrslim.data.targets.make_db_targets` builds the targets (all-masked for an unlabelled page: KD only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ocrslim.core.config import DetConfig, RecConfig
from ocrslim.core.errors import DataError
from ocrslim.data.datasets import (
    DetSample,
    RecSample,
    detect_layout,
    load_det_dataset,
    load_det_images,
    load_rec_dataset,
    load_rec_images,
    read_sample_image,
)
from ocrslim.data.targets import make_db_targets
from ocrslim.infer.preprocess import det_resize_shape, normalize, rec_input_width, rec_preprocess

__all__ = [
    "DetBatch", "DetTrainSet", "RecBatch", "RecTrainSet", "batch_indices", "encode_label", "mix_counts",
]


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1,
                  stream: int = 0) -> list[int]:
    """Sample indices of ``rank``'s batch at ``step``: epoch-wise seeded permutations, ranks interleaved.

    Global position ``g = (step · world + rank) · batch_size + j`` falls in epoch ``g // n`` at place
    ``g % n`` of that epoch's permutation of ``range(n)``. ``stream`` separates the permutations of sets
    that are drawn side by side.

    >>> sorted(batch_indices(4, 2, 0, seed=0) + batch_indices(4, 2, 1, seed=0))  # one epoch: each sample once
    [0, 1, 2, 3]
    """
    return [i for i, _ in _positions(n, batch_size, step * world + rank, seed, stream)]


def _positions(n: int, count: int, slot: int, seed: int, stream: int) -> list[tuple[int, int]]:
    """``count`` (sample index, epoch) pairs of draw slot ``slot`` from a set of ``n`` samples."""
    if n <= 0:
        raise DataError("training set: no usable samples. Check distill.<task>.train_data and the dictionary.")
    out: list[tuple[int, int]] = []
    perms: dict[int, np.ndarray] = {}
    for g in range(slot * count, slot * count + count):
        epoch, pos = divmod(g, n)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng((seed, stream, epoch) if stream else (seed, epoch)).permutation(n)
        out.append((int(perms[epoch][pos]), epoch))
    return out


def mix_counts(shares: Sequence[float], sizes: Sequence[int], batch_size: int) -> list[int]:
    """Samples of each set in a batch of ``batch_size``: shares normalised (``()``: by set size), rounded by
    largest remainder; a set with a positive share and samples gets at least one slot when the batch allows.

    >>> mix_counts((0.5, 0.5), (10, 1000), 8), mix_counts((), (100, 300), 8)
    ([4, 4], [2, 6])
    """
    weights = np.asarray(shares if shares else sizes, dtype=np.float64) * (np.asarray(sizes) > 0)
    if weights.sum() <= 0:
        raise DataError("training set: every set is empty or has a 0 share. Check distill.<task>.train_data/mix.")
    exact = weights / weights.sum() * batch_size
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: batch_size - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((weights > 0) & (counts == 0)):  # every set present when there is room
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return [int(c) for c in counts]


def encode_label(text: str, lookup: dict[str, int]) -> list[int] | None:
    """Student CTC class of each character (blank 0, dictionary 1..n, space n+1), or None if one is unknown."""
    out = []
    for ch in text:
        idx = lookup.get(ch)
        if idx is None:
            return None
        out.append(idx)
    return out


class _MixedSets:
    """Several sets drawn side by side: ``sets[k]`` holds samples, each batch takes ``mix_counts`` of each."""

    sets: list[list[Any]]
    names: list[str]
    bad_images: set[tuple[int, int]]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)

    @property
    def skipped_images(self) -> int:
        return len(self.bad_images)

    def sizes(self) -> list[int]:
        return [len(s) for s in self.sets]


# ------------------------------------------------------------------------------------------ recognition
@dataclasses.dataclass
class RecBatch:
    """A rec training batch (one width bucket).

    Attributes:
        images: N×3×H×W float32, normalised as the runners do (W = the bucket's width).
        targets: N×S int64 student classes, zero-padded; ``lengths`` N label lengths (0 where unlabelled).
        labelled: N booleans: which samples have a transcription (CTC is computed on those only).
        texts: the N labels; ``keys``: ``(set, sample, width)`` per row (the teacher cache's key).
    """

    images: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray
    labelled: np.ndarray
    texts: list[str]
    keys: list[tuple[int, int, int]]


class RecTrainSet(_MixedSets):
    """Crops of several sets (labelled or plain image folders), encoded to a student's classes, by width bucket.

    Args:
        paths: rec sets (any layout ocrslim reads) or plain image folders (unlabelled: KD only).
        characters: the student's dictionary, without blank and space.
        rec_cfg: the student's preprocessing (height, mean, std, min_side).
        widths: increasing training widths (multiples of 8); a crop goes to the smallest that holds it.
        shares: each set's share of a batch (``()``: by size).
        limit: first N samples of each set.
    """

    def __init__(self, paths: Sequence[str | Path], characters: Sequence[str], rec_cfg: RecConfig,
                 widths: Sequence[int] = (320,), shares: Sequence[float] = (), limit: int | None = None) -> None:
        self.cfg = rec_cfg
        self.widths = tuple(widths)
        self.shares = tuple(shares)
        lookup: dict[str, int] = {}
        for i, ch in enumerate(characters):
            lookup.setdefault(ch, i + 1)
        lookup.setdefault(" ", len(characters) + 1)
        self.sets, self.labels, self.names = [], [], []
        self.skipped_chars = 0
        for path in paths:
            labelled = detect_layout(path, "rec").labelled
            samples = load_rec_dataset(path, limit) if labelled else load_rec_images(path, limit)
            kept, labels = [], []
            for s in samples:
                enc = encode_label(s.text, lookup) if s.labelled else []
                if enc is None:
                    self.skipped_chars += 1
                    continue
                kept.append(s)
                labels.append(enc)
            self.sets.append(kept)
            self.labels.append(labels)
            self.names.append(str(path))
        self.bad_images = set()
        self.bucket_of = [[self._bucket(s) for s in samples] for samples in self.sets]
        self.members = [[[i for i, b in enumerate(bk) if b == w] for w in range(len(self.widths))]
                        for bk in self.bucket_of]
        self._schedule: list[int] = []
        self._seen: dict[tuple[int, int], list[int]] = {}

    def _bucket(self, sample: RecSample) -> int:
        """Index of the smallest width bucket holding the crop at the rec height (the last one squeezes)."""
        size = _image_size(sample)
        if size is None:
            return len(self.widths) - 1
        last = self.widths[-1]
        cfg = dataclasses.replace(self.cfg, min_width=min(self.cfg.min_width, last), max_width=last)
        width = rec_input_width((size[1], size[0]), cfg)
        return next((i for i, b in enumerate(self.widths) if width <= b), len(self.widths) - 1)

    def bucket_batch(self, batch_size: int, bucket: int) -> int:
        """Crops in a batch of ``bucket``: ``batch_size`` at the first width, proportionally fewer in wider ones
        (the same pixels, so about the same cost, per step)."""
        return max(1, round(batch_size * self.widths[0] / self.widths[bucket]))

    def bucket_weights(self) -> np.ndarray:
        """How often each bucket is drawn: the share-weighted fraction of the sets' samples it holds, times its
        width (its batches hold proportionally fewer crops), so every crop is drawn at the same rate."""
        sizes = np.asarray(self.sizes(), dtype=np.float64)
        shares = np.asarray(self.shares if self.shares else sizes, dtype=np.float64)
        shares = shares / max(shares.sum(), 1e-12)
        out = np.zeros(len(self.widths))
        for k, members in enumerate(self.members):
            if sizes[k]:
                out += shares[k] * np.array([len(m) for m in members]) / sizes[k]
        out *= np.asarray(self.widths, dtype=np.float64) / self.widths[0]
        return out / max(out.sum(), 1e-12)

    def _bucket_at(self, step: int, seed: int) -> tuple[int, int]:
        """(bucket of ``step``, how many earlier steps drew it): a seeded schedule, extended as needed."""
        weights = self.bucket_weights()
        while len(self._schedule) <= step:
            s = len(self._schedule)
            self._schedule.append(int(np.random.default_rng((seed, 7, s)).choice(len(weights), p=weights)))
        bucket = self._schedule[step]
        return bucket, sum(1 for b in self._schedule[:step] if b == bucket)

    def draw(self, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
        """``(set, sample)`` pairs of ``rank``'s batch at ``step``: one bucket, each set its share."""
        bucket, earlier = self._bucket_at(step, seed)
        sizes = [len(m[bucket]) for m in self.members]
        shares = self.shares if self.shares else self.sizes()
        counts = mix_counts(shares, sizes, self.bucket_batch(batch_size, bucket))
        out = []
        for k, n in enumerate(counts):
            if n:
                pos = _positions(sizes[k], n, earlier * world + rank, seed, stream=1 + 16 * k + bucket)
                out += [(k, self.members[k][bucket][i]) for i, _ in pos]
        return out

    def batch(self, picks: Sequence[tuple[int, int]]) -> RecBatch:
        """Read, preprocess and encode ``picks`` (``(set, sample)``); unreadable images are left out (counted)."""
        if not picks:
            raise DataError("rec training: an empty batch. Check distill.rec.train_data and distill.rec.mix.")
        width = max(self.widths[self.bucket_of[k][i]] for k, i in picks)
        cfg = dataclasses.replace(self.cfg, min_width=width, max_width=width)
        crops, keep = [], []
        for k, i in picks:
            img = read_sample_image(self.sets[k][i])
            if img is None:
                self.bad_images.add((k, i))
                continue
            crops.append(img)
            keep.append((k, i))
        if not keep:
            raise DataError(f"{self.sets[picks[0][0]][picks[0][1]].image}: no readable image in a batch of "
                            f"{len(picks)}. Check the training set's images.")
        labels = [self.labels[k][i] for k, i in keep]
        targets = np.zeros((len(keep), max(1, *(len(lb) for lb in labels))), dtype=np.int64)
        for row, lb in enumerate(labels):
            targets[row, : len(lb)] = lb
        return RecBatch(
            images=rec_preprocess(crops, cfg),
            targets=targets,
            lengths=np.array([len(lb) for lb in labels], dtype=np.int64),
            labelled=np.array([self.sets[k][i].labelled for k, i in keep], dtype=bool),
            texts=[self.sets[k][i].text for k, i in keep],
            keys=[(k, i, width) for k, i in keep],
        )


def _image_size(sample: RecSample | DetSample) -> tuple[int, int] | None:
    """(width, height) from the file header (no decode); LMDB samples are decoded."""
    if getattr(sample, "lmdb", None) is not None:
        img = read_sample_image(sample)
        return None if img is None else (img.shape[1], img.shape[0])
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(sample.image) as im:
            return im.size
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


# ------------------------------------------------------------------------------------------ detection
@dataclasses.dataclass
class DetBatch:
    """A det training batch: images N×3×S×S float32 and DB targets, each N×S×S float32.

    ``keys`` are ``(set, page, view)`` (view -1: a fresh random augmentation) — the teacher cache's key.
    """

    images: np.ndarray
    gt_prob: np.ndarray
    gt_mask: np.ndarray
    gt_thresh: np.ndarray
    gt_thresh_mask: np.ndarray
    labelled: np.ndarray
    keys: list[tuple[int, int, int]]


class DetTrainSet(_MixedSets):
    """Pages of several sets (labelled, or plain image folders: KD only), served as ``size×size`` crops.

    Args:
        paths: det sets (ICDAR 2015 directories, PaddleOCR label files, split files) or image folders.
        det_cfg: the student's preprocessing (mean, std, resize rule).
        size: square crop side (multiple of 32).
        shares: each set's share of a batch (``()``: by size).
        limit: first N pages of each set.
        scale: "inference": pages resized as the detector's preprocessing resizes them (text at the size the
            deployed model sees), times U(0.6, 1.2), then cropped; "page": the long side to ``size`` × U(0.5, 1.5).
        views: fixed augmentations per page (0: a fresh one every draw).
    """

    def __init__(self, paths: Sequence[str | Path], det_cfg: DetConfig, size: int = 640, shares: Sequence[float] = (),
                 limit: int | None = None, scale: str = "inference", views: int = 0) -> None:
        if scale not in ("inference", "page"):
            raise ValueError(f"scale must be 'inference' or 'page', not {scale!r}")
        self.cfg, self.size, self.scale, self.views, self.shares = det_cfg, size, scale, views, tuple(shares)
        self.sets, self.names = [], []
        for p in paths:
            labelled = detect_layout(p, "det").labelled
            self.sets.append(load_det_dataset(p, limit=limit) if labelled else load_det_images(p, limit=limit))
            self.names.append(str(p))
        self.bad_images = set()

    def draw(self, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1
             ) -> list[tuple[int, int, int]]:
        """``(set, page, view)`` of ``rank``'s batch at ``step``, each set its share."""
        counts = mix_counts(self.shares, self.sizes(), batch_size)
        out = []
        for k, n in enumerate(counts):
            if n:
                for i, epoch in _positions(len(self.sets[k]), n, step * world + rank, seed, stream=1 + k):
                    out.append((k, i, epoch % self.views if self.views else -1))
        return out

    def _crop(self, img: np.ndarray, sample: DetSample, rng: np.random.Generator
              ) -> tuple[np.ndarray, list[np.ndarray], list[bool]]:
        size = self.size
        h, w = img.shape[:2]
        if self.scale == "inference":
            scale = det_resize_shape(h, w, self.cfg)[0] / h * rng.uniform(0.6, 1.2)
        else:
            scale = size * rng.uniform(0.5, 1.5) / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        img = cv2.resize(img, (nw, nh))
        x0 = int(rng.integers(0, nw - size + 1)) if nw > size else 0
        y0 = int(rng.integers(0, nh - size + 1)) if nh > size else 0
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        part = img[y0 : y0 + size, x0 : x0 + size]
        canvas[: part.shape[0], : part.shape[1]] = part
        polys, ignore = [], []
        for poly, ign in zip(sample.polys, sample.ignore, strict=True):
            p = poly.astype(np.float64) * [nw / w, nh / h] - [x0, y0]
            inside = (p[:, 0] >= 0) & (p[:, 0] <= part.shape[1] - 1) & (p[:, 1] >= 0) & (p[:, 1] <= part.shape[0] - 1)
            lo, hi = p.min(axis=0), p.max(axis=0)
            if hi[0] < 0 or hi[1] < 0 or lo[0] > part.shape[1] - 1 or lo[1] > part.shape[0] - 1:
                continue  # entirely outside the window
            polys.append(p)
            ignore.append(bool(ign) or not bool(inside.all()))  # cut by the window: neither text nor background
        return canvas, polys, ignore

    def batch(self, picks: Sequence[tuple[int, int, int]], rng: np.random.Generator, seed: int = 0) -> DetBatch:
        """Read, augment and build targets for ``picks``; unreadable images are left out (and counted).

        A pick with a view (>= 0) is augmented by its own generator ``(seed, set, page, view)``; others by ``rng``.
        """
        images, maps, keep, labelled = [], [], [], []
        for k, i, view in picks:
            sample = self.sets[k][i]
            img = read_sample_image(sample)
            if img is None:
                self.bad_images.add((k, i))
                continue
            aug = np.random.default_rng((seed, 11, k, i, view)) if view >= 0 else rng
            crop, polys, ignore = self._crop(img, sample, aug)
            images.append(normalize(crop, self.cfg.mean, self.cfg.std))
            target = make_db_targets(polys, ignore, self.size, self.size)
            if not sample.labelled:  # no ground truth: every pixel masked out of the DB loss (KD only)
                target["gt_mask"][:] = 0.0
                target["gt_thresh_mask"][:] = 0.0
            maps.append(target)
            keep.append((k, i, view))
            labelled.append(sample.labelled)
        if not keep:
            raise DataError(f"{self.sets[picks[0][0]][picks[0][1]].image}: no readable image in a batch of "
                            f"{len(picks)}. Check the training set's images.")
        return DetBatch(
            images=np.stack(images),
            **{k: np.stack([m[k] for m in maps]) for k in ("gt_prob", "gt_mask", "gt_thresh", "gt_thresh_mask")},
            labelled=np.array(labelled, dtype=bool),
            keys=keep,
        )

