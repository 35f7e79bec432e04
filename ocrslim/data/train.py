"""Training batches for distillation / fine-tuning: rec crops with CTC labels, det crops with DB targets.

Batches are a pure function of ``(seed, step, rank)``: :func:`batch_indices` walks a fresh seeded
permutation of the set each epoch, and det augmentation draws from a generator seeded with the same
triple. A run resumed from a checkpoint at step ``s`` therefore sees exactly the batches an
uninterrupted run would, with no data-loader state to save, and DDP ranks read disjoint samples.

Bad data is skipped and counted, never fatal: rec labels with characters outside the student's
dictionary are dropped when the set is built (``skipped_chars``); unreadable images are dropped from
the batch that draws them (``skipped_images``, counted once per image).

Rec: each crop is resized to 48 px high keeping its aspect, squeezed to at most ``width`` and
right-padded to ``width`` (PP-OCR's fixed 3×48×320 training shape) with the same
:func:`ocrslim.infer.preprocess.rec_preprocess` the runners use, so every batch has one width, T = width/8
frames, and a crop's tensor never depends on its batch mates (what makes teacher caching valid).

Det: the page is scaled so its long side is ``size × U(0.5, 1.5)``, a random ``size×size`` window is
cut (zero-padded where the page is smaller), polygons move with it; a polygon the window cuts is
marked ignore, one outside it is dropped; :func:`ocrslim.compress.losses.make_db_targets` builds the targets.
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
    is_labelled_det_set,
    load_det_dataset,
    load_det_images,
    load_rec_dataset,
    read_sample_image,
)
from ocrslim.data.targets import make_db_targets
from ocrslim.infer.preprocess import det_resize_shape, normalize, rec_preprocess

__all__ = ["DetBatch", "DetTrainSet", "RecBatch", "RecTrainSet", "batch_indices", "encode_label"]


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Sample indices of ``rank``'s batch at ``step``: epoch-wise seeded permutations, ranks interleaved.

    Global position ``g = (step · world + rank) · batch_size + j`` falls in epoch ``g // n`` at place
    ``g % n`` of that epoch's permutation of ``range(n)``.

    >>> sorted(batch_indices(4, 2, 0, seed=0) + batch_indices(4, 2, 1, seed=0))  # one epoch: each sample once
    [0, 1, 2, 3]
    """
    if n <= 0:
        raise DataError("training set: no usable samples. Check distill.train_data_* and the dictionary.")
    out: list[int] = []
    perms: dict[int, np.ndarray] = {}
    start = (step * world + rank) * batch_size
    for g in range(start, start + batch_size):
        epoch, pos = divmod(g, n)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng((seed, epoch)).permutation(n)
        out.append(int(perms[epoch][pos]))
    return out


def encode_label(text: str, lookup: dict[str, int]) -> list[int] | None:
    """Student CTC class of each character (blank 0, dictionary 1..n, space n+1), or None if one is unknown."""
    out = []
    for ch in text:
        idx = lookup.get(ch)
        if idx is None:
            return None
        out.append(idx)
    return out


@dataclasses.dataclass
class RecBatch:
    """A rec training batch.

    Attributes:
        images: N×3×48×W float32, normalised as the runners do.
        targets: N×S int64 student classes, zero-padded; ``lengths`` N label lengths.
        texts: the N labels; ``indices``: their sample indices (teacher cache key).
    """

    images: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray
    texts: list[str]
    indices: list[int]


class _TrainSet:
    """What both training sets share: samples, and the indices of images that failed to decode."""

    samples: Sequence[Any]
    bad_images: set[int]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def skipped_images(self) -> int:
        return len(self.bad_images)


class RecTrainSet(_TrainSet):
    """Labelled crops encoded to a student's classes.

    Args:
        paths: rec sets (any layout :func:`~ocrslim.data.datasets.load_rec_dataset` reads), concatenated.
        characters: the student's dictionary, without blank and space.
        rec_cfg: the student's preprocessing (height, mean, std, min_side).
        width: fixed training width (multiple of 8).
        limit: first N samples of each set.
    """

    def __init__(
        self, paths: Sequence[str | Path], characters: Sequence[str], rec_cfg: RecConfig, width: int = 320,
        limit: int | None = None,
    ) -> None:
        # min_width = max_width = width: rec_preprocess then squeezes wide crops and pads narrow ones to it.
        self.cfg = dataclasses.replace(rec_cfg, min_width=width, max_width=width)
        lookup: dict[str, int] = {}
        for i, ch in enumerate(characters):
            lookup.setdefault(ch, i + 1)
        lookup.setdefault(" ", len(characters) + 1)
        self.samples: list[RecSample] = []
        self.labels: list[list[int]] = []
        self.skipped_chars = 0
        for path in paths:
            for s in load_rec_dataset(path, limit=limit):
                enc = encode_label(s.text, lookup)
                if enc is None:
                    self.skipped_chars += 1
                    continue
                self.samples.append(s)
                self.labels.append(enc)
        self.bad_images: set[int] = set()

    def batch(self, indices: Sequence[int]) -> RecBatch:
        """Read, preprocess and encode ``indices``; unreadable images are left out (and counted)."""
        crops, keep = [], []
        for i in indices:
            img = read_sample_image(self.samples[i])
            if img is None:
                self.bad_images.add(i)
                continue
            crops.append(img)
            keep.append(i)
        if not keep:
            raise DataError(
                f"{self.samples[indices[0]].image}: no readable image in a batch of {len(indices)}. "
                "Check the training set's images."
            )
        longest = max(1, *(len(self.labels[i]) for i in keep))
        targets = np.zeros((len(keep), longest), dtype=np.int64)
        for row, i in enumerate(keep):
            targets[row, : len(self.labels[i])] = self.labels[i]
        return RecBatch(
            images=rec_preprocess(crops, self.cfg),
            targets=targets,
            lengths=np.array([len(self.labels[i]) for i in keep], dtype=np.int64),
            texts=[self.samples[i].text for i in keep],
            indices=keep,
        )


@dataclasses.dataclass
class DetBatch:
    """A det training batch: images N×3×S×S float32 and DB targets, each N×S×S float32."""

    images: np.ndarray
    gt_prob: np.ndarray
    gt_mask: np.ndarray
    gt_thresh: np.ndarray
    gt_thresh_mask: np.ndarray
    indices: list[int]


class DetTrainSet(_TrainSet):
    """Pages with text polygons, served as random ``size×size`` crops with DB targets.

    Args:
        paths: det sets (ICDAR 2015 directories or PaddleOCR label files), concatenated.
        det_cfg: the student's preprocessing (mean, std).
        size: square crop side (multiple of 32).
        limit: first N pages of each set.
        unlabelled_ok: sets that are plain image directories (no ground truth) are read with
            :func:`~ocrslim.data.datasets.load_det_images` (KD-only training); otherwise they are an error.
        scale: "inference": pages are resized as the detector's preprocessing resizes them
            (``det_resize_shape``: text at the size the deployed model sees), times U(0.6, 1.2), then
            cropped; "page": the page's long side is resized to ``size`` × U(0.5, 1.5) (whole pages,
            smaller text).
    """

    def __init__(self, paths: Sequence[str | Path], det_cfg: DetConfig, size: int = 640,
                 limit: int | None = None, scale: str = "inference", unlabelled_ok: bool = False) -> None:
        if scale not in ("inference", "page"):
            raise ValueError(f"scale must be 'inference' or 'page', not {scale!r}")
        self.cfg = det_cfg
        self.size = size
        self.scale = scale
        self.samples: list[DetSample] = []
        for p in paths:
            if unlabelled_ok and not is_labelled_det_set(p):
                self.samples += load_det_images(p, limit=limit)
            else:
                self.samples += load_det_dataset(p, limit=limit)
        self.bad_images: set[int] = set()

    def _crop(
        self, img: np.ndarray, sample: DetSample, rng: np.random.Generator
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

    def batch(self, indices: Sequence[int], rng: np.random.Generator) -> DetBatch:
        """Read, augment and build targets for ``indices``; unreadable images are left out (and counted)."""
        images, maps, keep = [], [], []
        for i in indices:
            img = read_sample_image(self.samples[i])
            if img is None:
                self.bad_images.add(i)
                continue
            crop, polys, ignore = self._crop(img, self.samples[i], rng)
            images.append(normalize(crop, self.cfg.mean, self.cfg.std))
            maps.append(make_db_targets(polys, ignore, self.size, self.size))
            keep.append(i)
        if not keep:
            raise DataError(
                f"{self.samples[indices[0]].image}: no readable image in a batch of {len(indices)}. "
                "Check the training set's images."
            )
        return DetBatch(
            images=np.stack(images),
            **{k: np.stack([m[k] for m in maps]) for k in ("gt_prob", "gt_mask", "gt_thresh", "gt_thresh_mask")},
            indices=keep,
        )
