"""Training-step speed of RVT sizes on this machine: forward + backward + AdamW step of the full detector
(backbone over L steps, FPN + head + YOLOX loss on the labeled frames), batch 8, random event input.

Usage: python benchmarks/bench_train_step.py [--steps 3] [--length 5] [--sizes tiny small] [--device cuda]
Prints one Markdown row per configuration for BENCHMARKS.md (``benchmarks/gpu_check.sh`` runs it on a GPU).
"""
from __future__ import annotations

import argparse
import time

import torch

from bench_common import commit, device_name, synchronize
from leod_core.data.batch import Batch
from leod_core.models.detector import RVTConfig, count_parameters
from leod_core.models.lightning_module import DetectionModule, OptimConfig
from leod_core.models.loss import LossConfig

GEN1_HW = (240, 304)


def random_batch(length: int, batch: int, hw: tuple[int, int], gen: torch.Generator) -> Batch:
    """Event counts in [0, 10) and three 40x30 boxes per column at the last step."""
    ev = torch.randint(0, 10, (length, batch, 20, *hw), generator=gen).float()
    boxes = torch.tensor([[1, 20, 30, 40, 30, 0, 1, 1], [1, 100, 80, 40, 30, 1, 1, 1], [1, 150, 60, 30, 40, 0, 1, 1]],
                         dtype=torch.float32)
    boxes[:, 1] = boxes[:, 1] % (hw[1] - 45)
    boxes[:, 2] = boxes[:, 2] % (hw[0] - 45)
    labels = [[None] * batch for _ in range(length - 1)] + [[boxes.clone() for _ in range(batch)]]
    return Batch(ev_repr=ev, labels=labels, skipped_labels=[[None] * batch for _ in range(length)],
                 is_first_sample=torch.ones(batch, dtype=torch.bool),
                 is_padded_mask=torch.zeros(length, batch, dtype=torch.bool),
                 is_reversed=torch.zeros(batch, dtype=torch.bool), sequences=["bench"] * batch,
                 repr_idx=torch.arange(length).repeat(batch, 1).T, worker_id=0, num_stream=0)


def seconds_per_step(config: RVTConfig, batch: Batch, steps: int, device: torch.device) -> float:
    module = DetectionModule(config, LossConfig(), OptimConfig(max_steps=steps + 1)).to(device)
    optimizer = module.configure_optimizers()["optimizer"]
    batch = batch.to(device)
    timings = []
    for _ in range(steps + 1):   # the first step warms up allocators and is not counted
        synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        optimizer.step()
        synchronize(device)
        timings.append(time.perf_counter() - start)
    return sum(timings[1:]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--length", type=int, default=5, help="sequence length L")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    device = torch.device(args.device)
    rows = [(size, GEN1_HW, {}) for size in args.sizes] + [("tiny", (64, 96), {"embed_dim": 16, "dim_head": 16})]
    print("| model | input | params | batch x L | s/step | frames/s (fwd+bwd) | device | commit |")
    print("|---|---|---|---|---|---|---|---|")
    for size, hw, overrides in rows:
        config = RVTConfig.for_size(size, 2, hw, **overrides)
        batch = random_batch(args.length, args.batch, hw, gen)
        sec = seconds_per_step(config, batch, args.steps, device)
        name = f"RVT-{size[0].upper()}" + (f" (embed {overrides['embed_dim']})" if overrides else "")
        params = count_parameters(DetectionModule(config, LossConfig(), OptimConfig()).mdl) / 1e6
        print(f"| {name} | {hw[0]}x{hw[1]} | {params:.2f} M | {args.batch} x {args.length} | {sec:.2f} | "
              f"{args.batch * args.length / sec:.1f} | {device_name(device)} | {commit()} |")


if __name__ == "__main__":
    main()
