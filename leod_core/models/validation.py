"""Validation during training, as LEOD does it: every ``every_n_steps`` steps the detector is evaluated with the
Prophesee protocol of ``leod evaluate`` (at LEOD's validation confidence 0.1), the two best weights by val AP are
kept in ``train_state/``, and ``model.ckpt`` is written from the best (or, configurably, the last) weights.

* When: at every multiple of ``every_n_steps`` and at the last step (so the final weights are candidates too).
  A step whose validation did not run because the job was preempted at its end is validated when the job
  resumes (at the start of training, or after it when it resumed at the last step).
* What: the split ``split`` of the training data directory (``{data_dir}/val``; LEOD validates on test, a quirk
  of its code), streamed as ``leod evaluate`` streams it (:func:`iter_sequence_predictions`), scored by
  :func:`evaluate_sequences`. Under DDP each rank streams every ``world_size``-th sequence, rank 0 scores the
  gathered predictions (sorted by sequence name) and broadcasts the metrics, so every rank takes the same
  decisions. Validation runs in eval mode under no-grad, leaves the recurrent training states alone and restores
  the random number generators, so training follows the same trajectory with or without it.
* The record: the val AP of every validated step is the callback's state, saved in ``train_state/last.ckpt``;
  the kept weights (``train_state/best-step{step:08d}.ckpt``, weights only) follow from it, so a resumed run takes
  the same decisions. Ties go to the earlier step.
* Logs: ``val/AP``, ``val/AP_50`` ... (fractions) to every Lightning logger at the training step, and one line
  ``step N: val AP x.x (best y.y at step M)`` (percent).
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from leod_core.data.sequence import SequenceReader
from leod_core.data.cameras import camera_names, get_camera
from leod_core.evaluation.evaluate import SequenceGroundTruth, evaluate_sequences, load_ground_truth
from leod_core.models.checkpoint import load_rvt_state_dict
from leod_core.models.detector import RVTConfig, RVTDetector
from leod_core.models.distributed import gather_from_ranks
from leod_core.models.inference import InferenceConfig, iter_sequence_predictions, list_sequences

log = logging.getLogger(__name__)

#: Which weights become ``model.ckpt``: the best by val AP, or those of the last step.
WEIGHT_CHOICES = ("best", "last")
#: Autocast dtype of validation for each Lightning precision that trains under autocast (others: float32).
PRECISION_AUTOCAST = {"16-mixed": "float16", "16": "float16", "bf16-mixed": "bfloat16", "bf16": "bfloat16"}
#: Kept checkpoints are ``{BEST_PREFIX}{step:08d}.ckpt`` (zero-padded, so they sort by step).
BEST_PREFIX = "best-step"


@dataclass(frozen=True)
class ValidationConfig:
    """Validation during training (LEOD ``validation.*`` and its checkpoint callback).

    Attributes:
        every_n_steps: validate every this many training steps and at the last step (LEOD
            ``val_check_interval``: 20000); 0 disables validation and ``model.ckpt`` holds the last weights.
        camera: 'gen1', 'gen4' or 'synth': class names and box-size filters of the protocol (as
            ``leod evaluate --camera``); required when validating (the workflow sets the dataset's camera).
        split: split directory of the training data to validate on (LEOD: test, see the module docstring).
        confidence_threshold: postprocess score threshold (LEOD's validation: 0.1; its final evaluation uses 0.001).
        nms_threshold: IoU threshold of the class-wise NMS (LEOD 0.45).
        batch_size: sequences streamed side by side.
        sequence_length: chunk length L of the streaming (None: the training sequence length).
        save_top_k: best weights kept in ``train_state/`` (LEOD 2).
        weights: which weights ``model.ckpt`` holds: ``best`` by val AP or ``last``.
        backend: COCO backend ('auto', 'pycocotools', 'faster-coco-eval').
    """

    every_n_steps: int = 0
    camera: str | None = None
    split: str = "val"
    confidence_threshold: float = 0.1
    nms_threshold: float = 0.45
    batch_size: int = 8
    sequence_length: int | None = None
    save_top_k: int = 2
    weights: str = "best"
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.every_n_steps < 0 or self.save_top_k < 1:
            raise ValueError(f"validation: every_n_steps must be >= 0 and save_top_k >= 1, got "
                             f"{self.every_n_steps}, {self.save_top_k}")
        if self.weights not in WEIGHT_CHOICES:
            raise ValueError(f"validation.weights must be one of {WEIGHT_CHOICES}, got {self.weights!r}")
        if self.camera is not None:
            get_camera(self.camera)  # an unknown name raises, listing the known ones
        if self.enabled and self.camera is None:
            raise ValueError("validation.camera is required when validation.every_n_steps > 0 "
                             f"(one of {camera_names()})")

    @property
    def enabled(self) -> bool:
        return self.every_n_steps > 0

    def inference_config(self, sequence_length: int, downsampled_by_2: bool, precision: str) -> InferenceConfig:
        """Streaming settings: this config's, the training ``sequence_length`` unless set, the training data's
        resolution, and autocast as the training ``precision`` (:data:`PRECISION_AUTOCAST`)."""
        return InferenceConfig(batch_size=self.batch_size, sequence_length=self.sequence_length or sequence_length,
                               confidence_threshold=self.confidence_threshold, nms_threshold=self.nms_threshold,
                               autocast_dtype=PRECISION_AUTOCAST.get(str(precision)),
                               downsampled_by_2=downsampled_by_2)


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Restore the Python, NumPy and torch (CPU, and ``device`` if CUDA) generators on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _rank_key(item: tuple[int, float]) -> tuple[float, int]:
    """Sort key of (step, AP): higher AP first (NaN last), then the earlier step."""
    step, ap = item
    return (-ap if not math.isnan(ap) else math.inf, step)


class Validation(pl.Callback):
    """Validates the detector during training and keeps the best weights (module docstring).

    Args:
        cfg: the settings (``cfg.enabled`` must hold).
        data_dir: the training data directory (holding ``cfg.split``).
        inference: streaming settings (:meth:`ValidationConfig.inference_config`).
        state_dir: ``train_state/``, where the kept checkpoints go.
        max_steps: the run's last step (validated too).
        model_config: the detector's config: its classes and input size are checked against the camera and data.
    """

    def __init__(self, cfg: ValidationConfig, data_dir: Path, inference: InferenceConfig, state_dir: Path,
                 max_steps: int, model_config: RVTConfig):
        if not cfg.enabled:
            raise ValueError("Validation needs validation.every_n_steps > 0")
        self.cfg, self.data_dir, self.inference = cfg, Path(data_dir), inference
        self.state_dir, self.max_steps = Path(state_dir), max_steps
        self.sequences = [p.name for p in list_sequences(self.data_dir, cfg.split)]
        if not self.sequences:
            raise ValueError(f"{self.data_dir / cfg.split}: no sequences to validate on (set "
                             f"validation.every_n_steps: 0 to train without validation)")
        self.frame_hw = SequenceReader(self.data_dir / cfg.split / self.sequences[0],
                                       downsampled_by_2=inference.downsampled_by_2).frame_hw
        classes = get_camera(cfg.camera).classes
        if model_config.num_classes != len(classes):
            raise ValueError(f"validation.camera {cfg.camera} has {len(classes)} classes, the model "
                             f"{model_config.num_classes}")
        if tuple(self.frame_hw) != tuple(model_config.input_hw):
            raise ValueError(f"{self.data_dir / cfg.split}: frames are {self.frame_hw}, the model reads "
                             f"{tuple(model_config.input_hw)}")
        self.scores: dict[int, float] = {}
        self._ground_truth: dict[str, SequenceGroundTruth] | None = None

    # ------------------------------------------------------------------------------------------ the record
    def state_dict(self) -> dict[str, Any]:
        return {"val_AP": dict(self.scores)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scores = {int(step): float(ap) for step, ap in state_dict["val_AP"].items()}

    def is_validation_step(self, step: int) -> bool:
        return step > 0 and (step % self.cfg.every_n_steps == 0 or step == self.max_steps)

    def best_step(self) -> int | None:
        """The step with the highest val AP so far (the earliest among equals); None before any validation."""
        return min(self.scores.items(), key=_rank_key)[0] if self.scores else None

    def kept_steps(self) -> list[int]:
        """The ``save_top_k`` best steps, in step order."""
        return sorted(step for step, _ in sorted(self.scores.items(), key=_rank_key)[:self.cfg.save_top_k])

    def checkpoint_path(self, step: int) -> Path:
        return self.state_dir / f"{BEST_PREFIX}{step:08d}.ckpt"

    # ------------------------------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validate_pending(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.validate_pending(trainer, pl_module)

    def validate_pending(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Validate the current weights if this step is due and not validated yet (every rank calls this)."""
        step = trainer.global_step
        if not self.is_validation_step(step) or step in self.scores:
            return
        start = time.perf_counter()
        metrics = self.evaluate(trainer, pl_module.mdl)
        self.scores[step] = float(metrics["AP"])
        for logger in trainer.loggers:   # saved at once: validations are rare, and one may follow training
            logger.log_metrics({f"val/{key}": float(value) for key, value in metrics.items()}, step=step)
            logger.save()
        self._keep_top_k(trainer, step)
        if trainer.is_global_zero:
            best = self.best_step()
            log.info("step %d: val AP %.1f (best %.1f at step %d; %.1f s)", step, 100 * self.scores[step],
                     100 * self.scores[best], best, time.perf_counter() - start)

    # ------------------------------------------------------------------------------------------ evaluation
    def ground_truth(self) -> dict[str, SequenceGroundTruth]:
        if self._ground_truth is None:
            split_dir = self.data_dir / self.cfg.split
            self._ground_truth = {name: load_ground_truth(split_dir / name, self.inference.downsampled_by_2)
                                  for name in self.sequences}
        return self._ground_truth

    def evaluate(self, trainer: pl.Trainer, model: RVTDetector) -> dict[str, float]:
        """Prophesee metrics of ``model`` on the split (a collective under DDP; every rank gets rank 0's)."""
        device = trainer.strategy.root_device
        was_training = model.training
        mine = self.sequences[trainer.global_rank::trainer.world_size]
        try:
            with preserved_rng(device):   # the streaming runs in eval mode under torch.inference_mode
                predictions = list(iter_sequence_predictions(model, self.data_dir, self.cfg.split, self.inference,
                                                             device, sequences=mine, progress=False))
        finally:
            model.train(was_training)
        gathered = sorted((p for part in gather_from_ranks(predictions, trainer.world_size) for p in part),
                          key=lambda p: p.name)
        metrics = None
        if trainer.is_global_zero:
            metrics, _ = evaluate_sequences(gathered, self.ground_truth(), self.frame_hw, self.cfg.camera,
                                            self.inference.downsampled_by_2, self.cfg.backend)
        return trainer.strategy.broadcast(metrics, src=0)

    def _keep_top_k(self, trainer: pl.Trainer, step: int) -> None:
        """Save the weights of ``step`` if they are among the best; delete kept files that no longer are."""
        kept = {self.checkpoint_path(s) for s in self.kept_steps()}
        if self.checkpoint_path(step) in kept:
            trainer.save_checkpoint(self.checkpoint_path(step), weights_only=True)
        for path in sorted(self.state_dir.glob(f"{BEST_PREFIX}*.ckpt")):
            if path not in kept:
                trainer.strategy.remove_checkpoint(path)

    # ------------------------------------------------------------------------------------------ selection
    def selected_weights(self, last_step: int, last_weights: Mapping[str, Tensor]
                         ) -> tuple[Mapping[str, Tensor], dict[str, Any]]:
        """The weights ``model.ckpt`` gets and their record ``{"step", "selected", "val_AP"}``: the best kept
        checkpoint's (``weights: best``) or ``last_weights`` of ``last_step`` (``weights: last``)."""
        if self.cfg.weights == "last":
            return last_weights, {"step": last_step, "selected": "last", "val_AP": self.scores.get(last_step)}
        best = self.best_step()
        if best is None:
            raise RuntimeError("no validation ran: there are no best weights to select")
        return (load_rvt_state_dict(self.checkpoint_path(best)),
                {"step": best, "selected": "best", "val_AP": self.scores[best]})
