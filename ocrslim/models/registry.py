"""The one registry of named models: pretrained teachers, student architectures and their components.

Three kinds of entries, looked up by name (an unknown name lists the known ones):

* ``teacher``: a pretrained ONNX file shipped inside a PyPI wheel (nothing is downloaded at run time):

  | name                 | wheel                        | file                               |
  |----------------------|------------------------------|------------------------------------|
  | ppocrv4_mobile_det   | rapidocr_onnxruntime==1.4.4  | models/ch_PP-OCRv4_det_infer.onnx  |
  | ppocrv4_mobile_rec   | rapidocr_onnxruntime==1.4.4  | models/ch_PP-OCRv4_rec_infer.onnx  |
  | ppocrv6_small_det    | rapidocr==3.10.0             | models/PP-OCRv6_det_small.onnx     |
  | ppocrv6_small_rec    | rapidocr==3.10.0             | models/PP-OCRv6_rec_small.onnx     |

  Recogniser dictionaries come from the ONNX files' own metadata (``character``).
* ``student``: an architecture built from scratch (``spec``: backbone / neck / head component specs),
  see :mod:`ocrslim.models.seed`.
* ``component``: a backbone, neck or head class, registered by :func:`ocrslim.models.layers.register_component`
  when its module is imported.

This module imports neither torch nor onnx: the inference core resolves teacher names through it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from pathlib import Path
from typing import Any

from ocrslim.core.errors import ArtifactError

__all__ = ["KINDS", "REGISTRY", "Entry", "lookup", "names", "register", "teacher_onnx_path"]

KINDS = ("teacher", "student", "component")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One named model or component.

    Attributes:
        name: the registry key.
        kind: ``teacher`` | ``student`` | ``component``.
        task: ``det`` | ``rec`` (``None`` for a component).
        package, relpath: teacher: the wheel's import name and the ONNX file inside it.
        native: teacher: a native ocrslim module can be built from its graph (:mod:`ocrslim.models.ppocr`).
        spec: student: ``{"backbone", "neck", "head"}`` component specs.
        factory: component: the class.
    """

    name: str
    kind: str
    task: str | None = None
    package: str = ""
    relpath: str = ""
    native: bool = False
    spec: dict[str, Any] | None = None
    factory: Any = None


REGISTRY: dict[str, Entry] = {}

_PIP_NAMES = {"rapidocr_onnxruntime": "rapidocr_onnxruntime==1.4.4", "rapidocr": "rapidocr==3.10.0"}


def register(entry: Entry) -> Entry:
    """Add ``entry`` (a re-registration of the same name and kind replaces it, e.g. on module reload)."""
    if entry.kind not in KINDS:
        raise ValueError(f"registry: kind {entry.kind!r} is not one of {KINDS}")
    old = REGISTRY.get(entry.name)
    if old is not None and old.kind != entry.kind:
        raise ValueError(f"registry: {entry.name!r} is already a {old.kind}")
    REGISTRY[entry.name] = entry
    return entry


def names(kind: str, task: str | None = None) -> list[str]:
    """Registered names of ``kind`` (and ``task``), sorted."""
    return sorted(n for n, e in REGISTRY.items() if e.kind == kind and (task is None or e.task == task))


def lookup(name: str, kind: str, task: str | None = None, what: str | None = None) -> Entry:
    """The entry ``name`` of ``kind`` (and ``task``).

    Raises:
        ArtifactError: unknown name, or one of another kind or task; the message lists the known names
            (``what`` names the key or argument the name came from).
    """
    entry = REGISTRY.get(name)
    if entry is not None and entry.kind == kind and (task is None or entry.task == task):
        return entry
    known = names(kind, task)
    label = f"{task} {kind}" if task else kind
    where = f"{what}: " if what else ""
    if entry is not None:
        problem = f"is a {entry.task + ' ' if entry.task else ''}{entry.kind}, not a {label}"
    else:
        close = difflib.get_close_matches(name, known, n=1)
        problem = "is not registered" + (f" (did you mean '{close[0]}'?)" if close else "")
    raise ArtifactError(f"{where}{name!r} {problem}. Known {label}s: {', '.join(known) or '(none)'}.")


def teacher_onnx_path(name: str) -> Path:
    """Path of a registered teacher's ONNX file inside its installed wheel."""
    entry = lookup(name, "teacher")
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError(
            f"{name}: package {entry.package} is not installed. pip install '{_PIP_NAMES[entry.package]}', then re-run."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / entry.relpath
    if not path.is_file():
        raise ArtifactError(
            f"{path}: not found in the installed {entry.package}. "
            f"pip install --force-reinstall '{_PIP_NAMES[entry.package]}', then re-run."
        )
    return path


for _e in (
    Entry("ppocrv4_mobile_det", "teacher", "det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", True),
    Entry("ppocrv4_mobile_rec", "teacher", "rec", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", True),
    Entry("ppocrv6_small_det", "teacher", "det", "rapidocr", "models/PP-OCRv6_det_small.onnx", False),
    Entry("ppocrv6_small_rec", "teacher", "rec", "rapidocr", "models/PP-OCRv6_rec_small.onnx", False),
    # Seed students (ocrslim.models.seed builds them): component specs; in_channels are chained by the builders,
    # the rec head's num_classes comes from the dictionary.
    Entry("mobilenetv3_small_fpn", "student", "det", spec={
        "backbone": {"name": "MobileNetV3Small", "scale": 1.0, "det": True},
        "neck": {"name": "RSEFPN", "out_channels": 96, "shortcut": True},
        "head": {"name": "DBHead", "with_threshold": False, "k": 50.0},
    }),
    Entry("vit_6x192", "student", "rec", spec={
        "backbone": {"name": "ViTRec", "embed_dim": 192, "depth": 6, "num_heads": 6, "mlp_ratio": 2.0},
        "neck": {"name": "Im2Seq"},
        "head": {"name": "CTCHead"},
    }),
):
    register(_e)
