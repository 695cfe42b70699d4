"""Builders of small preprocessed sequences with known contents, shared by tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from leod_core.data.formats import (PROPHESEE_BBOX_DTYPE, EventReprWriter, SequenceLabels, SequencePaths,
                                    write_labels, write_npy)


def random_boxes(rng: np.random.Generator, count: int, sensor_hw: tuple[int, int]) -> np.ndarray:
    """``count`` GT boxes (classes alternating 0, 1) inside a ``sensor_hw`` frame, 30-60 % of its size."""
    sensor_h, sensor_w = sensor_hw
    b = np.zeros(count, dtype=PROPHESEE_BBOX_DTYPE)
    b["w"] = rng.uniform(0.3, 0.45, count) * sensor_w
    b["h"] = rng.uniform(0.4, 0.6, count) * sensor_h
    b["x"] = rng.uniform(0, 1, count) * (sensor_w - 1 - b["w"])
    b["y"] = rng.uniform(0, 1, count) * (sensor_h - 1 - b["h"])
    b["class_id"] = np.arange(count) % 2
    b["class_confidence"] = 1.0
    return b


def write_sequence(root: Path, num_reprs: int, labeled: list[int], seed: int, hw: tuple[int, int] = (64, 96),
                   ds2: bool = False, t0_us: int = 50_000, step_us: int = 50_000, boxes_per_frame: int = 2,
                   boxes: list[np.ndarray] | None = None) -> None:
    """A preprocessed sequence: random representations ``[num_reprs, 20, *hw]``, GT at the ``labeled``
    representation indices (``boxes[k]`` for the k-th, else ``boxes_per_frame`` random boxes).

    Boxes are in sensor pixels (``2 * hw`` when ``ds2``: the HDF5 file is the half-size ``_ds2_nearest`` one).
    """
    rng = np.random.default_rng(seed)
    paths = SequencePaths(root)
    paths.ev_repr_dir.mkdir(parents=True)
    ts = t0_us + step_us * np.arange(num_reprs, dtype=np.int64)
    with EventReprWriter(paths.ev_repr_file(ds2), 20, *hw) as writer:
        writer.append(rng.integers(0, 11, size=(num_reprs, 20, *hw), dtype=np.uint8))
    sensor_hw = (2 * hw[0], 2 * hw[1]) if ds2 else hw
    frames = []
    for k, r in enumerate(labeled):
        b = boxes[k].copy() if boxes is not None else random_boxes(rng, boxes_per_frame, sensor_hw)
        b["t"] = ts[r]
        frames.append(b)
    write_labels(paths.labels, SequenceLabels.from_frames(frames))
    write_npy(paths.label_timestamps, ts[labeled])
    write_npy(paths.objframe_idx_2_repr_idx, np.asarray(labeled, dtype=np.int64))
    write_npy(paths.repr_timestamps, ts)


def spread_logit_model(seed: int = 0, hw: tuple[int, int] = (64, 96), spread_boxes: bool = False):
    """Tiny RVT (embed 16) with random weights whose objectness/class logits are spread (std ~1, bias 0), so
    that plenty of boxes pass, fail and straddle every score filter; ``spread_boxes`` also spreads box sizes
    (6-34 px). In eval mode."""
    import torch

    from leod_core.models.detector import RVTConfig, build_detector

    torch.manual_seed(seed)
    model = build_detector(RVTConfig.tiny(num_classes=2, input_hw=hw, embed_dim=16, dim_head=16)).eval()
    head = model.yolox_head
    scaled = [(conv, 3e4) for conv in (*head.obj_preds, *head.cls_preds)]
    if spread_boxes:
        scaled += [(conv, 3e3) for conv in head.reg_preds]
    with torch.no_grad():
        for conv, scale in scaled:
            conv.bias.zero_()
            conv.weight.mul_(scale)
    return model


#: Head bias of :func:`write_confident_checkpoint`: sigmoid 0.95, an untrained head sure of everything, so boxes
#: reach every stage of pseudo-labelling.
CONFIDENT_LOGIT = 3.0


def write_confident_checkpoint(path: Path, hw: tuple[int, int] = (64, 96), seed: int = 0,
                               class_1_logit: float = CONFIDENT_LOGIT) -> Path:
    """Write ``model.ckpt`` of a tiny RVT (embed 16, 2 classes, input ``hw`` px) whose objectness and class-0
    biases are :data:`CONFIDENT_LOGIT` and class-1 bias ``class_1_logit`` (equal by default: tied classes, whose
    argmax the last bits decide); returns ``path``."""
    import torch

    from leod_core.models.checkpoint import save_model_checkpoint
    from leod_core.models.detector import RVTConfig, build_detector

    torch.manual_seed(seed)
    config = RVTConfig.tiny(2, hw, embed_dim=16, dim_head=16)
    model = build_detector(config)
    with torch.no_grad():
        for pred in (*model.yolox_head.obj_preds, *model.yolox_head.cls_preds):
            pred.bias.fill_(CONFIDENT_LOGIT)
        for pred in model.yolox_head.cls_preds:
            pred.bias[1] = class_1_logit
    save_model_checkpoint(path, model, config)
    return path


def downsample_by_2_nearest(frames: np.ndarray) -> np.ndarray:
    """The reference of RVT's ``_ds2_nearest`` frames: ×0.5 'nearest-exact' downsampling of [..., H, W] to
    [..., H // 2, W // 2]; with scale 0.5, torch's nearest-exact picks source index ``floor((i + 0.5) * 2) = 2 i + 1``."""
    out_h, out_w = frames.shape[-2] // 2, frames.shape[-1] // 2
    return np.ascontiguousarray(frames[..., 1:2 * out_h:2, 1:2 * out_w:2])


class ModelPaddingItself:
    """Reference wrapper of a detector for the streaming engine's input fast path: every attribute of the
    model but ``pad_multiple``, so the engine hands over unpadded frames and the model zero-pads them itself (the
    engine's path before it padded while assembling the uint8 input)."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name: str):
        if name == "pad_multiple":
            raise AttributeError(name)
        return getattr(self.model, name)

    def to(self, device):
        self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self
