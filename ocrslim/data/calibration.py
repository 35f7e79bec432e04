"""INT8 calibration set for MNN: stratified image choice, pre-sized images, and mnnquant's JSON configs.

``build_calibration`` writes::

    <out>/det/<k:04d>.jpg        det images: short side scaled to det_size, centre-cropped to det_size²
    <out>/rec/<k:04d>.png        rec crops at RecConfig.height x RecConfig.min_width, pre-padded
    <out>/manifest.json          source path, bucket and sha256 of every image
    <out>/det.quant.json         mnnquant config (quantize_mnn's ``config``)
    <out>/rec.quant.json

MNN's calibration reads each image, stretches it to ``width`` x ``height``, converts it to ``format``
and computes ``(x - mean) * normal`` on 0..255 values. So ``mean = 255 * cfg.mean`` and
``normal = 1 / (255 * cfg.std)``, taken from the same ``DetConfig``/``RecConfig`` the runners use, and
rec crops are written already resized-and-padded exactly as :func:`ocrslim.infer.preprocess.rec_preprocess`
feeds them (height H keeping aspect, right-padded with the value that normalizes to 0): MNN's stretch is
then a no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ocrslim.core.config import CalibrateConfig, DetConfig, RecConfig
from ocrslim.core.errors import DataError
from ocrslim.core.fsutil import atomic_path, write_json
from ocrslim.data.datasets import IMAGE_SUFFIXES, detect_layout, load_det_dataset, load_rec_dataset, read_sample_image
from ocrslim.data.text import is_cjk
from ocrslim.infer.preprocess import read_image, rec_target_width, upscale_small

__all__ = [
    "Candidate",
    "build_calibration",
    "det_bucket",
    "mnn_quant_config",
    "rec_bucket",
    "rec_calibration_image",
    "stratified_pick",
]

Candidate = tuple[Path, str | None, Any]  # (image path, label text or None, the sample itself)


# -------------------------------------------------------------------------------------------- buckets


def det_bucket(size_wh: tuple[int, int]) -> str:
    """Page bucket: orientation (portrait/landscape/square) x size (long side <800, <1600, larger)."""
    w, h = size_wh
    orient = "square" if max(w, h) < 1.1 * min(w, h) else ("portrait" if h > w else "landscape")
    long_side = max(w, h)
    size = "small" if long_side < 800 else "medium" if long_side < 1600 else "large"
    return f"{orient}/{size}"


def rec_bucket(size_wh: tuple[int, int], text: str | None) -> str:
    """Crop bucket: script (cjk/latin/unlabeled) x aspect ratio w/h (<2, <4, <8, wider)."""
    w, h = size_wh
    r = w / max(h, 1)
    aspect = "ar<2" if r < 2 else "ar<4" if r < 4 else "ar<8" if r < 8 else "ar>=8"
    script = "unlabeled" if text is None else "cjk" if any(is_cjk(c) for c in text) else "latin"
    return f"{script}/{aspect}"


def stratified_pick(keys: Sequence[str], n: int, seed: int) -> list[int]:
    """Pick ``n`` indices so every bucket is represented, the rest in proportion to bucket sizes.

    Each non-empty bucket gets one pick first (if ``n`` allows), then the remainder is shared by
    largest remainder of the proportional quota; picks inside a bucket are random (``seed``).
    Returns indices in ascending order.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    names = sorted(groups)
    rng = np.random.default_rng(seed)
    order = {k: list(rng.permutation(groups[k])) for k in names}
    take = dict.fromkeys(names, 0)
    if n >= len(names):
        for k in names:
            take[k] = 1
    left = n - sum(take.values())
    total = len(keys)
    while left > 0:
        # Largest shortfall against the proportional quota first; ties by name for determinism.
        k = max(
            (k for k in names if take[k] < len(groups[k])),
            key=lambda k: (n * len(groups[k]) / total - take[k], k),
        )
        take[k] += 1
        left -= 1
    picked = [int(i) for k in names for i in order[k][: take[k]]]
    return sorted(picked)


# ---------------------------------------------------------------------------------------- candidates


def _plain_images(folder: Path) -> list[Candidate]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, None, None) for p in files]


def _candidates(task: str, paths: Sequence[str], key: str) -> list[Candidate]:
    """Images of a pool: dataset layouts through the loaders (labels give rec its script), else any images."""
    out: list[Candidate] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise DataError(
                f"{key}: {path} not found. Run dvc repro data first, or point calibrate.source at a folder "
                "with det/ and rec/ images."
            )
        if not detect_layout(path, task).labelled:
            out += _plain_images(path)
        elif task == "det":
            out += [(s.image, None, s) for s in load_det_dataset(path)]
        else:
            out += [(s.image, s.text, s) for s in load_rec_dataset(path)]
    return out


def _image_size(c: Candidate) -> tuple[int, int] | None:
    path, _, sample = c
    if sample is not None and getattr(sample, "lmdb", None) is not None:
        img = read_sample_image(sample)
        return None if img is None else (img.shape[1], img.shape[0])
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


# ------------------------------------------------------------------------------------------- images


def det_calibration_image(img: np.ndarray, size: int) -> np.ndarray:
    """Scale the short side to ``size`` (as det ``limit_type: min`` does), then centre-crop ``size`` x ``size``."""
    h, w = img.shape[:2]
    r = size / min(h, w)
    nh, nw = max(size, round(h * r)), max(size, round(w * r))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    y, x = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[y : y + size, x : x + size])


def rec_pad_value(cfg: RecConfig) -> np.ndarray:
    """BGR pixel that normalizes to 0: the runners pad with 0 *after* normalization, i.e. pixel 255 * mean."""
    return np.round(255.0 * np.asarray(cfg.mean, dtype=np.float64)).astype(np.uint8)


def rec_calibration_image(crop: np.ndarray, cfg: RecConfig) -> np.ndarray:
    """A crop as the recogniser sees it at width ``cfg.min_width``: resized to ``cfg.height`` keeping aspect
    (squeezed if wider), right-padded with :func:`rec_pad_value`. Shape (height, min_width, 3)."""
    crop = upscale_small(crop, cfg.min_side)
    rw = rec_target_width(crop.shape[:2], dataclasses.replace(cfg, max_width=cfg.min_width))
    out = np.empty((cfg.height, cfg.min_width, 3), np.uint8)
    out[:] = rec_pad_value(cfg)
    out[:, :rw] = cv2.resize(crop, (rw, cfg.height))
    return out


# ------------------------------------------------------------------------------------------- configs


def mnn_quant_config(
    pre: DetConfig | RecConfig, width: int, height: int, path: str | Path, used: int, cfg: CalibrateConfig
) -> dict[str, Any]:
    """mnnquant's JSON config, its mean/normal derived from the runners' preprocessing config.

    >>> q = mnn_quant_config(RecConfig(), 320, 48, "calibration/rec", 8, CalibrateConfig())
    >>> q["mean"], [round(v, 6) for v in q["normal"]]
    ([127.5, 127.5, 127.5], [0.007843, 0.007843, 0.007843])
    """
    return {
        "format": "BGR",  # PP-OCR models take OpenCV's BGR order
        "mean": [255.0 * m for m in pre.mean],
        "normal": [1.0 / (255.0 * s) for s in pre.std],
        "width": int(width),
        "height": int(height),
        "path": str(path),
        "used_image_num": int(used),
        "feature_quantize_method": cfg.feature_quantize_method,
        "weight_quantize_method": cfg.weight_quantize_method,
        "feature_clamp_value": 127,
        "weight_clamp_value": 127,
        "skip_quant_op_names": [],
        "debug": False,
    }


# -------------------------------------------------------------------------------------------- driver


def _shares(n: int, sizes: Sequence[int]) -> list[int]:
    """``n`` picks shared equally by pools (largest remainder), none beyond a pool's size, the rest moved on.

    >>> _shares(10, [100, 100, 100]), _shares(10, [2, 100])
    ([4, 3, 3], [2, 8])
    """
    out = [0] * len(sizes)
    left = n
    open_ = [i for i, s in enumerate(sizes) if s > 0]
    while left > 0 and open_:
        quota = [left // len(open_) + (1 if j < left % len(open_) else 0) for j in range(len(open_))]
        for i, q in zip(open_, quota):
            out[i] += min(q, sizes[i] - out[i])
        left = n - sum(out)
        open_ = [i for i in open_ if out[i] < sizes[i]]
    return out


def _readable(
    cands: list[Candidate], bucket: Callable[[tuple[int, int], str | None], str]
) -> tuple[list[tuple[Candidate, str, tuple[int, int]]], int]:
    """The candidates whose image header reads, each with its bucket and size; and how many did not read."""
    sized = []
    for c in cands:
        wh = _image_size(c)
        if wh is not None:
            sized.append((c, bucket(wh, c[1]), wh))
    return sized, len(cands) - len(sized)


def build_calibration(
    cfg: CalibrateConfig, det_cfg: DetConfig, rec_cfg: RecConfig, out: str | Path | None = None
) -> dict[str, Any]:
    """Choose, pre-size and write the calibration images of both tasks, the manifest and the quant JSONs.

    Args:
        cfg: pools or ``source``, counts, sizes, seed, MNN quantization methods.
        det_cfg, rec_cfg: the runners' preprocessing (mean/std, rec height/min_width/min_side).
        out: output directory (default ``cfg.out``), replaced atomically.

    Returns:
        The manifest (also written to ``<out>/manifest.json``).

    Raises:
        DataError: missing/empty source or pool, or fewer readable images than asked (one line naming the fix).
    """
    out = Path(out or cfg.out)
    det_size = cfg.det_size or det_cfg.limit_side_len
    if cfg.source is not None:
        src = Path(cfg.source)
        if not src.is_dir():
            raise DataError(
                f"calibrate.source={cfg.source}: folder not found. Create it with det/ and rec/ image folders, "
                "or set calibrate.source: null to use the synthetic training pool."
            )
        pools = {"det": ([str(src / "det")], "calibrate.source"), "rec": ([str(src / "rec")], "calibrate.source")}
    else:
        pools = {"det": (list(cfg.det_pool), "calibrate.det_pool"), "rec": (list(cfg.rec_pool), "calibrate.rec_pool")}
    counts = {"det": cfg.det_count, "rec": cfg.rec_count}
    buckets = {"det": lambda wh, _t: det_bucket(wh), "rec": rec_bucket}
    manifest: dict[str, Any] = {"seed": cfg.seed, "source": cfg.source, "tasks": {}}
    with atomic_path(out) as root:
        for task in ("det", "rec"):
            paths, key = pools[task]
            where = f"{key} ({', '.join(paths)})"
            count_key = f"calibrate.{task}_count"
            # each pool (a real training set, the synthetic split) gets an equal share, stratified inside it: the
            # synthetic pool is far larger, and its share by size would leave the real domain a few images
            # (shared over the images that read: a pool with broken files passes its share on to the others)
            per_pool, unreadable = [], 0
            for p in paths:
                sized, bad = _readable(_candidates(task, [p], key), buckets[task])
                per_pool.append(sized)
                unreadable += bad
            readable = sum(len(pool) for pool in per_pool)
            pool_size = readable + unreadable
            if not readable:
                raise DataError(f"{where}: no readable {task} images. Run dvc repro data, or put images in {where} "
                                "(calibrate.source: <folder with det/ and rec/>).")
            if readable < counts[task]:
                raise DataError(f"{where}: {readable} readable {task} images, but {count_key} asks for "
                                f"{counts[task]}. Add images or lower {count_key} in conf/calibrate/.")
            chosen = []
            for pool, n in zip(per_pool, _shares(counts[task], [len(pool) for pool in per_pool])):
                if n:
                    chosen += [pool[i] for i in stratified_pick([b for _, b, _ in pool], n, cfg.seed)]
            (root / task).mkdir(parents=True)
            entries = []
            for k, ((path, text, sample), bucket, _wh) in enumerate(chosen):
                img = read_sample_image(sample) if sample is not None else read_image(path)
                if img is None:  # readable header, undecodable body: same as the eval loop, skip and count
                    unreadable += 1
                    continue
                if task == "det":
                    name, data = f"{k:04d}.jpg", _encode(det_calibration_image(img, det_size), ".jpg")
                else:
                    name, data = f"{k:04d}.png", _encode(rec_calibration_image(img, rec_cfg), ".png")
                (root / task / name).write_bytes(data)
                entries.append({"file": f"{task}/{name}", "source": str(path), "text": text, "bucket": bucket,
                                "sha256": hashlib.sha256(data).hexdigest()})
            if len(entries) < counts[task]:
                raise DataError(
                    f"{where}: only {len(entries)} of {counts[task]} chosen {task} images decode. Remove the broken "
                    f"images or lower calibrate.{task}_count."
                )
            manifest["tasks"][task] = {
                "count": len(entries),
                "pool_size": pool_size,
                "unreadable_skipped": unreadable,
                "buckets": dict(sorted(Counter(e["bucket"] for e in entries).items())),
                "images": entries,
            }
        det_q = mnn_quant_config(det_cfg, det_size, det_size, out / "det", cfg.det_count, cfg)
        rec_q = mnn_quant_config(rec_cfg, rec_cfg.min_width, rec_cfg.height, out / "rec", cfg.rec_count, cfg)
        write_json(root / "det.quant.json", det_q)
        write_json(root / "rec.quant.json", rec_q)
        write_json(root / "manifest.json", manifest)
    return manifest


def _encode(img: np.ndarray, ext: str) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:  # pragma: no cover
        raise RuntimeError(f"cv2.imencode({ext}) failed")
    return buf.tobytes()
