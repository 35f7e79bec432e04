"""DBNet text detector: backbone → neck → DB head."""

from __future__ import annotations

from typing import Any

import torch

from ocrslim.models import backbones as _backbones  # noqa: F401  (registers components)
from ocrslim.models import heads as _heads  # noqa: F401
from ocrslim.models import necks as _necks  # noqa: F401
from ocrslim.models.layers import ComponentModel, chain

__all__ = ["DBNet", "build_dbnet"]


class DBNet(ComponentModel):
    """Differentiable-binarisation text detector.

    Args:
        backbone: returns a list of feature maps; exposes ``out_channels``.
        neck: fuses them into one stride-4 map; exposes ``out_channels``.
        head: :class:`~ocrslim.models.heads.DBHead`.

    Returns (forward): for x N×3×H×W (H, W multiples of 32, normalised with mean 0.5 / std 0.5) the
    N×1×H×W probability map; a ``{"prob", "thresh", "binary"}`` dict instead when the head has a
    threshold branch and the model is in training mode.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        return self.head(self.neck(self.backbone(x)))


def build_dbnet(backbone: dict[str, Any], neck: dict[str, Any], head: dict[str, Any]) -> DBNet:
    """Build a DBNet from component specs, chaining ``out_channels`` into ``in_channels``.

    Args:
        backbone: ``{"name": ..., **kwargs}`` of a registered backbone.
        neck: neck spec; its ``in_channels`` is taken from the backbone.
        head: head spec; its ``in_channels`` is taken from the neck.

    >>> m = build_dbnet({"name": "PPLCNetV3", "scale": 0.75, "det": True},
    ...                 {"name": "RSEFPN", "out_channels": 96}, {"name": "DBHead"})
    >>> m(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1, 64, 64])
    """
    return chain(DBNet, backbone, neck, head)
