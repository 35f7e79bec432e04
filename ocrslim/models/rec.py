"""CTC text recogniser: backbone → sequence neck → CTC head."""

from __future__ import annotations

from typing import Any

import torch

from ocrslim.models import backbones as _backbones  # noqa: F401  (registers components)
from ocrslim.models import heads as _heads  # noqa: F401
from ocrslim.models import necks as _necks  # noqa: F401
from ocrslim.models.layers import ComponentModel, chain

__all__ = ["CTCRecognizer", "build_ctc_recognizer"]


class CTCRecognizer(ComponentModel):
    """CTC recogniser for N×3×48×W crops (W a multiple of 8).

    Args:
        backbone: image → N×C×1×T map; exposes ``out_channels``.
        neck: map → N×T×D sequence; exposes ``out_channels``.
        head: sequence → N×T×num_classes logits; exposes ``out_channels`` (= classes).

    Returns (forward): N×T×C softmax probabilities (T = W/8, class 0 = CTC blank), exactly like the
    PP-OCR ONNX; the pre-softmax logits with ``return_logits=True`` (for CTC / KD losses).
    """

    @property
    def num_classes(self) -> int:
        """CTC classes, blank included."""
        return int(self.head.out_channels)

    def forward(self, x: torch.Tensor, return_logits: bool = False) -> torch.Tensor:
        logits = self.head(self.neck(self.backbone(x)))
        # `is True`, not truthiness: torch.onnx.export(dynamo=False) passes unset defaults as tensors,
        # and testing a tensor's truth would add a tracer warning (the traced graph stays softmax).
        if return_logits is True:
            return logits
        return torch.softmax(logits, dim=2)


def build_ctc_recognizer(backbone: dict[str, Any], neck: dict[str, Any], head: dict[str, Any]) -> CTCRecognizer:
    """Build a CTC recogniser from component specs, chaining ``out_channels`` into ``in_channels``.

    The head spec must carry ``num_classes`` (``len(charset) + 1`` for the blank).

    >>> m = build_ctc_recognizer({"name": "PPLCNetV3", "scale": 0.95}, {"name": "EncoderWithSVTR"},
    ...                          {"name": "CTCHead", "num_classes": 4})
    >>> m(torch.zeros(1, 3, 48, 64)).shape
    torch.Size([1, 8, 4])
    """
    return chain(CTCRecognizer, backbone, neck, head)
