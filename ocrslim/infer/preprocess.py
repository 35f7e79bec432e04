"""Image preprocessing for detection and recognition, and cropping detected boxes.

Written once (numpy/OpenCV) and shared by the PyTorch, ONNX Runtime and MNN runners. Images are
BGR ``uint8`` HxWx3 arrays, as OpenCV reads them and as the PP-OCR models were trained.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ocrslim.core.config import DetConfig, RecConfig

# Images with more pixels are skipped before they are decoded (their size is read from the header), so memory
# stays bounded whatever a data set or a user hands over: 50 MP fits an 8000x6000 phone photo and decodes to
# 150 MB as BGR uint8 (at most 400 MB transiently for 16-bit RGBA); a 12000x9000 scan (108 MP) is skipped.
MAX_PIXELS = 50_000_000
UNREADABLE = "unreadable image"


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (hold the size)
HEADER_FORMATS = "PNG, JPEG, BMP, GIF, WebP, TIFF"


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:
            return None
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (n,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    found: dict[int, int] = {}
    for k in range(n):
        entry = data[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(end + "HH", entry[:4])
        if tag in (256, 257):
            found[tag] = struct.unpack(end + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header, without decoding any pixel, for the formats ocrslim reads
    (:data:`HEADER_FORMATS`); ``None`` for anything else or a header too short to hold the size."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return w, h
        if data[:2] == b"BM":
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                w, h = struct.unpack("<HH", data[18:22])
                return w, h
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if kind == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if kind == b"VP8X":
                return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
            return None
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
    except struct.error:  # a header cut short
        return None
    return None


def _to_uint8(img: np.ndarray) -> np.ndarray | None:
    """Samples scaled by their type's range (never stretched per image): uint16 / 257, float 0..1 × 255."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return cv2.convertScaleAbs(img, alpha=1.0 / 257.0)
    if img.dtype in (np.float32, np.float64):
        return np.clip(np.nan_to_num(img.astype(np.float32)) * 255.0, 0, 255).round().astype(np.uint8)
    return None


def decode_image(data: bytes | np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Decode encoded image bytes: ``(BGR uint8 HxWx3, None)``, or ``(None, why it cannot be used)``.

    The size is read from the header first (:func:`image_header_size`; other formats are unreadable): more
    than :data:`MAX_PIXELS` pixels is refused before any pixel is decoded. Grayscale is expanded to 3 channels,
    alpha composited on white, 16-bit samples scaled by their range (/257).
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buf.size == 0:
        return None, "empty file"
    size = image_header_size(buf[: 1 << 16].tobytes())
    if size is None and buf.size > 1 << 16:  # a JPEG whose metadata segments push the frame header further
        size = image_header_size(buf.tobytes())
    if size is None:
        return None, UNREADABLE
    w, h = size
    if w * h > MAX_PIXELS:
        cap = f"the cap is MAX_PIXELS = {MAX_PIXELS / 1e6:.0f} MP"
        return None, f"image too large ({w}x{h} = {w * h / 1e6:.1f} MP; {cap})"
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the reason is reported by the caller
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if img is None or img.size == 0 or img.shape[0] * img.shape[1] > MAX_PIXELS:
        return None, UNREADABLE
    img8 = _to_uint8(img)
    if img8 is None:
        return None, f"unsupported sample type {img.dtype}"
    if img8.ndim == 3 and img8.shape[2] == 1:
        img8 = img8[:, :, 0]
    if img8.ndim == 2:
        return cv2.cvtColor(img8, cv2.COLOR_GRAY2BGR), None
    if img8.shape[2] == 2:  # gray + alpha
        img8 = np.concatenate([np.repeat(img8[:, :, :1], 3, axis=2), img8[:, :, 1:2]], axis=2)
    if img8.shape[2] == 4:
        alpha = img8[:, :, 3:4].astype(np.float32) / 255.0
        rgb = img8[:, :, :3].astype(np.float32)
        return (rgb * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8), None
    if img8.shape[2] != 3:
        return None, f"unsupported channel count {img8.shape[2]}"
    return img8, None


def read_image_checked(path: str | Path) -> tuple[np.ndarray | None, str | None]:
    """:func:`decode_image` of a file: ``(image, None)`` or ``(None, why)`` (missing, empty, too large, ...)."""
    if not Path(path).is_file():
        return None, "not found"
    return decode_image(np.fromfile(str(path), dtype=np.uint8))


def read_image(path: str | Path) -> np.ndarray | None:
    """Read an image as BGR uint8 (HxWx3), or ``None`` if it cannot be used (see :func:`read_image_checked`).

    Grayscale images are expanded to 3 channels, alpha is composited on white, 16-bit samples are scaled by
    their range (/257), and images over :data:`MAX_PIXELS` are refused from their header, before decoding.
    """
    return read_image_checked(path)[0]


def _round32(v: float) -> int:
    return max(32, int(round(int(v) / 32) * 32))


def cap_image(img: np.ndarray, cfg: DetConfig) -> tuple[np.ndarray, float, float]:
    """Downscale an image whose long side exceeds ``cfg.max_side_len`` (sides rounded to 32).

    Detection and cropping both work on the capped image (as PP-OCR/RapidOCR do); boxes are
    mapped back to the original by the returned (ratio_h, ratio_w) = original / capped.
    """
    h, w = img.shape[:2]
    if max(h, w) <= cfg.max_side_len:
        return img, 1.0, 1.0
    ratio = cfg.max_side_len / max(h, w)
    rh, rw = _round32(h * ratio), _round32(w * ratio)
    return cv2.resize(img, (rw, rh)), h / rh, w / rw


def det_resize_shape(h: int, w: int, cfg: DetConfig) -> tuple[int, int]:
    """Detector input (H, W) for an image: ``limit_type`` rule, then sides rounded to multiples of 32.

    "min": the short side is scaled up to ``limit_side_len`` if smaller; "max": the long side is
    scaled down to ``limit_side_len`` if larger.
    """
    ratio = 1.0
    if cfg.limit_type == "min":
        if min(h, w) < cfg.limit_side_len:
            ratio = cfg.limit_side_len / min(h, w)
    elif max(h, w) > cfg.limit_side_len:
        ratio = cfg.limit_side_len / max(h, w)
    return _round32(h * ratio), _round32(w * ratio)


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 HxWx3 → float32 3xHxW, ``(x/255 - mean) / std``."""
    x: np.ndarray = img.astype(np.float32) * (1.0 / 255.0)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return x.transpose(2, 0, 1)


def det_resize(img: np.ndarray, cfg: DetConfig) -> np.ndarray:
    """BGR image resized to the detector's input size (:func:`det_resize_shape`), still uint8 HxWx3."""
    h, w = img.shape[:2]
    rh, rw = det_resize_shape(h, w, cfg)
    return cv2.resize(img, (rw, rh)) if (rh, rw) != (h, w) else img


def det_preprocess(img: np.ndarray, cfg: DetConfig) -> np.ndarray:
    """BGR image → detector input 1x3xHxW (float32), H and W multiples of 32."""
    return normalize(det_resize(img, cfg), cfg.mean, cfg.std)[None]


def rec_target_width(crop_hw: tuple[int, int], cfg: RecConfig) -> int:
    """Width a crop is resized to at height ``cfg.height`` (aspect kept, capped)."""
    h, w = crop_hw
    return int(min(cfg.max_width, max(1, math.ceil(cfg.height * w / max(h, 1)))))


def upscaled_hw(hw: tuple[int, int], min_side: int) -> tuple[int, int]:
    """(height, width) :func:`upscale_small` gives a crop of size ``hw``."""
    h, w = hw
    if min_side <= 0 or min(h, w) >= min_side:
        return h, w
    ratio = min_side / max(1, min(h, w))
    return _round32(h * ratio), _round32(w * ratio)


def rec_input_width(crop_hw: tuple[int, int], cfg: RecConfig) -> int:
    """Width :func:`rec_preprocess` resizes a crop of size ``crop_hw`` to, before padding (upscale, then aspect)."""
    return rec_target_width(upscaled_hw(crop_hw, cfg.min_side), cfg)


def upscale_small(crop: np.ndarray, min_side: int) -> np.ndarray:
    """Scale a crop whose short side is below ``min_side`` up to it, sides rounded to multiples of 32.

    This is what RapidOCR does to every image it is given (``increase_min_side``); the PP-OCR
    recognisers were tuned on inputs treated this way: on sroie_dev, PP-OCRv4's accuracy is 1.0
    point lower without it.
    """
    nh, nw = upscaled_hw(crop.shape[:2], min_side)
    return crop if (nh, nw) == crop.shape[:2] else cv2.resize(crop, (nw, nh))


def rec_preprocess(crops: Sequence[np.ndarray], cfg: RecConfig) -> np.ndarray:
    """BGR crops → one batch Nx3xHxW: each resized to height H keeping aspect, right-padded with 0.

    Crops smaller than ``cfg.min_side`` are first scaled up (:func:`upscale_small`). The batch width is
    the widest crop's width (at least ``cfg.min_width``), rounded up to a multiple of 8 so the CTC frame count is exact.
    """
    crops = [upscale_small(c, cfg.min_side) for c in crops]
    widths = [rec_target_width(c.shape[:2], cfg) for c in crops]
    batch_w = max([cfg.min_width, *widths])
    batch_w = int(math.ceil(batch_w / 8) * 8)
    out = np.zeros((len(crops), 3, cfg.height, batch_w), dtype=np.float32)
    for i, (crop, rw) in enumerate(zip(crops, widths)):
        resized = cv2.resize(crop, (rw, cfg.height))
        out[i, :, :, :rw] = normalize(resized, cfg.mean, cfg.std)
    return out


def order_quad(pts: np.ndarray) -> np.ndarray:
    """Order 4 points as top-left, top-right, bottom-right, bottom-left."""
    pts = np.asarray(pts, dtype=np.float32).reshape(4, 2)
    xs = pts[np.argsort(pts[:, 0], kind="stable")]
    left = xs[:2][np.argsort(xs[:2, 1], kind="stable")]
    right = xs[2:][np.argsort(xs[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def crop_quad(img: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Cut a quadrilateral out by perspective transform; tall crops (h/w ≥ 1.5) are rotated 90°."""
    pts = np.asarray(quad, dtype=np.float32).reshape(4, 2)
    width = int(max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3])))
    height = int(max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2])))
    width, height = max(width, 1), max(height, 1)
    dst = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(pts, dst)
    out = cv2.warpPerspective(img, m, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if out.shape[0] / out.shape[1] >= 1.5:
        out = np.ascontiguousarray(np.rot90(out))
    return out


def reading_order(boxes: Sequence[np.ndarray]) -> list[int]:
    """Indices of ``boxes`` in reading order: top to bottom, left to right within a line (±10 px)."""
    order = sorted(range(len(boxes)), key=lambda i: (float(boxes[i][0][1]), float(boxes[i][0][0])))
    for i in range(len(order) - 1):
        for j in range(i, -1, -1):
            a, b = boxes[order[j]], boxes[order[j + 1]]
            if abs(b[0][1] - a[0][1]) < 10 and b[0][0] < a[0][0]:
                order[j], order[j + 1] = order[j + 1], order[j]
            else:
                break
    return order
