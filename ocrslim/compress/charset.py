"""Vocabulary pruning: keep only the CTC classes of one script (``prune.charset``).

A deployment that reads one script (an English receipt app) does not need 6,623 characters: slicing the
recogniser's CTC head to the characters it keeps shrinks the head (the largest layer of a PP-OCR
recogniser) without touching any other weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ocrslim.core.errors import ArtifactError, ConfigError

__all__ = ["charset_keep", "restrict_charset"]


def charset_keep(characters: Sequence[str], spec: str) -> list[int]:
    """Indices (into ``characters``) a ``prune.charset`` spec keeps: "ascii" or a dictionary file.

    Raises:
        ConfigError: the spec keeps no character of the model's dictionary.
    """
    from ocrslim.core.artifacts import read_dict_file

    if spec == "ascii":
        wanted = {chr(c) for c in range(0x21, 0x7F)}
    else:
        wanted = set(read_dict_file(spec))
    keep = [i for i, c in enumerate(characters) if c in wanted]
    if not keep:
        raise ConfigError(f"prune.charset: {spec!r} keeps none of the model's {len(characters)} characters. "
                          "Name a dictionary of the model's script.")
    return keep


def restrict_charset(model: nn.Module, characters: Sequence[str], keep: Sequence[int]) -> dict[str, Any]:
    """Vocabulary pruning: keep only the CTC classes of ``characters[keep]`` (plus blank and space).

    The head's output rows are sliced (blank row 0, the kept characters' rows, the space row last), so
    the logits of the kept classes are unchanged and greedy decoding of text made of kept characters
    is too; the softmax renormalises over fewer classes.

    Returns:
        ``{"characters": the new character list, "charset": {"classes_before", "classes_after"}}``.

    Raises:
        ArtifactError: the model has no ``head.fc`` linear layer with ``len(characters) + 2`` outputs.
    """
    head = getattr(model, "head", None)
    fc = getattr(head, "fc", None)
    if not isinstance(fc, nn.Linear) or fc.out_features != len(characters) + 2:
        raise ArtifactError(
            f"prune.charset: the recogniser's head is not a CTC linear layer over {len(characters) + 2} classes. "
            "Set prune.charset to null for this model."
        )
    rows = torch.tensor([0, *(i + 1 for i in keep), len(characters) + 1])
    new = nn.Linear(fc.in_features, len(rows), bias=fc.bias is not None)
    with torch.no_grad():
        new.weight.copy_(fc.weight[rows])
        if fc.bias is not None:
            new.bias.copy_(fc.bias[rows])
    head.fc = new
    head.out_channels = len(rows)
    for kwargs in (getattr(head, "init_kwargs", {}), getattr(model, "init_kwargs", {}).get("head", {})):
        if "num_classes" in kwargs:  # from_config rebuilds the smaller head
            kwargs["num_classes"] = len(rows)
    return {"characters": [characters[i] for i in keep],
            "charset": {"classes_before": len(characters) + 2, "classes_after": len(keep) + 2}}
