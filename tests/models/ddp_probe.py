"""A DDP training run on two CPU processes that records what each rank holds, for tests/models/test_ddp.py.

Usage: ``python ddp_probe.py DATA SPLIT OUT sync|nosync``. Lightning starts rank 1 by running this script again.
It trains 2 steps with validation after each; at the end of training every rank writes ``OUT/rank{r}.pt``:
its BatchNorm running statistics (``bn``), its val AP record (``val_AP``) and whether its BatchNorm layers were
synchronised (``synced``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from leod_core.models.distributed import has_synced_batchnorm
from leod_core.models.lightning_module import OptimConfig
from leod_core.models.train import TrainerConfig
from leod_core.models.train_job import DataConfig, ModelChoice, TrainJob, run_train_job
from leod_core.models.validation import Validation, ValidationConfig

STEPS = 2


class SaveRankState(pl.Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        validation = next(c for c in trainer.callbacks if isinstance(c, Validation))
        bn = {k: v.clone() for k, v in pl_module.mdl.state_dict().items()
              if k.endswith(("running_mean", "running_var"))}
        synced = has_synced_batchnorm(pl_module.mdl)
        torch.save({"bn": bn, "val_AP": dict(validation.scores), "synced": synced},
                   self.out / f"rank{trainer.global_rank}.pt")


def main(data: Path, split: Path, out: Path, sync: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    job = TrainJob(model=ModelChoice(size="tiny", overrides={"embed_dim": 16, "dim_head": 16}),
                   optim=OptimConfig(learning_rate=1e-3, max_steps=STEPS),
                   data=DataConfig(sampling="random", batch_size=2, sequence_length=5, augment=False),
                   trainer=TrainerConfig(accelerator="cpu", devices=2, sync_batchnorm=sync, progress_bar=False,
                                         log_every_n_steps=1, extra_callbacks=(SaveRankState(out),)),
                   validation=ValidationConfig(every_n_steps=1, camera="synth", batch_size=2))
    run_train_job(job, data, out, split, pseudo=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), {"sync": True, "nosync": False}[sys.argv[4]])
