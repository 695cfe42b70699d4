"""One training run from typed settings: round 0 (hard assignment, label split) or a self-training round
(soft assignment, every frame of a pseudo-label dataset). What ``leod train`` calls."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from leod_core.config import replace_fields
from leod_core.data.augment import AugmentConfig
from leod_core.data.cameras import DEFAULT_CAMERA, get_camera
from leod_core.data.formats import SequencePaths, open_event_repr
from leod_core.data.loaders import build_train_loader
from leod_core.devices import claim_job_devices
from leod_core.models.checkpoint import load_into, load_rvt_state_dict
from leod_core.models.detector import RVTConfig
from leod_core.models.lightning_module import OptimConfig
from leod_core.models.loss import LossConfig, expand_class_thresholds
from leod_core.models.train import TRAIN_STATE_DIR, ResumableDetectionModule, TrainerConfig, fit
from leod_core.models.validation import Validation, ValidationConfig

log = logging.getLogger(__name__)

#: The camera whose settings are the defaults of the typed settings below (LEOD's Gen1); the workflow sets the
#: experiment's camera's values (``leod_core.workflow.settings.CAMERA_TRAIN_DEFAULTS``).
_DEFAULT = get_camera(DEFAULT_CAMERA)
#: Anchor assignment on pseudo labels: LEOD's soft one (low-score boxes become ignore boxes) or plain hard.
ASSIGNMENTS = ("soft", "hard")


@dataclass(frozen=True)
class ModelChoice:
    """RVT size preset plus field overrides (e.g. ``{"embed_dim": 16}`` for a CPU-sized model)."""

    size: str = "small"
    num_classes: int = _DEFAULT.num_classes
    partition_split_32: int = _DEFAULT.partition_split_32   # the camera's (RVT experiment config)
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Training loader settings (LEOD's Gen1 defaults; the camera's from the camera registry)."""

    sampling: str = "mixed"              # random | stream | mixed
    batch_size: int = 8
    sequence_length: int = _DEFAULT.sequence_length   # the camera's L (LEOD's dataset config)
    num_workers: int = 0
    w_stream: float = 1.0
    w_random: float = 1.0
    tflip_offset: int = _DEFAULT.tflip_offset          # the camera's time-flip label shift
    downsampled_by_2: bool = _DEFAULT.downsampled_by_2  # read the camera's x2-downsampled representations
    augment: bool = True                 # LEOD's label-efficient augmentation (h-flip, zoom, time flip)
    use_label_every: int = 1             # LEOD model.use_label_every: all-pseudo frames only at steps 1::k and L-1


@dataclass(frozen=True)
class TrainJob:
    """Everything one ``leod train`` run needs besides its paths."""

    model: ModelChoice = field(default_factory=ModelChoice)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # LEOD rnndet-soft's ignore thresholds, per class of the default camera; a 2-value [car, ped] list expands to
    # 3 classes as LEOD does (leod_core.models.loss.expand_class_thresholds)
    soft_ignore_bbox_thresh: tuple[float, ...] = _DEFAULT.soft_ignore_thresh
    pseudo_assignment: str = "soft"      # on pseudo labels: LEOD's soft (rnndet-soft) or YOLOX's hard (rnndet)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pseudo_assignment not in ASSIGNMENTS:
            raise ValueError(f"pseudo_assignment must be one of {ASSIGNMENTS}, got {self.pseudo_assignment!r}")


def frame_hw(data_dir: Path, downsampled_by_2: bool) -> tuple[int, int]:
    """(height, width) of the representations of the first training sequence (what the model sees)."""
    sequences = sorted(p for p in (Path(data_dir) / "train").iterdir() if p.is_dir())
    if not sequences:
        raise ValueError(f"{data_dir}/train has no sequences")
    with open_event_repr(SequencePaths(sequences[0]).ev_repr_file(downsampled_by_2)) as h5:
        return tuple(int(v) for v in h5["data"].shape[2:])


def detector_config(job: TrainJob, data_dir: Path) -> RVTConfig:
    """The detector ``job`` trains on ``data_dir``: its model section at the frame size of the data (px, after the
    camera's downsampling). ``leod import-checkpoint --config`` builds the same one for released weights."""
    return RVTConfig.for_size(job.model.size, job.model.num_classes, frame_hw(data_dir, job.data.downsampled_by_2),
                              job.model.partition_split_32, **job.model.overrides)


def run_train_job(job: TrainJob, data_dir: Path, out_dir: Path, split: Path | None, pseudo: bool,
                  init_weights: Path | None = None) -> Path:
    """Train on ``data_dir`` (with the label ``split``, or every labeled frame when ``split`` is None) into
    ``out_dir``; ``pseudo`` (training on pseudo labels) selects ``job.pseudo_assignment``, LEOD's soft anchor
    assignment by default. ``init_weights`` (a detector checkpoint of the same model, e.g. the previous round's
    ``model.ckpt``) starts from its weights instead of a fresh initialisation (LEOD's ``weight=``, its
    "-pretrain" runs); a resumed run takes its weights from ``train_state/last.ckpt`` anyway. With
    ``job.validation`` enabled the run validates on ``data_dir/{job.validation.split}`` and ``model.ckpt`` gets
    the selected weights (:mod:`leod_core.models.validation`). On a GPU, the job first claims
    ``job.trainer.devices`` GPU slots of the host (:func:`leod_core.devices.claim_job_devices`). Returns
    ``out_dir/model.ckpt``."""
    claim_job_devices(job.trainer.accelerator, job.trainer.devices)
    pl.seed_everything(job.seed, workers=True, verbose=False)
    model_config = detector_config(job, data_dir)
    loss = job.loss
    if pseudo and job.pseudo_assignment == "soft" and loss.ignore_bbox_thresh is None:
        loss = dataclasses.replace(loss, ignore_bbox_thresh=tuple(
            expand_class_thresholds(job.soft_ignore_bbox_thresh, job.model.num_classes)))
    d = job.data
    loader = build_train_loader(data_dir, split, d.sampling, d.batch_size, d.sequence_length, d.num_workers,
                                AugmentConfig() if d.augment else None, d.w_stream, d.w_random,
                                d.downsampled_by_2, d.tflip_offset, job.seed, ev_dtype=torch.uint8)
    log.info("%s assignment, model %s at %dx%d, %d steps, batch %d x L=%d (%s), pseudo labels every %d steps",
             "soft" if loss.ignore_bbox_thresh else "hard", model_config.size, *model_config.input_hw,
             job.optim.max_steps, d.batch_size, d.sequence_length, d.sampling, d.use_label_every)
    module = ResumableDetectionModule(model_config, loss, job.optim, d.use_label_every)
    if init_weights is not None:
        load_into(module.mdl, load_rvt_state_dict(init_weights), source=init_weights)
        log.info("initialised the detector from %s", init_weights)
    return fit(module, loader, job.seed, Path(out_dir), job.trainer, build_validation(job, data_dir, out_dir,
                                                                                       model_config))


def build_validation(job: TrainJob, data_dir: Path, out_dir: Path, model_config: RVTConfig) -> Validation | None:
    """The validation callback of ``job`` (None when ``job.validation`` is disabled): on ``data_dir``'s split,
    streamed like the training data (sequence length, resolution, autocast of the training precision)."""
    v = job.validation
    if not v.enabled:
        return None
    inference = v.inference_config(job.data.sequence_length, job.data.downsampled_by_2, job.trainer.precision)
    log.info("validating on %s/%s every %d steps and at the last step (camera %s, confidence %g, NMS %g); "
             "model.ckpt gets the %s weights", data_dir, v.split, v.every_n_steps, v.camera, v.confidence_threshold, v.nms_threshold,
             v.weights)
    return Validation(v, Path(data_dir), inference, Path(out_dir) / TRAIN_STATE_DIR, job.optim.max_steps,
                      model_config)


def job_from_mapping(overrides: dict[str, Any], source: str) -> TrainJob:
    """A :class:`TrainJob` from LEOD defaults overridden by a nested mapping (YAML ``--config``)."""
    return replace_fields(TrainJob(), overrides, source)
