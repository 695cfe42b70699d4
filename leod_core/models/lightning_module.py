"""Lightning module: RVT training logic of LEOD's ``modules/detection.py`` (training step, optimiser, schedule).

The model is held as ``self.mdl``, so Lightning checkpoints carry RVT's ``mdl.``-prefixed keys.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

import pytorch_lightning as pl
import torch
from torch import Tensor

from leod_core.data import label_tensors as lt
from leod_core.data.batch import Batch
from leod_core.models.detector import RVTConfig, States, build_detector
from leod_core.models.loss import LossConfig, YoloXLoss

#: Shortest OneCycle warm-up (steps) of a run too short for LEOD's ``pct_start`` to give more than one.
MIN_WARMUP_STEPS = 2
#: What the backbone reads. Training batches carry the representations as uint8 (exact, a quarter of the bytes to
#: augment, collate and move to the device) and each step converts them there.
MODEL_INPUT_DTYPE = torch.float32
#: Name under which the learning rate is logged (Lightning's ``LearningRateMonitor``).
LEARNING_RATE_LOG_NAME = "train/lr"


@dataclass(frozen=True)
class OptimConfig:
    """LEOD's optimiser and schedule (``Module.configure_optimizers``): AdamW + linear OneCycle per step."""

    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    max_steps: int = 400_000
    pct_start: float = 0.005
    div_factor: float = 20.0            # initial lr = learning_rate / div_factor
    final_div_factor: float = 10_000.0  # final lr = learning_rate / final_div_factor


def to_yolox_targets(labels: Tensor) -> Tensor:
    """LEOD label rows ``Tensor[N, 8]`` (t, x, y, w, h, class_id, class_conf, objectness; top-left boxes in
    frame pixels) -> YOLOX targets ``Tensor[N, 7]`` (class_id, cx, cy, w, h, obj_conf, cls_conf).

    The model pads frames at the bottom/right only, so frame pixels are padded-input pixels.
    """
    x, y, w, h = labels[:, lt.X], labels[:, lt.Y], labels[:, lt.W], labels[:, lt.H]
    return torch.stack([labels[:, lt.CLASS_ID], x + w / 2, y + h / 2, w, h,
                        labels[:, lt.OBJECTNESS], labels[:, lt.CLASS_CONFIDENCE]], dim=1)


def label_steps(labels: list[list[Tensor | None]], use_label_every: int) -> list[list[Tensor | None]]:
    """LEOD's ``use_label_every = k`` (``get_subsample_label_idx``): labels per step (``[L][B]``) with the
    all-pseudo frames (every row ``t == 0``) kept only at steps ``1, 1 + k, ...`` and the last step; frames
    holding ground truth are always kept. ``k = 1`` keeps everything."""
    if use_label_every < 1:
        raise ValueError(f"use_label_every must be >= 1, got {use_label_every}")
    if use_label_every == 1:
        return labels
    kept_steps = set(range(1, len(labels), use_label_every)) | {len(labels) - 1}

    def keep(step: int, frame: Tensor | None) -> Tensor | None:
        if frame is None or step in kept_steps or bool((frame[:, lt.T] != 0).any()):
            return frame
        return None

    return [[keep(step, frame) for frame in columns] for step, columns in enumerate(labels)]


def warmup_fraction(cfg: OptimConfig) -> float:
    """OneCycle's ``pct_start``: LEOD's, unless that gives at most one warm-up step (short runs), where torch's
    OneCycleLR divides by zero (exactly one step) or skips the warm-up; then :data:`MIN_WARMUP_STEPS` warm-up
    steps, fewer if the run is too short to leave a decay phase (a single-step run keeps LEOD's)."""
    if cfg.pct_start * cfg.max_steps > 1 or cfg.max_steps < 2:
        return cfg.pct_start
    return min(MIN_WARMUP_STEPS, (1 + cfg.max_steps) / 2) / cfg.max_steps


class DetectionModule(pl.LightningModule):
    """Trains :class:`~leod_core.models.detector.RVTDetector` with truncated BPTT over each batch.

    Recurrent states are carried between batches per DataLoader worker (LEOD's ``RNNStates``) and zeroed
    for columns where ``batch.is_first_sample``; the FPN and head run once on every labeled (step, column),
    with all-pseudo frames thinned to every ``use_label_every``-th step (:func:`label_steps`).
    """

    def __init__(self, model_config: RVTConfig, loss_config: LossConfig, optim_config: OptimConfig,
                 use_label_every: int = 1):
        super().__init__()
        self.save_hyperparameters({"model": model_config.to_dict(), "loss": asdict(loss_config),
                                   "optim": asdict(optim_config), "use_label_every": use_label_every})
        self.model_config = model_config
        self.optim_config = optim_config
        self.use_label_every = use_label_every
        self.mdl = build_detector(model_config)
        self.loss_fn = YoloXLoss(model_config.num_classes, loss_config)
        self._states: dict[int, States] = {}

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        return batch.to(device)

    def _initial_states(self, batch: Batch) -> States | None:
        states = self._states.get(batch.worker_id)
        if states is None or states[0][0].shape[0] != batch.batch_size:
            return None
        return self.mdl.reset_states(states, batch.is_first_sample)

    def forward_batch(self, batch: Batch) -> tuple[dict[int, Tensor], list[Tensor]]:
        """Run the backbone over ``batch.ev_repr: Tensor[L, B, 20, H, W]`` (uint8 or float32 event counts, converted
        step by step on the batch's device); return the FPN-input features of
        the labeled (step, column) pairs stacked along dim 0 (empty ``[0, C, h, w]`` tensors when no frame is
        labeled), and their YOLOX targets in the same order."""
        states = self._initial_states(batch)
        fpn_stages = self.model_config.fpn_in_stages
        features: dict[int, list[Tensor]] = defaultdict(list)
        targets: list[Tensor] = []
        labels = label_steps(batch.labels, self.use_label_every)
        for step in range(batch.sequence_length):
            stage_features, states = self.mdl.forward_backbone(batch.ev_repr[step].to(MODEL_INPUT_DTYPE), states)
            columns = [b for b, frame in enumerate(labels[step]) if frame is not None]
            if not columns:
                continue
            index = torch.tensor(columns, device=batch.ev_repr.device)
            for stage in fpn_stages:
                features[stage].append(stage_features[stage].index_select(0, index))
            targets.extend(to_yolox_targets(labels[step][b]) for b in columns)
        self._states[batch.worker_id] = self.mdl.detach_states(states)
        if not targets:
            return {stage: stage_features[stage][:0] for stage in fpn_stages}, targets
        return {stage: torch.cat(parts) for stage, parts in features.items()}, targets

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        features, targets = self.forward_batch(batch)
        return self.detection_loss(features, targets) if targets else None

    def detection_loss(self, features: dict[int, Tensor], targets: list[Tensor]) -> Tensor:
        """FPN + head on the labeled frames' ``features`` and the YOLOX loss against ``targets`` (logged)."""
        head = self.mdl.forward_detect(features)
        losses = self.loss_fn(head.preds, head.grid_xy, head.strides, targets)
        self.log_dict({f"train/{k}": float(v.detach()) if torch.is_tensor(v) else float(v)
                       for k, v in losses.items() if k != "loss"},
                      batch_size=len(targets))
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(targets))
        return losses["loss"]

    def configure_optimizers(self):
        cfg = self.optim_config
        optimizer = torch.optim.AdamW(self.mdl.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.learning_rate, total_steps=cfg.max_steps, pct_start=warmup_fraction(cfg),
            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor / cfg.div_factor,
            anneal_strategy="linear", cycle_momentum=False)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": LEARNING_RATE_LOG_NAME}}
