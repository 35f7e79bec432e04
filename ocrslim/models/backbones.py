"""PP-LCNetV3 backbones (PP-OCRv4 mobile det and rec), in re-parameterised inference form.

Structure read off ``ch_PP-OCRv4_det_infer.onnx`` / ``ch_PP-OCRv4_rec_infer.onnx``:

* stem: 3x3 stride-2 conv (no bias) → BatchNorm, no activation;
* stages ``blocks2``..``blocks6`` of :class:`LCNetV3Block` (depthwise rep-conv → optional SE →
  pointwise rep-conv), channels ``make_divisible(c * scale, 16)``;
* det (scale 0.75): four feature maps (after blocks3..6) each reduced by a 1x1 conv with bias to
  ``int(c * scale)`` for ``c`` in (16, 24, 56, 480) → 12, 18, 42, 360 channels at strides 4..32;
* rec (scale 0.95): strides (2, 1)/(1, 2) keep width resolution, then a 3x2 average pool →
  N×480×1×(W/8).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ocrslim.models.layers import ConvBNAct, LearnableRepLayer, SELayer, make_divisible, register_component

__all__ = ["NET_CONFIG_DET", "NET_CONFIG_REC", "LCNetV3Block", "PPLCNetV3"]

Stride = int | tuple[int, int]
# [kernel, in_channels, out_channels, stride, use_se] before scaling, as in PaddleOCR's rec_lcnetv3.py.
BlockCfg = tuple[int, int, int, Stride, bool]

NET_CONFIG_DET: dict[str, list[BlockCfg]] = {
    "blocks2": [(3, 16, 32, 1, False)],
    "blocks3": [(3, 32, 64, 2, False), (3, 64, 64, 1, False)],
    "blocks4": [(3, 64, 128, 2, False), (3, 128, 128, 1, False)],
    "blocks5": [(3, 128, 256, 2, False)] + [(5, 256, 256, 1, False)] * 4,
    "blocks6": [(5, 256, 512, 2, True), (5, 512, 512, 1, True), (5, 512, 512, 1, False), (5, 512, 512, 1, False)],
}

NET_CONFIG_REC: dict[str, list[BlockCfg]] = {
    "blocks2": [(3, 16, 32, 1, False)],
    "blocks3": [(3, 32, 64, 1, False), (3, 64, 64, 1, False)],
    "blocks4": [(3, 64, 128, (2, 1), False), (3, 128, 128, 1, False)],
    "blocks5": [(3, 128, 256, (1, 2), False)] + [(5, 256, 256, 1, False)] * 4,
    "blocks6": [
        (5, 256, 512, (2, 1), True),
        (5, 512, 512, 1, True),
        (5, 512, 512, (2, 1), False),
        (5, 512, 512, 1, False),
    ],
}

# Unscaled widths of the det feature-reduction convs (PaddleOCR ``mv_c``).
_DET_REDUCE = (16, 24, 56, 480)


class LCNetV3Block(nn.Module):
    """Depthwise rep-conv → optional SE → pointwise rep-conv (no residual)."""

    def __init__(self, in_channels: int, out_channels: int, stride: Stride, dw_size: int, use_se: bool) -> None:
        super().__init__()
        # PP-LCNetV3 drops the activation after a stride-2 depthwise conv (int 2 only).
        dw_act = not (isinstance(stride, int) and stride == 2)
        self.dw_conv = LearnableRepLayer(in_channels, in_channels, dw_size, stride, groups=in_channels, act=dw_act)
        self.se: nn.Module = SELayer(in_channels, reduction=4) if use_se else nn.Identity()
        self.pw_conv = LearnableRepLayer(in_channels, out_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw_conv(self.se(self.dw_conv(x)))


@register_component
class PPLCNetV3(nn.Module):
    """PP-LCNetV3 backbone for detection (4 feature maps) or recognition (one sequence map).

    Args:
        scale: width multiplier (0.75 for PP-OCRv4 mobile det, 0.95 for rec).
        det: detection variant (list of 4 maps) instead of recognition (one pooled map).
        in_channels: image channels.

    Returns (forward):
        det: list of 4 tensors N×C_i×H/s×W/s for s in (4, 8, 16, 32), C_i = ``out_channels[i]``.
        rec: N×C×1×W/8 for a 48-pixel-high input, C = ``out_channels``.

    >>> PPLCNetV3(scale=0.75, det=True).out_channels
    [12, 18, 42, 360]
    """

    def __init__(self, scale: float = 0.95, det: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        self.init_kwargs: dict[str, Any] = {"scale": scale, "det": det, "in_channels": in_channels}
        self.det = det
        cfg = NET_CONFIG_DET if det else NET_CONFIG_REC
        self.conv1 = ConvBNAct(in_channels, make_divisible(16 * scale), 3, stride=2, act=None)
        for name, blocks in cfg.items():
            stage = nn.Sequential(
                *[
                    LCNetV3Block(make_divisible(cin * scale), make_divisible(cout * scale), s, k, se)
                    for k, cin, cout, s, se in blocks
                ]
            )
            self.add_module(name, stage)
        stage_out = [make_divisible(cfg[name][-1][2] * scale) for name in ("blocks3", "blocks4", "blocks5", "blocks6")]
        self.out_channels: int | list[int]
        if det:
            reduced = [int(c * scale) for c in _DET_REDUCE]
            self.layer_list = nn.ModuleList(
                [nn.Conv2d(cin, cout, 1, bias=True) for cin, cout in zip(stage_out, reduced, strict=True)]
            )
            self.out_channels = reduced
        else:
            # Fixed 3x2 pool: N×C×3×W/4 → N×C×1×W/8 for 48-pixel-high crops (the exported graph's
            # AveragePool; equals PaddleOCR's training-time adaptive pool to [1, 40] at width 320).
            self.pool = nn.AvgPool2d(kernel_size=(3, 2), stride=(3, 2))
            self.out_channels = stage_out[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        x = self.conv1(x)
        x = self.blocks2(x)
        c2 = self.blocks3(x)
        c3 = self.blocks4(c2)
        c4 = self.blocks5(c3)
        c5 = self.blocks6(c4)
        if self.det:
            return [conv(f) for conv, f in zip(self.layer_list, (c2, c3, c4, c5), strict=True)]
        return self.pool(c5)
