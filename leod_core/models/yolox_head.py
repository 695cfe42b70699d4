"""YOLOX detection head (as used by RVT) and its output contract :class:`HeadOutput`.

Keys reproduce RVT's: ``cls_convs.{l}.{0,1}``, ``reg_convs.{l}.{0,1}``, ``cls_preds.{l}``, ``reg_preds.{l}``,
``obj_preds.{l}``, ``stems.{l}`` for levels ``l`` = 0, 1, 2 (strides 8, 16, 32).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from leod_core.models.pafpn import ConvBnAct

PRIOR_PROB = 0.01
PRIOR_BIAS = -math.log((1.0 - PRIOR_PROB) / PRIOR_PROB)
"""Initial bias of the class and objectness logits (about -4.595), i.e. sigmoid = 0.01 (focal-loss prior)."""


@dataclass
class HeadOutput:
    """Dense YOLOX predictions for one frame batch (what the loss and the postprocess consume).

    Anchors ``A = sum over levels of (H_pad/s) * (W_pad/s)`` for strides ``s`` = 8, 16, 32, ordered level by
    level (stride 8 first) and row-major inside a level (anchor ``a`` of a level = ``row * W_l + col``).

    Attributes:
        preds: ``Tensor[B, A, 5 + num_classes]``:
            ``[..., 0:2]`` box centre (x, y) in pixels of the padded input: ``(raw + grid_xy) * stride``;
            ``[..., 2:4]`` box width, height in pixels of the padded input: ``exp(raw) * stride``;
            ``[..., 4]`` objectness LOGIT (apply sigmoid for a probability);
            ``[..., 5:]`` class LOGITS (independent sigmoids, not a softmax).
            Differentiable; same dtype as the features.
        grid_xy: ``Tensor[A, 2]`` integer-valued cell index (x = column, y = row) of each anchor inside its
            level, as float of ``preds``' dtype. The anchor's cell centre in pixels is
            ``(grid_xy + 0.5) * strides[:, None]``; with zero raw output the decoded centre is
            ``grid_xy * strides`` (the cell's top-left corner, YOLOX's convention).
        strides: ``Tensor[A]`` stride of each anchor in input pixels (8, 16 or 32), float.
        level_hw: ``((H_8, W_8), (H_16, W_16), (H_32, W_32))`` feature-map sizes per level.
    """

    preds: Tensor
    grid_xy: Tensor
    strides: Tensor
    level_hw: Tuple[Tuple[int, int], ...]

    @property
    def boxes_cxcywh(self) -> Tensor:
        """``Tensor[B, A, 4]`` decoded boxes (cx, cy, w, h), padded-input pixels."""
        return self.preds[..., :4]

    @property
    def obj_logits(self) -> Tensor:
        """``Tensor[B, A]`` objectness logits."""
        return self.preds[..., 4]

    @property
    def cls_logits(self) -> Tensor:
        """``Tensor[B, A, num_classes]`` class logits."""
        return self.preds[..., 5:]


class YOLOXHead(nn.Module):
    """Decoupled YOLOX head over 3 FPN levels.

    Args:
        num_classes: number of object classes.
        in_channels: widths of the 3 FPN outputs (strides 8, 16, 32).
        strides: strides of the 3 levels, input pixels.

    Per level: ``stems`` (1x1 ConvBnAct to ``hidden = int(256 * in_channels[-1] / 1024)``), then a class
    branch (2 x 3x3 ConvBnAct -> 1x1 conv to ``num_classes``) and a regression branch (2 x 3x3 ConvBnAct ->
    1x1 conv to 4 box values and 1x1 conv to 1 objectness value). Class and objectness biases start at
    :data:`PRIOR_BIAS`.

    ``forward(fpn_features: sequence of Tensor[B, C_l, H/s_l, W/s_l]) -> HeadOutput``.
    """

    def __init__(self, num_classes: int, in_channels: Sequence[int],
                 strides: Sequence[int] = (8, 16, 32)) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError("in_channels and strides must have the same length")
        self.num_classes = int(num_classes)
        self.strides: Tuple[int, ...] = tuple(int(s) for s in strides)
        hidden = int(256 * (in_channels[-1] / 1024))
        self.hidden_dim = hidden
        # Registration order matches RVT's state-dict order (cls_convs ... stems last).
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.obj_preds = nn.ModuleList()
        self.stems = nn.ModuleList()
        for c_in in in_channels:
            self.stems.append(ConvBnAct(c_in, hidden, 1))
            self.cls_convs.append(nn.Sequential(ConvBnAct(hidden, hidden, 3), ConvBnAct(hidden, hidden, 3)))
            self.reg_convs.append(nn.Sequential(ConvBnAct(hidden, hidden, 3), ConvBnAct(hidden, hidden, 3)))
            self.cls_preds.append(nn.Conv2d(hidden, self.num_classes, kernel_size=1))
            self.reg_preds.append(nn.Conv2d(hidden, 4, kernel_size=1))
            self.obj_preds.append(nn.Conv2d(hidden, 1, kernel_size=1))
        self.initialize_biases(PRIOR_PROB)

    def initialize_biases(self, prior_prob: float) -> None:
        """Set class and objectness biases to ``-log((1 - p) / p)``."""
        value = -math.log((1.0 - prior_prob) / prior_prob)
        with torch.no_grad():
            for conv in list(self.cls_preds) + list(self.obj_preds):
                conv.bias.fill_(value)

    def raw_outputs(self, fpn_features: Sequence[Tensor]) -> List[Tensor]:
        """Undecoded per-level maps ``Tensor[B, 5 + num_classes, H_l, W_l]`` with channels
        (reg x, reg y, reg w, reg h, obj logit, class logits...)."""
        outs = []
        for k, x in enumerate(fpn_features):
            x = self.stems[k](x)
            cls_out = self.cls_preds[k](self.cls_convs[k](x))
            reg_feat = self.reg_convs[k](x)
            outs.append(torch.cat((self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), cls_out), dim=1))
        return outs

    def forward(self, fpn_features: Sequence[Tensor]) -> HeadOutput:
        raw = self.raw_outputs(fpn_features)
        level_hw = tuple((int(o.shape[-2]), int(o.shape[-1])) for o in raw)
        flat = torch.cat([o.flatten(start_dim=2) for o in raw], dim=2).permute(0, 2, 1)  # [B, A, 5+C]
        grid_xy, strides = make_grid(level_hw, self.strides, dtype=flat.dtype, device=flat.device)
        s = strides[:, None]
        preds = torch.cat((
            (flat[..., 0:2] + grid_xy) * s,
            torch.exp(flat[..., 2:4]) * s,
            flat[..., 4:],
        ), dim=-1)
        return HeadOutput(preds=preds, grid_xy=grid_xy, strides=strides, level_hw=level_hw)


def make_grid(level_hw: Sequence[Tuple[int, int]], strides: Sequence[int], dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> Tuple[Tensor, Tensor]:
    """Anchor cell indices ``Tensor[A, 2]`` (x, y) and strides ``Tensor[A]``, levels concatenated,
    row-major inside each level."""
    grids, strs = [], []
    for (h, w), s in zip(level_hw, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                                torch.arange(w, device=device, dtype=dtype), indexing="ij")
        grids.append(torch.stack((xs, ys), dim=-1).reshape(-1, 2))
        strs.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
    return torch.cat(grids, dim=0), torch.cat(strs, dim=0)
