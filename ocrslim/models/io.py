"""Model and checkpoint files that load without running code: safetensors weights plus a JSON spec.

A model file (``.safetensors``) holds the state dict as tensors and, in its metadata, the model's
architecture and meta as JSON:

* ``native`` models (:class:`~ocrslim.models.det.DBNet`, :class:`~ocrslim.models.rec.CTCRecognizer`):
  the component specs (``backbone`` / ``neck`` / ``head``, as :func:`ocrslim.models.layers.component_spec`
  gives them) and the shape of every weight layer (``Conv2d``, ``ConvTranspose2d``, ``BatchNorm2d``,
  ``Linear``, ``LayerNorm``) — a pruned model is rebuilt by building the unpruned architecture from its
  specs and replacing each layer whose recorded width differs (what torch-pruning's own ``tp.state_dict``
  records, without its pickled ``__dict__``);
* ``onnx`` teachers (imported with onnx2torch): the registered teacher name or ONNX path they are rebuilt from.

Loading never unpickles: a torch ``.pt`` pickle (the format of earlier ocrslim versions) is refused with a
one-line error naming ``ocrslim convert-model``, which converts a file you trust.

:func:`pack` / :func:`unpack` turn nested dicts of tensors, arrays and JSON values (optimizer and RNG state)
into safetensors tensors plus JSON and back, for checkpoints (:mod:`ocrslim.compress.engine`).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ocrslim.core.artifacts import preprocessing
from ocrslim.core.config import DetConfig, RecConfig
from ocrslim.core.errors import ArtifactError
from ocrslim.core.fsutil import atomic_path

__all__ = ["MODEL_FORMAT", "MODEL_SUFFIX", "architecture", "build_from_architecture", "check_not_pickle",
           "load_model", "pack", "read_safetensors", "save_model", "unpack", "write_safetensors"]

MODEL_FORMAT = "ocrslim-model/2"
MODEL_SUFFIX = ".safetensors"
_HEADER_CAP = 100 * 2**20  # a safetensors JSON header larger than this is not one of ours

# Layer types whose constructor arguments fix their parameter shapes, and those arguments.
_LAYER_ARGS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                "padding_mode"),
    nn.ConvTranspose2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding",
                         "groups", "dilation", "padding_mode"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.Linear: ("in_features", "out_features"),
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine"),
}
_LAYER_TYPES = {cls.__name__: cls for cls in _LAYER_ARGS}


# -------------------------------------------------------------------------------------- safetensors I/O
def check_not_pickle(path: Path) -> None:
    """Refuse a file that is not safetensors (a torch zip/pickle above all) before anything parses it."""
    with path.open("rb") as fh:
        head = fh.read(9)
    looks_safe = len(head) == 9 and head[8:9] == b"{"  # a u64 header length, then the JSON header
    if not looks_safe and (head[:2] == b"PK" or head[:1] == b"\x80"):  # torch zip archive / raw pickle
        raise ArtifactError(
            f"{path}: a torch pickle (.pt from an earlier ocrslim or torch.save), which could run code when loaded. "
            f"If you trust it, convert it: ocrslim convert-model {path} {path.with_suffix(MODEL_SUFFIX)}"
        )
    if not looks_safe:
        raise ArtifactError(f"{path}: not a safetensors model file (truncated or another format). "
                            "Re-run the stage that wrote it.")
    (size,) = struct.unpack("<Q", head[:8])
    if size > _HEADER_CAP or size + 8 > path.stat().st_size:
        raise ArtifactError(f"{path}: damaged safetensors header (declares {size} bytes). Re-run the stage that "
                            "wrote it.")


def write_safetensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
                      ) -> None:
    """Write ``tensors`` and JSON ``metadata`` (one JSON string per key) to ``path`` atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={k: json.dumps(v, ensure_ascii=False) for k, v in metadata.items()})
        _sort_metadata(Path(tmp))


def _sort_metadata(path: Path) -> None:
    """Rewrite the header with its metadata keys sorted, in place (same length).

    safetensors writes the metadata map in hash order, which differs between processes: the same model and
    metadata gave other bytes on every run (two fresh clones disagreed from the teacher stage on). The tensor
    entries keep the writer's order and offsets; only the metadata object's key order changes, so the compact
    JSON has the same length and the padding is kept.
    """
    with path.open("r+b") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(size))
        meta = header.pop("__metadata__", None)
        if not meta:
            return
        ordered = {"__metadata__": dict(sorted(meta.items())), **header}
        data = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(data) > size:  # not the writer's compact form: leave the file as written
            return
        fh.seek(8)
        fh.write(data + b" " * (size - len(data)))


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata with JSON values decoded) of a safetensors file; one-line error on anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: not found. Run the stage that writes it (dvc repro) first.")
    check_not_pickle(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0][:120]}). Re-run the "
                            "stage that wrote it.") from None
    try:
        meta = {k: json.loads(raw[k]) for k in sorted(raw)}  # key order independent of the file's
    except json.JSONDecodeError:
        raise ArtifactError(f"{path}: metadata is not JSON. Re-run the stage that wrote it.") from None
    return tensors, meta


# -------------------------------------------------------------------------------------- nested state
def pack(obj: Any, prefix: str = "s") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure into JSON (tensors and arrays replaced by references) and the tensors.

    Tuples survive the round trip (``{"__tuple__": [...]}``), as do numpy arrays (``__array__``) and
    tensors (``__tensor__``); dict keys become strings (int keys are marked so they come back as ints).
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x
            return {"__tensor__": path}
        if isinstance(x, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(x))
            return {"__array__": path}
        if isinstance(x, dict):
            return {"__dict__": [[k, walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(x.items())]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, (np.integer, np.floating)):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"pack: cannot store {type(x).__name__} at {path}")

    return walk(obj, prefix), tensors


def unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack`."""
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__array__" in obj:
            return tensors[obj["__array__"]].numpy()
        if "__tuple__" in obj:
            return tuple(unpack(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {k: unpack(v, tensors) for k, v in obj["__dict__"]}
        return {k: unpack(v, tensors) for k, v in obj.items()}
    return obj


# -------------------------------------------------------------------------------------- architecture
def _layer_args(module: nn.Module) -> dict[str, Any] | None:
    names = _LAYER_ARGS.get(type(module))
    if names is None:
        return None
    args = {n: getattr(module, n) for n in names}
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        args["bias"] = module.bias is not None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


def architecture(model: nn.Module, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON spec :func:`build_from_architecture` rebuilds ``model``'s structure from (pruned widths included).

    Raises:
        ArtifactError: a model ocrslim cannot describe (neither a native model nor an onnx2torch teacher).
    """
    from ocrslim.models.layers import component_spec

    if all(hasattr(model, c) for c in ("backbone", "neck", "head")) and type(model).__name__ in _ARCHS:
        return {
            "kind": "native",
            "class": type(model).__name__,
            "components": {c: component_spec(getattr(model, c)) for c in ("backbone", "neck", "head")},
            "layers": {n: {"type": type(m).__name__, **args} for n, m in model.named_modules()
                       if (args := _layer_args(m)) is not None},
        }
    source = (meta or {}).get("source")
    if isinstance(model, torch.fx.GraphModule) and source:
        return {"kind": "onnx", "source": source}
    raise ArtifactError(f"{type(model).__name__}: ocrslim can save native DBNet / CTCRecognizer models and "
                        "onnx2torch teachers (with meta['source']) only. Build the model through ocrslim.models.")


def _build_native(spec: dict[str, Any]) -> nn.Module:
    comps = spec["components"]
    head = dict(comps["head"])
    with_threshold = bool(head.pop("with_threshold", False))
    builder = _ARCHS[spec["class"]]()
    if spec["class"] == "DBNet":
        head["with_threshold"] = False  # added after the layer widths are restored (it is sized to the neck)
    model = builder(comps["backbone"], comps["neck"], head)
    modules = dict(model.named_modules())
    for name, layer in spec["layers"].items():
        if name.startswith("head.thresh."):
            continue
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in layer.items() if k != "type"}
        current = modules.get(name)
        if current is None or type(current).__name__ != layer["type"]:
            raise ArtifactError(f"layer {name!r} ({layer['type']}) does not exist in the rebuilt {spec['class']}. "
                                "The file was written by another ocrslim version; re-run its stage.")
        if _layer_args(current) != {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}:
            _replace(model, name, _LAYER_TYPES[layer["type"]](**args))
    if with_threshold:
        model.head.enable_threshold()
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def build_from_architecture(spec: dict[str, Any]) -> nn.Module:
    """A model with the structure :func:`architecture` recorded (weights not loaded)."""
    if spec.get("kind") == "native" and spec.get("class") in _ARCHS:
        return _build_native(spec)
    if spec.get("kind") == "onnx":
        from ocrslim.models.onnx2torch import onnx_to_torch
        from ocrslim.models.registry import REGISTRY, teacher_onnx_path

        src = str(spec["source"]).removeprefix("onnx:")
        return onnx_to_torch(teacher_onnx_path(src) if src in REGISTRY else Path(src))
    raise ArtifactError(f"architecture {spec.get('kind')!r}/{spec.get('class')!r} is unknown to this ocrslim. "
                        "Re-run the stage that wrote the file.")


def _dbnet() -> Any:
    from ocrslim.models.det import build_dbnet

    return build_dbnet


def _ctc() -> Any:
    from ocrslim.models.rec import build_ctc_recognizer

    return build_ctc_recognizer


_ARCHS = {"DBNet": _dbnet, "CTCRecognizer": _ctc}


# -------------------------------------------------------------------------------------- model files
def save_model(model: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` (weights + architecture spec) and its ``meta`` to ``path`` (``.safetensors``) atomically.

    Args:
        model: a native ocrslim model (pruned or not) or an onnx2torch teacher with ``meta["source"]``.
        path: destination file (parents are created).
        meta: JSON-able facts about the model (task, dictionary, preprocessing, pruning report, ...).
    """
    meta = meta or {}
    arch = architecture(model, meta)
    write_safetensors(path, dict(model.state_dict()), {"format": MODEL_FORMAT, "architecture": arch, "meta": meta})


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model written by :func:`save_model` (no code from the file runs).

    Returns:
        ``(model, meta)`` with the model in eval mode.

    Raises:
        ArtifactError: missing file, a torch pickle (with the conversion command), not ours, or weights that
            do not fit the recorded architecture.

    >>> model, meta = load_model("artifacts/teacher/det.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    tensors, info = read_safetensors(path)
    if info.get("format") != MODEL_FORMAT or "architecture" not in info:
        raise ArtifactError(f"{path}: not an {MODEL_FORMAT} file. Save models with ocrslim.models.io.save_model.")
    try:
        model = build_from_architecture(info["architecture"])
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not fit the recorded architecture ({str(exc).splitlines()[0][:160]})."
                            " Re-run the stage that wrote it.") from None
    return model.eval(), dict(info.get("meta") or {})


def load_task_model(path: str | os.PathLike[str], task: str) -> tuple[nn.Module, dict[str, Any], DetConfig | RecConfig]:
    """A saved model of ``task`` ("det" or "rec"), its meta and the preprocessing it carries (a
    :class:`~ocrslim.core.config.DetConfig` or :class:`~ocrslim.core.config.RecConfig`; defaults where it holds
    none): what pruning or training it starts from. A recogniser's dictionary is ``meta["characters"]``.

    Raises:
        ArtifactError: as :func:`load_model`, or the file holds a model of the other task.

    >>> model, meta, pre = load_task_model("artifacts/teacher/rec.safetensors", "rec")  # doctest: +SKIP
    """
    model, meta = load_model(path)
    if meta.get("task") not in (None, task):
        raise ArtifactError(f"{path}: is a {meta['task']} model, not {task}. Pass the {task} model.")
    det_cfg, rec_cfg = preprocessing(meta)
    return model, meta, det_cfg if task == "det" else rec_cfg


def convert_pickle_model(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Convert an ``ocrslim-model/1`` torch pickle (earlier versions) to a safetensors model file.

    This unpickles ``src``, which can run any code it holds: only for files you trust (``ocrslim convert-model``).
    """
    src, dst = Path(src), Path(dst)
    payload = torch.load(src, map_location="cpu", weights_only=False)  # the user vouched for this file
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), nn.Module):
        raise ArtifactError(f"{src}: not an ocrslim .pt model (no 'model' module inside). Nothing converted.")
    save_model(payload["model"], dst, dict(payload.get("meta") or {}))
    return dst
