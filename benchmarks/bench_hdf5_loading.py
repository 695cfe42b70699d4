"""HDF5 loading speed: frames/s of the training loader (no model) against its number of DataLoader workers,
and of a plain sequential read of the same files (h5py + Blosc/Zstd decompression only).

Synthetic preprocessed sequences (Gen1 240x304 and/or 1Mpx down-sampled 360x640, 20 channels, ~5 % non-zero
cells, the project's writer and compression) in a temporary directory. A loaded frame is one ``[20, H, W]``
representation of a batch ``[L, B, 20, H, W]`` (float32, augmented as in training).

Usage: python benchmarks/bench_hdf5_loading.py [--workers 0 1 2] [--batches 20] [--shapes gen1 1mpx-ds2]
Prints one Markdown row per shape.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import tempfile
import time
from pathlib import Path

import torch

from bench_common import (FRAME_SHAPES, SyntheticSequenceConfig, load_average, print_markdown_table, provenance,
                          write_synthetic_split)
from leod_core.data.formats import SequencePaths, open_event_repr
from leod_core.data.loaders import build_train_loader


def sequential_read_fps(split_dir: Path, downsampled_by_2: bool) -> float:
    """Frames/s of reading every sequence's representation file whole, in one process."""
    files = [SequencePaths(d).ev_repr_file(downsampled_by_2) for d in sorted(split_dir.iterdir())]
    start = time.perf_counter()
    frames = 0
    for path in files:
        with open_event_repr(path) as h5:
            frames += len(h5["data"][:])
    return frames / (time.perf_counter() - start)


def loader_fps(root: Path, workers: int, args, downsampled_by_2: bool) -> float:
    """Frames/s of ``args.batches`` batches of the random-access training loader (after its first batch)."""
    loader = build_train_loader(root, None, "random", args.batch, args.length, num_workers=workers,
                                downsampled_by_2=downsampled_by_2, persistent_workers=workers > 0)
    batches = iter(loader)
    next(batches)  # starts the workers and opens the files
    start = time.perf_counter()
    frames = sum(b.ev_repr.shape[0] * b.ev_repr.shape[1] for b in itertools.islice(batches, args.batches))
    return frames / (time.perf_counter() - start)


def bench_shape(shape: str, args, work: Path) -> str:
    """One Markdown row: sequential read, then the loader per worker count."""
    ds2 = shape == "1mpx-ds2"
    frame_hw = FRAME_SHAPES[shape]
    root = work / shape
    write_synthetic_split(root / "train", args.sequences, SyntheticSequenceConfig(
        num_reprs=args.reprs, frame_hw=frame_hw, downsampled_by_2=ds2))
    raw = sequential_read_fps(root / "train", ds2)
    per_workers = [f"{loader_fps(root, w, args, ds2):.0f}" for w in args.workers]
    return (f"| {shape} {frame_hw[0]}x{frame_hw[1]}, batch {args.batch} x L {args.length} | "
            f"{provenance(torch.device('cpu'), 'bench_hdf5_loading.py')} | {load_average()} | {raw:.0f} | "
            f"{' / '.join(per_workers)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=20, help="timed batches per worker count")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=5, help="sequence length L")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--reprs", type=int, default=100, help="representations per sequence")
    parser.add_argument("--shapes", nargs="+", default=list(FRAME_SHAPES), choices=list(FRAME_SHAPES))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_hdf5_") as tmp:
        rows = [bench_shape(shape, args, Path(tmp)) for shape in args.shapes]
    workers = " / ".join(str(w) for w in args.workers)
    print_markdown_table(["sequential h5py read (frames/s)", f"loader, {workers} workers (frames/s)"], rows)


if __name__ == "__main__":
    main()
