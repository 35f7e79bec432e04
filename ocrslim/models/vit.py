"""A small ViT text-line encoder for CTC recognition (seed student, trained from scratch), plus ``Im2Seq``.

Structure of :class:`ViTRec` for an N×3×48×W crop (W a multiple of 8):

* patch embedding, a conv stem: three 3x3 stride-2 ConvBNAct (hard-swish) 3 → 32 → 64 → ``embed_dim``
  (48×W → 6×W/8), then a depthwise 6x1 ConvBN (no padding) that folds the 6 remaining rows into
  one with learned per-channel row weights → N×D×1×T, T = W/8 (CTCRecognizer's frame contract);
* conditional positional encoding (Chu et al., CPVT, 2021): ``x + dwconv_{1×k}(x)`` over the token
  row. Position comes from the zero padding seen by the convolution, so it holds for any width and
  exports with a dynamic width axis (no fixed-length table to interpolate);
* ``depth`` pre-LN transformer blocks (:class:`~ocrslim.models.necks.SVTRBlock`: qkv-biased multi-head
  attention and a swish MLP, plain ``nn.Linear``/``nn.LayerNorm``) → LayerNorm (eps 1e-6);
* back to a map: N×D×1×T, so a sequence neck (:class:`Im2Seq`) and the CTC head follow as usual.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ocrslim.core.errors import ConfigError
from ocrslim.models.layers import ConvBNAct, register_component
from ocrslim.models.necks import SVTRBlock

__all__ = ["Im2Seq", "ViTRec"]

# Crop height of the recogniser (CTCRecognizer's contract) and the stem's height reduction.
_REC_HEIGHT = 48
_STEM_STRIDE = 8


@register_component
class ViTRec(nn.Module):
    """Conv-stem ViT over the columns of a text line, with a convolutional positional encoding.

    Args:
        embed_dim: token width D (divisible by ``num_heads``).
        depth: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / D. 2.0 as in PP-OCRv4's SVTR neck: with D = 192 and a 6,625-class
            CTC head the recogniser has 3.19 M parameters (4.08 M at 4.0, 2.75 M at 1.0).
        in_channels: image channels.
        pos_kernel: odd kernel width of the depthwise positional convolution (in tokens).

    Returns (forward): N×D×1×W/8 for an N×in_channels×48×W input; ``out_channels`` = D. The height
    must be 48: the stem's 6x1 fold expects exactly 6 rows (as PPLCNetV3's fixed 3x2 pool does).

    >>> ViTRec(embed_dim=48, depth=1, num_heads=2)(torch.zeros(2, 3, 48, 64)).shape
    torch.Size([2, 48, 1, 8])
    """

    def __init__(
        self,
        embed_dim: int = 192,
        depth: int = 6,
        num_heads: int = 6,
        mlp_ratio: float = 2.0,
        in_channels: int = 3,
        pos_kernel: int = 7,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ConfigError(
                f"ViTRec: embed_dim {embed_dim} is not divisible by num_heads {num_heads}. Fix the backbone spec."
            )
        if pos_kernel % 2 != 1:
            raise ConfigError(f"ViTRec: pos_kernel is {pos_kernel}, must be odd. Fix the backbone spec.")
        self.init_kwargs: dict[str, Any] = {
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
            "in_channels": in_channels,
            "pos_kernel": pos_kernel,
        }
        rows = _REC_HEIGHT // _STEM_STRIDE
        self.patch_embed = nn.Sequential(
            ConvBNAct(in_channels, 32, 3, stride=2, act="hardswish"),  # 24 × W/2
            ConvBNAct(32, 64, 3, stride=2, act="hardswish"),  # 12 × W/4
            ConvBNAct(64, embed_dim, 3, stride=2, act="hardswish"),  # 6 × W/8
            ConvBNAct(embed_dim, embed_dim, (rows, 1), padding=0, groups=embed_dim, act=None),  # 1 × W/8
        )
        self.pos_conv = nn.Conv2d(
            embed_dim, embed_dim, (1, pos_kernel), padding=(0, pos_kernel // 2), groups=embed_dim, bias=True
        )
        self.blocks = nn.ModuleList([SVTRBlock(embed_dim, num_heads, mlp_ratio, eps=1e-6) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.out_channels = embed_dim
        self._init_weights()

    def _init_weights(self) -> None:
        """ViT init: truncated-normal (std 0.02) linears with zero bias, unit LayerNorms, Kaiming convs."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # N×D×1×T
        x = x + self.pos_conv(x)
        z = x.flatten(2).transpose(1, 2)  # N×T×D
        for blk in self.blocks:
            z = blk(z)
        z = self.norm(z)
        return z.transpose(1, 2).unsqueeze(2)  # N×D×1×T


@register_component
class Im2Seq(nn.Module):
    """N×C×1×T map → N×T×C sequence (PaddleOCR's ``Im2Seq``); no parameters.

    Args:
        in_channels: C; also ``out_channels``.

    Returns (forward): N×T×C.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.init_kwargs: dict[str, Any] = {"in_channels": in_channels}
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(2).transpose(1, 2)
