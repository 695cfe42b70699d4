"""What the Gen1 paper plan would cost on a GPU cluster: hours per stage and in total on N GPUs (issue 20, item 4).

Inputs, each printed with the result:

* **The plan**: paper.yaml's Gen1 experiments as the workflow plans them (``planned_experiments`` of the paper-plan
  test: every split offset, variant and ablation; round 0 where an experiment trains its own, rounds 1..2 of
  self-training), with paper.yaml's steps (400k / 300k at <= 2 % / 200k at <= 1 % for round 0, 150k per
  self-training round), batch 8 x L 21, validation every 20k steps on the val split.
* **Gen1's size**: 1458 / 429 / 470 sequences of about 60 s (RVT's preprocessed Gen1), 50 ms representations: 1200
  frames per sequence.
* **Measured FLOPs per frame** (``torch.utils.flop_counter`` on the detector at 240x304, padded as the model pads):
  the backbone step plus FPN + head, per size. A training frame costs 3x a forward frame (forward + backward).
* **The GPU's effective throughput, calibrated on LEOD's own figure**: a Gen1 pseudo-labelling pass (1458
  sequences, 4 TTA views, RVT-S) takes about 7 h on a T4 (LEOD's README). That gives the T4's effective
  FLOP/s on this model; another GPU is assumed to reach the same fraction of its dense fp16/bf16 tensor peak
  (``--gpu``, peaks below). A small recurrent model at batch 8 keeps a big GPU less busy than a T4, so the
  figures for A100 / H100 are optimistic by that factor.
* **Measured CPU-side overheads** (this CPU, BENCHMARKS.md): the pseudo-labelling pipeline's time over the model's
  alone (``--tta-overhead``, from ``bench_tta_pipeline.py``), and the training loader's (``--loader-overhead``,
  from ``bench_train_loader.py``); both are added to the GPU time as they are (not hidden by overlap).
* **CPU stages** (merge, label quality, tracker) per pseudo-labelling pass, from ``bench_scaling.py``'s
  per-sequence costs scaled to 60 s sequences (``--cpu-ms-per-2s-sequence``); they run beside the GPU jobs.

Scheduling on N GPUs: every training is a one-GPU job and a pseudo-labelling pass is 8 shard jobs (paper.yaml's
``num_shards``). The wall time lies between ``max(total / N, critical path)`` (no schedule does better) and
``total / N + critical path`` (any greedy list schedule does at least that well, Graham's bound); the critical path
is the longest experiment's chain round 0 -> pass -> round 1 -> pass -> round 2 -> evaluation.

Run: ``python benchmarks/projection.py [--gpu T4 A100 H100] [--gpus 1 8 32] [--tta-overhead 0.11]
[--loader-overhead 0.10]``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "workflow"))
from test_paper_plan import merged_config, planned_experiments  # noqa: E402

from leod_core.models.detector import RVTConfig, build_detector  # noqa: E402

DATASET = "gen1"
SEQUENCES = {"train": 1458, "val": 429, "test": 470}
FRAMES_PER_SEQUENCE = 1200          # 60 s at 50 ms
INPUT_HW = (240, 304)
BATCH, SEQUENCE_LENGTH = 8, 21      # paper.yaml, gen1
VALIDATION_EVERY = 20_000
SELF_TRAIN_STEPS = 150_000
TTA_VIEWS = 4
TRAIN_FLOPS_FACTOR = 3              # forward + backward
LEOD_T4_PASS_HOURS = 7.0            # LEOD's README: one Gen1 pseudo-labelling pass on a T4
NUM_SHARDS = 8
#: Dense fp16 / bf16 tensor peak, TFLOP/s (vendor data sheets; H100 SXM).
GPU_PEAK_TFLOPS = {"T4": 65.0, "A100": 312.0, "H100": 989.0}
#: Model size of each variant (paper.yaml: rvt-b is RVT-B; every other experiment RVT-S).
VARIANT_SIZE = {"rvt-b": "base"}


def round0_steps(ratio: float) -> int:
    """paper.yaml's gen1 round-0 steps: 400k, 300k at <= 2 %, 200k at <= 1 %."""
    return 200_000 if ratio <= 0.01 else 300_000 if ratio <= 0.02 else 400_000


def forward_flops(size: str) -> float:
    """FLOPs of one frame through the backbone step and FPN + head of RVT-``size`` at Gen1's input."""
    model = build_detector(RVTConfig.for_size(size, 2, INPUT_HW)).eval()
    x = torch.zeros(1, 20, *INPUT_HW)
    with torch.no_grad():
        _, states = model.forward_backbone(x, None)
        with FlopCounterMode(display=False) as counter:
            features, _ = model.forward_backbone(x, states)
            model.forward_detect(features)
    return float(counter.get_total_flops())


@dataclass
class Job:
    stage: str
    experiment: str
    gpu_hours: float


def plan_jobs(flops: dict[str, float], flops_per_s: float, tta_overhead: float, loader_overhead: float
              ) -> tuple[list[Job], float]:
    """Every GPU job of the Gen1 plan with its GPU-hours, and the critical path (hours)."""
    jobs, critical = [], 0.0
    hours = lambda frames, size, factor=1: frames * flops[size] * factor / flops_per_s / 3600  # noqa: E731
    val_frames = SEQUENCES["val"] * FRAMES_PER_SEQUENCE
    test_frames = SEQUENCES["test"] * FRAMES_PER_SEQUENCE
    pass_frames = SEQUENCES["train"] * FRAMES_PER_SEQUENCE * TTA_VIEWS
    for (dataset, name), exp in sorted(planned_experiments(merged_config()).items()):
        if dataset != DATASET:
            continue
        variant = name.partition("+")[2]
        size = VARIANT_SIZE.get(variant, "small")
        ratio = float(name.split("_")[1].split("-")[0].split("+")[0])
        chain = 0.0
        for r in sorted(exp["rounds"]):
            if r == 0 and not exp["own_round0"]:
                continue
            steps = round0_steps(ratio) if r == 0 else SELF_TRAIN_STEPS
            train = hours(steps * BATCH * SEQUENCE_LENGTH, size, TRAIN_FLOPS_FACTOR) * (1 + loader_overhead)
            train += hours(steps // VALIDATION_EVERY * val_frames, size)
            evaluate = hours(test_frames, size)
            jobs += [Job("train", name, train), Job("evaluate", name, evaluate)]
            chain += train
            if r >= 1:
                label = hours(pass_frames, size) * (1 + tta_overhead)
                jobs.append(Job("pseudo-label", name, label))
                chain += label / NUM_SHARDS
        critical = max(critical, chain + evaluate)
    return jobs, critical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", nargs="+", default=["T4", "A100", "H100"], choices=sorted(GPU_PEAK_TFLOPS))
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tta-overhead", type=float, default=0.11,
                        help="pseudo-labelling time over model-only time, minus 1 (bench_tta_pipeline.py)")
    parser.add_argument("--loader-overhead", type=float, default=0.10,
                        help="training step time with the loader over in-memory, minus 1 (bench_train_loader.py)")
    parser.add_argument("--cpu-ms-per-2s-sequence", type=float, default=0.0,
                        help="merge + label quality + tracker per 2-s sequence (bench_scaling.py), per pass")
    args = parser.parse_args()

    flops = {size: forward_flops(size) for size in ("small", "base")}
    t4_flops_per_s = SEQUENCES["train"] * FRAMES_PER_SEQUENCE * TTA_VIEWS * flops["small"] / (LEOD_T4_PASS_HOURS
                                                                                             * 3600)
    print(f"forward GFLOP per frame at {INPUT_HW[0]}x{INPUT_HW[1]}: RVT-S {flops['small'] / 1e9:.2f}, "
          f"RVT-B {flops['base'] / 1e9:.2f}")
    print(f"T4 effective throughput calibrated on LEOD's {LEOD_T4_PASS_HOURS:g} h pass: "
          f"{t4_flops_per_s / 1e12:.2f} TFLOP/s ({100 * t4_flops_per_s / 1e12 / GPU_PEAK_TFLOPS['T4']:.1f} % of "
          f"its {GPU_PEAK_TFLOPS['T4']:g} TFLOP/s peak)")
    print(f"overheads: pseudo-labelling +{100 * args.tta_overhead:.0f} %, training loader "
          f"+{100 * args.loader_overhead:.0f} %")
    print()
    print("| GPU | stage | jobs | GPU-hours | " + " | ".join(f"wall h on {n} GPUs" for n in args.gpus) + " |")
    print("|---|---|---|---|" + "---|" * len(args.gpus))
    for gpu in args.gpu:
        flops_per_s = t4_flops_per_s * GPU_PEAK_TFLOPS[gpu] / GPU_PEAK_TFLOPS["T4"]
        jobs, critical = plan_jobs(flops, flops_per_s, args.tta_overhead, args.loader_overhead)
        passes = sum(1 for job in jobs if job.stage == "pseudo-label")
        cpu_hours = passes * SEQUENCES["train"] * args.cpu_ms_per_2s_sequence * 30 / 1000 / 3600
        for stage in ("train", "pseudo-label", "evaluate"):
            stage_jobs = [job for job in jobs if job.stage == stage]
            total = sum(job.gpu_hours for job in stage_jobs)
            print(f"| {gpu} | {stage} | {len(stage_jobs)} | {total:,.0f} | "
                  + " | ".join(f"{total / n:,.0f}" for n in args.gpus) + " |")
        total = sum(job.gpu_hours for job in jobs)
        walls = [f"{max(total / n, critical):,.0f}–{total / n + critical:,.0f}" for n in args.gpus]
        print(f"| {gpu} | **all** (critical path {critical:,.0f} h; CPU stages {cpu_hours:.1f} h beside) | "
              f"{len(jobs)} | {total:,.0f} | " + " | ".join(walls) + " |")


if __name__ == "__main__":
    main()
