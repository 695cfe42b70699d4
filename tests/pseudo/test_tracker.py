"""LEOD's offline linear tracker: golden cases, numba vs plain reference, and hand-made cases of every rule.

Golden cases (tests/golden/tracker) were produced by LEOD's ``LinearTracker`` driven forward (with inpainting)
and backward; ``tracker_reference.py`` (next to this file) is a plain NumPy/Python re-implementation used only
here, as the differential reference for the numba kernel.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from leod_core.pseudo.tracker import (IGNORE_LABEL, TrackerConfig, conf_after_match, filter_and_inpaint,
                                      track_sequence)
from tracker_reference import BoxTrack, filter_and_inpaint_ref

GOLDEN = sorted((Path(__file__).resolve().parents[1] / "golden" / "tracker").glob("case_*.npz"))
HW = (240, 304)
CFG = TrackerConfig()


# --------------------------------------------------------------------------------------------- helpers
def run_numba(frame_idx, counts, boxes5, is_gt, img_hw=HW, cfg=CFG):
    boxes5 = np.asarray(boxes5, dtype=np.float32).reshape(-1, 5)
    removed, ip_f, ip_c, ip_b = filter_and_inpaint(frame_idx, counts, boxes5[:, :4], boxes5[:, 4].astype(np.int64),
                                                   is_gt, img_hw, cfg)
    return removed, split_inpaint(ip_f, ip_c, ip_b)


def run_ref(frame_idx, counts, boxes5, is_gt, img_hw=HW, cfg=CFG):
    removed, inp = filter_and_inpaint_ref(frame_idx, counts, boxes5, is_gt, img_hw, cfg.min_track_len,
                                          cfg.track_method, cfg.inpaint)
    return removed, {f: np.stack(v).astype(np.float32) for f, v in inp.items()}


def split_inpaint(frames, counts, boxes) -> dict[int, np.ndarray]:
    assert len(frames) == len(counts) and int(np.sum(counts)) == len(boxes)
    assert np.all(np.diff(frames) > 0) and np.all(np.asarray(counts) > 0)
    ends = np.cumsum(counts)
    return {int(f): boxes[e - c:e] for f, c, e in zip(frames, counts, ends)}


def as_set(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    return rows[np.lexsort(rows.T[::-1])]


def assert_same_inpaint(got: dict, expected: dict, atol: float = 1e-4) -> None:
    assert sorted(got) == sorted(expected)
    for f in expected:
        a, b = as_set(got[f]), as_set(expected[f])
        assert a.shape == b.shape, f"frame {f}: {len(a)} vs {len(b)} inpainted boxes"
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=f"frame {f}")


def load_golden(path: Path):
    d = np.load(path)
    expected_inpaint = split_inpaint(d["expected_inpaint_frame_idx"], d["expected_inpaint_counts"],
                                     d["expected_inpaint_boxes_cxcywh_cls"])
    return d, set(d["expected_removed"].tolist()), expected_inpaint


class Seq:
    """Build a sequence frame by frame: ``add(frame, cx, cy, w, h, cls=0, gt=False)``."""

    def __init__(self):
        self.rows: dict[int, list[tuple]] = {}

    def add(self, f, cx, cy, w, h, cls=0, gt=False):
        self.rows.setdefault(int(f), []).append((cx, cy, w, h, cls, gt))
        return self

    def track(self, frames, cx, cy, w=20.0, h=20.0, cls=0, vx=0.0, vy=0.0, gt=False):
        for f in frames:
            self.add(f, cx + vx * f, cy + vy * f, w, h, cls, gt)
        return self

    def arrays(self):
        frames = sorted(self.rows)
        rows = [r for f in frames for r in self.rows[f]]
        boxes = np.array([r[:5] for r in rows], dtype=np.float32).reshape(-1, 5)
        is_gt = np.array([r[5] for r in rows], dtype=bool)
        counts = np.array([len(self.rows[f]) for f in frames], dtype=np.int64)
        return np.array(frames, dtype=np.int64), counts, boxes, is_gt

    def index(self, f, k=0) -> int:
        """Global index of the k-th box of frame f."""
        return sum(len(self.rows[g]) for g in sorted(self.rows) if g < f) + k

    def run(self, cfg=CFG, img_hw=HW):
        out = run_numba(*self.arrays(), img_hw=img_hw, cfg=cfg)
        ref = run_ref(*self.arrays(), img_hw=img_hw, cfg=cfg)
        np.testing.assert_array_equal(out[0], ref[0])
        assert_same_inpaint(out[1], ref[1], atol=0)
        return out


def background(seq: Seq, last: int) -> Seq:
    """A long, well-separated class-1 object over frames 0..last (it keeps the sequence extent fixed)."""
    return seq.track(range(last + 1), 250.0, 200.0, 30.0, 30.0, cls=1)


# --------------------------------------------------------------------------------------------- golden
def test_golden_cases_present():
    assert len(GOLDEN) == 40


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_numba(path):
    d, exp_removed, exp_inpaint = load_golden(path)
    removed, inpaint = run_numba(d["frame_idx"], d["counts"], d["boxes_cxcywh_cls"], d["is_gt"], tuple(d["img_hw"]))
    assert set(np.flatnonzero(removed).tolist()) == exp_removed
    assert_same_inpaint(inpaint, exp_inpaint)


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_reference(path):
    d, exp_removed, exp_inpaint = load_golden(path)
    removed, inpaint = run_ref(d["frame_idx"], d["counts"], d["boxes_cxcywh_cls"], d["is_gt"], tuple(d["img_hw"]))
    assert set(np.flatnonzero(removed).tolist()) == exp_removed
    assert_same_inpaint(inpaint, exp_inpaint)


# --------------------------------------------------------------------------------------------- differential
def random_sequence(rng: np.random.Generator):
    """Moving boxes with noise, dropouts, births/deaths, crossings, class flips, border exits, clutter and GT
    frames. Coordinates are sometimes quantised so that IoU and confidence ties occur."""
    h_img, w_img = (240, 304) if rng.random() < 0.8 else (int(rng.integers(60, 200)), int(rng.integers(80, 260)))
    n_frames = int(rng.integers(3, 70))
    first = int(rng.integers(0, 8))
    objects = []
    for _ in range(int(rng.integers(1, 9))):
        w = float(rng.uniform(6, min(0.6 * w_img, 90)))
        h = float(rng.uniform(6, min(0.6 * h_img, 90)))
        if rng.random() < 0.3:     # start on a border and move out
            cx = float(rng.choice([-0.3 * w, w_img + 0.3 * w, rng.uniform(0, w_img)]))
            cy = float(rng.choice([-0.3 * h, h_img + 0.3 * h, rng.uniform(0, h_img)]))
        else:
            cx, cy = float(rng.uniform(0, w_img)), float(rng.uniform(0, h_img))
        speed = rng.choice([0.0, 1.0, 4.0, 12.0])
        vx, vy = rng.normal(0, speed, 2) if speed else (0.0, 0.0)
        birth = int(rng.integers(first, first + n_frames))
        life = int(rng.choice([rng.integers(1, 8), rng.integers(1, n_frames + 1)]))
        objects.append(dict(cx=cx, cy=cy, w=w, h=h, vx=float(vx), vy=float(vy), birth=birth, death=birth + life,
                            cls=int(rng.integers(0, 2)), drop=float(rng.choice([0.0, 0.15, 0.4, 0.7])),
                            noise=float(rng.choice([0.0, 0.5, 2.0, 5.0]))))
    quant = rng.random() < 0.3
    crop = rng.random() < 0.6     # LEOD crops predictions to the FOV; GT-like uncropped boxes otherwise
    p_gt_frame = float(rng.choice([0.0, 0.1, 0.3]))
    frames, counts, rows, gts = [], [], [], []
    for f in range(first, first + n_frames):
        frame_rows = []
        for o in objects:
            if not o["birth"] <= f < o["death"] or rng.random() < o["drop"]:
                continue
            cx = o["cx"] + o["vx"] * (f - o["birth"]) + rng.normal(0, o["noise"])
            cy = o["cy"] + o["vy"] * (f - o["birth"]) + rng.normal(0, o["noise"])
            w = o["w"] * (1 + rng.normal(0, 0.05 if o["noise"] else 0.0))
            h = o["h"] * (1 + rng.normal(0, 0.05 if o["noise"] else 0.0))
            cls = o["cls"] if rng.random() > 0.05 else 1 - o["cls"]
            frame_rows.append([cx, cy, w, h, cls])
            if rng.random() < 0.05:   # duplicate detection of the same object
                frame_rows.append([cx + rng.normal(0, 2), cy + rng.normal(0, 2), w, h, cls])
        for _ in range(int(rng.poisson(0.3))):   # clutter
            frame_rows.append([rng.uniform(0, w_img), rng.uniform(0, h_img), rng.uniform(5, 50), rng.uniform(5, 50),
                               int(rng.integers(0, 2))])
        if not frame_rows:
            continue
        b = np.array(frame_rows, dtype=np.float64)
        if quant:
            b[:, :4] = np.round(b[:, :4] * 2) / 2
        x1, y1, x2, y2 = b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
        if crop:
            x1, x2 = np.clip(x1, 0, w_img - 1), np.clip(x2, 0, w_img - 1)
            y1, y2 = np.clip(y1, 0, h_img - 1), np.clip(y2, 0, h_img - 1)
        b[:, 0], b[:, 1], b[:, 2], b[:, 3] = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        b = b[(b[:, 2] > 0.5) & (b[:, 3] > 0.5) & (x2 > 0) & (y2 > 0) & (x1 < w_img - 1) & (y1 < h_img - 1)]
        if len(b) == 0:
            continue
        rng.shuffle(b)
        if rng.random() < p_gt_frame:
            g = np.ones(len(b), dtype=bool) if rng.random() < 0.8 else rng.random(len(b)) < 0.5
        else:
            g = np.zeros(len(b), dtype=bool)
        frames.append(f)
        counts.append(len(b))
        rows.append(b)
        gts.append(g)
    if not frames:
        return None
    return (np.array(frames, dtype=np.int64), np.array(counts, dtype=np.int64),
            np.concatenate(rows).astype(np.float32), np.concatenate(gts), (h_img, w_img))


def test_differential_numba_vs_reference():
    rng = np.random.default_rng(20240611)
    stats = dict(seqs=0, boxes=0, removed=0, rescued_by_backward=0, inpainted=0, inpaint_clamped=0, gt=0)
    cfg_fwd = dataclasses.replace(CFG, track_method="forward")
    while stats["seqs"] < 600:
        seq = random_sequence(rng)
        if seq is None:
            continue
        frames, counts, boxes, is_gt, hw = seq
        removed, inpaint = run_numba(frames, counts, boxes, is_gt, hw)
        removed_ref, inpaint_ref = run_ref(frames, counts, boxes, is_gt, hw)
        np.testing.assert_array_equal(removed, removed_ref)
        assert_same_inpaint(inpaint, inpaint_ref, atol=0)   # same float32 arithmetic: bit-identical
        assert not np.any(removed & is_gt)
        fwd_only, _ = run_numba(frames, counts, boxes, is_gt, hw, cfg_fwd)
        assert np.all(removed <= fwd_only)
        stats["seqs"] += 1
        stats["boxes"] += len(boxes)
        stats["gt"] += int(is_gt.sum())
        stats["removed"] += int(removed.sum())
        stats["rescued_by_backward"] += int((fwd_only & ~removed).sum())
        if inpaint:
            ib = np.concatenate(list(inpaint.values()))
            stats["inpainted"] += len(ib)
            x1, x2 = ib[:, 0] - ib[:, 2] / 2, ib[:, 0] + ib[:, 2] / 2
            stats["inpaint_clamped"] += int(((x1 <= 0) | (x2 >= hw[1] - 1)).sum())
    print("differential stats:", stats)
    # the generator must actually exercise every rule
    assert stats["boxes"] > 10_000
    for key in ("removed", "rescued_by_backward", "inpainted", "inpaint_clamped", "gt"):
        assert stats[key] > 50, (key, stats)


# --------------------------------------------------------------------------------------------- hand cases
def test_worked_example_confidence():
    assert conf_after_match(0.9, 1, 0.9) == pytest.approx(0.9526, abs=5e-5)
    assert conf_after_match(0.9, 1, 0.9) == pytest.approx((0.9 * 0.9 + 1) / 1.9, rel=1e-15)
    trk = BoxTrack(0, np.array([50, 50, 20, 20, 0], np.float32), 0, False, HW, 0.9)
    trk.predict()
    trk.update(np.array([50, 50, 20, 20, 0], np.float32), 1, False)
    assert (trk.age, trk.hits) == (1, 2)
    assert trk.conf == pytest.approx(0.9526, abs=5e-5)


def test_gap_is_inpainted_with_linear_prediction():
    seq = background(Seq(), 30)
    seq.track([*range(0, 8), *range(11, 20)], 40.0, 60.0, 20.0, 16.0, vx=3.0, vy=1.0)   # missed at 8, 9, 10
    removed, inpaint = seq.run()
    assert not removed.any()
    assert sorted(inpaint) == [8, 9, 10]
    for f in (8, 9, 10):
        np.testing.assert_allclose(inpaint[f], [[40 + 3 * f, 60 + f, 20, 16, 0]], atol=1e-4)


def test_no_inpainting_at_gt_frames_nor_after_last_match():
    seq = background(Seq(), 30)
    seq.track([*range(0, 8), *range(12, 20)], 40.0, 60.0, 20.0, 16.0, vx=3.0)   # missed at 8..11
    seq.add(9, 150.0, 120.0, 25.0, 25.0, cls=1, gt=True)                      # frame 9 holds a GT box
    seq.track([22, 23], 150.0, 40.0, 20.0, 20.0)                              # short, no gap
    removed, inpaint = seq.run()
    assert sorted(inpaint) == [8, 10, 11]          # not frame 9 (GT), not the tail after frame 19
    assert not removed[seq.index(9, 1)]


def test_gap_of_five_is_bridged_but_six_is_not():
    seq = background(Seq(), 40)
    seq.track([*range(0, 6), *range(11, 20)], 40.0, 60.0)      # 5 misses (6..10): bridged
    seq.track([*range(0, 6), *range(12, 20)], 140.0, 60.0)     # 6 misses (6..11): new tracklet
    removed, inpaint = seq.run()
    assert sorted(inpaint) == [6, 7, 8, 9, 10]
    assert all(len(inpaint[f]) == 1 and inpaint[f][0, 0] == 40.0 for f in inpaint)
    assert not removed.any()                        # the pieces are long enough


def test_fresh_track_bridges_four_misses_after_one_match_five():
    """Worked example consequence: conf 0.9 dies at the 5th miss (0.531), 0.9526 survives 5 (0.5625)."""
    seq = background(Seq(), 40)
    seq.track([10, 15, 16, 17, 18, 19, 20], 40.0, 60.0)         # born, 4 misses, re-matched
    seq.track([10, 11, 17, 18, 19, 20, 21], 140.0, 60.0)        # born, one match, 5 misses, re-matched
    seq.track([10, 16, 17, 18, 19, 20, 21], 40.0, 160.0)        # born, 5 misses: dies at 15
    removed, inpaint = seq.run()
    assert sorted(inpaint) == [11, 12, 13, 14, 15, 16]
    assert [len(inpaint[f]) for f in sorted(inpaint)] == [1, 2, 2, 2, 1, 1]
    assert not removed.any()           # backward, the long tracklet 21..16 bridges 15..11 and takes frame 10
    removed_fwd, _ = seq.run(cfg=dataclasses.replace(CFG, track_method="forward"))
    assert set(np.flatnonzero(removed_fwd).tolist()) == {seq.index(10, 3)}


def test_short_finished_track_removed_in_both_directions():
    seq = background(Seq(), 40)
    seq.track(range(15, 20), 60.0, 60.0, vx=2.0)        # 5 frames in the middle: rejected both ways
    seq.track(range(15, 21), 160.0, 60.0, vx=-2.0)      # 6 frames: kept
    removed, inpaint = seq.run()
    expected = {seq.index(f, 1) for f in range(15, 20)}
    assert set(np.flatnonzero(removed).tolist()) == expected


def test_hits_is_the_span_not_the_match_count():
    seq = background(Seq(), 40)
    seq.track([15, 17, 19, 21], 60.0, 60.0)   # 4 matches spanning 7 frames: kept
    seq.track([15, 17, 19], 160.0, 60.0)      # span 5: removed
    removed, inpaint = seq.run()
    assert set(np.flatnonzero(removed).tolist()) == {seq.index(f, 2) for f in (15, 17, 19)}
    assert sorted(inpaint) == [16, 18, 20]


def test_track_alive_at_the_end_is_kept():
    seq = background(Seq(), 30)
    seq.track(range(27, 31), 60.0, 60.0)      # 4 frames, alive at the last frame: unfinished forward
    seq.track(range(25, 28), 160.0, 60.0)     # 3 frames, 3 misses before the end: still alive, kept
    seq.track(range(20, 24), 160.0, 160.0)    # 4 frames, dies at its 6th miss (frame 29): removed
    removed, _ = seq.run()
    assert set(np.flatnonzero(removed).tolist()) == {seq.index(f, 1) for f in range(20, 24)}


def test_short_track_kept_because_backward_keeps_it():
    seq = background(Seq(), 30)
    seq.track(range(0, 4), 60.0, 60.0)        # starts the sequence: finished forward, unfinished backward
    removed, _ = seq.run()
    assert not removed.any()
    removed_fwd, _ = seq.run(cfg=dataclasses.replace(CFG, track_method="forward"))
    assert set(np.flatnonzero(removed_fwd).tolist()) == {seq.index(f, 1) for f in range(0, 4)}


def test_backward_pass_reverses_row_order():
    """Two identical detections at frame 15: the tracklet takes the first row (argmax tie). Forward that is row 0
    and row 1 becomes a 1-frame tracklet; backward, with the rows reversed, it is the other way round. So each
    duplicate is rejected by one pass only and neither is removed."""
    seq = background(Seq(), 40)
    seq.track([*range(10, 15), 15, 15, *range(16, 21)], 60.0, 60.0)
    removed, _ = seq.run()
    assert not removed.any()
    removed_fwd, _ = seq.run(cfg=dataclasses.replace(CFG, track_method="forward"))
    assert set(np.flatnonzero(removed_fwd).tolist()) == {seq.index(15, 2)}


def test_confidence_ties_follow_creation_order():
    """12 pairs A_i, B_i born together (equal confidence); from frame 11 one detection sits exactly on B_i. Greedy
    matching visits tied tracklets in creation order, so A_i (IoU 0.54 >= 0.45) takes it and B_i dies."""
    seq = background(Seq(), 40)
    for i in range(12):
        x0, y0 = 20.0 + 45.0 * (i % 6), 40.0 + 80.0 * (i // 6)
        seq.add(10, x0, y0, 20.0, 20.0).add(10, x0 + 6.0, y0, 20.0, 20.0)
        seq.track(range(11, 21), x0 + 6.0, y0)
    removed_fwd, _ = seq.run(cfg=dataclasses.replace(CFG, track_method="forward"))
    assert set(np.flatnonzero(removed_fwd).tolist()) == {seq.index(10, 2 + 2 * i) for i in range(12)}


def test_gt_boxes_are_never_removed_and_protect_their_track():
    seq = background(Seq(), 40)
    seq.track([15], 60.0, 60.0, gt=True)
    seq.track([16, 17], 60.0, 60.0)                     # matched to the GT tracklet: kept
    seq.track([15, 16], 160.0, 60.0, cls=0, gt=True)    # a short GT-only track in the middle: kept
    seq.track([15, 16], 160.0, 160.0)                   # pseudo-only short track: removed
    removed, _ = seq.run()
    f, c, b, g = seq.arrays()
    assert not np.any(removed & g)
    assert set(np.flatnonzero(removed).tolist()) == {seq.index(15, 3), seq.index(16, 3)}


def test_class_mismatch_never_matches():
    seq = background(Seq(), 40)
    seq.track(range(10, 13), 60.0, 60.0, cls=0)
    seq.track(range(13, 16), 60.0, 60.0, cls=1)          # same place, other class: a new tracklet
    removed, _ = seq.run()
    assert removed.sum() == 6


def test_clamp_aware_velocity_uses_the_opposite_edge():
    """An object leaving on the left, boxes cropped to the FOV: x1 = 30-5f, x2 = 50-5f, frame 8 missed."""
    seq = background(Seq(), 20)
    for f in [*range(0, 8), 9]:
        x1, x2 = max(0.0, 30.0 - 5 * f), 50.0 - 5 * f
        seq.add(f, (x1 + x2) / 2, 100.0, x2 - x1, 20.0)
    removed, inpaint = seq.run()
    assert not removed.any()
    # after the clamped frame 7 the velocity is the right edge's (-5), not the centre's (-2.5)
    np.testing.assert_allclose(inpaint[8], [[5.0, 100.0, 10.0, 20.0, 0.0]], atol=1e-5)


def test_ignore_label_and_config():
    assert IGNORE_LABEL == 1024 == CFG.ignore_label
    assert (CFG.min_track_len, CFG.iou_threshold, CFG.min_conf, CFG.q) == (6, 0.45, 0.55, 0.9)
    assert CFG.inpaint and CFG.track_method == "forward or backward"
    with pytest.raises(ValueError):
        TrackerConfig(track_method="backward")


def test_inpaint_off_and_min_track_len_off():
    seq = background(Seq(), 30)
    seq.track([*range(0, 8), *range(11, 20)], 40.0, 60.0)
    seq.track(range(20, 23), 140.0, 60.0)
    removed, inpaint = seq.run(cfg=dataclasses.replace(CFG, inpaint=False))
    assert inpaint == {} and removed.sum() == 3
    removed, inpaint = seq.run(cfg=dataclasses.replace(CFG, min_track_len=0))
    assert inpaint == {} and not removed.any()


def test_empty_and_invalid_inputs():
    removed, f, c, b = filter_and_inpaint(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                                          np.zeros(0, np.int64), np.zeros(0, bool), HW)
    assert removed.shape == (0,) and f.shape == (0,) and c.shape == (0,) and b.shape == (0, 5)
    with pytest.raises(ValueError):
        filter_and_inpaint([3, 2], [1, 1], np.ones((2, 4)), [0, 0], [False, False], HW)
    with pytest.raises(ValueError):
        filter_and_inpaint([1, 2], [1, 2], np.ones((2, 4)), [0, 0], [False, False], HW)


def test_kernel_single_pass_outputs():
    frames, counts, boxes, is_gt = background(Seq(), 10).track([2, 3], 60.0, 60.0).arrays()
    reject, ip_f, ip_b, ip_c = track_sequence(frames, counts, np.ascontiguousarray(boxes[:, :4]),
                                              boxes[:, 4].astype(np.int64), is_gt, 240, 304, 6, 0.45, 0.55, 0.9, True)
    assert reject.dtype == np.bool_ and reject.sum() == 2
    assert ip_f.shape == (0,) and ip_b.shape == (0, 4) and ip_c.shape == (0,)
