"""Compiled inference (``StreamConfig.compile_model``) against eager: the model step per streamed step.

For each RVT size: a model with random weights on a ``--batch``-row input of Gen1 shape (240x304, 20 channels,
padded to 256x320 inside the model as the streaming engine has it padded), one recurrent backbone step with
state plus FPN/head on every row per step, through :class:`leod_core.models.compiled.ModelStep` compiled and
eager. The compiled step is built fresh; its first call (zero states) compiles, a second call (states fed back)
must reuse the graph. After ``--warmup`` steps of each, ``--repeats`` rounds of ``--steps`` steps run
interleaved (eager, compiled, eager, ...); medians are reported, with the 1-minute load when the row was taken.

Usage: python benchmarks/bench_compile.py [--sizes tiny small] [--batch 2] [--steps 10] [--repeats 5]
       [--mode max-autotune-no-cudagraphs] [--freezing] [--autocast bf16] [--device cuda] [--threads N]
Prints one Markdown row per size for BENCHMARKS.md. On CUDA, ``--mode reduce-overhead`` captures CUDA graphs.
"""
from __future__ import annotations

import argparse
import logging
import time

import torch

from bench_common import (FRAME_SHAPES, interleaved_medians, load_average, print_markdown_table, provenance,
                          synchronize)
from leod_core.models.compiled import CPU_INFERENCE_OPTIONS, ModelStep
from leod_core.models.detector import RVTConfig, build_detector
from leod_core.models.inference import AUTOCAST_DTYPES, autocast_context

#: Event-histogram counts of the random input (Gen1 representations hold small counts per cell).
MAX_COUNT = 10
#: Columns after the provenance ones.
COLUMNS = ("compile (s)", "graphs", "eager (ms/step)", "compiled (ms/step)", "speed-up")


def random_input(batch: int, frame_hw: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``Tensor[batch, 20, H, W]`` float32 of random small counts (unpadded, as the engine reads it)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, MAX_COUNT + 1, (batch, 20, *frame_hw), generator=gen)
    return x.to(device=device, dtype=torch.float32)


@torch.inference_mode()
def run_steps(step_fns: tuple, x: torch.Tensor, steps: int, amp: torch.dtype | None) -> None:
    """``steps`` recurrent steps from zero states: backbone, then FPN/head on every row."""
    backbone, detect = step_fns
    states = None
    for _ in range(steps):
        with autocast_context(x.device, amp):
            features, states = backbone(x, states)
            detect(features)


def bench_size(size: str, args, device: torch.device) -> str:
    """Compile, warm up and time eager vs compiled for one RVT size; one Markdown row."""
    frame_hw = FRAME_SHAPES["gen1"]
    torch.manual_seed(0)
    model = build_detector(RVTConfig.for_size(size, 2, frame_hw)).eval().to(device)
    amp = AUTOCAST_DTYPES[args.autocast] if args.autocast else None
    options = dict(CPU_INFERENCE_OPTIONS) if args.freezing else None
    step = ModelStep(model, compile=True, mode=args.mode, options=options)
    x = random_input(args.batch, frame_hw, device)
    eager = (model.forward_backbone, model.forward_detect)
    fast = (step.backbone, step.detect)
    synchronize(device)
    start = time.perf_counter()
    run_steps(fast, x, 2, amp)  # the first step compiles; the second, with states fed back, must not
    synchronize(device)
    compile_s = time.perf_counter() - start
    for fns in (eager, fast):
        run_steps(fns, x, args.warmup, amp)
    (eager_s, fast_s), _ = interleaved_medians([lambda: run_steps(eager, x, args.steps, amp),
                                                lambda: run_steps(fast, x, args.steps, amp)], args.repeats, device)
    eager_ms, fast_ms = 1e3 * eager_s / args.steps, 1e3 * fast_s / args.steps
    precision = "float32" if amp is None else f"{amp} autocast"
    variant = ", ".join(filter(None, [f"mode {args.mode}" if args.mode else "default mode",
                                      "freezing" if args.freezing else ""]))
    bench = (f"RVT-{size[0].upper()} {frame_hw[0]}x{frame_hw[1]}, batch {args.batch}, {precision}, {variant}, "
             f"{step.path}")
    return (f"| {bench} | {provenance(device, 'bench_compile.py')} | {load_average()} | {compile_s:.1f} | "
            f"{step.graphs} | {eager_ms:.1f} | {fast_ms:.1f} | {eager_ms / fast_ms:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], help="RVT sizes: tiny, small, base")
    parser.add_argument("--batch", type=int, default=2, help="model batch rows")
    parser.add_argument("--steps", type=int, default=10, help="recurrent steps per timed run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each path after compiling")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed runs of each path")
    parser.add_argument("--mode", default=None, help="torch.compile mode (default: inductor's default)")
    parser.add_argument("--freezing", action="store_true",
                        help="inductor freezing: weights folded as constants (what the engine does on the CPU)")
    parser.add_argument("--autocast", default=None, choices=sorted(AUTOCAST_DTYPES), help="default float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    rows = [bench_size(size, args, device) for size in args.sizes]
    print_markdown_table(COLUMNS, rows)


if __name__ == "__main__":
    main()
