"""Stacked-histogram speed: our NumPy ``stacked_histogram`` against a torch ``put_`` reference run the way
RVT's ``StackedHistogram.construct`` runs (uint8 accumulation, clamp), on the same random Gen1-size windows.

Usage: python benchmarks/bench_preprocess.py [--events 50000] [--windows 40]
Prints a Markdown table row for BENCHMARKS.md (ms per window and events/s). Outputs are checked to be identical
before timing counts.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench_common import load_average, provenance
from leod_core.data.representation import stacked_histogram

HEIGHT, WIDTH, NBINS, CUTOFF = 240, 304, 10, 10


def torch_reference(x, y, p, t) -> np.ndarray:
    """RVT's algorithm in torch (fast mode): float32 time bins, uint8 put_ accumulation, clamp."""
    rep = torch.zeros((2, NBINS, HEIGHT, WIDTH), dtype=torch.uint8)
    t_norm = (t - t[0]) / max(int(t[-1] - t[0]), 1) * NBINS
    t_idx = torch.clamp(t_norm.floor(), max=NBINS - 1)
    idx = x + WIDTH * y + HEIGHT * WIDTH * t_idx.long() + NBINS * HEIGHT * WIDTH * p
    rep.put_(idx, torch.ones_like(idx, dtype=torch.uint8), accumulate=True)
    return torch.clamp(rep, max=CUTOFF).reshape(-1, HEIGHT, WIDTH).numpy()


def make_windows(num_windows: int, num_events: int, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    windows = []
    for _ in range(num_windows):
        t = np.sort(rng.integers(0, 50_000, num_events)).astype(np.int64)
        windows.append((rng.integers(0, WIDTH, num_events), rng.integers(0, HEIGHT, num_events),
                        rng.integers(0, 2, num_events), t))
    return windows


def time_it(fn, windows) -> float:
    start = time.perf_counter()
    for w in windows:
        fn(*w)
    return (time.perf_counter() - start) / len(windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000, help="events per 50 ms window")
    parser.add_argument("--windows", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    windows = make_windows(args.windows, args.events)
    torch_windows = [tuple(torch.from_numpy(a) for a in w) for w in windows]
    for w, tw in zip(windows[:3], torch_windows[:3]):
        assert np.array_equal(stacked_histogram(*w, HEIGHT, WIDTH, NBINS, CUTOFF), torch_reference(*tw))
    ours = time_it(lambda *w: stacked_histogram(*w, HEIGHT, WIDTH, NBINS, CUTOFF), windows)
    ref = time_it(torch_reference, torch_windows)
    print("| benchmark | device | torch | commit | command | load | ours (ms/window) | ours (M events/s) | "
          "torch reference (ms/window) | speed ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| stacked histogram, {args.events} events, 240x304 | {provenance(torch.device('cpu'), 'bench_preprocess.py')}"
          f" | {load_average()} | {ours * 1e3:.2f} | {args.events / ours / 1e6:.1f} | {ref * 1e3:.2f} | "
          f"{ref / ours:.2f}x |")


if __name__ == "__main__":
    main()
