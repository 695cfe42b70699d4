"""Training driver: Lightning Trainer setup, exact resume from ``train_state/last.ckpt``, final ``model.ckpt``.

Resume restores the weights, the optimiser and scheduler, the step, the recurrent states carried between
batches and the position in the training data: each pass over the data reseeds the loaders' generators from
``(seed, pass)`` and a resumed pass skips the batches already trained, so a killed and rerun job follows the
same batches as an uninterrupted one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from leod_core.data.batch import Batch
from leod_core.models.checkpoint import save_model_checkpoint
from leod_core.models.lightning_module import DetectionModule

log = logging.getLogger(__name__)

TRAIN_STATE_DIR = "train_state"
LAST_CHECKPOINT = "last.ckpt"
MODEL_CHECKPOINT = "model.ckpt"


@dataclass
class LoaderPosition:
    """Where training stands in the data: pass number and batches of that pass already trained."""

    epoch: int = 0
    batches: int = 0


@dataclass
class TaggedBatch:
    """A batch with its position in the data stream (pass, index within the pass)."""

    batch: Batch
    epoch: int
    index: int


class ResumableLoader:
    """Iterable of :class:`TaggedBatch` over a train loader, reseeding its generators at every pass.

    ``generators`` are the ``torch.Generator`` objects that drive the wrapped loader's shuffling and worker
    seeds; pass ``e`` seeds generator ``k`` with ``seed + e * len(generators) + k``. The first pass after a
    resume starts at ``position`` and skips the batches already trained.
    """

    def __init__(self, loader: Iterable[Batch], generators: list[torch.Generator], seed: int,
                 position: LoaderPosition):
        self.loader = loader
        self.generators = generators
        self.seed = seed
        self.position = position
        self._epoch: int | None = None

    def __iter__(self) -> Iterator[TaggedBatch]:
        if self._epoch is None:
            self._epoch, skip = self.position.epoch, self.position.batches
        else:
            self._epoch, skip = self._epoch + 1, 0
        for k, generator in enumerate(self.generators):
            generator.manual_seed(self.seed + self._epoch * len(self.generators) + k)
        if skip:
            log.info("resuming pass %d of the training data after %d trained batches", self._epoch, skip)
        for index, batch in enumerate(self.loader):
            if index >= skip:
                yield TaggedBatch(batch, self._epoch, index)


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The generators behind a DataLoader or a mixed loader (``stream_loader`` + ``random_loader``)."""
    parts = [loader.stream_loader, loader.random_loader] if hasattr(loader, "stream_loader") else [loader]
    return [part.generator for part in parts]


class ResumableDetectionModule(DetectionModule):
    """:class:`DetectionModule` that consumes :class:`TaggedBatch` and checkpoints its data position and the
    recurrent states carried between batches."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loader_position = LoaderPosition()

    def transfer_batch_to_device(self, item: TaggedBatch, device: torch.device, dataloader_idx: int) -> TaggedBatch:
        return TaggedBatch(super().transfer_batch_to_device(item.batch, device, dataloader_idx), item.epoch,
                           item.index)

    def training_step(self, item: TaggedBatch, batch_idx: int):
        # Set before the checkpoint callbacks of this step run (they precede the module's batch-end hook).
        self.loader_position.epoch, self.loader_position.batches = item.epoch, item.index + 1
        return super().training_step(item.batch, batch_idx)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["leod_loader_position"] = {"epoch": self.loader_position.epoch,
                                              "batches": self.loader_position.batches}
        checkpoint["leod_rnn_states"] = {worker: [(h, c) for h, c in states]
                                         for worker, states in self._states.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        position = checkpoint.get("leod_loader_position", {})
        self.loader_position.epoch = int(position.get("epoch", 0))
        self.loader_position.batches = int(position.get("batches", 0))
        self._states = {int(w): [(h, c) for h, c in states]
                        for w, states in checkpoint.get("leod_rnn_states", {}).items()}


@dataclass(frozen=True)
class TrainerConfig:
    """Where and how to run: devices, precision, checkpoint cadence, logging."""

    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"          # CPU: 32-true or bf16-mixed; GPU: 16-mixed (LEOD) or bf16-mixed
    gradient_clip_val: float = 1.0      # LEOD clips by value
    checkpoint_every_n_steps: int = 1000
    log_every_n_steps: int = 50
    progress_bar: bool = True
    extra_callbacks: tuple = field(default=())


def build_trainer(out_dir: Path, max_steps: int, cfg: TrainerConfig) -> pl.Trainer:
    """A Trainer that writes ``out_dir/train_state/last.ckpt`` every ``checkpoint_every_n_steps`` and CSV logs."""
    checkpointing = ModelCheckpoint(dirpath=out_dir / TRAIN_STATE_DIR, every_n_train_steps=cfg.checkpoint_every_n_steps,
                                    save_top_k=0, save_last=True)
    strategy = "ddp" if cfg.devices > 1 else "auto"
    return pl.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, strategy=strategy, precision=cfg.precision,
        max_steps=max_steps, max_epochs=-1, gradient_clip_val=cfg.gradient_clip_val,
        gradient_clip_algorithm="value", callbacks=[checkpointing, *cfg.extra_callbacks],
        logger=CSVLogger(out_dir, name="logs"), log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.progress_bar, num_sanity_val_steps=0, limit_val_batches=0,
        use_distributed_sampler=False, enable_model_summary=False)


def fit(module: ResumableDetectionModule, loader: Any, seed: int, out_dir: Path, cfg: TrainerConfig) -> Path:
    """Train ``module`` (built after ``pl.seed_everything(seed)``) on ``loader`` (resuming from ``out_dir/train_state/last.ckpt`` if present) and write
    ``out_dir/model.ckpt`` atomically. Returns the path of ``model.ckpt``."""
    out_dir = Path(out_dir)
    trainer = build_trainer(out_dir, module.optim_config.max_steps, cfg)
    last = out_dir / TRAIN_STATE_DIR / LAST_CHECKPOINT
    resume = last if last.is_file() else None
    log.info("training %s for %d steps%s", module.model_config.size, module.optim_config.max_steps,
             f", resuming from {resume}" if resume else "")
    data = ResumableLoader(loader, loader_generators(loader), seed, module.loader_position)
    trainer.fit(module, train_dataloaders=data, ckpt_path=resume, weights_only=True)
    trainer.save_checkpoint(last)   # a rerun of a finished job resumes at max_steps and only rewrites model.ckpt
    model_path = out_dir / MODEL_CHECKPOINT
    if trainer.is_global_zero:
        save_model_checkpoint(model_path, module.mdl, module.model_config)
        log.info("wrote %s at step %d", model_path, trainer.global_step)
    return model_path
