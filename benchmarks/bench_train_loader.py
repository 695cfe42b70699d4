"""Training steps/s with the HDF5 training loader in the loop against the same steps on in-memory batches.

Loader: ``build_train_loader`` (random-access or mixed sampling, LEOD's augmentation, ``--workers`` DataLoader
workers) over synthetic preprocessed sequences of Gen1 shape (240x304) written with the project's writers.
In memory: the same batches (the loader is reseeded before every timed pass), collected beforehand and already on
the device.
Each step is the full detector forward + backward + AdamW step (``DetectionModule.training_step``).
The two run interleaved (``--repeats`` rounds of ``--steps`` steps each) in one process; medians reported.
Loader overhead = loader time / in-memory time - 1 (target <= 10 %).

``--loader-only``: the loader alone (no model), batches/s and ms per batch (the per-batch CPU cost that bounds
what one worker can feed).

Usage: python benchmarks/bench_train_loader.py [--workers 0 2] [--steps 6] [--batch 4] [--length 5]
       [--sampling random] [--size tiny --embed-dim 16] [--device cuda] [--loader-only]
Prints one Markdown row per worker count. ``--device cuda`` is supported but untested here.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import tempfile
from pathlib import Path

import torch

from bench_common import (FRAME_SHAPES, SyntheticSequenceConfig, interleaved_medians, load_average,
                          print_markdown_table, provenance, write_synthetic_split)
from leod_core.data.loaders import MixedLoader, build_train_loader
from leod_core.models.detector import RVTConfig
from leod_core.models.lightning_module import DetectionModule, OptimConfig
from leod_core.models.loss import LossConfig


EV_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
#: The loader's seed, restored before every timed pass.
SEED = 0


def make_module(size: str, embed_dim: int | None, frame_hw: tuple[int, int], steps: int, device: torch.device):
    """The training module and its AdamW optimizer."""
    overrides = {} if embed_dim is None else {"embed_dim": embed_dim, "dim_head": embed_dim}
    module = DetectionModule(RVTConfig.for_size(size, 2, frame_hw, **overrides), LossConfig(),
                             OptimConfig(max_steps=steps + 1)).to(device)
    return module, module.configure_optimizers()["optimizer"]


def train_steps(module, optimizer, batches, steps: int, device: torch.device) -> None:
    """``steps`` optimisation steps on the first ``steps`` batches of ``batches`` (moved to ``device``)."""
    for batch in itertools.islice(batches, steps):
        optimizer.zero_grad()
        loss = module.training_step(batch.to(device), 0)
        if loss is not None:
            loss.backward()
            optimizer.step()


def reseed(loader) -> None:
    """Restart the loader's random draws (shuffling, windows, augmentation) from :data:`SEED`: its next pass
    yields the same batches again."""
    for part in (loader.stream_loader, loader.random_loader) if isinstance(loader, MixedLoader) else (loader,):
        part.generator.manual_seed(SEED)


def bench_workers(workers: int, data_root: Path, args, module, optimizer, device: torch.device) -> str:
    """Loader vs in-memory steps for one worker count; one Markdown row."""
    loader = build_train_loader(data_root, None, args.sampling, args.batch, args.length, num_workers=workers,
                                seed=SEED, ev_dtype=EV_DTYPES[args.ev_dtype], persistent_workers=workers > 0,
                                pin_memory=device.type == "cuda")
    reseed(loader)
    in_memory = [b.to(device) for b in itertools.islice(loader, args.steps)]
    if len(in_memory) < args.steps:
        raise SystemExit(f"the loader yields only {len(in_memory)} batches; write more sequences (--sequences)")
    train_steps(module, optimizer, in_memory, 1, device)  # warm-up

    def from_loader() -> None:
        reseed(loader)  # the same batches as in memory: the model's cost depends on the boxes a batch holds
        train_steps(module, optimizer, loader, args.steps, device)

    medians, _ = interleaved_medians([from_loader, lambda: train_steps(module, optimizer, in_memory, args.steps,
                                                                       device)], args.repeats, device)
    t_loader, t_memory = medians
    return (f"| train steps, {args.sampling} sampling, batch {args.batch} x L {args.length}, 240x304, "
            f"{args.ev_dtype} events, {workers} workers | {provenance(device, 'bench_train_loader.py')} | "
            f"{load_average()} | {args.steps / t_loader:.3f} | {args.steps / t_memory:.3f} | {t_loader / t_memory - 1:+.1%} |")


def bench_loader_only(workers: int, data_root: Path, args) -> str:
    """Batches/s of the loader alone (no model): ``--steps`` batches per round, median of ``--repeats`` rounds
    after one warm-up round (HDF5 handles opened, compiled kernels loaded); one Markdown row."""
    loader = build_train_loader(data_root, None, args.sampling, args.batch, args.length, seed=SEED,
                                num_workers=workers,
                                ev_dtype=EV_DTYPES[args.ev_dtype], persistent_workers=workers > 0)

    def take() -> None:
        taken = sum(1 for _ in itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), args.steps))
        if taken < args.steps:
            raise SystemExit(f"the loader yields only {taken} batches")

    cpu = torch.device("cpu")
    take()
    (seconds,), _ = interleaved_medians([take], args.repeats, cpu)
    return (f"| loader only, {args.sampling} sampling, batch {args.batch} x L {args.length}, 240x304, "
            f"{args.ev_dtype} events, {workers} workers | {provenance(cpu, 'bench_train_loader.py')} | "
            f"{load_average()} | {args.steps / seconds:.2f} | {seconds / args.steps * 1e3:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--steps", type=int, default=6, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=5, help="sequence length L")
    parser.add_argument("--sampling", default="random", choices=["random", "stream", "mixed"])
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--reprs", type=int, default=60, help="representations per sequence")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--embed-dim", type=int, default=16, help="override the RVT width (0: the size's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ev-dtype", default="uint8", choices=sorted(EV_DTYPES),
                        help="dtype of the loader's event tensors (uint8: what leod train uses; converted on the "
                             "device)")
    parser.add_argument("--loader-only", action="store_true",
                        help="time the loader alone (batches/s, ms per batch), without the model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.loader_only:
        with tempfile.TemporaryDirectory(prefix="bench_train_loader_") as tmp:
            write_synthetic_split(Path(tmp) / "train", args.sequences, SyntheticSequenceConfig(num_reprs=args.reprs))
            rows = [bench_loader_only(w, Path(tmp), args) for w in args.workers]
        print_markdown_table(["batches/s", "ms per batch"], rows)
        return
    device = torch.device(args.device)
    frame_hw = FRAME_SHAPES["gen1"]
    module, optimizer = make_module(args.size, args.embed_dim or None, frame_hw,
                                    args.steps * (args.repeats + 1) * len(args.workers) + 2, device)
    with tempfile.TemporaryDirectory(prefix="bench_train_loader_") as tmp:
        write_synthetic_split(Path(tmp) / "train", args.sequences, SyntheticSequenceConfig(num_reprs=args.reprs))
        rows = [bench_workers(w, Path(tmp), args, module, optimizer, device) for w in args.workers]
    print_markdown_table(["with loader (steps/s)", "in memory (steps/s)", "loader overhead"], rows)


if __name__ == "__main__":
    main()
