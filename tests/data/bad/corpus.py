"""Bad inputs, each built from a valid one and then damaged in one way, and the call a user would make on it.

The valid inputs (:class:`Pristine`) come from the real writers: ``leod synth`` (the synthetic camera) and
``leod preprocess`` for events, labels and representations, ``make_split`` for the split, the checkpoint
writer for the model, ``tarfile`` for the download archive. A case copies what it needs into its own
directory, damages it, and returns a :class:`Call` of the entry point a user hits: the ``leod`` command
(parsed by the real parser), or the loader that ``leod train`` / ``evaluate`` / the Snakefile use. Small
cases are committed under ``files/``: split JSONs, workflow-config overlays and ``--config`` YAMLs.

Each :class:`BadCase` names the exact exception type and a regex of its message, which names the file (or
the config field) and the problem.
"""
from __future__ import annotations

import gzip
import io
import pickle
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import numpy.lib.recfunctions as rfn
import torch
import yaml
from snakemake.utils import validate
from snakemake_interface_common.exceptions import WorkflowError

from leod_core.cli import build_parser
from leod_core.data.download import ArchiveError, DownloadError
from leod_core.data.formats import FormatError, SequencePaths, raw_paths, read_timestamps_us
from leod_core.data.loaders import select_sequences
from leod_core.data.sequence import SequenceReader
from leod_core.data.splits import LabelSplit, read_split, write_split
from leod_core.models.checkpoint import (CONFIG_KEY, CheckpointMismatchError, load_model_checkpoint,
                                         save_model_checkpoint)
from leod_core.models.detector import RVTConfig, build_detector
from leod_core.workflow.settings import check_config, deep_merge, experiment_settings
from leod_core.workflow.targets import read_gate_file

FILES = Path(__file__).resolve().parent / "files"
REPO = Path(__file__).resolve().parents[3]
WORKFLOW_CONFIG = REPO / "workflow_config" / "config.yaml"
WORKFLOW_SCHEMA = REPO / "workflow_config" / "schema.yaml"

#: The pristine synthetic dataset: one short sequence per split, at the synthetic camera's default size.
SYNTH_ARGS = ("--num-train", "1", "--num-val", "1", "--num-test", "1", "--duration-s", "1.2", "--seed", "3")
SENSOR_HW = (64, 96)
TRAIN_SEQ = "synth_train_000"
NUM_CLASSES = 2
#: WSOD split of the pristine data: every 2nd labeled frame with 2 representations of history.
SPLIT_RATIO, SPLIT_LENGTH = "0.5", "2"
#: Top-level folder of the download archive (RVT's ``gen1.tar`` holds ``gen1/``).
ARCHIVE_TOP = "gen1"
#: A file every watched output directory holds before the call; it must come out untouched.
SENTINEL = "keep-me.txt"


# ------------------------------------------------------------------------------------------- structure
@dataclass(frozen=True)
class Pristine:
    """Valid inputs shared by every case (read-only: cases copy before damaging)."""

    raw: Path          # leod synth output: {split}/{seq}_td.dat.h5 + {seq}_bbox.npy
    data: Path         # leod preprocess output of ``raw``
    checkpoint: Path   # RVT-T checkpoint (64x96, 2 classes) in our format
    archive: Path      # tar of ``data`` under ``gen1/`` (served by the test's HTTP server)
    base_url: str      # URL of the directory that holds ``archive``


@dataclass(frozen=True)
class Call:
    """How a case is run.

    Attributes:
        run: raises the case's error.
        argv: the ``leod`` arguments when ``run`` is the CLI (then ``leod`` must also exit 1 with the message).
        watched: directories whose existing files must come out untouched, with no new file in them.
        must_not_exist: paths that a failing call must not create (an archive, a file a pickle would write).
    """

    run: Callable[[], object]
    argv: tuple[str, ...] | None = None
    watched: tuple[Path, ...] = ()
    must_not_exist: tuple[Path, ...] = ()


@dataclass(frozen=True)
class BadCase:
    """One bad input: ``build(workdir, pristine)`` writes it and returns the :class:`Call`, which raises
    exactly ``error`` with a message matching ``match``."""

    id: str
    category: str
    build: Callable[[Path, Pristine], Call]
    error: type[BaseException]
    match: str


# ------------------------------------------------------------------------------------------ pristine
def run_leod(argv: tuple[str, ...] | list[str]) -> None:
    """Run one ``leod`` command as ``leod_core.cli.main`` does, but let its exception propagate."""
    args = build_parser().parse_args(["--no-progress", *argv])
    args.func(args)


def build_pristine(root: Path, base_url: str) -> Pristine:
    """Write the valid inputs under ``root`` with the real writers (the archive into ``root/served``, which
    ``base_url`` serves)."""
    raw, data = root / "raw", root / "data"
    run_leod(["synth", "--out", str(raw), *SYNTH_ARGS])
    run_leod(["preprocess", "--raw", str(raw), "--out", str(data), "--preset", "synth"])
    checkpoint = root / "model.ckpt"
    config = RVTConfig.for_size("tiny", NUM_CLASSES, SENSOR_HW, 1)
    save_model_checkpoint(checkpoint, build_detector(config), config)
    archive = root / "served" / f"{ARCHIVE_TOP}.tar"
    archive.parent.mkdir(exist_ok=True)
    with tarfile.open(archive, "w") as tar:
        tar.add(data, arcname=ARCHIVE_TOP)
    return Pristine(raw=raw, data=data, checkpoint=checkpoint, archive=archive, base_url=base_url)


def crc32_hex(path: Path) -> str:
    return f"{zlib.crc32(path.read_bytes()):08x}"


def watched_dir(path: Path) -> Path:
    """An output directory that already holds :data:`SENTINEL`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / SENTINEL).write_text("written before the failing run\n")
    return path


def truncate(path: Path, keep_fraction: float = 0.5) -> None:
    """Keep the first ``keep_fraction`` of the file's bytes (a half-written or half-copied file)."""
    content = path.read_bytes()
    path.write_bytes(content[:int(len(content) * keep_fraction)])


# -------------------------------------------------------------------------------------------- raw events
def raw_copy(work: Path, pristine: Pristine) -> tuple[Path, Path, Path]:
    """(raw root, events file, boxes file) of a copy of the pristine raw dataset (the train sequence)."""
    raw = work / "raw"
    shutil.copytree(pristine.raw, raw)
    events, boxes = raw_paths(raw / "train", TRAIN_SEQ)
    return raw, events, boxes


def preprocess_call(work: Path, raw: Path) -> Call:
    out = watched_dir(work / "data_out")
    return leod_call(["preprocess", "--raw", str(raw), "--out", str(out), "--preset", "synth"], out)


def leod_call(argv: list[str], *watched: Path, must_not_exist: tuple[Path, ...] = ()) -> Call:
    return Call(run=lambda: run_leod(argv), argv=tuple(argv), watched=watched, must_not_exist=must_not_exist)


def rewrite_events(path: Path, **changes: np.ndarray | None) -> None:
    """Rewrite group ``events`` of a raw file with datasets replaced (an array) or removed (``None``)."""
    with h5py.File(path, "r") as h5:
        arrays = {key: h5["events"][key][()] for key in h5["events"]}
    arrays.update(changes)
    path.unlink()
    with h5py.File(path, "w") as h5:
        group = h5.create_group("events")
        for key, value in arrays.items():
            if value is not None:
                group.create_dataset(key, data=value)


def raw_events_case(damage: Callable[[Path], None]) -> Callable[[Path, Pristine], Call]:
    def build(work: Path, pristine: Pristine) -> Call:
        raw, events, _ = raw_copy(work, pristine)
        damage(events)
        return preprocess_call(work, raw)
    return build


def events_field(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        return h5["events"][key][()]


def events_without_group(path: Path) -> None:
    path.unlink()
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=np.zeros(3, np.uint16))


def events_unequal_lengths(path: Path) -> None:
    rewrite_events(path, t=events_field(path, "t")[:-1])


def events_float_timestamps(path: Path) -> None:
    rewrite_events(path, t=events_field(path, "t").astype(np.float64))


def events_negative_first_timestamp(path: Path) -> None:
    t = events_field(path, "t").astype(np.int64)
    t[0] = -1
    rewrite_events(path, t=t)


def events_outside_sensor(path: Path) -> None:
    x = events_field(path, "x")
    x[len(x) // 2] = SENSOR_HW[1]
    rewrite_events(path, x=x)


def events_bad_polarity(path: Path) -> None:
    p = events_field(path, "p")
    p[0] = 2
    rewrite_events(path, p=p)


def events_non_scalar_height(path: Path) -> None:
    rewrite_events(path, height=np.array([SENSOR_HW[0], SENSOR_HW[0]]))


def remove_events(path: Path) -> None:
    path.unlink()


def remove_val_split(work: Path, pristine: Pristine) -> Call:
    raw, _, _ = raw_copy(work, pristine)
    shutil.rmtree(raw / "val")
    return preprocess_call(work, raw)


# --------------------------------------------------------------------------------------------- raw boxes
def raw_boxes_case(damage: Callable[[Path], None]) -> Callable[[Path, Pristine], Call]:
    def build(work: Path, pristine: Pristine) -> Call:
        raw, _, boxes = raw_copy(work, pristine)
        damage(boxes)
        return preprocess_call(work, raw)
    return build


def edit_boxes(edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """Damage a ``*_bbox.npy`` by ``edit`` (which gets the valid boxes), saved with ``np.save``."""
    def damage(path: Path) -> None:
        boxes = np.load(path, allow_pickle=False)
        np.save(path, edit(boxes.copy()), allow_pickle=False)
    return damage


def set_first(field: str, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def edit(rows: np.ndarray) -> np.ndarray:
        rows[field][0] = value
        return rows
    return edit


def reverse_rows(rows: np.ndarray) -> np.ndarray:
    assert rows["t"][0] < rows["t"][-1], "the pristine boxes span more than one timestamp"
    return rows[::-1]


def boxes_as_plain_floats(rows: np.ndarray) -> np.ndarray:
    return np.stack([rows[k].astype(np.float64) for k in ("t", "x", "y", "w", "h")], axis=-1)


def boxes_as_column(rows: np.ndarray) -> np.ndarray:
    return rows[:, None]


def boxes_with_float_timestamps(rows: np.ndarray) -> np.ndarray:
    fields = [(name, np.float64 if name == "t" else rows.dtype[name]) for name in rows.dtype.names]
    out = np.zeros(rows.shape, dtype=fields)
    for name in rows.dtype.names:
        out[name] = rows[name]
    return out


def boxes_without_class_id(rows: np.ndarray) -> np.ndarray:
    names = [name for name in rows.dtype.names if name != "class_id"]
    return rfn.repack_fields(rows[names])


def pickle_boxes(path: Path) -> None:
    boxes = np.load(path, allow_pickle=False)
    np.save(path, np.array([boxes, "extra"], dtype=object), allow_pickle=True)


# --------------------------------------------------------------------------------------- preprocessed
def seq_copy(work: Path, pristine: Pristine) -> SequencePaths:
    """Paths of the train sequence of a copy of the pristine preprocessed dataset."""
    shutil.copytree(pristine.data, work / "data")
    return SequencePaths(work / "data" / "train" / TRAIN_SEQ)


def reader_case(damage: Callable[[SequencePaths], None], read_all: bool = False) -> Callable[[Path, Pristine], Call]:
    """Open the damaged sequence with :class:`SequenceReader` (what ``leod train`` / ``evaluate`` load
    sequences with); ``read_all`` also reads every representation."""
    def build(work: Path, pristine: Pristine) -> Call:
        seq = seq_copy(work, pristine)
        damage(seq)

        def run() -> object:
            reader = SequenceReader(seq.root)
            return reader.read_reprs(0, reader.num_reprs) if read_all else reader
        return Call(run=run)
    return build


def split_cli_case(damage: Callable[[SequencePaths], None]) -> Callable[[Path, Pristine], Call]:
    """``leod split`` on the damaged dataset (it reads every training sequence's frame index)."""
    def build(work: Path, pristine: Pristine) -> Call:
        seq = seq_copy(work, pristine)
        damage(seq)
        out = watched_dir(work / "experiment")
        return leod_call(["split", "--data", str(work / "data"), "--setting", "wsod", "--ratio", SPLIT_RATIO,
                          "--sequence-length", SPLIT_LENGTH, "--out", str(out / "split.json")], out)
    return build


def rewrite_repr(data: np.ndarray) -> Callable[[SequencePaths], None]:
    def damage(seq: SequencePaths) -> None:
        path = seq.ev_repr_file(False)
        path.unlink()
        with h5py.File(path, "w") as h5:
            h5.create_dataset("data", data=data)
    return damage


def repr_without_data(seq: SequencePaths) -> None:
    path = seq.ev_repr_file(False)
    path.unlink()
    with h5py.File(path, "w") as h5:
        h5.create_dataset("frames", data=np.zeros((1, 20, *SENSOR_HW), np.uint8))


def damage_repr_chunk(seq: SequencePaths) -> None:
    """Overwrite the compressed bytes of one frame's chunk (a bad disk block)."""
    path = seq.ev_repr_file(False)
    with h5py.File(path, "r") as h5:
        chunk = h5["data"].id.get_chunk_info(h5["data"].id.get_num_chunks() // 2)
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)


def truncate_file(select: Callable[[SequencePaths], Path]) -> Callable[[SequencePaths], None]:
    return lambda seq: truncate(select(seq))


def remove_file(select: Callable[[SequencePaths], Path]) -> Callable[[SequencePaths], None]:
    return lambda seq: select(seq).unlink()


def save_npy(select: Callable[[SequencePaths], Path], make: Callable[[np.ndarray], np.ndarray],
             allow_pickle: bool = False) -> Callable[[SequencePaths], None]:
    """Replace a .npy file by ``make(current array)``."""
    def damage(seq: SequencePaths) -> None:
        path = select(seq)
        np.save(path, make(np.load(path, allow_pickle=False)), allow_pickle=allow_pickle)
    return damage


def frame_index_file(seq: SequencePaths) -> Path:
    return seq.objframe_idx_2_repr_idx


def edit_frame_index(make: Callable[[np.ndarray], np.ndarray], allow_pickle: bool = False
                     ) -> Callable[[SequencePaths], None]:
    """Replace ``objframe_idx_2_repr_idx.npy`` by ``make(current indices)``."""
    return save_npy(frame_index_file, make, allow_pickle)


def unsorted_repr_timestamps(work: Path, pristine: Pristine) -> Call:
    """``timestamps_us.npy`` with two representations swapped, read as ``leod evaluate`` reads it."""
    seq = seq_copy(work, pristine)
    save_npy(lambda s: s.repr_timestamps, lambda ts: ts[[1, 0, *range(2, len(ts))]])(seq)
    return Call(run=lambda: read_timestamps_us(seq.repr_timestamps))


# ------------------------------------------------------------------------------------------------ labels
def edit_labels(edit: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]) -> Callable[[SequencePaths], None]:
    """Rewrite ``labels.npz`` with ``np.savez`` (as RVT writes it) from ``edit(labels, frame starts)``."""
    def damage(seq: SequencePaths) -> None:
        with np.load(seq.labels, allow_pickle=False) as npz:
            labels, starts = npz["labels"].copy(), npz["objframe_idx_2_label_idx"].copy()
        np.savez(seq.labels, **edit(labels, starts))
    return damage


def with_label(field: str, value: float) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    def edit(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
        labels[field][0] = value
        return {"labels": labels, "objframe_idx_2_label_idx": starts}
    return edit


def second_frame_before_first(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    end = starts[2] if len(starts) > 2 else len(labels)
    labels["t"][starts[1]:end] = labels["t"][0] - 1
    return {"labels": labels, "objframe_idx_2_label_idx": starts}


def two_times_in_one_frame(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    counts = np.diff(np.append(starts, len(labels)))
    frame = int(np.argmax(counts >= 2))
    assert counts[frame] >= 2, "the pristine labels have a frame with two boxes"
    labels["t"][starts[frame] + 1] += 1
    return {"labels": labels, "objframe_idx_2_label_idx": starts}


def without_frame_index(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return {"labels": labels}


def labels_as_floats(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return {"labels": np.stack([labels[k].astype(np.float32) for k in ("x", "y", "w", "h")], axis=-1),
            "objframe_idx_2_label_idx": starts}


def labels_as_column(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return {"labels": labels[:, None], "objframe_idx_2_label_idx": starts}


def first_frame_index_shifted(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return {"labels": labels, "objframe_idx_2_label_idx": starts + 1}


def one_frame_dropped(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return {"labels": labels[:starts[-1]], "objframe_idx_2_label_idx": starts[:-1]}


def rows_without_frames(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return {"labels": labels, "objframe_idx_2_label_idx": starts[:0]}


def pickled_labels(seq: SequencePaths) -> None:
    with np.load(seq.labels, allow_pickle=False) as npz:
        starts = npz["objframe_idx_2_label_idx"].copy()
    np.savez(seq.labels, labels=np.array([{"x": 1.0}], dtype=object), objframe_idx_2_label_idx=starts)


def empty_sequence(seq: SequencePaths) -> None:
    """A sequence whose recording is empty: no representation, but labels that point into it."""
    rewrite_repr(np.zeros((0, 20, *SENSOR_HW), np.uint8))(seq)


# ------------------------------------------------------------------------------------------------ splits
def quality_with_split(split_file: Path, work: Path, pristine: Pristine) -> Call:
    """``leod label-quality`` (it reads the split first) with the split ``split_file``."""
    out = watched_dir(work / "round1")
    return leod_call(["label-quality", "--pseudo-data", str(work / "pseudo"), "--data", str(pristine.data),
                      "--split", str(split_file), "--out", str(out / "quality.json"), "--camera", "synth"], out)


def committed_split(name: str) -> Callable[[Path, Pristine], Call]:
    return lambda work, pristine: quality_with_split(FILES / "splits" / name, work, pristine)


def missing_split(work: Path, pristine: Pristine) -> Call:
    return quality_with_split(work / "split.json", work, pristine)


def split_with_malformed_ratio(work: Path, pristine: Pristine) -> Call:
    out = watched_dir(work / "experiment")
    return leod_call(["split", "--data", str(pristine.data), "--setting", "wsod", "--ratio", "0.1x",
                      "--sequence-length", SPLIT_LENGTH, "--out", str(out / "split.json")], out)


def split_of_dataset_without_train(work: Path, pristine: Pristine) -> Call:
    data = work / "data"
    shutil.copytree(pristine.data, data)
    shutil.rmtree(data / "train")
    out = watched_dir(work / "experiment")
    return leod_call(["split", "--data", str(data), "--setting", "wsod", "--ratio", SPLIT_RATIO,
                      "--sequence-length", SPLIT_LENGTH, "--out", str(out / "split.json")], out)


def split_naming_unknown_sequence(work: Path, pristine: Pristine) -> Call:
    """A valid split file of another dataset: training selects sequences by it (``leod train``'s loader)."""
    split_file = work / "split.json"
    write_split(split_file, LabelSplit("wsod", float(SPLIT_RATIO), int(SPLIT_LENGTH), {"synth_train_999": [1]}))
    return Call(run=lambda: select_sequences(pristine.data, read_split(split_file)))


# ------------------------------------------------------------------------------------------- checkpoints
def import_checkpoint(work: Path, checkpoint: Path, size: str = "tiny", num_classes: int = NUM_CLASSES,
                      must_not_exist: tuple[Path, ...] = ()) -> Call:
    """``leod import-checkpoint`` of ``checkpoint`` into a watched directory."""
    out = watched_dir(work / "imported")
    return leod_call(["import-checkpoint", "--checkpoint", str(checkpoint), "--out", str(out / "model.ckpt"),
                      "--size", size, "--num-classes", str(num_classes), "--height", str(SENSOR_HW[0]),
                      "--width", str(SENSOR_HW[1])], out, must_not_exist=must_not_exist)


def checkpoint_imported_as(size: str, num_classes: int) -> Callable[[Path, Pristine], Call]:
    return lambda work, pristine: import_checkpoint(work, pristine.checkpoint, size, num_classes)


def checkpoint_case(write: Callable[[Path, Pristine], None]) -> Callable[[Path, Pristine], Call]:
    def build(work: Path, pristine: Pristine) -> Call:
        path = work / "model.ckpt"
        write(path, pristine)
        return import_checkpoint(work, path)
    return build


def pickled_checkpoint(path: Path, pristine: Pristine) -> None:
    """A state dict written with plain ``pickle`` instead of ``torch.save``."""
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"mdl.weight": torch.zeros(2)}}, f)


class _WritesFileWhenUnpickled:
    """Unpickling this object would create ``marker``: the proof that no pickled code runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def code_pickle_case(work: Path, pristine: Pristine) -> Call:
    path, marker = work / "model.ckpt", work / "unpickled-code-ran.txt"
    torch.save({"state_dict": {"mdl.weight": torch.zeros(2)}, "hook": _WritesFileWhenUnpickled(marker)}, path)
    return import_checkpoint(work, path, must_not_exist=(marker,))


def truncated_checkpoint(path: Path, pristine: Pristine) -> None:
    shutil.copy(pristine.checkpoint, path)
    truncate(path)


def empty_checkpoint(path: Path, pristine: Pristine) -> None:
    path.write_bytes(b"")


def training_state_only(path: Path, pristine: Pristine) -> None:
    torch.save({"epoch": 3, "global_step": 1200}, path)


def nan_weights(path: Path, pristine: Pristine) -> None:
    payload = torch.load(pristine.checkpoint, weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][key].view(-1)[0] = float("nan")
    torch.save(payload, path)


def missing_checkpoint(work: Path, pristine: Pristine) -> Call:
    return import_checkpoint(work, work / "model.ckpt")


def stored_config_case(edit: Callable[[dict], None]) -> Callable[[Path, Pristine], Call]:
    """Our checkpoint with its stored model config edited, loaded as ``leod evaluate`` / ``pseudo-label`` do."""
    def build(work: Path, pristine: Pristine) -> Call:
        payload = torch.load(pristine.checkpoint, weights_only=True)
        edit(payload)
        path = work / "model.ckpt"
        torch.save(payload, path)
        return Call(run=lambda: load_model_checkpoint(path))
    return build


def drop_config(payload: dict) -> None:
    del payload[CONFIG_KEY]


def config_with_unknown_key(payload: dict) -> None:
    payload[CONFIG_KEY]["embed_dimension"] = 64


# ------------------------------------------------------------------------------------------------ configs
def load_workflow_config(overlay: Path) -> dict:
    """What the Snakefile does with ``--configfile overlay``: merge it over ``config.yaml``, validate against
    ``schema.yaml`` (defaults filled in), then :func:`check_config` (``rules/common.smk``)."""
    config = deep_merge(yaml.safe_load(WORKFLOW_CONFIG.read_text()), yaml.safe_load(overlay.read_text()))
    validate(config, str(WORKFLOW_SCHEMA))
    check_config(config)
    return config


def workflow_overlay(name: str) -> Callable[[Path, Pristine], Call]:
    return lambda work, pristine: Call(run=lambda: load_workflow_config(FILES / "configs" / name))


def preprocess_with_config(name: str) -> Callable[[Path, Pristine], Call]:
    def build(work: Path, pristine: Pristine) -> Call:
        out = watched_dir(work / "data_out")
        return leod_call(["preprocess", "--raw", str(pristine.raw), "--out", str(out), "--preset", "synth",
                          "--config", str(FILES / "configs" / name)], out)
    return build


def train_with_config(name: str) -> Callable[[Path, Pristine], Call]:
    def build(work: Path, pristine: Pristine) -> Call:
        out = watched_dir(work / "round0")
        return leod_call(["train", "--data", str(pristine.data), "--split", str(work / "split.json"),
                          "--out", str(out), "--config", str(FILES / "configs" / name)], out)
    return build


# ------------------------------------------------------------------------------------------------ targets
def target(dataset: str, setting: str, ratio: str, variant: str = "") -> Callable[[Path, Pristine], Call]:
    """The settings of target ``results/{dataset}/{setting}_{ratio}[+{variant}]/...``, as the rules' input
    functions compute them from the wildcards."""
    def build(work: Path, pristine: Pristine) -> Call:
        return Call(run=lambda: experiment_settings(default_workflow_config(), dataset, setting, ratio, variant))
    return build


def default_workflow_config() -> dict:
    """The embedded default config, validated as the Snakefile does."""
    config = yaml.safe_load(WORKFLOW_CONFIG.read_text())
    validate(config, str(WORKFLOW_SCHEMA))
    return config


def gate_case(text: str) -> Callable[[Path, Pristine], Call]:
    def build(work: Path, pristine: Pristine) -> Call:
        path = work / "gate.json"
        path.write_text(text)
        return Call(run=lambda: read_gate_file(path))
    return build


# ---------------------------------------------------------------------------------------------- downloads
def download_call(work: Path, url: str, crc32: str, archive: Path | None = None) -> Call:
    """``leod download`` into ``{work}/datasets/gen1``, ``datasets/`` watched. Without ``archive`` (a file
    already there, whose directory is then watched too) the download's archive must not appear."""
    datasets = watched_dir(work / "datasets")
    target = archive or work / "downloads" / f"{ARCHIVE_TOP}.tar"
    argv = ["download", "--url", url, "--crc32", crc32, "--archive", str(target), "--out", str(datasets / ARCHIVE_TOP),
            "--retries", "0"]
    if archive is None:
        return leod_call(argv, datasets, must_not_exist=(target,))
    return leod_call(argv, datasets, archive.parent)


def served_with_wrong_crc(work: Path, pristine: Pristine) -> Call:
    wrong = f"{zlib.crc32(pristine.archive.read_bytes()) ^ 1:08x}"
    return download_call(work, f"{pristine.base_url}/{pristine.archive.name}", wrong)


def served_404(work: Path, pristine: Pristine) -> Call:
    return download_call(work, f"{pristine.base_url}/no-such.tar", crc32_hex(pristine.archive))


def bad_crc_string(work: Path, pristine: Pristine) -> Call:
    return download_call(work, f"{pristine.base_url}/{pristine.archive.name}", "not-hex!")


def local_archive_case(write: Callable[[Path, Pristine], str]) -> Callable[[Path, Pristine], Call]:
    """An archive already at ``--archive``; ``write`` creates it and returns the CRC-32 passed to leod."""
    def build(work: Path, pristine: Pristine) -> Call:
        archive = work / "downloads" / f"{ARCHIVE_TOP}.tar"
        archive.parent.mkdir()
        crc32 = write(archive, pristine)
        return download_call(work, f"{pristine.base_url}/{pristine.archive.name}", crc32, archive)
    return build


def half_downloaded(archive: Path, pristine: Pristine) -> str:
    """The first half of the real archive (a copy cut short), checked against the real CRC-32."""
    shutil.copy(pristine.archive, archive)
    truncate(archive)
    return crc32_hex(pristine.archive)


def truncated_gzip_with_its_crc(archive: Path, pristine: Pristine) -> str:
    """A gzipped tar cut short whose (wrongly configured) CRC-32 matches: extraction must catch it."""
    archive.write_bytes(gzip.compress(pristine.archive.read_bytes()))
    truncate(archive)
    return crc32_hex(archive)


def html_page_with_its_crc(archive: Path, pristine: Pristine) -> str:
    archive.write_text("<html><body>503 Service Unavailable</body></html>\n")
    return crc32_hex(archive)


def add_bytes(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


def two_top_level_folders(archive: Path, pristine: Pristine) -> str:
    with tarfile.open(archive, "w") as tar:
        tar.add(pristine.data / "train", arcname=f"{ARCHIVE_TOP}/train")
        add_bytes(tar, "README.txt", b"not inside the dataset folder\n")
    return crc32_hex(archive)


def member_escaping_the_output(archive: Path, pristine: Pristine) -> str:
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, f"{ARCHIVE_TOP}/../../escaped.txt", b"outside the output directory\n")
    return crc32_hex(archive)


def foreign_output_directory(work: Path, pristine: Pristine) -> Call:
    """``--out`` is a directory the user made (no ``download_summary.json``); the archive is fine."""
    archive = work / "downloads" / f"{ARCHIVE_TOP}.tar"
    archive.parent.mkdir()
    shutil.copy(pristine.archive, archive)
    out = watched_dir(work / "datasets" / ARCHIVE_TOP)
    return leod_call(["download", "--url", f"{pristine.base_url}/{pristine.archive.name}", "--crc32",
                      crc32_hex(archive), "--archive", str(archive), "--out", str(out)], out, archive.parent)


# -------------------------------------------------------------------------------------------------- cases
def _cases() -> list[BadCase]:
    ev, bx = r"synth_train_000_td\.dat\.h5", r"synth_train_000_bbox\.npy"
    h5, lab, idx = r"event_representations\.h5", r"labels_v2/labels\.npz", r"objframe_idx_2_repr_idx\.npy"
    ckpt = r"model\.ckpt"
    return [
        # raw events: leod preprocess
        BadCase("raw-events-truncated", "raw events", raw_events_case(truncate), FormatError,
                ev + r": not a readable HDF5 file"),
        BadCase("raw-events-empty-file", "raw events", raw_events_case(lambda p: p.write_bytes(b"")), FormatError,
                ev + r": not a readable HDF5 file"),
        BadCase("raw-events-no-events-group", "raw events", raw_events_case(events_without_group), FormatError,
                ev + r": has no group 'events'"),
        BadCase("raw-events-missing-t", "raw events", raw_events_case(lambda p: rewrite_events(p, t=None)),
                FormatError, ev + r": group 'events' lacks datasets \['t'\]"),
        BadCase("raw-events-unequal-lengths", "raw events", raw_events_case(events_unequal_lengths), FormatError,
                ev + r": events x, y, p, t must be 1-D arrays of equal length"),
        BadCase("raw-events-float-timestamps", "raw events", raw_events_case(events_float_timestamps),
                FormatError, ev + r": events x, y, p, t must be integers"),
        BadCase("raw-events-negative-timestamp", "raw events", raw_events_case(events_negative_first_timestamp),
                FormatError, ev + r": first event timestamp is negative"),
        BadCase("raw-events-outside-sensor", "raw events", raw_events_case(events_outside_sensor), FormatError,
                ev + r": events lie outside the 64x96 sensor"),
        BadCase("raw-events-polarity-2", "raw events", raw_events_case(events_bad_polarity), FormatError,
                ev + r": polarity must be 0/1"),
        BadCase("raw-events-non-scalar-height", "raw events", raw_events_case(events_non_scalar_height),
                FormatError, ev + r": events/height must be a positive integer scalar"),
        BadCase("raw-events-missing", "raw events", raw_events_case(remove_events), FormatError,
                ev + r": raw events of synth_train_000_bbox\.npy are missing"),
        BadCase("raw-split-dir-missing", "raw events", remove_val_split, FormatError,
                r"raw/val: raw split directory is missing"),
        # raw boxes: leod preprocess
        BadCase("raw-boxes-truncated", "raw boxes", raw_boxes_case(truncate), FormatError,
                bx + r": not a readable \.npy file"),
        BadCase("raw-boxes-pickled-objects", "raw boxes", raw_boxes_case(pickle_boxes), FormatError,
                bx + r": not a readable \.npy file \(Object arrays cannot be loaded when allow_pickle=False\)"),
        BadCase("raw-boxes-plain-float-array", "raw boxes", raw_boxes_case(edit_boxes(boxes_as_plain_floats)),
                FormatError, bx + r": expected the Prophesee box dtype"),
        BadCase("raw-boxes-missing-class-id", "raw boxes", raw_boxes_case(edit_boxes(boxes_without_class_id)),
                FormatError, bx + r": expected the Prophesee box dtype"),
        BadCase("raw-boxes-2d", "raw boxes", raw_boxes_case(edit_boxes(boxes_as_column)), FormatError,
                bx + r": expected a 1-D box array"),
        BadCase("raw-boxes-float-timestamps", "raw boxes", raw_boxes_case(edit_boxes(boxes_with_float_timestamps)),
                FormatError, bx + r": box field 't' has type float64, expected an integer type"),
        BadCase("raw-boxes-unsorted-timestamps", "raw boxes", raw_boxes_case(edit_boxes(reverse_rows)),
                FormatError, bx + r": boxes are not sorted by timestamp"),
        BadCase("raw-boxes-nan", "raw boxes", raw_boxes_case(edit_boxes(set_first("x", np.nan))), FormatError,
                bx + r": boxes contain NaN or infinite coordinates"),
        BadCase("raw-boxes-inf", "raw boxes", raw_boxes_case(edit_boxes(set_first("h", np.inf))), FormatError,
                bx + r": boxes contain NaN or infinite coordinates"),
        BadCase("raw-boxes-negative-width", "raw boxes", raw_boxes_case(edit_boxes(set_first("w", -3.0))),
                FormatError, bx + r": boxes have negative width or height"),
        # preprocessed sequence: SequenceReader (leod train / evaluate), leod split, read_timestamps_us
        BadCase("repr-h5-truncated", "preprocessed", reader_case(truncate_file(lambda s: s.ev_repr_file(False))),
                FormatError, h5 + r": not a readable HDF5 file"),
        BadCase("repr-h5-missing", "preprocessed", reader_case(remove_file(lambda s: s.ev_repr_file(False))),
                FormatError, h5 + r": event representation file is missing"),
        BadCase("repr-h5-no-data-dataset", "preprocessed", reader_case(repr_without_data), FormatError,
                h5 + r": has no dataset 'data'"),
        BadCase("repr-h5-float32", "preprocessed",
                reader_case(rewrite_repr(np.zeros((10, 20, *SENSOR_HW), np.float32))), FormatError,
                h5 + r": dataset 'data' must be uint8 \[T, 20, H, W\], got float32"),
        BadCase("repr-h5-10-channels", "preprocessed",
                reader_case(rewrite_repr(np.zeros((10, 10, *SENSOR_HW), np.uint8))), FormatError,
                h5 + r": dataset 'data' must be uint8 \[T, 20, H, W\], got uint8 \(10, 10, 64, 96\)"),
        BadCase("repr-h5-damaged-chunk", "preprocessed", reader_case(damage_repr_chunk, read_all=True), FormatError,
                h5 + r": cannot read frames 0:10"),
        BadCase("repr-empty-sequence", "preprocessed", reader_case(empty_sequence), FormatError,
                idx + r": index \d+ points past the 0 representations"),
        BadCase("frame-index-past-end", "preprocessed", reader_case(edit_frame_index(lambda a: a + 100)), FormatError,
                idx + r": index \d+ points past the 10 representations"),
        BadCase("frame-index-float", "preprocessed", split_cli_case(edit_frame_index(lambda a: a.astype(np.float64))),
                FormatError, idx + r": expected non-empty int64 \[F\] indices, got float64"),
        BadCase("frame-index-unsorted", "preprocessed", split_cli_case(edit_frame_index(lambda a: a[::-1].copy())),
                FormatError, idx + r": representation indices are not sorted, unique and non-negative"),
        BadCase("frame-index-empty", "preprocessed", split_cli_case(edit_frame_index(lambda a: a[:0])), FormatError,
                idx + r": expected non-empty int64 \[F\] indices"),
        BadCase("frame-index-pickled", "preprocessed",
                split_cli_case(edit_frame_index(lambda a: np.array([a, None], dtype=object), allow_pickle=True)),
                FormatError, idx + r": not a readable \.npy file"),
        BadCase("frame-index-missing", "preprocessed", split_cli_case(remove_file(frame_index_file)), FormatError,
                idx + r": file is missing"),
        BadCase("repr-timestamps-unsorted", "preprocessed", unsorted_repr_timestamps, FormatError,
                r"stacked_histogram_dt=50_nbins=10/timestamps_us\.npy: timestamps are not strictly increasing"),
        # labels.npz: SequenceReader
        BadCase("labels-truncated", "labels", reader_case(truncate_file(lambda s: s.labels)), FormatError,
                lab + r": not a readable \.npz file"),
        BadCase("labels-missing-file", "labels", reader_case(remove_file(lambda s: s.labels)), FormatError,
                lab + r": labels file is missing"),
        BadCase("labels-missing-frame-index", "labels", reader_case(edit_labels(without_frame_index)), FormatError,
                lab + r": missing arrays \['objframe_idx_2_label_idx'\]"),
        BadCase("labels-pickled-objects", "labels", reader_case(pickled_labels), FormatError,
                lab + r": not a readable \.npz file \(Object arrays cannot be loaded"),
        BadCase("labels-plain-float-array", "labels", reader_case(edit_labels(labels_as_floats)), FormatError,
                lab + r": labels have dtype float32, expected the Prophesee or the LEOD pseudo-label dtype"),
        BadCase("labels-2d", "labels", reader_case(edit_labels(labels_as_column)), FormatError,
                lab + r": labels must be a 1-D array of rows, got shape \(\d+, 1\)"),
        BadCase("labels-nan-box", "labels", reader_case(edit_labels(with_label("y", np.nan))), FormatError,
                lab + r": boxes contain NaN or infinite coordinates"),
        BadCase("labels-inf-box", "labels", reader_case(edit_labels(with_label("w", -np.inf))), FormatError,
                lab + r": boxes contain NaN or infinite coordinates"),
        BadCase("labels-negative-height", "labels", reader_case(edit_labels(with_label("h", -1.0))), FormatError,
                lab + r": boxes have negative width or height"),
        BadCase("labels-frames-out-of-time-order", "labels", reader_case(edit_labels(second_frame_before_first)),
                FormatError, lab + r": timestamps \(field t\) of the labeled frames are not increasing: frame 1"),
        BadCase("labels-two-times-in-one-frame", "labels", reader_case(edit_labels(two_times_in_one_frame)),
                FormatError, lab + r": labeled frame \d+ holds rows with different timestamps \(field t\)"),
        BadCase("labels-frame-index-not-from-0", "labels", reader_case(edit_labels(first_frame_index_shifted)),
                FormatError, lab + r": objframe_idx_2_label_idx is not sorted from 0 within the labels"),
        BadCase("labels-frame-count-mismatch", "labels", reader_case(edit_labels(one_frame_dropped)), FormatError,
                lab + r": 3 labeled frames, but objframe_idx_2_repr_idx has 4"),
        BadCase("labels-rows-without-frames", "labels", reader_case(edit_labels(rows_without_frames)), FormatError,
                lab + r": \d+ label rows but no labeled frame"),
        # split files: leod label-quality (reads the split first), leod split, training's sequence selection
        BadCase("split-truncated-json", "splits", committed_split("truncated.json"), FormatError,
                r"truncated\.json: not valid JSON"),
        BadCase("split-missing-summary", "splits", committed_split("missing_summary.json"), FormatError,
                r"missing_summary\.json: expected a JSON object with keys"),
        BadCase("split-unknown-version", "splits", committed_split("unknown_version.json"), FormatError,
                r"unknown_version\.json: unsupported version 2"),
        BadCase("split-unknown-setting", "splits", committed_split("unknown_setting.json"), FormatError,
                r"unknown_setting\.json: unknown setting 'wsodd'"),
        BadCase("split-ratio-as-string", "splits", committed_split("ratio_as_string.json"), FormatError,
                r"ratio_as_string\.json: ratio '0\.5' is not a number"),
        BadCase("split-ratio-above-one", "splits", committed_split("ratio_above_one.json"), FormatError,
                r"ratio_above_one\.json: ratio 1\.5 is not in \(0, 1\]"),
        BadCase("split-full-below-one", "splits", committed_split("full_below_one.json"), FormatError,
                r"full_below_one\.json: setting 'full' needs ratio 1"),
        BadCase("split-zero-sequence-length", "splits", committed_split("zero_sequence_length.json"), FormatError,
                r"zero_sequence_length\.json: sequence_length 0 is not a positive integer"),
        BadCase("split-unsorted-frames", "splits", committed_split("unsorted_frames.json"), FormatError,
                r"unsorted_frames\.json: sequence 'synth_train_000': frames are not sorted"),
        BadCase("split-float-frames", "splits", committed_split("float_frames.json"), FormatError,
                r"float_frames\.json: sequence 'synth_train_000': needs a name and a list of integer frames"),
        BadCase("split-summary-disagrees", "splits", committed_split("summary_disagrees.json"), FormatError,
                r"summary_disagrees\.json: summary .* disagrees with the content"),
        BadCase("split-missing-file", "splits", missing_split, FormatError, r"split\.json: split file is missing"),
        BadCase("split-cli-malformed-ratio", "splits", split_with_malformed_ratio, ValueError,
                r"ratio '0\.1x' is not a number"),
        BadCase("split-cli-no-train-dir", "splits", split_of_dataset_without_train, ValueError,
                r"training split directory .*data/train does not exist"),
        BadCase("split-unknown-sequence", "splits", split_naming_unknown_sequence, ValueError,
                r"label split and .*data/train disagree: sequences missing on disk \['synth_train_999'\]"),
        # checkpoints: leod import-checkpoint, load_model_checkpoint (leod evaluate / pseudo-label)
        BadCase("ckpt-wrong-model-size", "checkpoints", checkpoint_imported_as("small", NUM_CLASSES),
                CheckpointMismatchError, ckpt + r": checkpoint does not match the model \(\d+ problems\)"),
        BadCase("ckpt-wrong-class-count", "checkpoints", checkpoint_imported_as("tiny", 3), CheckpointMismatchError,
                ckpt + r": checkpoint does not match the model \(\d+ problems\):\n  shape mismatch: yolox_head"),
        BadCase("ckpt-plain-pickle", "checkpoints", checkpoint_case(pickled_checkpoint), FormatError,
                ckpt + r": not a readable weights-only PyTorch checkpoint.*\(UnpicklingError\)"),
        BadCase("ckpt-pickled-code", "checkpoints", code_pickle_case, FormatError,
                ckpt + r": not a readable weights-only PyTorch checkpoint.*\(UnpicklingError\)"),
        BadCase("ckpt-truncated", "checkpoints", checkpoint_case(truncated_checkpoint), FormatError,
                ckpt + r": not a readable weights-only PyTorch checkpoint.*\(RuntimeError\)"),
        BadCase("ckpt-empty-file", "checkpoints", checkpoint_case(empty_checkpoint), FormatError,
                ckpt + r": not a readable weights-only PyTorch checkpoint.*\(EOFError\)"),
        BadCase("ckpt-missing", "checkpoints", missing_checkpoint, FormatError, ckpt + r": checkpoint file is missing"),
        BadCase("ckpt-no-state-dict", "checkpoints", checkpoint_case(training_state_only), FormatError,
                ckpt + r": not a checkpoint: expected a Lightning checkpoint with 'state_dict'"),
        BadCase("ckpt-nan-weights", "checkpoints", checkpoint_case(nan_weights), FormatError,
                ckpt + r": tensor 'mdl\.[\w.]+' holds NaN or infinite values"),
        BadCase("ckpt-no-stored-config", "checkpoints", stored_config_case(drop_config), FormatError,
                ckpt + r": no 'leod_model_config' stored"),
        BadCase("ckpt-stored-config-unknown-key", "checkpoints", stored_config_case(config_with_unknown_key),
                FormatError, ckpt + r": invalid 'leod_model_config': unknown RVTConfig keys: \['embed_dimension'\]"),
        # configs: the workflow config as the Snakefile loads it, leod --config files
        BadCase("workflow-config-typo-top-level", "configs", workflow_overlay("workflow_typo_top_level.yaml"),
                WorkflowError, r"'experiment' was unexpected"),
        BadCase("workflow-config-typo-nested", "configs", workflow_overlay("workflow_typo_nested.yaml"),
                WorkflowError, r"'sequence_lenght' was unexpected"),
        BadCase("workflow-config-malformed-ratio", "configs", workflow_overlay("workflow_malformed_ratio.yaml"),
                WorkflowError, r"'0\.1x' is not of type 'number'"),
        BadCase("workflow-config-ratio-above-one", "configs", workflow_overlay("workflow_ratio_above_one.yaml"),
                WorkflowError, r"1\.5 is greater than the maximum of 1"),
        BadCase("workflow-config-wrong-type", "configs", workflow_overlay("workflow_wrong_type.yaml"),
                WorkflowError, r"'two' is not of type 'integer'"),
        BadCase("workflow-config-unconfigured-dataset", "configs",
                workflow_overlay("workflow_unconfigured_dataset.yaml"), ValueError,
                r"experiments\[0\] \(gen9 wsod 0\.1\): dataset 'gen9' is not configured"),
        BadCase("workflow-config-unknown-variant", "configs", workflow_overlay("workflow_unknown_variant.yaml"),
                ValueError, r"ablation\.experiments\[0\] .*unknown variant 'no-such-variant' \(known variants:"),
        BadCase("workflow-config-full-below-one", "configs", workflow_overlay("workflow_full_below_one.yaml"),
                ValueError, r"experiments\[0\] \(synth full 0\.5\): setting 'full' keeps every label"),
        BadCase("preprocess-config-typo", "configs", preprocess_with_config("preprocess_typo.yaml"), ValueError,
                r"preprocess_typo\.yaml: unknown setting 'nbin'"),
        BadCase("preprocess-config-wrong-type", "configs", preprocess_with_config("preprocess_wrong_type.yaml"),
                ValueError, r"PreprocessConfig\.nbins must be int, got 'ten'"),
        BadCase("preprocess-config-nested-wrong-type", "configs",
                preprocess_with_config("preprocess_nested_wrong_type.yaml"), ValueError,
                r"BoxFilterConfig\.min_box_diag must be float, got 'big'"),
        BadCase("train-config-typo", "configs", train_with_config("train_typo.yaml"), ValueError,
                r"train_typo\.yaml\.optim: unknown setting 'lr'"),
        BadCase("config-yaml-syntax-error", "configs", preprocess_with_config("syntax_error.yaml"),
                yaml.parser.ParserError, r'syntax_error\.yaml", line \d+'),
        BadCase("config-not-a-mapping", "configs", preprocess_with_config("not_a_mapping.yaml"), ValueError,
                r"not_a_mapping\.yaml: expected a mapping of settings"),
        # targets: what the rules compute from a requested path's wildcards, and the gate they read
        BadCase("target-unknown-dataset", "targets", target("gen9", "wsod", "0.1"), ValueError,
                r"dataset 'gen9' is not configured \(configured: synth\)"),
        BadCase("target-malformed-ratio", "targets", target("synth", "wsod", "abc"), ValueError,
                r"malformed ratio 'abc' is not a number in 'wsod_abc'"),
        BadCase("target-ratio-above-one", "targets", target("synth", "ssod", "1.5"), ValueError,
                r"malformed ratio '1\.5' is not in \(0, 1\] in 'ssod_1\.5'"),
        BadCase("target-non-canonical-ratio", "targets", target("synth", "wsod", "0.10"), ValueError,
                r"ratio '0\.10' is not written canonically: use 'wsod_0\.1'"),
        BadCase("target-full-below-one", "targets", target("synth", "full", "0.5"), ValueError,
                r"setting 'full' keeps every label: its ratio must be 1"),
        BadCase("target-unknown-variant", "targets", target("synth", "wsod", "0.1", "no-such"), ValueError,
                r"unknown variant 'no-such' \(known variants: .*no-tta"),
        BadCase("gate-truncated-json", "targets", gate_case('{"passed": tr'), ValueError,
                r"gate\.json: not a gate decision: not valid JSON"),
        BadCase("gate-not-boolean", "targets", gate_case('{"passed": "yes"}'), ValueError,
                r"gate\.json: not a gate decision \(needs a boolean 'passed'\)"),
        # downloads: leod download
        BadCase("download-crc-mismatch", "downloads", served_with_wrong_crc, DownloadError,
                r"crc32 mismatch for http://\S+/gen1\.tar: gen1\.tar \(\d+ bytes\) has crc32 [0-9a-f]{8}, expected"),
        BadCase("download-http-404", "downloads", served_404, DownloadError,
                r"http://\S+/no-such\.tar: HTTP 404 .*\(not retried\)"),
        BadCase("download-malformed-crc32", "downloads", bad_crc_string, ValueError,
                r"crc32 must be 8 hex digits such as 5acab6f3, got 'not-hex!'"),
        BadCase("download-half-downloaded-archive", "downloads", local_archive_case(half_downloaded), DownloadError,
                r"gen1\.tar exists but its crc32 is [0-9a-f]{8}, expected [0-9a-f]{8}"),
        BadCase("download-truncated-gzip", "downloads", local_archive_case(truncated_gzip_with_its_crc),
                ArchiveError, r"gen1\.tar: cannot extract"),
        BadCase("download-html-instead-of-tar", "downloads", local_archive_case(html_page_with_its_crc),
                ArchiveError, r"gen1\.tar: cannot extract \(ReadError"),
        BadCase("download-two-top-level-entries", "downloads", local_archive_case(two_top_level_folders),
                ArchiveError, r"gen1\.tar: expected a single top-level folder to strip"),
        BadCase("download-member-escapes-output", "downloads", local_archive_case(member_escaping_the_output),
                ArchiveError, r"gen1\.tar: cannot extract \(OutsideDestinationError"),
        BadCase("download-foreign-output-dir", "downloads", foreign_output_directory, FileExistsError,
                r"datasets/gen1 exists and is not an extraction made by leod download"),
    ]


CASES: list[BadCase] = _cases()
