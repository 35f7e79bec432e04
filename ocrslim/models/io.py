"""Save and load whole models (pruned models cannot be rebuilt from a state_dict)."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ocrslim.errors import ArtifactError
from ocrslim.fsutil import atomic_path

__all__ = ["MODEL_FORMAT", "save_model", "load_model"]

MODEL_FORMAT = "ocrslim-model/1"


def save_model(model: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` (the whole module), its class, ``init_kwargs`` and ``meta`` to ``path`` atomically.

    Args:
        model: any module; ``model.init_kwargs`` is stored when present.
        path: destination file (parents are created).
        meta: free-form JSON-like facts about the model (charset, pruning report, ...).
    """
    cls = type(model)
    payload = {
        "format": MODEL_FORMAT,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "init_kwargs": getattr(model, "init_kwargs", {}),
        "model": model,
        "meta": meta or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model written by :func:`save_model`.

    Returns:
        ``(model, meta)`` with the model in eval mode.

    >>> model, meta = load_model("artifacts/teacher/det.pt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: not found. Run the stage that writes it (dvc repro) first.")
    try:
        # weights_only=False: the file holds a whole pickled module (our own artifact, not user input).
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise ArtifactError(
            f"{path}: unreadable model file ({type(exc).__name__}). Delete it and re-run its stage."
        ) from exc
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ArtifactError(
            f"{path}: its classes no longer import ({exc}). Re-run the stage that wrote it with this ocrslim version."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT or not isinstance(
        payload.get("model"), nn.Module
    ):
        raise ArtifactError(f"{path}: not an {MODEL_FORMAT} file. Save models with ocrslim.models.io.save_model.")
    return payload["model"].eval(), dict(payload.get("meta") or {})
