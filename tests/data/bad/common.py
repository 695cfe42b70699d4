"""What every category of bad inputs shares: the case types, the pristine inputs, and the builders of calls and
damages that more than one category uses."""
from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from leod_core.cli import build_parser
from leod_core.models.checkpoint import save_model_checkpoint
from leod_core.models.detector import RVTConfig, build_detector

FILES = Path(__file__).resolve().parent / "files"

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

    @property
    def archive_url(self) -> str:
        """URL of ``archive``."""
        return f"{self.base_url}/{self.archive.name}"


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


# ------------------------------------------------------------------------------------------------ calls
def watched_dir(path: Path) -> Path:
    """An output directory that already holds :data:`SENTINEL`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / SENTINEL).write_text("written before the failing run\n")
    return path


def leod_call(argv: list[str], *watched: Path, must_not_exist: tuple[Path, ...] = ()) -> Call:
    return Call(run=lambda: run_leod(argv), argv=tuple(argv), watched=watched, must_not_exist=must_not_exist)


def preprocess_call(work: Path, raw: Path, *options: str) -> Call:
    """``leod preprocess`` of ``raw`` (with extra ``options``) into a watched directory."""
    out = watched_dir(work / "data_out")
    return leod_call(["preprocess", "--raw", str(raw), "--out", str(out), "--preset", "synth", *options], out)


def split_call(work: Path, data: Path, ratio: str = SPLIT_RATIO) -> Call:
    """``leod split`` of the preprocessed dataset ``data`` into a watched directory."""
    out = watched_dir(work / "experiment")
    return leod_call(["split", "--data", str(data), "--setting", "wsod", "--ratio", ratio,
                      "--sequence-length", SPLIT_LENGTH, "--out", str(out / "split.json")], out)


# ---------------------------------------------------------------------------------------------- damages
def truncate(path: Path, keep_fraction: float = 0.5) -> None:
    """Keep the first ``keep_fraction`` of the file's bytes (a half-written or half-copied file)."""
    content = path.read_bytes()
    path.write_bytes(content[:int(len(content) * keep_fraction)])


def replace_h5(path: Path, datasets: dict[str, np.ndarray]) -> None:
    """Replace the HDF5 file ``path`` by one holding just ``datasets`` (names may hold groups: ``events/t``)."""
    path.unlink()
    with h5py.File(path, "w") as h5:
        for name, data in datasets.items():
            h5.create_dataset(name, data=data)


def resave_npy(path: Path, make: Callable[[np.ndarray], np.ndarray], allow_pickle: bool = False) -> None:
    """Replace the ``.npy`` file ``path`` by ``make(its array)``, saved with ``np.save``."""
    np.save(path, make(np.load(path, allow_pickle=False)), allow_pickle=allow_pickle)


def set_first(field: str, value: float) -> Callable[[np.ndarray], np.ndarray]:
    """An edit of structured rows that sets ``field`` of the first row to ``value``."""
    def edit(rows: np.ndarray) -> np.ndarray:
        rows[field][0] = value
        return rows
    return edit
