"""Registered teachers and model resolution: zoo name | ``onnx:<path>`` | ``.pt`` | ``.onnx`` | ``.mnn``.

The pretrained teachers ship inside PyPI wheels (nothing is downloaded at run time):

| name                 | wheel                        | file                               |
|----------------------|------------------------------|------------------------------------|
| ppocrv4_mobile_det   | rapidocr_onnxruntime==1.4.4  | models/ch_PP-OCRv4_det_infer.onnx  |
| ppocrv4_mobile_rec   | rapidocr_onnxruntime==1.4.4  | models/ch_PP-OCRv4_rec_infer.onnx  |
| ppocrv6_small_det    | rapidocr==3.10.0             | models/PP-OCRv6_det_small.onnx     |
| ppocrv6_small_rec    | rapidocr==3.10.0             | models/PP-OCRv6_rec_small.onnx     |

Recogniser dictionaries come from the ONNX files' own metadata (``character``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
from pathlib import Path
from typing import Any

import onnx

from ocrslim.errors import ArtifactError


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """A pretrained model shipped inside an installed wheel."""

    name: str
    task: str  # "det" | "rec"
    package: str  # import name of the wheel's package
    relpath: str  # path inside the package
    native: bool  # a native ocrslim.models module can be built from it


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("ppocrv4_mobile_det", "det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", True),
        ZooEntry("ppocrv4_mobile_rec", "rec", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", True),
        ZooEntry("ppocrv6_small_det", "det", "rapidocr", "models/PP-OCRv6_det_small.onnx", False),
        ZooEntry("ppocrv6_small_rec", "rec", "rapidocr", "models/PP-OCRv6_rec_small.onnx", False),
    )
}

_PIP_NAMES = {"rapidocr_onnxruntime": "rapidocr_onnxruntime==1.4.4", "rapidocr": "rapidocr==3.10.0"}


def zoo_entry(name: str) -> ZooEntry:
    """Look a zoo name up; an unknown name lists the registered ones."""
    if name in ZOO:
        return ZOO[name]
    close = difflib.get_close_matches(name, list(ZOO), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ArtifactError(
        f"{name}: unknown model name{hint}. Use one of {', '.join(ZOO)}, onnx:<path>, or a .pt/.onnx/.mnn file."
    )


def zoo_onnx_path(name: str) -> Path:
    """Path of a zoo model's ONNX file inside its installed wheel."""
    entry = zoo_entry(name)
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


def read_dict_file(path: str | Path) -> list[str]:
    """A character dictionary: one character (or token) per line, UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(
            f"{path}: dictionary not found. Pass --dict with the model's character list (one per line)."
        )
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    chars = [ln.rstrip("\r") for ln in lines]
    if not chars:
        raise ArtifactError(f"{path}: dictionary is empty. Pass the model's character list, one per line.")
    return chars


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """ONNX ``metadata_props`` as a dict (weights are not loaded)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a user-facing bad file
        raise ArtifactError(f"{path}: not a readable ONNX model ({type(exc).__name__}). Re-export it.") from None
    return {p.key: p.value for p in model.metadata_props}


def onnx_characters(path: str | Path) -> list[str] | None:
    """The character list stored in an ONNX model's metadata (PP-OCR key ``character``), if any."""
    meta = onnx_metadata(path)
    if "character" not in meta:
        return None
    chars = meta["character"].split("\n")
    return [c.rstrip("\r") for c in chars if c != ""] if chars else None


def onnx_ocrslim_meta(path: str | Path) -> dict[str, Any]:
    """The ``ocrslim`` JSON metadata that ocrslim's own exports carry (task, preprocessing)."""
    raw = onnx_metadata(path).get("ocrslim")
    return json.loads(raw) if raw else {}
