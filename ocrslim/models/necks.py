"""Necks: RSE-FPN (PP-OCRv4 det) and the SVTR encoder (PP-OCRv4 rec).

Structure read off the shipped ONNX graphs:

* RSE-FPN: per input a 1x1 conv (no bias) + SE (hard-sigmoid slope 0.2) with shortcut → top-down
  nearest ×2 upsample-and-add → per level a 3x3 conv (no bias, out/4 channels) + SE with shortcut →
  upsample to stride 4 (×8, ×4, ×2, ×1) → concat (p5, p4, p3, p2).
* SVTR encoder: conv(1x3)-BN-swish to C/8 → conv 1x1-BN-swish to ``dims`` → flatten to a sequence →
  pre-LN transformer blocks (8 heads, qkv bias, MLP ratio 2, swish) → LayerNorm(eps 1e-6) → back to
  a map → conv 1x1-BN-swish to C → concat with the neck input → conv(1x3)-BN-swish to C/8 →
  conv 1x1-BN-swish to ``dims``; then squeeze the unit height to N×T×dims.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ocrslim.models.layers import ConvBNAct, SELayer, register_component

__all__ = ["RSEFPN", "RSELayer", "EncoderWithSVTR", "SVTRBlock", "Attention", "Mlp"]


class RSELayer(nn.Module):
    """Conv (no bias) → SE (slope 0.2), with an optional residual around the SE."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, shortcut: bool = True) -> None:
        super().__init__()
        self.in_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.se_block = SELayer(out_channels, reduction=4, slope=0.2)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x)
        return x + self.se_block(x) if self.shortcut else self.se_block(x)


@register_component
class RSEFPN(nn.Module):
    """Residual-SE feature pyramid for DB detection.

    Args:
        in_channels: channels of the four backbone maps at strides 4, 8, 16, 32.
        out_channels: channels of the fused map (each level contributes ``out_channels // 4``).
        shortcut: residual around each SE.

    Returns (forward): N×out_channels×H/4×W/4.
    """

    def __init__(self, in_channels: list[int], out_channels: int = 96, shortcut: bool = True) -> None:
        super().__init__()
        self.init_kwargs: dict[str, Any] = {
            "in_channels": list(in_channels),
            "out_channels": out_channels,
            "shortcut": shortcut,
        }
        self.ins_conv = nn.ModuleList([RSELayer(c, out_channels, 1, shortcut) for c in in_channels])
        self.inp_conv = nn.ModuleList([RSELayer(out_channels, out_channels // 4, 3, shortcut) for _ in in_channels])
        self.out_channels = (out_channels // 4) * 4

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        c2, c3, c4, c5 = feats
        # Order of calls follows the reference (and the ONNX graph): deepest level first.
        in5 = self.ins_conv[3](c5)
        in4 = self.ins_conv[2](c4)
        in3 = self.ins_conv[1](c3)
        in2 = self.ins_conv[0](c2)
        out4 = in4 + F.interpolate(in5, scale_factor=2.0, mode="nearest")
        out3 = in3 + F.interpolate(out4, scale_factor=2.0, mode="nearest")
        out2 = in2 + F.interpolate(out3, scale_factor=2.0, mode="nearest")
        p5 = self.inp_conv[3](in5)
        p4 = self.inp_conv[2](out4)
        p3 = self.inp_conv[1](out3)
        p2 = self.inp_conv[0](out2)
        p5 = F.interpolate(p5, scale_factor=8.0, mode="nearest")
        p4 = F.interpolate(p4, scale_factor=4.0, mode="nearest")
        p3 = F.interpolate(p3, scale_factor=2.0, mode="nearest")
        return torch.cat([p5, p4, p3, p2], dim=1)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (SVTR global mixer)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        # -1 keeps the head width free, so a pruned qkv still reshapes (as long as heads divide it).
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, t, -1)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear → swish → Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SVTRBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 2.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.mixer = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register_component
class EncoderWithSVTR(nn.Module):
    """SVTR sequence encoder with a concat shortcut, followed by the height squeeze (Im2Seq).

    Args:
        in_channels: backbone channels C (480 for PP-OCRv4 mobile rec).
        dims: output width (120).
        depth: transformer blocks (2).
        hidden_dims: transformer width (120).
        num_heads: attention heads (8).
        mlp_ratio: MLP hidden ratio (2.0).
        kernel_size: kernel of the two C/8 convs ((1, 3)).
        use_guide: as PaddleOCR's ``use_guide``: while training, the transformer branch does not
            back-propagate into the backbone (the backbone learns through the concat shortcut).
            Implemented as ``x - (x - x.detach())`` so the autograd graph stays connected for
            torch-pruning's dependency tracing; skipped in eval mode and during ONNX export.

    Returns (forward): N×T×dims for an N×C×1×T input.
    """

    def __init__(
        self,
        in_channels: int,
        dims: int = 120,
        depth: int = 2,
        hidden_dims: int = 120,
        num_heads: int = 8,
        mlp_ratio: float = 2.0,
        kernel_size: tuple[int, int] = (1, 3),
        use_guide: bool = True,
    ) -> None:
        super().__init__()
        kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.init_kwargs: dict[str, Any] = {
            "in_channels": in_channels,
            "dims": dims,
            "depth": depth,
            "hidden_dims": hidden_dims,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
            "kernel_size": kernel_size,
            "use_guide": use_guide,
        }
        self.use_guide = use_guide
        self.conv1 = ConvBNAct(in_channels, in_channels // 8, kernel_size, act="swish")
        self.conv2 = ConvBNAct(in_channels // 8, hidden_dims, 1, act="swish")
        self.svtr_block = nn.ModuleList(
            [SVTRBlock(hidden_dims, num_heads, mlp_ratio, eps=1e-5) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(hidden_dims, eps=1e-6)
        self.conv3 = ConvBNAct(hidden_dims, in_channels, 1, act="swish")
        self.conv4 = ConvBNAct(2 * in_channels, in_channels // 8, kernel_size, act="swish")
        self.conv1x1 = ConvBNAct(in_channels // 8, dims, 1, act="swish")
        self.out_channels = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x
        if self.use_guide and self.training and not torch.onnx.is_in_onnx_export():
            z = x - (x - x.detach())  # value x, zero gradient into the backbone
        h = x
        z = self.conv2(self.conv1(z))
        n, c, hh, ww = z.shape
        z = z.flatten(2).transpose(1, 2)  # N×(H·W)×C
        for blk in self.svtr_block:
            z = blk(z)
        z = self.norm(z)
        z = z.transpose(1, 2).reshape(n, c, hh, ww)
        z = self.conv3(z)
        z = torch.cat([h, z], dim=1)
        z = self.conv1x1(self.conv4(z))
        # Im2Seq: N×dims×1×T → N×T×dims.
        return z.squeeze(2).transpose(1, 2)
