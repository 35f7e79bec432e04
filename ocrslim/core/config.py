"""Typed configuration: one frozen dataclass per ``params.yaml`` section, and ``load_section``.

Defaults live only in the dataclasses. Hydra composes ``params.yaml`` from them: :func:`register_schemas`
stores every section's defaults in Hydra's ConfigStore (``hydra_plugins/ocrslim_schema`` calls it when DVC
or :mod:`ocrslim.compose` composes), and ``conf/`` holds only what differs (the teacher and student choices,
the tiny profile). ``load_section`` converts YAML values to the field types, rejects unknown keys
(suggesting the closest match) and lets ``__post_init__`` check ranges, so a typo fails with one line
naming the key instead of being silently ignored. (Typed validation stays here rather than in OmegaConf:
OmegaConf cannot type nested tuples such as ``export.det_shapes``.)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from ocrslim.core.errors import ConfigError

T = TypeVar("T")


def _check(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(
            f"params.yaml: {key} {problem}. Fix it in conf/ or with dvc exp run -S {key}=..., then re-run."
        )


# --------------------------------------------------------------------------------------------
# OCR pipeline settings (shared by every runner and carried in model metadata / bundle manifest)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DetConfig:
    """Text detection pre/post-processing (PP-OCR / DBNet conventions).

    Images are BGR uint8 (OpenCV order, as PP-OCR models were trained on). The keys above ``thresh`` are
    preprocessing: they shape what the model sees, are read while it is pruned and trained, and travel with it from
    the teacher stage on. :attr:`POSTPROCESSING` only reads its output: attached when the model is exported
    (:func:`ocrslim.core.artifacts.with_postprocessing`), so changing one retrains nothing.
    """

    POSTPROCESSING: ClassVar[tuple[str, ...]] = (  # (with the tiling keys: how the runtime feeds the image)
        "thresh", "box_thresh", "unclip_ratio", "max_candidates", "min_size", "use_dilation", "tile_height",
        "tile_overlap")

    limit_side_len: int = 736  # resize target for the side chosen by limit_type
    limit_type: str = "min"  # "min": short side scaled up to limit; "max": long side scaled down to limit
    max_side_len: int = 2000  # larger images are first downscaled to this long side (det and crops)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    thresh: float = 0.3  # probability map binarisation threshold
    box_thresh: float = 0.5  # minimum mean probability inside a box
    unclip_ratio: float = 1.6  # DB box expansion (distance = area * ratio / perimeter)
    max_candidates: int = 1000
    min_size: int = 3  # minimum short side of a box, in map pixels
    use_dilation: bool = True  # 2x2 dilation of the binary map before contours
    # 0: the detector reads the whole (resized) page at once. N: it reads horizontal strips N rows tall, each with
    # tile_overlap rows of context above and below that are run but not kept, and the probability maps are
    # stitched: the detector's memory is bounded by the strip, not the page (multiples of 32, the stride).
    # 256:64 measured on the 120 SROIE training pages (docs/runtime.md): peak RSS 447 -> 178 MB, det hmean and e2e F1
    # within 0.2 points of the whole page for the teacher and the student.
    tile_height: int = 256
    tile_overlap: int = 64

    def __post_init__(self) -> None:
        _check(self.limit_type in ("min", "max"), "det.limit_type", f"is {self.limit_type!r}, must be 'min' or 'max'")
        _check(32 <= self.limit_side_len <= 8192, "det.limit_side_len", f"is {self.limit_side_len}, must be 32..8192")
        _check(32 <= self.max_side_len <= 8192, "det.max_side_len", f"is {self.max_side_len}, must be 32..8192")
        _check(len(self.mean) == 3 and len(self.std) == 3, "det.mean/std", "must have 3 values")
        _check(all(s > 0 for s in self.std), "det.std", "values must be > 0")
        _check(0.0 < self.thresh < 1.0, "det.thresh", f"is {self.thresh}, must be in (0, 1)")
        _check(0.0 <= self.box_thresh < 1.0, "det.box_thresh", f"is {self.box_thresh}, must be in [0, 1)")
        _check(self.unclip_ratio > 0, "det.unclip_ratio", "must be > 0")
        _check(self.max_candidates > 0, "det.max_candidates", "must be > 0")
        _check(self.tile_overlap >= 0 and self.tile_overlap % 32 == 0, "det.tile_overlap",
               f"is {self.tile_overlap}, must be a multiple of 32, >= 0")
        _check(self.tile_height == 0 or (self.tile_height % 32 == 0 and self.tile_height >= 2 * self.tile_overlap
                                         + 32), "det.tile_height",
               f"is {self.tile_height}, must be 0 (whole page) or a multiple of 32 >= 2 * det.tile_overlap + 32")


@dataclasses.dataclass(frozen=True)
class RecConfig:
    """Text-line recognition pre/post-processing (PP-OCR CTC conventions).

    As for :class:`DetConfig`: the input keys travel with the model; :attr:`POSTPROCESSING` (how crops are batched
    and which lines end-to-end reading keeps) is attached on export.
    """

    POSTPROCESSING: ClassVar[tuple[str, ...]] = ("batch_size", "drop_score")

    height: int = 48  # input height of the recogniser
    min_side: int = 30  # crops with a shorter side are first scaled up to it, sides rounded to 32 (RapidOCR)
    min_width: int = 320  # crops are padded (right, zeros) to at least this width
    max_width: int = 2304  # wider lines are squeezed to this width
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # crops per forward (sorted by aspect ratio, padded to the widest): 1 pads no crop to a neighbour's width and
    # keeps the recogniser's buffers to one line (PP-OCR batches 6; docs/runtime.md measures both)
    batch_size: int = 1
    drop_score: float = 0.5  # end-to-end: lines whose mean CTC confidence is below are dropped

    def __post_init__(self) -> None:
        _check(8 <= self.height <= 256 and self.height % 8 == 0, "rec.height", "must be a multiple of 8 in 8..256")
        _check(self.min_width % 8 == 0 and self.min_width >= 8, "rec.min_width", "must be a multiple of 8, >= 8")
        _check(self.max_width >= self.min_width, "rec.max_width", "must be >= rec.min_width")
        _check(self.min_side >= 0, "rec.min_side", "must be >= 0 (0 disables)")
        _check(all(s > 0 for s in self.std), "rec.std", "values must be > 0")
        _check(self.batch_size >= 1, "rec.batch_size", "must be >= 1")
        _check(0.0 <= self.drop_score < 1.0, "rec.drop_score", "must be in [0, 1)")


# --------------------------------------------------------------------------------------------
# Stage configs
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """Which teacher enters the pipeline: zoo names, or ``onnx:<path>`` (+ ``dict`` for rec)."""

    det: str = "ppocrv4_mobile_det"
    rec: str = "ppocrv4_mobile_rec"
    dict: str | None = None  # character list (one per line) for an ``onnx:`` recogniser without metadata


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """torch → ONNX export and its parity gate."""

    opset: int = 17
    simplify: bool = True
    det_shapes: tuple[tuple[int, int], ...] = ((320, 320), (416, 256))  # (H, W) probes for the gate
    rec_widths: tuple[int, ...] = (320, 160)
    det_tol: float = 1e-3
    rec_tol: float = 1e-4

    def __post_init__(self) -> None:
        _check(11 <= self.opset <= 21, "export.opset", f"is {self.opset}, must be 11..21")
        _check(len(self.det_shapes) >= 2, "export.det_shapes", "needs at least 2 shapes")
        _check(len(self.rec_widths) >= 2, "export.rec_widths", "needs at least 2 widths")
        for h, w in self.det_shapes:
            _check(h % 32 == 0 and w % 32 == 0 and h > 0 and w > 0, "export.det_shapes", "must be multiples of 32")
        for w in self.rec_widths:
            _check(w % 8 == 0 and w > 0, "export.rec_widths", "must be multiples of 8")
        _check(self.det_tol > 0 and self.rec_tol > 0, "export.det_tol/rec_tol", "must be > 0")


@dataclasses.dataclass(frozen=True)
class TargetsConfig:
    """Export targets beside the MNN bundle, from its manifest (``targets`` stage): an ONNX Runtime bundle and
    TorchScript students, each written only after it reads real pages like the MNN bundle."""

    pages: tuple[str, ...] = ("../shared/data/sroie_dev",)  # det sets whose pages the parity check reads
    limit: int | None = 10  # first N pages of each set; null = all
    # lines matched (box IoU >= 0.5) as 2 matched / (bundle lines + target lines), and matched lines read alike;
    # the FP32 targets against an INT8 bundle differ a little, a wrong dictionary or preprocessing a lot
    min_line_agreement: float = 0.9
    min_text_agreement: float = 0.9
    threads: int = 2

    def __post_init__(self) -> None:
        _check(len(self.pages) >= 1, "targets.pages", "needs at least one det set")
        _check(self.limit is None or self.limit >= 1, "targets.limit", "must be >= 1 or null")
        for key in ("min_line_agreement", "min_text_agreement"):
            _check(0.0 <= getattr(self, key) <= 1.0, f"targets.{key}", "must be in [0, 1]")
        _check(self.threads >= 1, "targets.threads", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """ONNX → MNN conversion and its parity gate (vs ONNX Runtime)."""

    fp16: bool = False
    det_tol: float = 5e-3  # MNN's FP32 CPU kernels differ slightly from ORT on det (PROBE: 3e-3)
    rec_tol: float = 1e-3

    def __post_init__(self) -> None:
        _check(self.det_tol > 0 and self.rec_tol > 0, "convert.det_tol/rec_tol", "must be > 0")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation data (read by path, never copied) and limits."""

    # the real dev sets beside the repo (read by path, never copied) and the data stage's synthetic test split
    det_data: tuple[str, ...] = ("../shared/data/sroie_dev", "data/synth/det/test")
    rec_data: tuple[str, ...] = ("../shared/data/sroie_dev", "../shared/data/ic15_words_dev", "data/synth/rec/test")
    limit: int | None = None  # first N samples of each set (tiny profile)
    # The pruned-before-KD baseline reads (almost) nothing; its first N samples per set measure that
    # at a fraction of the cost. null = as `limit`.
    pruned_limit: int | None = 50
    threads: int = 2

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit >= 1, "eval.limit", "must be >= 1 or null")
        _check(self.pruned_limit is None or self.pruned_limit >= 1, "eval.pruned_limit", "must be >= 1 or null")
        _check(self.threads >= 1, "eval.threads", "must be >= 1")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated field type (nested sections, tuples, optionals, paths, numbers)."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}. Fix it in conf/.")
        return from_dict(tp, value, key)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0], key)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}. Fix it in conf/.")
        return tuple(_convert(v, a, key) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}. Fix it in conf/.")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected a number, got {value!r}. Fix it in conf/.")
        try:
            num = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}. Fix it in conf/.") from None
        if tp is int:
            if num != int(num):
                raise ConfigError(f"{key}: expected an integer, got {value!r}. Fix it in conf/.")
            return int(num)
        return num
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}. Fix it in conf/.")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, section: str) -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a suggestion."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields and f"{section}.{key}" in RENAMED:
            raise ConfigError(f"params.yaml: {section}.{key} was renamed to {RENAMED[f'{section}.{key}']}. Use the "
                              "new name in conf/ or dvc exp run -S, then re-run.")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"params.yaml: {section}.{key} is not a {cls.__name__} field{hint}. "
                f"Fix conf/, then dvc exp run (valid keys: {', '.join(fields)})."
            )
        kwargs[key] = _convert(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)



def with_overrides(cfg: T, section: str, overrides: Sequence[str]) -> T:
    """``cfg`` (the ``section`` dataclass, e.g. ``det``) with the ``SECTION.KEY=VALUE`` items of ``overrides``
    for that section applied, values read as YAML and checked like the params; items of other sections
    (``det`` or ``rec``) are left to their own config.

    Raises:
        ConfigError: an item is not ``det.KEY=VALUE`` / ``rec.KEY=VALUE``, or a value is invalid (one line).
    """
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        name, _, field = key.partition(".")
        if not sep or name not in ("det", "rec") or not field:
            raise ConfigError(f"override {item!r}: expected det.KEY=VALUE or rec.KEY=VALUE "
                              "(e.g. det.limit_side_len=960).")
        if name == section:
            changes[field] = yaml.safe_load(value)
    return from_dict(type(cfg), {**to_dict(cfg), **changes}, section) if changes else cfg


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read the composed params file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found. Run from the repo root, or compose it with dvc exp run.")
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}). Recompose it from conf/: "
                          "python -m ocrslim.compose.") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}. Recompose it from conf/: "
                          "python -m ocrslim.compose.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections. Recompose it from conf/.")
    return data


def load_section(params: dict[str, Any] | str | Path, section: str, cls: type[T]) -> T:
    """Load one section of ``params.yaml`` into its dataclass.

    >>> load_section({"det": {"thresh": 0.4}}, "det", DetConfig).thresh
    0.4
    """
    if not isinstance(params, dict):
        params = load_params(params)
    return from_dict(cls, params.get(section), section)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass → plain JSON-able dict (tuples become lists)."""

    def fix(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return {k: fix(v) for k, v in dataclasses.asdict(cfg).items()}


# --------------------------------------------------------------------------------------------
# Data and calibration (issue 3)
# --------------------------------------------------------------------------------------------
# What `python -m ocrslim.data.fonts --lock` scans; as data.fonts these globs are not reproducible (they take
# whatever fonts a machine carries), so the default is the hashed lock written from them.
SYSTEM_FONT_GLOBS = ("/usr/share/fonts/**/*.ttf", "/usr/share/fonts/**/*.ttc", "/usr/share/fonts/**/*.otf")
FONT_LOCK = "conf/fonts.lock"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Synthetic Chinese/English OCR data (``data`` stage) and the real training sets added by path."""

    out: str = "data/synth"
    seed: int = 0  # sample i of a split uses seed (seed, task, split, i): identical output for any worker count
    workers: int = 2
    # the default teacher's recogniser (its ONNX charset), another zoo rec model, or a dict file, one char per line
    dictionary: str = TeacherConfig.rec
    # font lock files (sha256-checked, in order), globs (not reproducible), files; "default" = Pillow's Latin font
    fonts: tuple[str, ...] = (FONT_LOCK,)
    font_exclude: tuple[str, ...] = ("*Math*",)  # file-name globs left out (symbol fonts)
    det_train: int = 1000  # pages per split
    det_val: int = 100
    det_test: int = 100
    rec_train: int = 20000  # line crops per split
    rec_val: int = 1000
    rec_test: int = 1000
    page_size: tuple[int, int] = (640, 1280)  # range of a page's long side, px; short = long / U(1, 1.5)
    lines_per_page: tuple[int, int] = (3, 12)
    # fraction of det pages rendered as printed documents (receipts/forms: dense rows on paper, item +
    # amount pairs, table cells) instead of scattered scene lines; the rest keep their bytes
    doc_ratio: float = 0.4
    line_height: tuple[int, int] = (16, 48)  # font size range, px
    max_angle: float = 5.0  # det: line rotation, degrees
    rec_max_angle: float = 2.0  # rec: crop rotation, degrees
    cjk_ratio: float = 0.5  # fraction of lines in Chinese; the rest: English, numbers, dates, prices, mixed
    max_chars: int = 25  # characters per line
    jpeg_quality: tuple[int, int] = (40, 95)  # images are saved as JPEG at a quality drawn from this range
    aug: float = 1.0  # augmentation strength (0 = clean renders)

    def __post_init__(self) -> None:
        _check(self.workers >= 1, "data.workers", "must be >= 1")
        counts = (self.det_train, self.det_val, self.det_test, self.rec_train, self.rec_val, self.rec_test)
        _check(all(c >= 0 for c in counts), "data.det_*/rec_*", "counts must be >= 0")
        _check(64 <= self.page_size[0] <= self.page_size[1] <= 4096, "data.page_size", "must be [min, max] in 64..4096")
        _check(1 <= self.lines_per_page[0] <= self.lines_per_page[1], "data.lines_per_page", "must be [min, max] >= 1")
        lo, hi = self.line_height
        _check(8 <= lo <= hi <= 256, "data.line_height", "must be [min, max] in 8..256")
        _check(0 <= self.max_angle <= 45 and 0 <= self.rec_max_angle <= 45, "data.max_angle", "must be in 0..45")
        _check(0.0 <= self.cjk_ratio <= 1.0, "data.cjk_ratio", "must be in [0, 1]")
        _check(0.0 <= self.doc_ratio <= 1.0, "data.doc_ratio", "must be in [0, 1]")
        _check(1 <= self.max_chars <= 200, "data.max_chars", "must be in 1..200")
        q_lo, q_hi = self.jpeg_quality
        _check(1 <= q_lo <= q_hi <= 100, "data.jpeg_quality", "must be [min, max] in 1..100")
        _check(0.0 <= self.aug <= 2.0, "data.aug", "must be in [0, 2]")
        _check(len(self.fonts) >= 1, "data.fonts", "needs at least one glob, file or 'default'")


@dataclasses.dataclass(frozen=True)
class CalibrateConfig:
    """INT8 calibration images for MNN (``calibrate`` stage), stratified from the training pool."""

    source: str | None = None  # your own folder (with det/ and rec/ inside) instead of the pools below
    # the training side's real sets (their train parts) and the synthetic train split, stratified together
    det_pool: tuple[str, ...] = ("data/splits/sroie_train/det/train.split.json", "data/synth/det/train")
    rec_pool: tuple[str, ...] = ("data/splits/sroie_train/rec/train.split.json",
                                 "data/splits/ic15_words_train/rec/train.split.json", "data/synth/rec/train")
    out: str = "calibration"
    det_count: int = 256  # MNN's KL/EMA statistics from a few hundred images (its docs: 100-1000)
    rec_count: int = 256
    det_size: int | None = None  # square det calibration side, px; None = det.limit_side_len
    seed: int = 0
    feature_quantize_method: str = "KL"  # MNN: KL | ADMM | EMA
    weight_quantize_method: str = "MAX_ABS"  # MNN: MAX_ABS | ADMM

    def __post_init__(self) -> None:
        _check(self.det_count >= 1 and self.rec_count >= 1, "calibrate.det_count/rec_count", "must be >= 1")
        _check(self.det_size is None or (self.det_size >= 32 and self.det_size % 32 == 0), "calibrate.det_size",
               "must be a multiple of 32 (or null for det.limit_side_len)")
        _check(self.feature_quantize_method in ("KL", "ADMM", "EMA"), "calibrate.feature_quantize_method",
               f"is {self.feature_quantize_method!r}, must be KL, ADMM or EMA")
        _check(self.weight_quantize_method in ("MAX_ABS", "ADMM"), "calibrate.weight_quantize_method",
               f"is {self.weight_quantize_method!r}, must be MAX_ABS or ADMM")


_SPLITS = "data/splits"  # where the split stage writes the train/val parts of the training sets


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Validation splits of the user's training sets (``split`` stage, :mod:`ocrslim.data.splits`).

    Training, the choice of defaults and the quantize gate read the ``train`` / ``val`` parts; the dev sets the
    evaluate stage reports are never among them.
    """

    det_sets: tuple[str, ...] = ("../shared/data/sroie_train",)
    rec_sets: tuple[str, ...] = ("../shared/data/sroie_train", "../shared/data/ic15_words_train")
    val_fraction: float = 0.15  # share of groups (receipts; blocks of scene words) held out
    group_block: int = 20  # samples numbered in sequence (word_1, word_2, ... of one scene) grouped in blocks
    seed: int = 0
    out: str = "data/splits"

    def __post_init__(self) -> None:
        _check(0.0 < self.val_fraction < 1.0, "split.val_fraction", f"is {self.val_fraction}, must be in (0, 1)")
        _check(self.group_block >= 1, "split.group_block", "must be >= 1")
        _check(bool(self.det_sets) or bool(self.rec_sets), "split.det_sets/rec_sets", "need at least one set")


# --------------------------------------------------------------------------------------------
# Compression (issue 4)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """Where each task's student starts (``prune`` stage; ``student`` config group).

    ``pruned``: the teacher itself, pruned by ``prune.ratio`` (pretrained weights; recovers in tens of
    CPU steps). Any other value names a ``student`` of :mod:`ocrslim.models.registry`, built from scratch
    (:func:`ocrslim.models.seed.build_seed_student`; ``conf/student/seed.yaml`` picks one per task); those start
    untrained and need thousands of distill steps (a GPU).
    """

    det: str = "pruned"
    rec: str = "pruned"

    def __post_init__(self) -> None:
        for task in ("det", "rec"):
            name = getattr(self, task)
            _check(isinstance(name, str) and bool(name), f"student.{task}",
                   "must be 'pruned' or a seed architecture name")

    def name(self, task: str) -> str:
        """The student of ``task`` ("det" or "rec")."""
        return self.det if task == "det" else self.rec


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """L1-norm structured channel pruning (``prune`` stage, torch-pruning DepGraph).

    Ignored layers are module-path globs (``head.*``) and stay untouched: neither their output nor
    their input channels are removed, so the head keeps its shapes and a pruned backbone never needs
    a hand-edited head.
    """

    # fraction of channels removed per group (uniform) or overall (global). det: 25%, the largest of 0.2/0.25/0.3
    # whose paired 95% upper bounds on the det hmean and e2e F1 drops stay within 1 point on the 120 SROIE training
    # pages (benchmarks/det_ratio.py → reports/det_ratio_train120.json; 0.3: bounds 1.44 / 1.55; the seeds' 0.4 lost
    # 1.3 hmean points there and 2.9 on the dev pages)
    ratio: float = 0.25
    # rec's own ratio when set (null = `ratio`): the recogniser recovers far slower than the detector
    # (its CTC head restarts from all-blank output), so it gets a gentler ratio within a CPU budget.
    rec_ratio: float | None = 0.0
    mode: str = "uniform"  # "uniform": the same ratio in every group; "global": rank all groups together
    ignore_det: tuple[str, ...] = ("head.*",)
    # rec: the SVTR transformer (attention heads must keep dividing the width, LayerNorm-tied residual
    # stream) and the CTC head.
    ignore_rec: tuple[str, ...] = ("neck.svtr_block.*", "neck.norm", "head.*")
    # layers whose *output* channels stay while their inputs may be pruned (torch-pruning's own ignored_layers):
    # e.g. rec "head.*" keeps the CTC classes but lets the width feeding them shrink
    keep_out_det: tuple[str, ...] = ()
    keep_out_rec: tuple[str, ...] = ()
    # per-layer ratios, "module-glob=ratio", overriding the task's ratio for the groups rooted in those modules
    # (e.g. "backbone.blocks6=0.5": the widest stage, where the parameters are, pruned harder)
    ratios_det: tuple[str, ...] = ()
    ratios_rec: tuple[str, ...] = ()
    # rec: replace the CTC head's linear layer by a rank-r pair (activation PCA, then least squares on the
    # calibration inputs); the 6,625-class head is the largest layer of PP-OCRv4 rec. 0 = keep it full rank
    # 64: near-lossless before any training (pca_head probe) where pruning the rec backbone lost 12 points on
    # SROIE crops after 400 KD steps (benchmarks/recovery.py rec --variants b56h64)
    head_rank_rec: int = 64
    round_to: int = 8  # keep widths SIMD-friendly (1 = no rounding)
    # fold the mean activation of each removed channel into the next layer's bias (measured on rendered text)
    compensate: bool = True
    # refit every layer by least squares to reproduce the unpruned model's outputs on real training inputs
    # (ocrslim.compress.reconstruct): the pruned model starts close to the teacher instead of reading nothing
    reconstruct: bool = True
    # the real inputs it is fitted on: training pages / crops (never the dev sets), this many per task
    calib_data_det: tuple[str, ...] = (f"{_SPLITS}/sroie_train/det/train.split.json", "data/synth/det/train")
    calib_data_rec: tuple[str, ...] = (f"{_SPLITS}/sroie_train/rec/train.split.json",
                                       f"{_SPLITS}/ic15_words_train/rec/train.split.json", "data/synth/rec/train")
    calib_samples_det: int = 16
    calib_samples_rec: int = 96
    det_size: tuple[int, int] = (640, 640)  # (H, W) of the det input traced and used to count MACs
    rec_width: int = 320  # width of the 48×W rec input traced and used to count MACs
    # rec vocabulary pruning: keep only these characters' CTC classes (null = all; "ascii" = printable
    # ASCII; or a dictionary file, one character per line). For deployments that read one script only.
    charset: str | None = None

    def __post_init__(self) -> None:
        _check(0.0 <= self.ratio <= 0.9, "prune.ratio", f"is {self.ratio}, must be in [0, 0.9]")
        _check(self.charset is None or self.charset == "ascii" or Path(self.charset).is_file(), "prune.charset",
               f"is {self.charset!r}: not 'ascii' nor a dictionary file (one character per line); null keeps all")
        _check(self.rec_ratio is None or 0.0 <= self.rec_ratio <= 0.9, "prune.rec_ratio",
               f"is {self.rec_ratio}, must be in [0, 0.9] or null")
        _check(self.mode in ("uniform", "global"), "prune.mode", f"is {self.mode!r}, must be 'uniform' or 'global'")
        _check(1 <= self.round_to <= 64, "prune.round_to", f"is {self.round_to}, must be in 1..64")
        h, w = self.det_size
        _check(h % 32 == 0 and w % 32 == 0 and h > 0 and w > 0, "prune.det_size", "must be multiples of 32")
        _check(self.rec_width % 8 == 0 and self.rec_width > 0, "prune.rec_width", "must be a multiple of 8")
        _check(self.calib_samples_det >= 1 and self.calib_samples_rec >= 1, "prune.calib_samples_det/rec",
               "must be >= 1")
        _check(self.head_rank_rec >= 0, "prune.head_rank_rec", "must be >= 0 (0 keeps the full head)")
        for task in ("det", "rec"):
            for item in self.layer_ratios(task):
                _check(0.0 <= item[1] <= 0.9, f"prune.ratios_{task}",
                       f"ratio {item[1]} of {item[0]!r} must be in [0, 0.9]")

    def prunes(self, task: str) -> bool:
        """Whether ``task``'s student loses any channel (a ratio, a per-layer ratio, or a low-rank head)."""
        return self.task_ratio(task) > 0 or any(r > 0 for _, r in self.layer_ratios(task)) \
            or (task == "rec" and self.head_rank_rec > 0)

    def layer_ratios(self, task: str) -> list[tuple[str, float]]:
        """``(glob, ratio)`` pairs of ``prune.ratios_<task>``."""
        out = []
        for item in self.ratios_det if task == "det" else self.ratios_rec:
            glob, sep, value = item.rpartition("=")
            try:
                ratio = float(value)
            except ValueError:
                ratio = float("nan")
            _check(bool(sep) and bool(glob) and ratio == ratio, f"prune.ratios_{task}",
                   f"item {item!r} is not 'module-glob=ratio' (e.g. backbone.blocks6=0.5)")
            out.append((glob, ratio))
        return out

    def calib_data(self, task: str) -> tuple[str, ...]:
        return self.calib_data_det if task == "det" else self.calib_data_rec

    def calib_samples(self, task: str) -> int:
        return self.calib_samples_det if task == "det" else self.calib_samples_rec

    def ignore(self, task: str) -> tuple[str, ...]:
        """The ignore patterns of ``task`` ("det" or "rec")."""
        return self.ignore_det if task == "det" else self.ignore_rec

    def keep_out(self, task: str) -> tuple[str, ...]:
        """The output-only protection patterns of ``task``."""
        return self.keep_out_det if task == "det" else self.keep_out_rec

    def task_ratio(self, task: str) -> float:
        """The pruning ratio of ``task``: ``rec_ratio`` for rec when set, else ``ratio``."""
        return self.rec_ratio if task == "rec" and self.rec_ratio is not None else self.ratio


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The training loop's schedule, cadence and device, shared by both tasks: the ``distill`` keys beside its
    ``det`` / ``rec`` sections (:class:`DistillConfig`), and with one task's steps the loop's :class:`FitConfig`."""

    weight_decay: float = 1e-2  # AdamW, matrices/convs only (not norms, biases, scalars)
    schedule: str = "cosine"  # "cosine" to 0 at `steps`; "step": lr × step_gamma every step_size steps
    step_size: int = 100
    step_gamma: float = 0.1
    grad_clip: float = 5.0  # max gradient L2 norm; 0 disables
    freeze_backbone_steps: int = 0  # staged fine-tuning: backbone (and its BatchNorm stats) frozen first
    eval_every: int = 0  # steps between validations (and at the end); 0 = only at the end
    ckpt_every: int = 25  # steps between checkpoints (and at the end)
    seed: int = 0
    device: str = "auto"  # "cpu" | "cuda" | "auto" (cuda when available)
    threads: int = 2  # torch intra-op threads (CPU) and the teacher runtime's
    # CPU training in NHWC memory format: oneDNN's convolutions run ~25-30% faster (benchmarks/train_step.py)
    channels_last: bool = True

    def __post_init__(self) -> None:
        _check(0.0 <= self.weight_decay < 1.0, "distill.weight_decay", f"is {self.weight_decay}, must be in [0, 1)")
        _check(self.schedule in ("cosine", "step"), "distill.schedule",
               f"is {self.schedule!r}, must be 'cosine' or 'step'")
        _check(self.step_size >= 1, "distill.step_size", "must be >= 1")
        _check(0.0 < self.step_gamma <= 1.0, "distill.step_gamma", f"is {self.step_gamma}, must be in (0, 1]")
        _check(self.grad_clip >= 0, "distill.grad_clip", "must be >= 0 (0 disables)")
        _check(self.freeze_backbone_steps >= 0, "distill.freeze_backbone_steps", "must be >= 0")
        _check(self.eval_every >= 0, "distill.eval_every", "must be >= 0 (0 = only at the end)")
        _check(self.ckpt_every >= 1, "distill.ckpt_every", "must be >= 1")
        _check(self.device in ("cpu", "cuda", "auto"), "distill.device",
               f"is {self.device!r}, must be cpu, cuda or auto")
        _check(self.threads >= 1, "distill.threads", "must be >= 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig(LoopConfig):
    """What the training loop (:func:`ocrslim.compress.engine.fit`) needs: one task's steps, peak learning rate and
    warm-up (``distill.<task>``, no defaults of their own) with the shared :class:`LoopConfig`.

    Built by :meth:`DistillConfig.fit`.
    """

    steps: int  # optimizer steps (not epochs)
    lr: float  # peak AdamW learning rate, after warm-up
    warmup_steps: int  # linear from 0 to lr
    freeze_bn: bool = False  # BatchNorm layers keep their running statistics (eval mode) while training
    trainable: tuple[str, ...] = ()  # module-path globs of the parameters that train; () = all


@dataclasses.dataclass(frozen=True)
class TrainTaskConfig:
    """One task's recovery: teacher, data (with mixing shares), steps, KD weight (``distill.det`` / ``distill.rec``).

    ``train_data`` may mix labelled sets (ground truth + KD) and plain image folders (KD only: a user's
    unlabelled pages or crops, the common case); ``mix`` gives each set's share of every batch (empty: in
    proportion to the sets' sizes). The keys without a default here are set by each task's section.
    """

    # open_model spec: the teacher being compressed (conf/config.yaml wires ${teacher.det}); null only with alpha 0
    teacher: str | None = dataclasses.field(kw_only=True)
    steps: int = dataclasses.field(kw_only=True)  # optimizer steps (not epochs)
    batch_size: int = dataclasses.field(kw_only=True)  # per process (DDP: per rank)
    lr: float = dataclasses.field(kw_only=True)  # peak AdamW learning rate, after warm-up
    warmup_steps: int = 20  # linear from 0 to lr
    alpha: float = 0.5  # loss = alpha · KD + (1 − alpha) · ground truth (KD alone where a sample has none)
    train_data: tuple[str, ...] = dataclasses.field(kw_only=True)
    # share of each train_data set in every batch (normalised); () = by set size
    mix: tuple[float, ...] = dataclasses.field(kw_only=True)
    val_data: tuple[str, ...] = dataclasses.field(kw_only=True)
    max_val: int | None = dataclasses.field(kw_only=True)  # first N samples of each val set; null = all
    cache_teacher: bool = True  # teacher outputs computed once per (sample, augmentation) and reused
    # BatchNorm layers keep the teacher's running statistics (their affine weights still train): a short
    # fine-tune on small, padded batches otherwise replaces them with noisy batch statistics
    freeze_bn: bool = True
    # train only the parameters under these module-path globs (e.g. backbone.blocks6*); () = every parameter
    trainable: tuple[str, ...] = ()
    # feature KD ("hints"): the student's output of this module is pulled to the teacher's (relative MSE), a
    # dense signal for a pruned region whose output width is kept (prune.keep_out_<task>); null = off
    hint_layer: str | None = None
    hint_weight: float = 0.0

    def _check_task(self, key: str) -> None:
        _check(self.steps >= 0, f"{key}.steps", f"is {self.steps}, must be >= 0 (0: the pruned model as is)")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(0.0 < self.lr <= 1.0, f"{key}.lr", f"is {self.lr}, must be in (0, 1]")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        _check(0.0 <= self.alpha <= 1.0, f"{key}.alpha", f"is {self.alpha}, must be in [0, 1]")
        _check(self.alpha == 0 or bool(self.teacher), f"{key}.teacher",
               f"is empty while alpha > 0; name a teacher, or set {key}.alpha 0 to fine-tune on labels only")
        _check(len(self.train_data) >= 1, f"{key}.train_data", "needs at least one set")
        _check(not self.mix or len(self.mix) == len(self.train_data), f"{key}.mix",
               f"has {len(self.mix)} shares for {len(self.train_data)} train_data sets; give one per set, or []")
        _check(all(w >= 0 for w in self.mix) and (not self.mix or sum(self.mix) > 0), f"{key}.mix",
               "shares must be >= 0 and not all 0")
        _check(self.max_val is None or self.max_val >= 1, f"{key}.max_val", "must be >= 1 or null")
        _check(self.hint_weight >= 0, f"{key}.hint_weight", "must be >= 0 (0: no feature KD)")
        _check(self.hint_weight == 0 or bool(self.hint_layer), f"{key}.hint_layer",
               f"is empty while {key}.hint_weight > 0; name a module (e.g. backbone) or set hint_weight 0")


@dataclasses.dataclass(frozen=True)
class DetTrainConfig(TrainTaskConfig):
    """Detector recovery (``distill.det``): DB loss on labelled pages + probability-map KD, on square crops."""

    teacher: str | None = TeacherConfig.det
    # 0: the pruned, reconstructed detector is the student. Measured on the SROIE train-val pages (teacher hmean
    # 0.932): pruned 40% + least-squares reconstruction 0.926; then 40 KD-only steps (lr 2e-4) 0.918, 200 steps
    # of DB loss + KD (lr 1e-3) 0.898 — on CPU budgets, training a well-reconstructed detector only hurts it.
    # A harder-pruned one (e.g. the neck/head pruned too, 0.662) needs steps: README "How the defaults were chosen".
    steps: int = 0
    batch_size: int = 8
    lr: float = 2e-4
    train_data: tuple[str, ...] = (f"{_SPLITS}/sroie_train/det/train.split.json", "data/synth/det/train")
    mix: tuple[float, ...] = (0.5, 0.5)
    val_data: tuple[str, ...] = (f"{_SPLITS}/sroie_train/det/val.split.json",)
    max_val: int | None = 20
    kd: str = "bce"  # KD on probability maps: "bce" (teacher map as soft labels) or "l2"
    kd_weight: float = 5.0  # scales KD to DB's own probability term (its alpha = 5)
    # weight of DB's threshold-map L1 and binary-map dice (the training-only branches; inference reads the
    # probability map alone). The threshold branch starts untrained: its binary-map gradient reaches the
    # pretrained probability map through the differentiable binarisation.
    aux_weight: float = 1.0
    size: int = 512  # square training crop, px
    # crops: "inference" = pages resized as the detector's preprocessing does (× U(0.6, 1.2)) then cropped, so
    # text has the size the deployed model sees; "page" = the long side to size × U(0.5, 1.5)
    scale: str = "inference"
    # fixed seeded augmentations per page when the teacher is cached (its map of a view is computed once)
    views: int = 4

    def __post_init__(self) -> None:
        self._check_task("distill.det")
        _check(self.views >= 1, "distill.det.views", "must be >= 1")
        _check(self.kd in ("bce", "l2"), "distill.det.kd", f"is {self.kd!r}, must be 'bce' or 'l2'")
        _check(self.kd_weight > 0, "distill.det.kd_weight", "must be > 0")
        _check(self.aux_weight >= 0, "distill.det.aux_weight", "must be >= 0 (0: probability-map loss only)")
        _check(self.size >= 32 and self.size % 32 == 0, "distill.det.size", "must be a multiple of 32, >= 32")
        _check(self.scale in ("inference", "page"), "distill.det.scale",
               f"is {self.scale!r}, must be 'inference' or 'page'")


@dataclasses.dataclass(frozen=True)
class RecTrainConfig(TrainTaskConfig):
    """Recogniser recovery (``distill.rec``): CTC on labelled crops + per-frame KD, batches of one width bucket."""

    teacher: str | None = TeacherConfig.rec
    # a short fine-tune of the low-rank head alone, KD only (the backbone is the teacher's). Measured on the val
    # splits of SROIE / IC15 / synthetic (teacher 0.844 / 0.711 alnum acc, 0.981 1−NED): rank-64 head pruned and
    # reconstructed 0.837 / 0.700 / 0.966; + 100 KD steps on every weight 0.827 / 0.690 / 0.976; + 100 KD steps
    # on the head only 0.838 / 0.711 / 0.976 (4 CPU min)
    steps: int = 100
    batch_size: int = 32
    lr: float = 3e-4
    alpha: float = 1.0
    trainable: tuple[str, ...] = ("head.*",)
    train_data: tuple[str, ...] = (f"{_SPLITS}/sroie_train/rec/train.split.json",
                                   f"{_SPLITS}/ic15_words_train/rec/train.split.json", "data/synth/rec/train")
    mix: tuple[float, ...] = (0.3, 0.2, 0.5)
    val_data: tuple[str, ...] = (f"{_SPLITS}/sroie_train/rec/val.split.json",
                                 f"{_SPLITS}/ic15_words_train/rec/val.split.json", "data/synth/rec/val")
    max_val: int | None = 300
    temperature: float = 1.0  # KD softening (T=1: at T=6 the 6,625-class target is nearly uniform)
    # training widths: each crop is resized to the rec height keeping its aspect and padded (or squeezed) to
    # the smallest of these that holds it; a batch holds crops of one width. The first is rec.min_width (what
    # the runners pad short crops to) and the last holds ~99% of receipt lines: squeezing a long line to 320
    # teaches a shape the runners never feed (a third of SROIE lines are wider than 320 px at height 48).
    # A batch of a wider bucket holds proportionally fewer crops (batch_size counts crops of the first width).
    widths: tuple[int, ...] = (320, 640, 960)

    def __post_init__(self) -> None:
        self._check_task("distill.rec")
        _check(self.temperature > 0, "distill.rec.temperature", f"is {self.temperature}, must be > 0")
        _check(len(self.widths) >= 1 and all(w >= 8 and w % 8 == 0 for w in self.widths)
               and list(self.widths) == sorted(set(self.widths)), "distill.rec.widths",
               "must be increasing multiples of 8, >= 8")


@dataclasses.dataclass(frozen=True)
class DistillConfig(LoopConfig):
    """Recovering a pruned student: KD from a frozen teacher plus ground truth (``distill`` stage).

    The teacher runs forward only (ONNX Runtime for zoo names). ``alpha = 0`` in a task's section is plain
    ground-truth fine-tuning: no teacher is opened. Training is step-based; batch ``i`` depends only on
    ``(seed, i, rank)``, so a killed run that resumes from its checkpoint sees the same data as an
    uninterrupted one. The shared loop keys (:class:`LoopConfig`) come first in the section.
    """

    det: DetTrainConfig = dataclasses.field(default_factory=DetTrainConfig)
    rec: RecTrainConfig = dataclasses.field(default_factory=RecTrainConfig)

    def task(self, task: str) -> DetTrainConfig | RecTrainConfig:
        """The section of ``task`` ("det" or "rec")."""
        return self.det if task == "det" else self.rec

    def teacher(self, task: str) -> str | None:
        """The teacher spec of ``task``; ``None`` when fine-tuning (alpha 0)."""
        t = self.task(task)
        return t.teacher if t.alpha > 0 else None

    def fit(self, task: str) -> FitConfig:
        """The training-loop settings of ``task``: its steps, lr and warm-up with the shared schedule."""
        t = self.task(task)
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(LoopConfig)}
        return FitConfig(**shared, steps=t.steps, lr=t.lr, warmup_steps=t.warmup_steps, freeze_bn=t.freeze_bn,
                         trainable=t.trainable)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Whole pages, end to end, per reader on this host's CPU: latency, throughput, peak memory and accuracy.

    :mod:`ocrslim.eval.pages`: each reader (the bundle, the teacher in MNN FP32 and in ONNX Runtime, the student
    in MNN FP32; optionally the peers rapidocr_v4 / rapidocr_v6) reads every page of each set, decode → det →
    crops → rec → text, timed per page; det hmean and e2e F1 of what it read are scored beside.
    """

    # det sets with transcriptions. The SROIE dev receipts only: with the synthetic test pages (the stand-in for
    # scene images) beside them the stage took 16 of a cold run's 54 minutes; benchmarks/bench_pages.py reads both
    pages: tuple[str, ...] = ("../shared/data/sroie_dev",)
    limit: int | None = 60  # first N pages of each set; null = all
    readers: tuple[str, ...] = ("bundle", "teacher_mnn", "teacher_onnx", "student_mnn")
    # intra-op threads; one measurement per count (2: this host's cores; (1, 2) doubles the stage's minutes)
    threads: tuple[int, ...] = (2,)
    runs: int = 1  # timed passes over the pages (p50/p90 over every page of every pass)
    warmup: int = 1  # pages read untimed first
    rss: bool = True  # a fresh process per reader, set and thread count (peak RSS); false: in the stage's process
    timeout: float = 1800.0  # seconds one measuring process may take

    def __post_init__(self) -> None:
        _check(len(self.pages) >= 1, "bench.pages", "needs at least one det set")
        _check(self.limit is None or self.limit >= 1, "bench.limit", "must be >= 1 or null")
        _check(len(self.readers) >= 1 and len(set(self.readers)) == len(self.readers), "bench.readers",
               "needs at least one reader, without duplicates")
        _check(len(self.threads) >= 1 and all(t >= 1 for t in self.threads), "bench.threads",
               "must be a list of thread counts >= 1")
        _check(self.runs >= 1 and self.warmup >= 0, "bench.runs/warmup", "must be >= 1 / >= 0")
        _check(self.timeout > 0, "bench.timeout", "must be > 0 seconds")


# --------------------------------------------------------------------------------------------
# Accuracy-aware MNN quantization
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class QatConfig:
    """Quantization-aware fine-tuning of a student for MNN INT8 (``qat`` stage, :mod:`ocrslim.compress.qat`).

    LSQ fake-quant where MNN's INT8 runtime rounds (per-channel int8 weights, per-tensor activations), step sizes
    initialised on calibration batches of the training mix and learnt with the weights under KD from the FP32
    student itself or the teacher (``teacher``; the ``distill.<task>`` data and loss, with the steps, learning
    rate and KD weight below).
    The INT8 scales MNNConvert writes are the learnt ones. The quantize stage gates the result like any other
    candidate, after post-training INT8.
    """

    # tasks that get a QAT model. None by default: on the gate sets no QAT candidate passed within the CPU budget
    # (rec 60 steps: -7.2 points; det 60 / 200 steps: e2e F1 upper bound 2.8 / 1.6 > 1.0; README, INT8), and the
    # candidate cost 7 of the cold run's minutes. -S 'qat.tasks=[det]' -S qat.steps=200 is the closest measured.
    tasks: tuple[str, ...] = ()
    steps: int = 60
    lr: float = 1e-4  # peak AdamW learning rate (weights and step sizes)
    warmup_steps: int = 10
    # the KD target: "student" = the FP32 student itself (the gate's reference: QAT is to read as it does, and
    # fine-tuning towards the teacher on the training mix moved real-set accuracy by ±1–2 points in 100 steps),
    # or "teacher" = distill.<task>.teacher
    teacher: str = "student"
    alpha: float = 1.0  # KD weight against the ground-truth loss, as distill.<task>.alpha (1: KD only)
    calib_batches: int = 16  # training batches of 8 that initialise the activation step sizes
    init: str = "mse"  # step-size initialisation: "mse" (clipping error search) | "max"
    keep_float_det: tuple[str, ...] = ()  # module-path globs kept float (besides what MNN cannot run in INT8)
    keep_float_rec: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(all(t in ("det", "rec") for t in self.tasks), "qat.tasks", f"is {list(self.tasks)}, use det / rec")
        _check(self.steps >= 1, "qat.steps", "must be >= 1")
        _check(self.teacher in ("student", "teacher"), "qat.teacher",
               f"is {self.teacher!r}, must be student (the FP32 student) or teacher (distill.<task>.teacher)")
        _check(0.0 < self.lr <= 1.0, "qat.lr", f"is {self.lr}, must be in (0, 1]")
        _check(self.warmup_steps >= 0, "qat.warmup_steps", "must be >= 0")
        _check(0.0 <= self.alpha <= 1.0, "qat.alpha", f"is {self.alpha}, must be in [0, 1]")
        _check(self.calib_batches >= 1, "qat.calib_batches", "must be >= 1")
        _check(self.init in ("mse", "max"), "qat.init", f"is {self.init!r}, must be mse or max")

    def keep_float(self, task: str) -> tuple[str, ...]:
        return self.keep_float_det if task == "det" else self.keep_float_rec


#: metrics the quantize gate can compare per task (:data:`ocrslim.eval.stats.METRICS`)
_GATE_METRICS = {"det": ("hmean", "e2e_f1"), "rec": ("accuracy", "accuracy_ci_alnum", "one_minus_ned",
                                                     "one_minus_ned_cjk")}


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    """MNN INT8 quantization gated on accuracy, with layer repair, quantization-aware training and fallbacks
    (``quantize`` stage).

    Post-training full INT8 is tried first, then the ``qat`` stage's model (scales learnt in training), then the
    fallbacks. A candidate passes when, on every gate set and metric, the upper bound of the paired bootstrap
    interval of its drop against the MNN FP32 student is at most ``max_drop`` points. ``target: x86`` also
    times every candidate on this host and never ships one slower than the FP32 student.
    """

    method_det: str = "KL"  # mnnquant feature method: KL | EMA | ADMM (EMA ignores skip lists: no repair)
    method_rec: str = "EMA"  # v4 rec: KL output is blank (errors everywhere), EMA only loses real-text accuracy
    # the training side's validation splits (never the dev sets the evaluate stage reports)
    gate_det: tuple[str, ...] = (f"{_SPLITS}/sroie_train/det/val.split.json", "data/synth/det/val")
    gate_rec: tuple[str, ...] = (f"{_SPLITS}/sroie_train/rec/val.split.json",
                                 f"{_SPLITS}/ic15_words_train/rec/val.split.json", "data/synth/rec/val")
    # first N pages of each det gate set; null = all. 40: every SROIE train-val page (20) and 40 synthetic ones;
    # each candidate reads them end to end, and all 100 synthetic pages made quantize@det 10 of a cold run's minutes
    limit_det: int | None = 40
    limit_rec: int | None = None  # first N crops of each rec gate set; null = all
    # what users read: det hmean and end-to-end F1; rec accuracy (case-insensitive alphanumeric), 1−NED, and
    # 1−NED of the Chinese crops (exact accuracy, which counts spaces and punctuation, is not gated)
    gate_metrics_det: tuple[str, ...] = ("hmean", "e2e_f1")
    gate_metrics_rec: tuple[str, ...] = ("accuracy_ci_alnum", "one_minus_ned", "one_minus_ned_cjk")
    max_drop: float = 1.0  # points (100 x metric): the bound the drop's upper confidence limit must stay within
    confidence: float = 0.95  # two-sided level of the paired bootstrap interval
    n_boot: int = 2000  # bootstrap resamples (seeded)
    # re-quantizations with more layer groups kept float. 0 by default: on the det gate pages two rounds moved the
    # KL model's e2e F1 drop from 3.8 to 2.5 points (upper bound 4.4), never near 1.0, at ~100 s a round
    max_repairs: int = 0
    repair_groups: int = 4  # layer groups kept float per repair (most error per MB first)
    group_depth: int = 3  # op-name path components that make a layer group (/backbone/blocks2/blocks2.0)
    keep_float_det: tuple[str, ...] = ()  # op-name globs kept float from the start
    keep_float_rec: tuple[str, ...] = ()
    sensitivity_images: int = 2  # gate inputs (det pages / rec batches) the per-layer error is measured on
    screen_error: float = 0.5  # output rel. error vs FP32 above which a candidate skips the gate (broken)
    calib_images: int | None = None  # calibration images mnnquant uses (at most the quant JSON's); null = all
    fallbacks: tuple[str, ...] = ("int8-weights", "fp16", "fp32")  # tried in order when INT8 fails
    # false: skip post-training full INT8 (a QAT model is still tried)
    full_int8: bool = True
    # the device class the bundle is for: "arm" (phones with int8 dot products: full INT8 preferred; its speed is
    # not measured on this host) or "x86" (every candidate timed here; none slower than the FP32 student ships)
    target: str = "arm"
    speed_runs: int = 10  # x86: timed calls per candidate (interleaved with the FP32 student's)
    speed_margin: float = 1.05  # x86: a candidate may take at most this times the FP32 student's median
    threads: int = 2  # MNN runtime threads for gate, sensitivity and timing runs

    def __post_init__(self) -> None:
        for task in ("det", "rec"):
            _check(self.method(task) in ("KL", "EMA", "ADMM"), f"quantize.method_{task}",
                   f"is {self.method(task)!r}, must be KL, EMA or ADMM")
            _check(len(self.gate(task)) >= 1, f"quantize.gate_{task}", "needs at least one gate set")
            limit = self.limit(task)
            _check(limit is None or limit >= 1, f"quantize.limit_{task}", "must be >= 1 or null")
            known = _GATE_METRICS[task]
            bad = [m for m in self.gate_metrics(task) if m not in known]
            _check(bool(self.gate_metrics(task)) and not bad, f"quantize.gate_metrics_{task}",
                   f"has {bad or 'nothing'}; choose from {', '.join(known)}")
        _check(0.0 <= self.max_drop <= 100.0, "quantize.max_drop", f"is {self.max_drop}, must be in 0..100 points")
        _check(0.5 <= self.confidence < 1.0, "quantize.confidence", f"is {self.confidence}, must be in [0.5, 1)")
        _check(self.n_boot >= 100, "quantize.n_boot", "must be >= 100")
        _check(self.max_repairs >= 0, "quantize.max_repairs", "must be >= 0")
        _check(self.repair_groups >= 1, "quantize.repair_groups", "must be >= 1")
        _check(1 <= self.group_depth <= 8, "quantize.group_depth", "must be in 1..8")
        _check(self.sensitivity_images >= 1, "quantize.sensitivity_images", "must be >= 1")
        _check(self.screen_error > 0, "quantize.screen_error", "must be > 0")
        _check(self.calib_images is None or self.calib_images >= 1, "quantize.calib_images", "must be >= 1 or null")
        bad = [f for f in self.fallbacks if f not in ("int8-weights", "fp16", "fp32")]
        _check(not bad, "quantize.fallbacks", f"has {bad}, allowed: int8-weights, fp16, fp32")
        _check(len(set(self.fallbacks)) == len(self.fallbacks), "quantize.fallbacks", "has duplicates")
        _check(self.target in ("arm", "x86"), "quantize.target", f"is {self.target!r}, must be arm or x86")
        _check(self.speed_runs >= 3, "quantize.speed_runs", "must be >= 3")
        _check(self.speed_margin >= 1.0, "quantize.speed_margin", "must be >= 1.0")
        _check(self.threads >= 1, "quantize.threads", "must be >= 1")

    def gate_metrics(self, task: str) -> tuple[str, ...]:
        return self.gate_metrics_det if task == "det" else self.gate_metrics_rec

    def method(self, task: str) -> str:
        """The mnnquant feature method of ``task`` ("det" or "rec")."""
        return self.method_det if task == "det" else self.method_rec

    def gate(self, task: str) -> tuple[str, ...]:
        return self.gate_det if task == "det" else self.gate_rec

    def limit(self, task: str) -> int | None:
        return self.limit_det if task == "det" else self.limit_rec

    def keep_float(self, task: str) -> tuple[str, ...]:
        return self.keep_float_det if task == "det" else self.keep_float_rec


# --------------------------------------------------------------------------------------------
# The schema Hydra composes params.yaml from
# --------------------------------------------------------------------------------------------
#: params.yaml section → its dataclass, in the order params.yaml lists them.
SECTIONS: dict[str, type] = {
    "teacher": TeacherConfig, "det": DetConfig, "rec": RecConfig, "export": ExportConfig, "convert": ConvertConfig,
    "eval": EvalConfig, "data": DataConfig, "split": SplitConfig, "calibrate": CalibrateConfig, "prune": PruneConfig,
    "distill": DistillConfig, "student": StudentConfig, "qat": QatConfig, "quantize": QuantizeConfig,
    "targets": TargetsConfig, "bench": BenchConfig,
}

SCHEMA_NAME = "ocrslim_schema"

#: Keys renamed since an earlier version: old ``section.key`` → new ``section.key`` (a one-line error names it).
RENAMED: dict[str, str] = {
    "data.extra_train": "split.det_sets / split.rec_sets (the split stage validates the real training sets)",
    # the bench stage times whole pages at their own size (bench.pages, bench.limit) instead of fixed tensors
    **{f"bench.{old}": "bench.pages / bench.limit" for old in ("det_shape", "rec_batch", "rec_width")},
    **{f"distill.{old}": f"distill.{new}" for old, new in (
        ("teacher_det", "det.teacher"), ("teacher_rec", "rec.teacher"), ("steps", "det.steps / distill.rec.steps"),
        ("batch_size_det", "det.batch_size"), ("batch_size_rec", "rec.batch_size"), ("lr", "det.lr / distill.rec.lr"),
        ("warmup_steps", "det.warmup_steps / distill.rec.warmup_steps"), ("temperature", "rec.temperature"),
        ("alpha", "det.alpha / distill.rec.alpha"), ("det_kd", "det.kd"), ("det_kd_weight", "det.kd_weight"),
        ("det_size", "det.size"), ("det_scale", "det.scale"), ("rec_width", "rec.widths"),
        ("cache_teacher", "det.cache_teacher / distill.rec.cache_teacher"), ("train_data_det", "det.train_data"),
        ("train_data_rec", "rec.train_data"), ("val_data_det", "det.val_data"), ("val_data_rec", "rec.val_data"),
        ("max_val", "det.max_val / distill.rec.max_val"))},
    # the gate compares several metrics per task, each with a bootstrap interval
    "quantize.rec_metric": "quantize.gate_metrics_rec (a list, e.g. accuracy_ci_alnum, one_minus_ned)",
}


def schema_defaults() -> dict[str, dict[str, Any]]:
    """Every section's defaults as plain YAML values: what ``params.yaml`` holds before ``conf/`` overrides."""
    return {name: to_dict(cls()) for name, cls in SECTIONS.items()}


def register_schemas() -> None:
    """Store :func:`schema_defaults` in Hydra's ConfigStore as ``ocrslim_schema`` (first in conf/config.yaml's
    defaults list), so composition starts from the dataclass defaults."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=schema_defaults())
