"""RVT's recurrent MaxViT backbone (``RNNDetector`` / ``MaxViTRNN`` in RVT) as plain PyTorch modules.

Each of the 4 stages runs, for one time step:

1. ``downsample_cf2cl``: conv (no bias; stage 1 kernel 7 / stride 4 / pad 3, later stages kernel 3 /
   stride 2 / pad 1), NCHW -> NHWC, LayerNorm over channels (eps 1e-5);
2. ``att_blocks``: ``num_blocks`` x (window attention, then grid attention). Each is a pre-norm block
   ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))`` with LayerScale (init 1e-5) and a GELU MLP of
   ratio 4. The very first ``norm1`` of a stage is an identity (the downsampling already normalised its
   output), so RVT's state dict has no ``att_blocks.0.att_window.norm1`` key;
3. ``lstm``: a ConvLSTM cell whose gates come from one 1x1 conv on ``concat(x, h_prev)``.

Module attribute names reproduce RVT's state-dict keys exactly
(``stages.0.downsample_cf2cl.conv.weight``, ``stages.0.att_blocks.0.att_window.self_attn.qkv.weight``,
``...mlp.net.0.0.weight``, ``...mlp.net.2.weight``, ``...ls1.gamma``, ``stages.0.lstm.conv1x1.weight``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LstmState = Tuple[Tensor, Tensor]
"""(h, c) of one stage, each ``Tensor[B, C_stage, H/stride, W/stride]``."""


class LayerScale(nn.Module):
    """Per-channel learnable scale ``x * gamma`` (channels-last), ``gamma`` initialised to ``init_value``."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Channels-last MLP ``Linear(dim, ratio*dim) -> GELU -> Dropout -> Linear(ratio*dim, dim)``.

    Laid out as ``net = Sequential(Sequential(Linear, GELU), Dropout, Linear)`` so that the keys are
    ``net.0.0.*`` and ``net.2.*`` as in RVT.
    """

    def __init__(self, dim: int, ratio: int = 4, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU()),
            nn.Dropout(drop),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the tokens of each partition (channels-last).

    ``qkv`` output channels are grouped per head as ``[head0: q k v, head1: q k v, ...]`` (each
    ``dim_head`` wide), which is RVT's layout, so RVT weights load unchanged. Scale ``dim_head ** -0.5``.
    """

    def __init__(self, dim: int, dim_head: int = 32, bias: bool = True) -> None:
        super().__init__()
        if dim % dim_head != 0:
            raise ValueError(f"dim {dim} is not a multiple of dim_head {dim_head}")
        self.num_heads = dim // dim_head
        self.dim_head = dim_head
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x: Tensor[P, N, C]`` (P partitions of N tokens) -> ``Tensor[P, N, C]``."""
        p, n, c = x.shape
        qkv = self.qkv(x).view(p, n, self.num_heads, 3 * self.dim_head).transpose(1, 2)
        q, k, v = qkv.split(self.dim_head, dim=-1)  # each [P, heads, N, dim_head]
        out = F.scaled_dot_product_attention(q, k, v)  # default scale = dim_head ** -0.5
        return self.proj(out.transpose(1, 2).reshape(p, n, c))


def partition_tokens(x: Tensor, size: Tuple[int, int], grid: bool) -> Tensor:
    """Split ``x: Tensor[B, H, W, C]`` into partitions of ``size[0] * size[1]`` tokens.

    Window (``grid=False``): contiguous ``size`` blocks. Grid (``grid=True``): tokens spaced
    ``(H/size[0], W/size[1])`` apart, i.e. a ``size`` grid dilated over the whole map.
    Returns ``Tensor[B * (H/size[0]) * (W/size[1]), size[0] * size[1], C]``.
    """
    b, h, w, c = x.shape
    s0, s1 = size
    if h % s0 or w % s1:
        raise ValueError(f"feature map {h}x{w} is not divisible by partition size {s0}x{s1}")
    if grid:
        x = x.view(b, s0, h // s0, s1, w // s1, c).permute(0, 2, 4, 1, 3, 5)
    else:
        x = x.view(b, h // s0, s0, w // s1, s1, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, s0 * s1, c)


def unpartition_tokens(parts: Tensor, size: Tuple[int, int], hw: Tuple[int, int], grid: bool) -> Tensor:
    """Inverse of :func:`partition_tokens`: ``Tensor[P, s0*s1, C]`` -> ``Tensor[B, H, W, C]``."""
    h, w = hw
    s0, s1 = size
    c = parts.shape[-1]
    x = parts.view(-1, h // s0, w // s1, s0, s1, c)
    if grid:  # (B, H/s0, W/s1, s0, s1, C) -> (B, s0, H/s0, s1, W/s1, C)
        x = x.permute(0, 3, 1, 4, 2, 5)
    else:  # (B, H/s0, W/s1, s0, s1, C) -> (B, H/s0, s0, W/s1, s1, C)
        x = x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


class PartitionAttention(nn.Module):
    """Pre-norm transformer block with window or grid partitioned attention (channels-last).

    ``forward(x: Tensor[B, H, W, C]) -> Tensor[B, H, W, C]``; H and W must be multiples of
    ``partition_size``.
    """

    def __init__(self, dim: int, partition_size: Tuple[int, int], grid: bool, dim_head: int = 32,
                 mlp_ratio: int = 4, ls_init_value: float = 1e-5, skip_first_norm: bool = False,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.partition_size = (int(partition_size[0]), int(partition_size[1]))
        self.grid = grid
        self.norm1 = nn.Identity() if skip_first_norm else nn.LayerNorm(dim, eps=norm_eps)
        self.self_attn = SelfAttention(dim, dim_head=dim_head, bias=True)
        self.ls1 = LayerScale(dim, ls_init_value)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, ratio=mlp_ratio)
        self.ls2 = LayerScale(dim, ls_init_value)

    def _attend(self, x: Tensor) -> Tensor:
        hw = (x.shape[1], x.shape[2])
        parts = partition_tokens(x, self.partition_size, self.grid)
        return unpartition_tokens(self.self_attn(parts), self.partition_size, hw, self.grid)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self._attend(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class MaxVitAttentionPair(nn.Module):
    """Window attention followed by grid attention (keys ``att_window.*``, ``att_grid.*``)."""

    def __init__(self, dim: int, partition_size: Tuple[int, int], dim_head: int, mlp_ratio: int,
                 ls_init_value: float, skip_first_norm: bool) -> None:
        super().__init__()
        common = dict(dim=dim, partition_size=partition_size, dim_head=dim_head, mlp_ratio=mlp_ratio,
                      ls_init_value=ls_init_value)
        self.att_window = PartitionAttention(grid=False, skip_first_norm=skip_first_norm, **common)
        self.att_grid = PartitionAttention(grid=True, skip_first_norm=False, **common)

    def forward(self, x: Tensor) -> Tensor:
        return self.att_grid(self.att_window(x))


class ConvDownsample(nn.Module):
    """Overlapping patch conv (no bias) then LayerNorm; ``Tensor[B, C_in, H, W] -> Tensor[B, H/f, W/f, C_out]``.

    Kernel ``2f - 1``, padding ``f - 1``, stride ``f`` (f = 4: 7/3/4; f = 2: 3/1/2), as RVT.
    """

    def __init__(self, dim_in: int, dim_out: int, factor: int) -> None:
        super().__init__()
        kernel = 2 * factor - 1
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=kernel, stride=factor, padding=kernel // 2,
                              bias=False)
        self.norm = nn.LayerNorm(dim_out, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell with a 1x1 gate conv on ``concat(x, h_prev)`` (RVT ``DWSConvLSTM2d``, dws_conv off).

    The 4C gate channels are ``[forget, input, output]`` (sigmoid) then the cell input (tanh):
    ``c = f * c_prev + i * g``, ``h = o * tanh(c)``. Zero states when ``state`` is None.
    ``forward(x: Tensor[B, C, H, W], state) -> (h, c)`` each ``Tensor[B, C, H, W]``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.conv1x1 = nn.Conv2d(2 * dim, 4 * dim, kernel_size=1)

    def forward(self, x: Tensor, state: Optional[LstmState] = None) -> LstmState:
        if state is None:
            h_prev, c_prev = torch.zeros_like(x), torch.zeros_like(x)
        else:
            h_prev, c_prev = state
        mix = self.conv1x1(torch.cat((x, h_prev), dim=1))
        gates = torch.sigmoid(mix[:, : 3 * self.dim])
        forget, inp, out = gates.chunk(3, dim=1)
        cell_in = torch.tanh(mix[:, 3 * self.dim:])
        c = forget * c_prev + inp * cell_in
        h = out * torch.tanh(c)
        return h, c


class RVTStage(nn.Module):
    """One backbone stage: downsample -> attention blocks -> ConvLSTM.

    ``forward(x: Tensor[B, C_in, H, W], state) -> (h: Tensor[B, C, H/f, W/f], (h, c))``.
    """

    def __init__(self, dim_in: int, dim: int, downsample_factor: int, num_blocks: int,
                 partition_size: Tuple[int, int], dim_head: int, mlp_ratio: int,
                 ls_init_value: float) -> None:
        super().__init__()
        self.downsample_cf2cl = ConvDownsample(dim_in, dim, downsample_factor)
        self.att_blocks = nn.ModuleList([
            MaxVitAttentionPair(dim, partition_size, dim_head, mlp_ratio, ls_init_value,
                                skip_first_norm=(i == 0))
            for i in range(num_blocks)
        ])
        self.lstm = ConvLSTMCell(dim)

    def forward(self, x: Tensor, state: Optional[LstmState] = None) -> Tuple[Tensor, LstmState]:
        x = self.downsample_cf2cl(x)
        for block in self.att_blocks:
            x = block(x)
        h, c = self.lstm(x.permute(0, 3, 1, 2), state)
        return h, (h, c)


class RVTBackbone(nn.Module):
    """RVT's recurrent MaxViT backbone, one time step per call.

    Args:
        input_channels: channels of the event representation (20 for 2 polarities x 10 bins).
        embed_dim: width of stage 1; stage widths are ``embed_dim * dim_multiplier``.
        dim_head: channels per attention head.
        partition_size: (height, width) of the attention windows and of the attention grid, in tokens, the
            same at every stage: padded input (H, W) // (32 * partition_split_32) (gen1: (8, 10)).
        num_blocks: attention pairs per stage.
        dim_multiplier: width multiplier per stage.
        mlp_ratio: MLP expansion.
        ls_init_value: LayerScale init.

    ``forward(x: Tensor[B, input_channels, H_pad, W_pad], states)`` returns
    ``(features, new_states)`` with ``features[k]`` for stage ``k`` in 1..4 a
    ``Tensor[B, embed_dim * dim_multiplier[k-1], H_pad / s, W_pad / s]`` at stride ``s`` = 4, 8, 16, 32, and
    ``new_states`` a list of 4 per-stage ``(h, c)``. ``states`` is such a list (entries may be None) or None
    for zero states.
    """

    def __init__(self, input_channels: int = 20, embed_dim: int = 64, dim_head: int = 32,
                 partition_size: Tuple[int, int] = (8, 10),
                 num_blocks: Sequence[int] = (1, 1, 1, 1),
                 dim_multiplier: Sequence[int] = (1, 2, 4, 8), mlp_ratio: int = 4,
                 ls_init_value: float = 1e-5) -> None:
        super().__init__()
        if len(num_blocks) != 4 or len(dim_multiplier) != 4:
            raise ValueError("RVT has exactly 4 stages")
        self.stage_dims: Tuple[int, ...] = tuple(embed_dim * m for m in dim_multiplier)
        self.strides: Tuple[int, ...] = (4, 8, 16, 32)
        self.partition_size = (int(partition_size[0]), int(partition_size[1]))
        stages = []
        dim_in = input_channels
        for idx, (dim, nb) in enumerate(zip(self.stage_dims, num_blocks)):
            stages.append(RVTStage(dim_in, dim, 4 if idx == 0 else 2, nb, self.partition_size, dim_head,
                                   mlp_ratio, ls_init_value))
            dim_in = dim
        self.stages = nn.ModuleList(stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def get_stage_dims(self, stages: Sequence[int]) -> Tuple[int, ...]:
        """Channel widths of 1-based ``stages``."""
        return tuple(self.stage_dims[s - 1] for s in stages)

    def get_strides(self, stages: Sequence[int]) -> Tuple[int, ...]:
        """Strides (input pixels per feature cell) of 1-based ``stages``."""
        return tuple(self.strides[s - 1] for s in stages)

    def forward(self, x: Tensor, states: Optional[Sequence[Optional[LstmState]]] = None
                ) -> Tuple[Dict[int, Tensor], List[LstmState]]:
        if states is None:
            states = [None] * self.num_stages
        if len(states) != self.num_stages:
            raise ValueError(f"expected {self.num_stages} stage states, got {len(states)}")
        features: Dict[int, Tensor] = {}
        new_states: List[LstmState] = []
        for idx, stage in enumerate(self.stages):
            x, state = stage(x, states[idx])
            features[idx + 1] = x
            new_states.append(state)
        return features, new_states
