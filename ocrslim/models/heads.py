"""Heads: DB (differentiable binarisation) for detection and CTC for recognition."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ocrslim.models.layers import register_component

__all__ = ["DBBranch", "DBHead", "CTCHead"]


class DBBranch(nn.Module):
    """3x3 conv (no bias) → BN → ReLU → 2x2/2 deconv → BN → ReLU → 2x2/2 deconv to 1 channel → sigmoid.

    Upsamples the stride-4 neck map back to input resolution (×4).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        mid = in_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 3, padding=1, bias=False)
        self.conv_bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.ConvTranspose2d(mid, mid, 2, stride=2)
        self.conv_bn2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.ConvTranspose2d(mid, 1, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv_bn1(self.conv1(x)))
        x = self.relu2(self.conv_bn2(self.conv2(x)))
        return torch.sigmoid(self.conv3(x))


@register_component
class DBHead(nn.Module):
    """DB head: probability (shrink) map, plus an optional threshold branch for training.

    Args:
        in_channels: neck channels (96 for PP-OCRv4 mobile).
        with_threshold: create the threshold branch (same structure as the probability branch,
            freshly initialised). The shipped teacher has none.
        k: steepness of the differentiable binarisation ``1 / (1 + exp(-k (prob - thresh)))``.

    Returns (forward):
        N×1×H×W probability map; or, when the threshold branch exists and the module is in
        training mode, ``{"prob", "thresh", "binary"}`` each N×1×H×W.
    """

    def __init__(self, in_channels: int, with_threshold: bool = False, k: float = 50.0) -> None:
        super().__init__()
        self.init_kwargs: dict[str, Any] = {"in_channels": in_channels, "with_threshold": with_threshold, "k": k}
        self.k = k
        self.binarize = DBBranch(in_channels)
        self.thresh: DBBranch | None = DBBranch(in_channels) if with_threshold else None
        self.out_channels = 1

    def enable_threshold(self) -> DBBranch:
        """Add a freshly initialised threshold branch sized to the current (possibly pruned) input.

        Prune first, then call this: torch-pruning traces the model in eval mode, where the
        threshold branch does not run, so a branch created before pruning keeps its old input width.
        """
        if self.thresh is None:
            in_channels = self.binarize.conv1.in_channels
            self.thresh = DBBranch(in_channels).to(self.binarize.conv1.weight.device)
            self.init_kwargs["with_threshold"] = True
        return self.thresh

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        prob = self.binarize(x)
        if self.thresh is None or not self.training:
            return prob
        thresh = self.thresh(x)
        binary = torch.sigmoid(self.k * (prob - thresh))
        return {"prob": prob, "thresh": thresh, "binary": binary}


@register_component
class CTCHead(nn.Module):
    """One linear layer to CTC classes (blank at index 0).

    Args:
        in_channels: sequence feature width (120).
        num_classes: number of CTC classes including the blank (6625 for PP-OCRv4 ch).
        rank: when set, a ``rank``-wide projection before the class layer (a low-rank head).

    Returns (forward): N×T×num_classes logits.
    """

    def __init__(self, in_channels: int, num_classes: int, rank: int | None = None) -> None:
        super().__init__()
        self.init_kwargs: dict[str, Any] = {"in_channels": in_channels, "num_classes": num_classes}
        if rank:
            self.init_kwargs["rank"] = rank
        # low rank: in_channels → rank → classes (ocrslim.compress.prune.low_rank_head); else one layer
        self.proj: nn.Linear | None = nn.Linear(in_channels, rank) if rank else None
        self.fc = nn.Linear(rank or in_channels, num_classes)
        self.out_channels = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.proj(x) if self.proj is not None else x)
