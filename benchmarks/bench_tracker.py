"""Tracker speed: our numba ``filter_and_inpaint`` (forward pass with inpainting + backward pass) against the plain
NumPy/Python reference of the same algorithm (``tests/pseudo/tracker_reference.py``, LEOD's structure), on one long
synthetic Gen1-size sequence of moving boxes with noise, dropouts, births and deaths.

Usage: python benchmarks/bench_tracker.py [--frames 1200] [--objects 1.2 16] [--repeats 5]
Prints one Markdown row per ``--objects`` value: the default 1.2 gives a Gen1-length sequence (1,200 frames,
~1,600 boxes; target < 10 ms for both directions), 16 a dense stress case. Outputs are checked to be identical
before timing counts; timings are medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from leod_core.pseudo.tracker import TrackerConfig, filter_and_inpaint

from bench_common import load_average, print_markdown_table, provenance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pseudo"))
from tracker_reference import filter_and_inpaint_ref  # noqa: E402

H, W = 240, 304


def make_sequence(frames: int, objects: float, seed: int = 0):
    """About ``objects`` live objects per frame (a fraction: the target count alternates between floor and
    ceil in that proportion); each lives 5..120 frames, moves linearly, is missed 15 % of the
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
        target = int(objects) + int(rng.random() < objects - int(objects))
        while len(live) < target:
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


def bench_case(num_frames: int, objects: float, repeats: int) -> str:
    """One Markdown row: numba vs reference on one synthetic sequence, outputs checked identical."""
    frames, counts, boxes, is_gt = make_sequence(num_frames, objects)
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

    def median_time(fn, count):
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    t_ours = median_time(ours, repeats)
    t_ref = median_time(ref, max(1, repeats // 2))
    return (f"| tracker filter+inpaint (fwd+bwd), {num_frames} frames, {n} boxes ({int(removed.sum())} removed, "
            f"{len(ip_b)} inpainted) | {provenance(torch.device('cpu'), 'bench_tracker.py')} | {load_average()} | "
            f"{t_ours * 1e3:.2f} | {t_ref * 1e3:.0f} | {n / t_ours:,.0f} | {n / t_ref:,.0f} | {t_ref / t_ours:.0f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--objects", type=float, nargs="+", default=[1.2, 16.0],
                        help="live objects per frame, one row each")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [bench_case(args.frames, objects, args.repeats) for objects in args.objects]
    print_markdown_table(["numba (ms)", "reference (ms)", "numba (boxes/s)", "reference (boxes/s)", "speed ratio"],
                         rows)


if __name__ == "__main__":
    main()
