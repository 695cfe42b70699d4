"""Tracker speed: our numba ``filter_and_inpaint`` (forward pass with inpainting + backward pass) against the plain
NumPy/Python reference of the same algorithm (``tests/pseudo/tracker_reference.py``, LEOD's structure), on one long
synthetic Gen1-size sequence of moving boxes with noise, dropouts, births and deaths.

Usage: python benchmarks/bench_tracker.py [--frames 1200] [--objects 16] [--repeats 5]
Prints a Markdown table row for BENCHMARKS.md. Outputs are checked to be identical before timing counts.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from leod_core.pseudo.tracker import TrackerConfig, filter_and_inpaint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pseudo"))
from tracker_reference import filter_and_inpaint_ref  # noqa: E402

H, W = 240, 304


def make_sequence(frames: int, objects: int, seed: int = 0):
    """About ``objects`` live objects per frame; each lives 5..120 frames, moves linearly, is missed 15 % of the
    time; a few clutter boxes; one frame in 20 is a GT frame."""
    rng = np.random.default_rng(seed)
    rows, counts, frame_idx, gts = [], [], [], []
    live = []

    def spawn(f):
        return dict(cx=rng.uniform(0, W), cy=rng.uniform(0, H), w=rng.uniform(10, 60), h=rng.uniform(10, 60),
                    vx=rng.normal(0, 3), vy=rng.normal(0, 1.5), cls=int(rng.integers(0, 2)),
                    end=f + int(rng.integers(5, 120)))

    for f in range(frames):
        live = [o for o in live if o["end"] > f]
        while len(live) < objects:
            live.append(spawn(f))
        b = []
        for o in live:
            o["cx"] += o["vx"]
            o["cy"] += o["vy"]
            if rng.random() < 0.15:
                continue
            b.append([o["cx"] + rng.normal(0, 1), o["cy"] + rng.normal(0, 1), o["w"], o["h"], o["cls"]])
        for _ in range(rng.poisson(0.5)):
            b.append([rng.uniform(0, W), rng.uniform(0, H), rng.uniform(5, 40), rng.uniform(5, 40), rng.integers(0, 2)])
        b = np.array(b, dtype=np.float64).reshape(-1, 5)
        x1, x2 = np.clip(b[:, 0] - b[:, 2] / 2, 0, W - 1), np.clip(b[:, 0] + b[:, 2] / 2, 0, W - 1)
        y1, y2 = np.clip(b[:, 1] - b[:, 3] / 2, 0, H - 1), np.clip(b[:, 1] + b[:, 3] / 2, 0, H - 1)
        b[:, :4] = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
        b = b[(b[:, 2] >= 5) & (b[:, 3] >= 5)]
        if len(b) == 0:
            continue
        frame_idx.append(f)
        counts.append(len(b))
        rows.append(b)
        gts.append(np.full(len(b), f % 20 == 0))
    boxes = np.concatenate(rows).astype(np.float32)
    return np.array(frame_idx), np.array(counts), boxes, np.concatenate(gts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--objects", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    frames, counts, boxes, is_gt = make_sequence(args.frames, args.objects)
    n = len(boxes)
    cfg = TrackerConfig()

    def ours():
        return filter_and_inpaint(frames, counts, boxes[:, :4], boxes[:, 4].astype(np.int64), is_gt, (H, W), cfg)

    def ref():
        return filter_and_inpaint_ref(frames, counts, boxes, is_gt, (H, W))

    removed, ip_f, ip_c, ip_b = ours()          # compiles (or loads the numba cache)
    removed_ref, inp_ref = ref()
    assert np.array_equal(removed, removed_ref)
    assert list(ip_f) == sorted(inp_ref) and list(ip_c) == [len(inp_ref[f]) for f in sorted(inp_ref)]
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    ref_rows = np.concatenate([np.stack(inp_ref[f]) for f in sorted(inp_ref)]) if inp_ref else np.zeros((0, 5))
    assert np.array_equal(key(ip_b.astype(np.float64)), key(ref_rows.astype(np.float64)))

    def best(fn, repeats):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_ours = best(ours, args.repeats)
    t_ref = best(ref, max(1, args.repeats // 2))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"<!-- {n} boxes, {int(removed.sum())} removed, {len(ip_b)} inpainted -->")
    print("| benchmark | device | commit | command | ours (ms) | reference (ms) | ours (boxes/s) | reference (boxes/s) "
          "| speed ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| tracker filter+inpaint (fwd+bwd), {args.frames} frames, {n} boxes | CPU "
          f"{platform.processor() or platform.machine()}, 1 thread | {commit} | `python benchmarks/bench_tracker.py` | "
          f"{t_ours * 1e3:.1f} | {t_ref * 1e3:.0f} | {n / t_ours:,.0f} | {n / t_ref:,.0f} | {t_ref / t_ours:.0f}x |")


if __name__ == "__main__":
    main()
