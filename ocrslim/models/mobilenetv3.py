"""MobileNetV3-Small backbone for DB detection (seed student, trained from scratch).

Structure as in Howard et al., "Searching for MobileNetV3" (ICCV 2019), Table 2, and torchvision's
``mobilenet_v3_small`` config (torchvision itself is not a dependency):

* stem: 3x3 stride-2 conv → BN → hard-swish, 16 channels;
* 11 inverted-residual blocks (1x1 expand → kxk depthwise → optional SE → 1x1 project, residual
  when the stride is 1 and the width is unchanged), ReLU in the first three, hard-swish after;
* a last 1x1 conv → BN → hard-swish to 576 channels (the classifier's input; the classifier
  itself is left out).

Every width is ``make_divisible(c * scale, 8)``. As PaddleOCR's ``det_mobilenet_v3`` does, the
detection variant returns the output of each resolution: after block 0 (stride 4), block 2
(stride 8), block 7 (stride 16) and the last conv (stride 32) → 16, 24, 48, 576 channels at
scale 1.0. The SE squeeze width is ``channels // 4`` (PaddleOCR; torchvision rounds it up to a
multiple of 8), the gate a hard-sigmoid of slope 1/6.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ocrslim.core.errors import ConfigError
from ocrslim.models.layers import ConvBNAct, SELayer, make_divisible, register_component

__all__ = ["MBV3_SMALL_CONFIG", "InvertedResidual", "MobileNetV3Small"]

# (kernel, expanded channels, out channels, use SE, activation, stride), unscaled; the paper's Table 2.
MBV3_SMALL_CONFIG: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
)

_STEM_CHANNELS = 16
_LAST_CHANNELS = 576
# Index of the last block of each of the first three det stages (strides 4, 8, 16); stage 4 ends with the last conv.
_STAGE_ENDS = (0, 2, 7)


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: 1x1 expand (skipped when ``expanded == in_channels``) → kxk depthwise →
    optional SE → 1x1 linear projection, plus the input when ``stride == 1`` and the width is unchanged.

    Args:
        in_channels: input channels.
        expanded: channels of the depthwise conv.
        out_channels: output channels.
        kernel_size: depthwise kernel (3 or 5).
        stride: depthwise stride (1 or 2).
        use_se: squeeze-and-excitation after the depthwise conv.
        act: "relu" or "hardswish".

    Returns (forward): N×out_channels×H/stride×W/stride.
    """

    def __init__(
        self, in_channels: int, expanded: int, out_channels: int, kernel_size: int, stride: int, use_se: bool, act: str
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand: nn.Module = (
            ConvBNAct(in_channels, expanded, 1, act=act) if expanded != in_channels else nn.Identity()
        )
        self.dw = ConvBNAct(expanded, expanded, kernel_size, stride=stride, groups=expanded, act=act)
        self.se: nn.Module = SELayer(expanded, reduction=4) if use_se else nn.Identity()
        self.project = ConvBNAct(expanded, out_channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.use_residual else y


@register_component
class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small feature extractor for DBNet (randomly initialised).

    Args:
        scale: width multiplier; channels are ``make_divisible(c * scale, 8)``.
        det: must be True: only the detection variant (4 feature maps) exists. Kept as an argument
            for symmetry with :class:`~ocrslim.models.backbones.PPLCNetV3` specs.
        in_channels: image channels.

    Returns (forward):
        list of 4 tensors N×C_i×H/s×W/s for s in (4, 8, 16, 32), C_i = ``out_channels[i]``
        (H, W multiples of 32).

    >>> MobileNetV3Small().out_channels
    [16, 24, 48, 576]
    >>> [f.shape[1:] for f in MobileNetV3Small(scale=0.5)(torch.zeros(1, 3, 64, 64))]
    [torch.Size([8, 16, 16]), torch.Size([16, 8, 8]), torch.Size([24, 4, 4]), torch.Size([288, 2, 2])]
    """

    def __init__(self, scale: float = 1.0, det: bool = True, in_channels: int = 3) -> None:
        super().__init__()
        if not det:
            raise ConfigError(
                "MobileNetV3Small: det is False, but only the detection variant exists. Use ViTRec or PPLCNetV3 "
                "for recognition."
            )
        if scale <= 0:
            raise ConfigError(f"MobileNetV3Small: scale is {scale}, must be > 0. Fix the backbone spec.")
        self.init_kwargs: dict[str, Any] = {"scale": scale, "det": det, "in_channels": in_channels}

        def ch(c: int) -> int:
            return make_divisible(c * scale, 8)

        self.conv1 = ConvBNAct(in_channels, ch(_STEM_CHANNELS), 3, stride=2, act="hardswish")
        blocks: list[nn.Module] = []
        cin = ch(_STEM_CHANNELS)
        for k, exp, cout, se, act, s in MBV3_SMALL_CONFIG:
            blocks.append(InvertedResidual(cin, ch(exp), ch(cout), k, s, se, act))
            cin = ch(cout)
        bounds = (0, *(i + 1 for i in _STAGE_ENDS), len(blocks))
        self.stages = nn.ModuleList(nn.Sequential(*blocks[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
        self.conv_last = ConvBNAct(cin, ch(_LAST_CHANNELS), 1, act="hardswish")
        self.out_channels: list[int] = [ch(MBV3_SMALL_CONFIG[i][2]) for i in _STAGE_ENDS] + [ch(_LAST_CHANNELS)]
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's MobileNetV3 init: Kaiming-normal (fan-out) convs, unit BN, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.conv1(x)
        c2 = self.stages[0](x)
        c3 = self.stages[1](c2)
        c4 = self.stages[2](c3)
        c5 = self.conv_last(self.stages[3](c4))
        return [c2, c3, c4, c5]
