"""COCO backend speed: faster-coco-eval against pycocotools on the same random Gen1-like detections.

Both run the full Prophesee protocol (``evaluate_detections``: filters, time matching, overall + per-class
COCO runs) in one process; their metrics are checked to agree (|ΔAP| < 1e-4) before timings count.

Usage: python benchmarks/bench_coco_backends.py [--sequences 8] [--frames 120] [--fp-per-frame 15] [--repeats 3]
       python benchmarks/bench_coco_backends.py --gen1-test    (470 sequences x 30 labeled frames: Gen1 test's
       sequence count with ~50 k GT boxes, ~260 k predictions)
Prints a Markdown table row for BENCHMARKS.md (best of ``--repeats`` wall-clock seconds per backend).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import torch

from bench_common import load_average, provenance
from leod_core.data.formats import PROPHESEE_BBOX_DTYPE
from leod_core.evaluation.detection import evaluate_detections

HEIGHT, WIDTH, LABEL_PERIOD_US = 240, 304, 250_000
TOLERANCE = 1e-4
#: ``--gen1-test``: Gen1's 470 test sequences, 30 labeled frames each (1-6 GT boxes a frame), one repeat.
GEN1_TEST = dict(sequences=470, frames=30, repeats=1)


def random_sequence(rng: np.random.Generator, frames: int, fp_per_frame: int) -> tuple[np.ndarray, np.ndarray]:
    """GT at 4 Hz (1-6 boxes per frame); predictions = jittered GT (85 %) + random false positives."""
    times = LABEL_PERIOD_US * (1 + np.arange(frames))
    t_gt = np.repeat(times, rng.integers(1, 7, frames))
    gt = np.zeros(t_gt.size, dtype=PROPHESEE_BBOX_DTYPE)
    gt["t"], gt["class_id"], gt["class_confidence"] = t_gt, rng.integers(0, 2, t_gt.size), 1.0
    gt["w"] = rng.uniform(8, 130, t_gt.size)
    gt["h"] = gt["w"] * rng.uniform(0.5, 2.0, t_gt.size)
    gt["x"], gt["y"] = rng.uniform(0, WIDTH - 40, t_gt.size), rng.uniform(0, HEIGHT - 40, t_gt.size)
    tp = gt[rng.random(gt.size) < 0.85].copy()
    for key in ("x", "y", "w", "h"):
        tp[key] += rng.normal(0, 0.08, tp.size) * tp["w"]
    tp["w"], tp["h"] = np.abs(tp["w"]) + 1, np.abs(tp["h"]) + 1
    tp["class_confidence"] = rng.uniform(0.2, 1.0, tp.size)
    fp = np.zeros(frames * fp_per_frame, dtype=PROPHESEE_BBOX_DTYPE)
    fp["t"] = np.repeat(times, fp_per_frame)
    fp["w"], fp["h"] = rng.uniform(5, 100, fp.size), rng.uniform(5, 100, fp.size)
    fp["x"], fp["y"] = rng.uniform(0, WIDTH, fp.size), rng.uniform(0, HEIGHT, fp.size)
    fp["class_id"], fp["class_confidence"] = rng.integers(0, 2, fp.size), rng.uniform(0.0, 0.7, fp.size)
    pred = np.concatenate([tp, fp])
    return gt, pred[np.argsort(pred["t"], kind="stable")]


def best_time(backend: str, gt, pred, repeats: int) -> tuple[float, dict[str, float]]:
    """Best wall-clock seconds of ``repeats`` runs of ``evaluate_detections`` and the metrics."""
    best, metrics = float("inf"), {}
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = evaluate_detections(gt, pred, HEIGHT, WIDTH, "gen1", False, backend=backend)
        best = min(best, time.perf_counter() - start)
    return best, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=120, help="labeled frames per sequence (4 Hz)")
    parser.add_argument("--fp-per-frame", type=int, default=15, help="false-positive predictions per frame")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gen1-test", action="store_true", help=f"a Gen1-test-sized set: {GEN1_TEST}")
    args = parser.parse_args()
    if args.gen1_test:
        vars(args).update(GEN1_TEST)
    rng = np.random.default_rng(args.seed)
    gt, pred = zip(*(random_sequence(rng, args.frames, args.fp_per_frame) for _ in range(args.sequences)))
    ref_s, ref = best_time("pycocotools", gt, pred, args.repeats)
    fast_s, fast = best_time("faster-coco-eval", gt, pred, args.repeats)
    worst = max(abs(ref[k] - fast[k]) for k in ref)
    if worst >= TOLERANCE:
        sys.exit(f"backends disagree: max |delta| = {worst:.3g}")
    n_gt, n_pred = sum(g.size for g in gt), sum(p.size for p in pred)
    print("| benchmark | device | torch | commit | command | load | pycocotools (s) | faster-coco-eval (s) | "
          "speed ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| Prophesee eval (overall + per class), {args.sequences} seqs, {n_gt} GT / {n_pred} pred boxes, "
          f"AP {ref['AP']:.4f} vs {fast['AP']:.4f}, max abs diff {worst:.1e} | "
          f"{provenance(torch.device('cpu'), 'bench_coco_backends.py')} | {load_average()} | {ref_s:.2f} | "
          f"{fast_s:.2f} | {ref_s / fast_s:.1f}x |")


if __name__ == "__main__":
    main()
