"""The RVT detector (backbone + PAFPN + YOLOX head), its configuration and the one config -> model adapter.

State-dict keys are ``backbone.*``, ``fpn.*``, ``yolox_head.*`` exactly as RVT's ``YoloXDetector`` (in RVT /
LEOD Lightning checkpoints they carry the extra prefix ``mdl.``; see :mod:`leod_core.models.checkpoint`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

from leod_core.data.cameras import DEFAULT_CAMERA, get_camera
from leod_core.models.backbone import LstmState, RVTBackbone
from leod_core.models.pafpn import PAFPN
from leod_core.models.yolox_head import HeadOutput, YOLOXHead

#: Frame size (px) of the presets' default: the default camera's (LEOD's Gen1, 240x304).
DEFAULT_INPUT_HW = get_camera(DEFAULT_CAMERA).frame_hw

States = List[LstmState]
"""Per-stage ConvLSTM states ``[(h_1, c_1), ..., (h_4, c_4)]``, ``h_k, c_k: Tensor[B, C_k, H/s_k, W/s_k]``."""


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class RVTConfig:
    """Architecture of one RVT detector.

    Attributes:
        size: variant name ("tiny", "small", "base" or a custom label).
        embed_dim: stage-1 width (stage widths embed_dim * (1, 2, 4, 8)).
        dim_head: attention channels per head.
        fpn_depth: PAFPN depth multiplier (round(3 * depth) bottlenecks per CSP layer).
        num_classes: detected classes (gen1: 2, gen4: 3).
        input_channels: event representation channels (20 = 2 polarities x 10 time bins).
        partition_split_32: 1 for gen1, 2 for gen4; the input is padded to a multiple of 32 * this.
        input_hw: (height, width) of the dataset frames fed to the model (before padding), pixels.
        num_blocks: attention pairs per stage.
        mlp_ratio, ls_init_value: transformer block MLP ratio and LayerScale init.
        fpn_in_stages: backbone stages fed to the PAFPN.
    """

    size: str
    embed_dim: int
    dim_head: int
    fpn_depth: float
    num_classes: int
    input_channels: int = 20
    partition_split_32: int = 1
    input_hw: Tuple[int, int] = DEFAULT_INPUT_HW
    num_blocks: Tuple[int, ...] = (1, 1, 1, 1)
    mlp_ratio: int = 4
    ls_init_value: float = 1e-5
    fpn_in_stages: Tuple[int, ...] = (2, 3, 4)

    def __post_init__(self) -> None:
        if self.embed_dim <= 0 or self.embed_dim % self.dim_head != 0:
            raise ValueError(f"embed_dim {self.embed_dim} must be a positive multiple of dim_head {self.dim_head}")
        if self.num_classes < 1 or self.partition_split_32 < 1 or len(self.input_hw) != 2:
            raise ValueError(f"invalid RVTConfig: num_classes={self.num_classes}, "
                             f"partition_split_32={self.partition_split_32}, input_hw={self.input_hw}")

    @property
    def pad_multiple(self) -> int:
        """The model input height and width are multiples of this (32 * partition_split_32)."""
        return 32 * self.partition_split_32

    @property
    def padded_hw(self) -> Tuple[int, int]:
        """``input_hw`` padded up to :attr:`pad_multiple` (gen1 240x304 -> 256x320)."""
        m = self.pad_multiple
        return _round_up(self.input_hw[0], m), _round_up(self.input_hw[1], m)

    @property
    def partition_size(self) -> Tuple[int, int]:
        """Attention window / grid size in tokens: padded_hw // (32 * split) (gen1 (8, 10))."""
        h, w = self.padded_hw
        return h // self.pad_multiple, w // self.pad_multiple

    # ---- presets: a variant is a small delta of the base model (YOLOX style) ----
    @classmethod
    def base(cls, num_classes: int = 2, input_hw: Sequence[int] = DEFAULT_INPUT_HW,
             partition_split_32: int = 1, **overrides: Any) -> "RVTConfig":
        """RVT-B: embed 64, dim_head 32, FPN depth 0.67 (18.5 M parameters for 2 classes)."""
        cfg = cls(size="base", embed_dim=64, dim_head=32, fpn_depth=0.67, num_classes=int(num_classes),
                  partition_split_32=int(partition_split_32),
                  input_hw=(int(input_hw[0]), int(input_hw[1])))
        return dataclasses.replace(cfg, **overrides)

    @classmethod
    def small(cls, num_classes: int = 2, input_hw: Sequence[int] = DEFAULT_INPUT_HW,
              partition_split_32: int = 1, **overrides: Any) -> "RVTConfig":
        """RVT-S: base with embed 48, dim_head 24, FPN depth 0.33 (9.9 M)."""
        delta = dict(size="small", embed_dim=48, dim_head=24, fpn_depth=0.33)
        return cls.base(num_classes, input_hw, partition_split_32, **{**delta, **overrides})

    @classmethod
    def tiny(cls, num_classes: int = 2, input_hw: Sequence[int] = DEFAULT_INPUT_HW,
             partition_split_32: int = 1, **overrides: Any) -> "RVTConfig":
        """RVT-T: base with embed 32, FPN depth 0.33 (4.4 M)."""
        delta = dict(size="tiny", embed_dim=32, fpn_depth=0.33)
        return cls.base(num_classes, input_hw, partition_split_32, **{**delta, **overrides})

    @classmethod
    def for_size(cls, name: str, num_classes: int = 2, input_hw: Sequence[int] = DEFAULT_INPUT_HW,
                 partition_split_32: int = 1, **overrides: Any) -> "RVTConfig":
        """Preset by name: "tiny"/"t", "small"/"s", "base"/"b"."""
        aliases = {"t": "tiny", "tiny": "tiny", "s": "small", "small": "small", "b": "base", "base": "base"}
        key = aliases.get(name.lower())
        if key is None:
            raise ValueError(f"unknown RVT size {name!r}; expected one of tiny, small, base")
        return getattr(cls, key)(num_classes, input_hw, partition_split_32, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        """Plain-type dict (str/int/float/list) for checkpoints; inverse of :meth:`from_dict`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RVTConfig":
        """Rebuild from :meth:`to_dict` output; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RVTConfig keys: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class RVTDetector(nn.Module):
    """RVT: recurrent backbone + YOLOX PAFPN + YOLOX head.

    Args:
        backbone: :class:`RVTBackbone`.
        fpn: :class:`PAFPN` over the backbone stages ``fpn.in_stages``.
        yolox_head: :class:`YOLOXHead`.
        pad_multiple: model inputs are zero-padded at the bottom/right to a multiple of this (pixels).

    Use :func:`build_detector` to make one from an :class:`RVTConfig`.
    """

    def __init__(self, backbone: RVTBackbone, fpn: PAFPN, yolox_head: YOLOXHead, pad_multiple: int = 32) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.yolox_head = yolox_head
        self.num_classes = yolox_head.num_classes
        self.pad_multiple = int(pad_multiple)

    def pad_to_multiple(self, x: Tensor) -> Tensor:
        """Zero-pad ``x: Tensor[..., H, W]`` at the bottom and right to ``[..., H_pad, W_pad]`` (multiples of
        :attr:`pad_multiple`), like RVT's ``InputPadderFromShape``. Returns ``x`` itself if already padded."""
        h, w = x.shape[-2:]
        ph, pw = _round_up(h, self.pad_multiple) - h, _round_up(w, self.pad_multiple) - w
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (0, pw, 0, ph), mode="constant", value=0.0)

    def forward_backbone(self, x_t: Tensor, states: Optional[Sequence[Optional[LstmState]]] = None
                         ) -> Tuple[Dict[int, Tensor], States]:
        """One time step: ``x_t: Tensor[B, 20, H, W]`` (padded here if needed) ->
        (features ``{1..4: Tensor[B, C_k, H_pad/s_k, W_pad/s_k]}``, new states)."""
        return self.backbone(self.pad_to_multiple(x_t), states)

    def forward_detect(self, features: Dict[int, Tensor]) -> HeadOutput:
        """FPN + head on backbone features (any batch of frames) -> :class:`HeadOutput`."""
        return self.yolox_head(self.fpn(features))

    def forward(self, x_t: Tensor, states: Optional[Sequence[Optional[LstmState]]] = None
                ) -> Tuple[HeadOutput, States]:
        """One time step end to end: ``(HeadOutput, new_states)``."""
        features, states = self.forward_backbone(x_t, states)
        return self.forward_detect(features), states

    @staticmethod
    def reset_states(states: Optional[Sequence[LstmState]], reset_mask: Tensor) -> Optional[States]:
        """Zero the states of the batch slots where ``reset_mask: Tensor[B] (bool)`` is True."""
        if states is None:
            return None
        keep = (~reset_mask.bool()).view(-1, 1, 1, 1)
        return [(h * keep.to(h.dtype), c * keep.to(c.dtype)) for h, c in states]

    @staticmethod
    def detach_states(states: Optional[Sequence[LstmState]]) -> Optional[States]:
        """States cut from the autograd graph (truncated back-propagation through time between batches)."""
        if states is None:
            return None
        return [(h.detach(), c.detach()) for h, c in states]

    def forward_sequence(self, x: Tensor, states: Optional[Sequence[LstmState]] = None,
                         reset_mask: Optional[Tensor] = None, detect: bool = True
                         ) -> Tuple[List[Union[HeadOutput, Dict[int, Tensor]]], States]:
        """Run ``x: Tensor[L, B, 20, H, W]`` through time, carrying the recurrent state per batch slot.

        ``reset_mask: Tensor[B]`` (bool): slots whose state is zeroed before the first step (a new stream
        starts there). Returns (one :class:`HeadOutput` per step, or the backbone feature dict per step
        when ``detect`` is False; the states after the last step).
        """
        if x.ndim != 5:
            raise ValueError(f"x must be [L, B, C, H, W], got {tuple(x.shape)}")
        if reset_mask is not None and states is not None:
            states = self.reset_states(states, reset_mask.to(x.device))
        outputs: List[Union[HeadOutput, Dict[int, Tensor]]] = []
        for t in range(x.shape[0]):
            features, states = self.forward_backbone(x[t], states)
            outputs.append(self.forward_detect(features) if detect else features)
        return outputs, states


def build_detector(config: RVTConfig) -> RVTDetector:
    """The one adapter from :class:`RVTConfig` to constructor arguments."""
    backbone = RVTBackbone(input_channels=config.input_channels, embed_dim=config.embed_dim,
                           dim_head=config.dim_head, partition_size=config.partition_size,
                           num_blocks=config.num_blocks, mlp_ratio=config.mlp_ratio,
                           ls_init_value=config.ls_init_value)
    in_channels = backbone.get_stage_dims(config.fpn_in_stages)
    fpn = PAFPN(in_channels=in_channels, depth=config.fpn_depth, in_stages=config.fpn_in_stages)
    head = YOLOXHead(num_classes=config.num_classes, in_channels=in_channels,
                     strides=backbone.get_strides(config.fpn_in_stages))
    return RVTDetector(backbone, fpn, head, pad_multiple=config.pad_multiple)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
