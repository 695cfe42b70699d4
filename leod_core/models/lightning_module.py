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


class DetectionModule(pl.LightningModule):
    """Trains :class:`~leod_core.models.detector.RVTDetector` with truncated BPTT over each batch.

    Recurrent states are carried between batches per DataLoader worker (LEOD's ``RNNStates``) and zeroed
    for columns where ``batch.is_first_sample``; the FPN and head run once on every labeled (step, column).
    """

    def __init__(self, model_config: RVTConfig, loss_config: LossConfig, optim_config: OptimConfig):
        super().__init__()
        self.save_hyperparameters({"model": model_config.to_dict(), "loss": asdict(loss_config),
                                   "optim": asdict(optim_config)})
        self.model_config = model_config
        self.optim_config = optim_config
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
        """Run the backbone over ``batch.ev_repr: Tensor[L, B, 20, H, W]``; return the FPN-input features of
        the labeled (step, column) pairs stacked along dim 0, and their YOLOX targets in the same order."""
        states = self._initial_states(batch)
        fpn_stages = self.model_config.fpn_in_stages
        features: dict[int, list[Tensor]] = defaultdict(list)
        targets: list[Tensor] = []
        for step in range(batch.sequence_length):
            stage_features, states = self.mdl.forward_backbone(batch.ev_repr[step], states)
            columns = [b for b, labels in enumerate(batch.labels[step]) if labels is not None]
            if not columns:
                continue
            index = torch.tensor(columns, device=batch.ev_repr.device)
            for stage in fpn_stages:
                features[stage].append(stage_features[stage].index_select(0, index))
            targets.extend(to_yolox_targets(batch.labels[step][b]) for b in columns)
        self._states[batch.worker_id] = self.mdl.detach_states(states)
        return {stage: torch.cat(parts) for stage, parts in features.items()}, targets

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        features, targets = self.forward_batch(batch)
        if not targets:
            return None
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
            optimizer, max_lr=cfg.learning_rate, total_steps=cfg.max_steps, pct_start=cfg.pct_start,
            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor / cfg.div_factor,
            anneal_strategy="linear", cycle_momentum=False)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
