"""Shared building blocks for the PP-OCR style models, plus the component registry.

Every block is made of plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` / ``nn.LayerNorm``
layers so that torch-pruning can trace and shrink it, and every forward is free of Python
control flow on tensor values so that ``torch.onnx.export(dynamo=False)`` records a static graph
with dynamic sizes.

Components (backbones, necks, heads) register themselves in :mod:`ocrslim.models.registry` with
:func:`register_component` and keep their constructor arguments in ``self.init_kwargs``;
:func:`component_spec` and :func:`build_component` turn a component into a ``{"name": ..., **kwargs}``
dict and back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from ocrslim.core.errors import ArtifactError, ConfigError
from ocrslim.models.registry import Entry, lookup, register

__all__ = [
    "Act",
    "ConvBNAct",
    "LearnableAffineBlock",
    "LearnableRepLayer",
    "HardSigmoid",
    "SELayer",
    "ComponentModel",
    "build_component",
    "chain",
    "component_spec",
    "make_divisible",
    "register_component",
]

T = TypeVar("T", bound=type[nn.Module])

def register_component(cls: T) -> T:
    """Class decorator: make ``cls`` buildable by name through :func:`build_component`."""
    register(Entry(cls.__name__, "component", factory=cls))
    return cls


def component_spec(module: nn.Module) -> dict[str, Any]:
    """Describe a registered component as ``{"name": <class name>, **init_kwargs}``."""
    return {"name": type(module).__name__, **getattr(module, "init_kwargs", {})}


def build_component(spec: dict[str, Any], **overrides: Any) -> nn.Module:
    """Build a component from ``{"name": ..., **kwargs}``; ``overrides`` win over ``spec``.

    >>> build_component({"name": "DBHead", "in_channels": 96}).out_channels
    1
    """
    kwargs = dict(spec)
    name = kwargs.pop("name", None)
    try:
        cls = lookup(str(name), "component", what="model component")
    except ArtifactError as exc:
        raise ConfigError(f"{exc} Fix the component name in the model config.") from None
    kwargs.update(overrides)
    return cls.factory(**kwargs)


class ComponentModel(nn.Module):
    """A model chained from a registered backbone, neck and head; ``init_kwargs`` holds their specs.

    :class:`~ocrslim.models.det.DBNet` and :class:`~ocrslim.models.rec.CTCRecognizer` are this with their own
    forward; :func:`chain` builds either from component specs.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.init_kwargs: dict[str, Any] = {
            "backbone": component_spec(backbone),
            "neck": component_spec(neck),
            "head": component_spec(head),
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Any:
        """Rebuild an (unpruned) model from its ``init_kwargs``."""
        return chain(cls, cfg["backbone"], cfg["neck"], cfg["head"])


M = TypeVar("M", bound=ComponentModel)


def chain(cls: type[M], backbone: dict[str, Any], neck: dict[str, Any], head: dict[str, Any]) -> M:
    """Build ``cls`` from component specs, each component's ``out_channels`` the next one's ``in_channels``."""
    bb = build_component(backbone)
    nk = build_component(neck, in_channels=bb.out_channels)
    hd = build_component(head, in_channels=nk.out_channels)
    return cls(bb, nk, hd)


def make_divisible(v: float, divisor: int = 16, min_value: int | None = None) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (PP-LCNetV3 uses 16).

    Never goes below 90% of ``v``, as in the reference implementation.
    """
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class LearnableAffineBlock(nn.Module):
    """``scale * x + bias`` with one learnable scalar each (PP-LCNetV3's LAB)."""

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale_value]))
        self.bias = nn.Parameter(torch.tensor([bias_value]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.bias


class Act(nn.Module):
    """Hard-swish followed by a learnable affine block (PP-LCNetV3's ``Act``)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Hardswish()
        self.lab = LearnableAffineBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lab(self.act(x))


class LearnableRepLayer(nn.Module):
    """Re-parameterised PP-LCNetV3 conv: conv (with bias, BN folded) → LAB → optional ``Act``.

    The shipped inference graph holds the folded form (the training-time kxk/1x1/identity branches
    are already summed into one conv), so that is the form built here; it trains as a plain conv.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; padding is ``kernel_size // 2``.
        stride: int or (h, w) stride.
        groups: conv groups (``in_channels`` for depthwise).
        act: apply hard-swish + LAB after the LAB. PP-LCNetV3 skips it exactly when ``stride == 2``
            (an int 2; the rec strides ``(2, 1)``/``(1, 2)`` keep the activation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int | tuple[int, int] = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=True
        )
        self.lab = LearnableAffineBlock()
        self.act = Act() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.lab(self.conv(x)))


class HardSigmoid(nn.Module):
    """``clip(slope * x + offset, 0, 1)``; Paddle's default slope is 0.2, torch's is 1/6."""

    def __init__(self, slope: float = 0.2, offset: float = 0.5) -> None:
        super().__init__()
        self.slope = slope
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.slope + self.offset, 0.0, 1.0)


class SELayer(nn.Module):
    """Squeeze-and-excitation: global pool → 1x1 conv → ReLU → 1x1 conv → hard-sigmoid → scale.

    Args:
        channels: input/output channels.
        reduction: squeeze ratio (hidden channels = ``channels // reduction``).
        slope: hard-sigmoid slope; 1/6 in the PP-LCNetV3 backbone, 0.2 in the RSE-FPN neck.
    """

    def __init__(self, channels: int, reduction: int = 4, slope: float = 1.0 / 6.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)
        self.hardsigmoid: nn.Module = nn.Hardsigmoid() if abs(slope - 1.0 / 6.0) < 1e-6 else HardSigmoid(slope, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.hardsigmoid(self.conv2(self.relu(self.conv1(self.pool(x)))))
        return x * s


class ConvBNAct(nn.Module):
    """Conv (no bias) → BatchNorm → activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or (h, w).
        stride: int or (h, w).
        padding: int or (h, w); defaults to ``kernel_size // 2`` per axis.
        groups: conv groups.
        act: ``None``/"identity", "relu", "swish" (SiLU) or "hardswish".
    """

    _ACTS: dict[str, Callable[[], nn.Module]] = {
        "identity": nn.Identity,
        "relu": nn.ReLU,
        "swish": nn.SiLU,
        "hardswish": nn.Hardswish,
    }

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 1,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        act: str | None = None,
    ) -> None:
        super().__init__()
        if padding is None:
            k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
            padding = (k[0] // 2, k[1] // 2)
        act_name = act or "identity"
        if act_name not in self._ACTS:
            raise ConfigError(f"activation {act!r} is unknown (known: {', '.join(self._ACTS)}). Fix the model config.")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = self._ACTS[act_name]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
