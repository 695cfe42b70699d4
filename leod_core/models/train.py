"""Training driver: Lightning Trainer setup, exact resume from ``train_state/last.ckpt``, final ``model.ckpt``.

Resume restores the weights, the optimiser and scheduler, the step, the recurrent states carried between
batches and the position in the training data: each pass over the data reseeds the loaders' generators from
``(seed, pass)`` and a resumed pass skips the batches already trained, so a killed and rerun job follows the
same batches as an uninterrupted one.

Preemption: on a signal of ``TrainerConfig.preemption_signals`` (SLURM sends SIGTERM before killing a job, and
SIGUSR1 earlier with ``--signal=USR1@<seconds>``) training saves ``train_state/last.ckpt`` at the end of the
current batch and exits with :data:`PREEMPTED_EXIT_CODE` without writing ``model.ckpt``; rerunning the same
command resumes exactly. Lightning's own SLURM auto-requeue is off (:class:`LightningEnvironment`), so this is
the one behaviour, under SLURM or not.

DDP (``devices > 1``): Lightning starts the other ranks by running the same command again. Each rank draws its
own batches (its generators are seeded per rank), the checkpoint holds every rank's recurrent states, and only
rank 0 writes files. BatchNorm statistics are synchronised across the ranks (``TrainerConfig.sync_batchnorm``,
LEOD's SyncBN; :mod:`leod_core.models.distributed`).

Validation (:mod:`leod_core.models.validation`), when configured, keeps the best weights in ``train_state/`` and
``model.ckpt`` gets the best (or last) ones, with a ``leod_training`` record of their step. Logs go to
``logs/csv/version_N/metrics.csv`` and TensorBoard event files in ``logs/tensorboard/version_N/`` (a resumed run
is a new version): training losses, the learning rate (``train/lr``) and ``val/*``.
"""
from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterable, Iterator

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import LightningEnvironment
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from leod_core.data.atomic import atomic_path
from leod_core.data.batch import Batch
from leod_core.models.checkpoint import save_state_dict_checkpoint
from leod_core.models.distributed import SyncBatchNormPlugin, gather_from_ranks, has_synced_batchnorm
from leod_core.models.lightning_module import DetectionModule
from leod_core.models.validation import Validation

log = logging.getLogger(__name__)

TRAIN_STATE_DIR = "train_state"
LAST_CHECKPOINT = "last.ckpt"
MODEL_CHECKPOINT = "model.ckpt"
LOG_DIR = "logs"
PREEMPTED_EXIT_CODE = os.EX_TEMPFAIL   # 75: "temporary failure, retry": rerun the job to resume


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
    seeds; with ``n`` of them, pass ``e`` of rank ``r`` of ``w`` (``trainer.global_rank``, ``trainer.world_size``)
    seeds generator ``k`` with ``seed + (e * w + r) * n + k``, so the ranks of a DDP run draw different batches
    and a single process seeds with ``seed + e * n + k``. The first pass after a resume starts at ``position``
    and skips the batches already trained (every rank's passes have the same length, so one position serves all).
    """

    def __init__(self, loader: Iterable[Batch], generators: list[torch.Generator], seed: int,
                 position: LoaderPosition, trainer: pl.Trainer):
        self.loader = loader
        self.generators = generators
        self.seed = seed
        self.position = position
        self.trainer = trainer
        self._epoch: int | None = None

    def __iter__(self) -> Iterator[TaggedBatch]:
        if self._epoch is None:
            self._epoch, skip = self.position.epoch, self.position.batches
        else:
            self._epoch, skip = self._epoch + 1, 0
        stream = self._epoch * self.trainer.world_size + self.trainer.global_rank
        for k, generator in enumerate(self.generators):
            generator.manual_seed(self.seed + stream * len(self.generators) + k)
        if skip:
            log.info("resuming pass %d of the training data after %d trained batches", self._epoch, skip)
        for index, batch in enumerate(self.loader):
            if index >= skip:
                yield TaggedBatch(batch, self._epoch, index)


def loader_parts(loader: Any) -> list[DataLoader]:
    """The DataLoaders of a DataLoader or of a mixed loader (``stream_loader`` + ``random_loader``)."""
    return [loader.stream_loader, loader.random_loader] if hasattr(loader, "stream_loader") else [loader]


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The generators behind a DataLoader or a mixed loader."""
    return [part.generator for part in loader_parts(loader)]


@dataclass(frozen=True)
class IgnoreSignalsInWorkers:
    """``worker_init_fn`` that makes DataLoader workers ignore the preemption ``signals`` (names), then runs
    ``then`` (the loader's own ``worker_init_fn``, if any).

    A scheduler signals every process of the job; PyTorch's workers die on SIGTERM, and the main process then
    fails at once ("DataLoader worker ... is killed by signal") instead of saving at the end of the batch.
    """

    signals: tuple[str, ...]
    then: Callable[[int], None] | None = None

    def __call__(self, worker_id: int) -> None:
        for name in self.signals:
            signal.signal(signal.Signals[name], signal.SIG_IGN)
        if self.then is not None:
            self.then(worker_id)


class ResumableDetectionModule(DetectionModule):
    """:class:`DetectionModule` that consumes :class:`TaggedBatch` and checkpoints its data position and the
    recurrent states carried between batches (``leod_rnn_states``: one ``{worker: states}`` per rank)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loader_position = LoaderPosition()

    def transfer_batch_to_device(self, item: TaggedBatch, device: torch.device, dataloader_idx: int) -> TaggedBatch:
        return TaggedBatch(super().transfer_batch_to_device(item.batch, device, dataloader_idx), item.epoch,
                           item.index)

    def training_step(self, item: TaggedBatch, batch_idx: int):
        # Set before the checkpoint callbacks of this step run (they precede the module's batch-end hook).
        self.loader_position.epoch, self.loader_position.batches = item.epoch, item.index + 1
        features, targets = self.forward_batch(item.batch)
        if targets:
            return self.detection_loss(features, targets)
        if self.trainer.world_size == 1:
            return None
        # DDP all-reduces the gradients of every rank at every step: a rank without a labeled frame must still run
        # backward, contributing zero gradients (skipping it would hang the other ranks). With synchronised
        # BatchNorm it also runs the FPN and head on no frames, joining their collectives (forward and backward).
        loss = sum(p.sum() for p in self.parameters()) * 0.0
        if has_synced_batchnorm(self.mdl):
            loss = loss + self.mdl.forward_detect(features).preds.sum() * 0.0
        return loss

    def on_train_start(self) -> None:
        # restored recurrent states come out of the checkpoint on the CPU
        self._states = {w: [(h.to(self.device), c.to(self.device)) for h, c in states]
                        for w, states in self._states.items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["leod_loader_position"] = {"epoch": self.loader_position.epoch,
                                              "batches": self.loader_position.batches}
        states = {worker: [(h.cpu(), c.cpu()) for h, c in states] for worker, states in self._states.items()}
        checkpoint["leod_rnn_states"] = gather_from_ranks(states, self.trainer.world_size)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        position = checkpoint.get("leod_loader_position", {})
        self.loader_position.epoch = int(position.get("epoch", 0))
        self.loader_position.batches = int(position.get("batches", 0))
        per_rank = checkpoint.get("leod_rnn_states", [])
        if isinstance(per_rank, dict):   # a single process's states, as written before the per-rank list
            per_rank = [per_rank]
        if len(per_rank) != self.trainer.world_size:
            log.warning("train_state holds the recurrent states of %d ranks, this run has %d: the resumed run "
                        "is not an exact continuation", len(per_rank), self.trainer.world_size)
        rank = self.trainer.global_rank
        states = per_rank[rank] if rank < len(per_rank) else {}
        self._states = {int(w): [(h, c) for h, c in worker_states] for w, worker_states in states.items()}


@dataclass(frozen=True)
class TrainerConfig:
    """Where and how to run: devices, precision, checkpoint cadence, logging."""

    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"          # CPU: 32-true or bf16-mixed; GPU: 16-mixed (LEOD) or bf16-mixed
    gradient_clip_val: float = 1.0      # LEOD clips by value
    checkpoint_every_n_steps: int = 1000
    log_every_n_steps: int = 50
    sync_batchnorm: bool = True         # with more than one process (DDP): LEOD's SyncBN
    progress_bar: bool = True
    preemption_signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1")   # save train_state and exit for requeue
    extra_callbacks: tuple = field(default=())


class Preempted(SystemExit):
    """Training stopped on a preemption signal after saving ``train_state/last.ckpt`` (or, for a SIGTERM that
    came before the training loop started, with nothing new to save): the process exits with
    :data:`PREEMPTED_EXIT_CODE`; rerun the same command to resume."""

    def __init__(self, signal_name: str, step: int):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.signal_name = signal_name
        self.step = step


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic in place: the checkpoint is written and fsynced to a temporary
    sibling, then renamed over the target, so a job killed while saving leaves the previous checkpoint intact.

    (Lightning's own writer goes through a temporary file in the system temp directory and ``shutil.move``,
    which copies across file systems and can leave a truncated target.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())


class PreemptionHandler(pl.Callback):
    """On any of ``signals`` (names such as ``"SIGTERM"``): save ``last`` at the end of the current batch and
    raise :class:`Preempted`.

    The handlers only record the signal. They are installed when the training loop starts, replacing the
    SIGTERM handler Lightning installs just before (which would forward the signal to the DDP ranks and stop
    without saving), and restored when it ends. Under DDP the ranks agree at every batch end (one all-reduce),
    so a signal that reached one rank stops all of them at the same step.
    """

    def __init__(self, signals: Iterable[str], last: Path):
        self.signals = [self._parse(name) for name in signals]
        self.last = last
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @staticmethod
    def _parse(name: str) -> signal.Signals:
        if name not in signal.Signals.__members__:
            raise ValueError(f"trainer.preemption_signals: unknown signal {name!r}")
        return signal.Signals[name]

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:   # None: a handler not installed from Python, which cannot be restored
                signal.signal(signum, handler)
        self._previous = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._previous = {signum: signal.signal(signum, self._record) for signum in self.signals}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _agreed_signal(self, trainer: pl.Trainer) -> signal.Signals | None:
        """The signal received by this rank or, under DDP, by any rank (the highest number)."""
        signum = self.received.value if self.received is not None else 0
        if trainer.world_size > 1:
            flag = torch.tensor(signum, device=trainer.strategy.root_device)
            signum = int(trainer.strategy.reduce(flag, reduce_op="max").item())
        return signal.Signals(signum) if signum else None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        received = self._agreed_signal(trainer)
        if received is None:
            return
        trainer.save_checkpoint(self.last)
        if trainer.is_global_zero:
            log.warning("received %s at step %d: saved %s, exiting for requeue", received.name,
                        trainer.global_step, self.last)
        raise Preempted(received.name, trainer.global_step)


class StepLog(pl.Callback):
    """Logs ``step N/M: loss X`` on rank 0 every ``every`` steps (workflow jobs run without a progress bar)."""

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           *args: Any) -> None:
        if trainer.is_global_zero and trainer.global_step % self.every == 0:
            loss = f"loss {float(outputs['loss']):.4f}" if outputs else "no labeled frame"
            log.info("step %d/%d: %s", trainer.global_step, trainer.max_steps, loss)


def build_trainer(out_dir: Path, max_steps: int, cfg: TrainerConfig, validation: Validation | None = None
                  ) -> pl.Trainer:
    """A Trainer that writes ``out_dir/train_state/last.ckpt`` every ``checkpoint_every_n_steps`` and on a
    preemption signal, CSV and TensorBoard logs under ``out_dir/logs/`` (with the learning rate), and runs
    ``validation`` if given. Ranks are started by Lightning itself (never Lightning's SLURM environment, which would
    requeue the job on SIGUSR1 and expect ``srun`` to start the ranks); BatchNorm layers are synchronised across
    them when ``cfg.sync_batchnorm`` (:class:`SyncBatchNormPlugin`; on the CPU too)."""
    last = out_dir / TRAIN_STATE_DIR / LAST_CHECKPOINT
    checkpointing = ModelCheckpoint(dirpath=last.parent, every_n_train_steps=cfg.checkpoint_every_n_steps,
                                    save_top_k=0, save_last=True, enable_version_counter=False)
    # the preemption handler runs first: a signal is answered without waiting for a validation (which then runs
    # when the job resumes); validation precedes the periodic last.ckpt, which thus records it
    callbacks = [PreemptionHandler(cfg.preemption_signals, last), StepLog(cfg.log_every_n_steps),
                 *([validation] if validation is not None else []), LearningRateMonitor("step"), checkpointing]
    loggers = [CSVLogger(out_dir / LOG_DIR, name="csv"),
               TensorBoardLogger(out_dir / LOG_DIR, name="tensorboard", default_hp_metric=False)]
    sync_batchnorm = cfg.sync_batchnorm and cfg.devices > 1
    on_cpu = cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not torch.cuda.is_available())
    plugins = [LightningEnvironment(), AtomicCheckpointIO(), *([SyncBatchNormPlugin(on_cpu)] if sync_batchnorm else [])]
    strategy = "ddp" if cfg.devices > 1 else "auto"
    return pl.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, strategy=strategy, precision=cfg.precision,
        plugins=plugins, sync_batchnorm=sync_batchnorm, default_root_dir=out_dir,
        max_steps=max_steps, max_epochs=-1, gradient_clip_val=cfg.gradient_clip_val,
        gradient_clip_algorithm="value", callbacks=[*callbacks, *cfg.extra_callbacks],
        logger=loggers, log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.progress_bar, num_sanity_val_steps=0, limit_val_batches=0,
        use_distributed_sampler=False, enable_model_summary=False)


def fit(module: ResumableDetectionModule, loader: Any, seed: int, out_dir: Path, cfg: TrainerConfig,
        validation: Validation | None = None) -> Path:
    """Train ``module`` (built after ``pl.seed_everything(seed)``) on ``loader`` (resuming from
    ``out_dir/train_state/last.ckpt`` if present), validating with ``validation`` if given, and write
    ``out_dir/model.ckpt`` atomically: the weights ``validation`` selects (the last ones without it) with a
    ``leod_training`` record ``{"step", "selected", "val_AP"}``. Returns the path of ``model.ckpt``. Raises
    :class:`Preempted` on a preemption signal (which the loader's workers ignore)."""
    out_dir = Path(out_dir)
    trainer = build_trainer(out_dir, module.optim_config.max_steps, cfg, validation)
    last = out_dir / TRAIN_STATE_DIR / LAST_CHECKPOINT
    resume = last if last.is_file() else None
    log.info("training %s for %d steps%s", module.model_config.size, module.optim_config.max_steps,
             f", resuming from {resume}" if resume else "")
    for part in loader_parts(loader):
        part.worker_init_fn = IgnoreSignalsInWorkers(cfg.preemption_signals, part.worker_init_fn)
    data = ResumableLoader(loader, loader_generators(loader), seed, module.loader_position, trainer)
    try:
        trainer.fit(module, train_dataloaders=data, ckpt_path=resume, weights_only=True)
    except SIGTERMException as stop:   # Lightning's own handler caught a SIGTERM sent before the loop started
        log.warning("received SIGTERM at step %d, before the training loop started: nothing saved, exiting for "
                    "requeue", trainer.global_step)
        raise Preempted("SIGTERM", trainer.global_step) from stop
    if validation is not None:   # a job resumed at its last step, preempted before validating it
        validation.validate_pending(trainer, module)
    trainer.save_checkpoint(last)   # a rerun of a finished job resumes at max_steps and only rewrites model.ckpt
    model_path = out_dir / MODEL_CHECKPOINT
    if trainer.is_global_zero:
        weights, record = module.mdl.state_dict(), {"step": trainer.global_step, "selected": "last", "val_AP": None}
        if validation is not None:
            weights, record = validation.selected_weights(trainer.global_step, weights)
        save_state_dict_checkpoint(model_path, weights, module.model_config, record)
        val_ap = "" if record["val_AP"] is None else f", val AP {100 * record['val_AP']:.1f}"
        log.info("wrote %s at step %d: the %s weights, of step %d%s", model_path, trainer.global_step,
                 record["selected"], record["step"], val_ap)
    return model_path
