"""YOLOX PAFPN (as used by RVT) over backbone stages 2, 3, 4 (strides 8, 16, 32).

Module names reproduce RVT's keys: ``lateral_conv0``, ``C3_p4``, ``reduce_conv1``, ``C3_p3``, ``bu_conv2``,
``C3_n3``, ``bu_conv1``, ``C3_n4``; every conv block is ``conv`` (no bias) + ``bn`` (BatchNorm2d) + SiLU.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBnAct(nn.Module):
    """``Conv2d(k, stride, pad=(k-1)//2, bias=False) -> BatchNorm2d -> SiLU`` (YOLOX ``BaseConv``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 ConvBnAct then 3x3 ConvBnAct, plus the input when ``shortcut`` and widths agree."""

    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(channels, channels, 1)
        self.conv2 = ConvBnAct(channels, channels, 3)
        self.use_add = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """YOLOX CSP layer (C3): two 1x1 branches of width ``out/2``, ``n`` bottlenecks on the first, concat,
    1x1 to ``out_channels``. ``Tensor[B, in, H, W] -> Tensor[B, out, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int, n: int, shortcut: bool = False) -> None:
        super().__init__()
        hidden = int(out_channels * 0.5)
        self.conv1 = ConvBnAct(in_channels, hidden, 1)
        self.conv2 = ConvBnAct(in_channels, hidden, 1)
        self.conv3 = ConvBnAct(2 * hidden, out_channels, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, shortcut) for _ in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


def _upsample2x(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest-exact")


class PAFPN(nn.Module):
    """YOLOX path-aggregation FPN.

    Args:
        in_channels: widths (C3, C4, C5) of the backbone stages ``in_stages`` (strides 8, 16, 32).
        depth: depth multiplier; each CSP layer has ``round(3 * depth)`` bottlenecks.
        in_stages: 1-based backbone stage numbers read from the feature dict.

    ``forward(features: dict[int, Tensor])`` takes ``features[s]: Tensor[B, C_s, H/stride, W/stride]`` and
    returns ``(P3, P4, P5)`` with the same widths and strides as its inputs (8, 16, 32).
    """

    def __init__(self, in_channels: Sequence[int], depth: float = 0.33,
                 in_stages: Sequence[int] = (2, 3, 4)) -> None:
        super().__init__()
        if len(in_channels) != 3 or len(in_stages) != 3:
            raise ValueError("PAFPN needs exactly 3 input levels")
        self.in_stages: Tuple[int, ...] = tuple(in_stages)
        self.in_channels: Tuple[int, ...] = tuple(in_channels)
        c3, c4, c5 = self.in_channels
        n = round(3 * depth)
        self.lateral_conv0 = ConvBnAct(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n)
        self.reduce_conv1 = ConvBnAct(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n)
        self.bu_conv2 = ConvBnAct(c3, c3, 3, stride=2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n)
        self.bu_conv1 = ConvBnAct(c4, c4, 3, stride=2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n)

    def forward(self, features: Dict[int, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        x2, x1, x0 = (features[s] for s in self.in_stages)  # strides 8, 16, 32
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat((_upsample2x(fpn_out0), x1), dim=1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat((_upsample2x(fpn_out1), x2), dim=1))
        pan_out1 = self.C3_n3(torch.cat((self.bu_conv2(pan_out2), fpn_out1), dim=1))
        pan_out0 = self.C3_n4(torch.cat((self.bu_conv1(pan_out1), fpn_out0), dim=1))
        return pan_out2, pan_out1, pan_out0
