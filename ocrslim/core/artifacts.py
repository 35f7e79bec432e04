"""What model files and bundles carry besides weights: metadata, sidecars, dictionaries, the manifest.

Every ocrslim model artifact carries the same metadata (:func:`model_meta`): its task, its pre/post-processing
(a :class:`~ocrslim.core.config.DetConfig` or :class:`~ocrslim.core.config.RecConfig` as a dict) and, for a
recogniser, its dictionary. A torch model file (teacher, pruned, student ``.safetensors``) holds the
preprocessing only, what the model was pruned and trained to see; the post-processing (DB thresholds, unclip,
rec batch size, drop score) is attached when it is exported (:func:`with_postprocessing`), so changing a
threshold re-exports and re-gates a model but retrains nothing. ONNX files hold the metadata in
``metadata_props``; formats that cannot (``.mnn``) keep it in a JSON sidecar beside the file (``det.mnn`` →
``det.mnn.json``); a bundle keeps it in ``manifest.json``.

A bundle's manifest names each file with its sha256 and size. :func:`read_manifest` refuses a file
that is missing, changed, truncated or named outside the bundle directory, so nothing reads a model
the manifest does not describe.

Nothing here imports torch, numpy or onnx at module level: the inference core reads these files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocrslim.core.config import DetConfig, RecConfig, from_dict, to_dict
from ocrslim.core.errors import ArtifactError
from ocrslim.core.fsutil import sha256_file, write_json, write_text

__all__ = [
    "BUNDLE_FORMAT", "MANIFEST", "TORCHSCRIPT_RUNTIME", "configs_of", "model_meta", "onnx_characters", "onnx_metadata",
    "onnx_ocrslim_meta",
    "preprocessing", "read_dict_file", "read_manifest", "read_sidecar", "sidecar_path", "with_postprocessing",
    "write_manifest",
]

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "ocrslim-bundle/2"
# A manifest's "runtime" for TorchScript models (ocrslim.export.targets): described and verified, never loaded.
TORCHSCRIPT_RUNTIME = "torchscript"
_BUNDLE_FORMATS = (BUNDLE_FORMAT,)  # ocrslim-bundle/1 (no sizes, no dictionary hash) is refused: rebuild it
TASKS = ("det", "rec")


# ------------------------------------------------------------------------------------------ metadata
def model_meta(task: str, characters: Sequence[str] | None, det_cfg: DetConfig, rec_cfg: RecConfig) -> dict[str, Any]:
    """Metadata a model carries from the teacher stage on: its task, its preprocessing (the keys of its task's
    config outside ``POSTPROCESSING``) and, for a recogniser, its dictionary."""
    cfg = det_cfg if task == "det" else rec_cfg
    pre = {k: v for k, v in to_dict(cfg).items() if k not in type(cfg).POSTPROCESSING}
    meta: dict[str, Any] = {"task": task, "config": {task: pre}}
    if task == "rec":
        meta["characters"] = list(characters or [])
    return meta


def with_postprocessing(meta: dict[str, Any], cfg: DetConfig | RecConfig) -> dict[str, Any]:
    """``meta`` with its task's config completed by ``cfg`` (the params' ``det`` / ``rec`` section): the
    post-processing from ``cfg``, the preprocessing the model carries (``cfg``'s where it carries none). What an
    exported model file holds.

    >>> with_postprocessing({"config": {"det": {"mean": [0, 0, 0]}}}, DetConfig(box_thresh=0.6))["config"]["det"][
    ...     "box_thresh"]
    0.6
    """
    task = "det" if isinstance(cfg, DetConfig) else "rec"
    conf = meta.get("config", {})
    own = {k: v for k, v in conf.get(task, {}).items() if k not in type(cfg).POSTPROCESSING}
    full = from_dict(type(cfg), {**to_dict(cfg), **own}, task)
    return {**meta, "config": {**conf, task: to_dict(full)}}


def configs_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``det_cfg`` / ``rec_cfg`` a model's metadata holds, as dataclasses (keys absent when it holds none)."""
    out: dict[str, Any] = {}
    conf = meta.get("config", {})
    if "det" in conf:
        out["det_cfg"] = from_dict(DetConfig, conf["det"], "det")
    if "rec" in conf:
        out["rec_cfg"] = from_dict(RecConfig, conf["rec"], "rec")
    return out


def preprocessing(meta: dict[str, Any]) -> tuple[DetConfig, RecConfig]:
    """The (DetConfig, RecConfig) a model's metadata holds; the dataclass defaults where it holds none."""
    cfgs = configs_of(meta)
    return cfgs.get("det_cfg", DetConfig()), cfgs.get("rec_cfg", RecConfig())


def sidecar_path(path: str | Path) -> Path:
    """Metadata file beside a model that cannot carry its own (``det.mnn`` → ``det.mnn.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of model file ``path`` ({} when there is none)."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    return _read_json(side, "Rebuild it with dvc repro.")


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: not UTF-8 text. {fix}") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}). {fix}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(data).__name__}. {fix}")
    return data


def read_dict_file(path: str | Path) -> list[str]:
    """A character dictionary: one character (or token) per line, UTF-8.

    Raises:
        ArtifactError: missing, not UTF-8, empty, a blank line inside it, or a character listed twice (the
            CTC class of that character would be ambiguous).
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: dictionary not found. Pass --dict with the model's character list "
                            "(one per line).")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: dictionary is not UTF-8 text. Save it as UTF-8, one character per "
                            "line.") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    chars = [ln.rstrip("\r") for ln in lines]
    if not chars:
        raise ArtifactError(f"{path}: dictionary is empty. Pass the model's character list, one per line.")
    for number, ch in enumerate(chars, 1):
        if ch == "":
            raise ArtifactError(f"{path}:{number}: blank line in the dictionary. Remove it (the space class is "
                                "added by ocrslim, not listed).")
    seen: dict[str, int] = {}
    for number, ch in enumerate(chars, 1):
        if ch in seen:
            raise ArtifactError(f"{path}:{number}: {ch!r} is listed twice (first on line {seen[ch]}). "
                                "Remove the duplicate.")
        seen[ch] = number
    return chars


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """ONNX ``metadata_props`` as a dict."""
    import onnx  # an ONNX model's metadata is the only thing here that needs it

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a user-facing bad file
        raise ArtifactError(f"{path}: not a readable ONNX model ({type(exc).__name__}). Re-export it.") from None
    return {p.key: p.value for p in model.metadata_props}


def onnx_characters(path: str | Path, meta: dict[str, str] | None = None) -> list[str] | None:
    """The character list stored in an ONNX model's metadata (PP-OCR key ``character``), if any."""
    meta = onnx_metadata(path) if meta is None else meta
    if "character" not in meta:
        return None
    chars = meta["character"].split("\n")
    return [c.rstrip("\r") for c in chars if c != ""] if chars else None


def onnx_ocrslim_meta(path: str | Path, meta: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``ocrslim`` JSON metadata that ocrslim's own exports carry (task, preprocessing)."""
    raw = (onnx_metadata(path) if meta is None else meta).get("ocrslim")
    return json.loads(raw) if raw else {}


# ------------------------------------------------------------------------------------------ manifest
def write_manifest(out_dir: str | Path, manifest: dict[str, Any], characters: Sequence[str]) -> dict[str, Any]:
    """Write ``dict.txt`` and ``manifest.json`` into ``out_dir`` and return the manifest written.

    ``manifest["det"]`` / ``manifest["rec"]`` must name their ``file`` (inside ``out_dir``); each gets the
    file's ``sha256`` and ``size_bytes``, rec also ``dict`` (with its own hash), so :func:`read_manifest`
    can prove what the directory holds.
    """
    out_dir = Path(out_dir)
    write_text(out_dir / "dict.txt", "".join(c + "\n" for c in characters))
    out = {"format": BUNDLE_FORMAT, **manifest}
    out["rec"] = {**out["rec"], "dict": "dict.txt"}
    for task in TASKS:
        entry = out[task]
        entry["sha256"] = sha256_file(out_dir / entry["file"])
        entry["size_bytes"] = (out_dir / entry["file"]).stat().st_size
    out["rec"]["dict_sha256"] = sha256_file(out_dir / "dict.txt")
    write_json(out_dir / MANIFEST, out)
    return out


def _inside(bundle: Path, name: Any, manifest: Path, key: str) -> Path:
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"{manifest}: {key} is {name!r}, not a file name. Rebuild the bundle with dvc repro.")
    target = (bundle / name).resolve()
    if Path(name).is_absolute() or bundle.resolve() not in target.parents:
        raise ArtifactError(f"{manifest}: {key} {name!r} points outside the bundle directory. Refusing to read it; "
                            "rebuild the bundle with dvc repro.")
    return target


def _check_file(path: Path, entry: dict[str, Any], sha_key: str, manifest: Path) -> None:
    if not path.is_file():
        raise ArtifactError(f"{path}: named in {manifest.name} but missing. Rebuild or re-copy the whole bundle.")
    size = entry.get("size_bytes") if sha_key == "sha256" else None
    if sha_key == "sha256" and (not isinstance(size, int) or isinstance(size, bool)):
        raise ArtifactError(f"{manifest}: no size_bytes for {path.name}. Rebuild the bundle with dvc repro.")
    if size is not None and path.stat().st_size != size:
        raise ArtifactError(f"{path}: {path.stat().st_size} bytes, {manifest.name} says {size} (truncated or "
                            "replaced). Re-copy the bundle.")
    want = entry.get(sha_key)
    if not isinstance(want, str):
        raise ArtifactError(f"{manifest}: no {sha_key} for {path.name}. Rebuild the bundle with dvc repro.")
    if sha256_file(path) != want:
        raise ArtifactError(f"{path}: sha256 differs from {manifest.name} (the file was changed). Re-copy or "
                            "rebuild the bundle.")


def read_manifest(bundle: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read a bundle's ``manifest.json``; with ``verify``, check every file it names.

    Returns the manifest with ``det.path``, ``rec.path`` and ``rec.dict_path`` (absolute :class:`Path`) added.

    Raises:
        ArtifactError: no manifest, a malformed one, a path outside the bundle, or (``verify``) a file
            that is missing or whose size or sha256 differs (one line naming the file).
    """
    bundle = Path(bundle)
    manifest_path = bundle / MANIFEST
    if not bundle.is_dir():
        raise ArtifactError(f"{bundle}: bundle directory not found. Build one with dvc repro (artifacts/bundle).")
    if not manifest_path.is_file():
        raise ArtifactError(f"{bundle}: no {MANIFEST}. Pass a bundle built by ocrslim (dvc repro bundle).")
    data = _read_json(manifest_path, "Rebuild the bundle with dvc repro.")
    if data.get("format") not in _BUNDLE_FORMATS:
        raise ArtifactError(f"{manifest_path}: format {data.get('format')!r} is not one this ocrslim reads "
                            f"({', '.join(_BUNDLE_FORMATS)}). Rebuild the bundle with this version.")
    for task in TASKS:
        entry = data.get(task)
        if not isinstance(entry, dict):
            raise ArtifactError(f"{manifest_path}: no '{task}' entry. Rebuild the bundle with dvc repro.")
        entry["path"] = _inside(bundle, entry.get("file"), manifest_path, f"{task}.file")
        if verify:
            _check_file(entry["path"], entry, "sha256", manifest_path)
    rec = data["rec"]
    rec["dict_path"] = _inside(bundle, rec.get("dict"), manifest_path, "rec.dict")
    if verify:
        _check_file(rec["dict_path"], rec, "dict_sha256", manifest_path)
    return data
