"""LEOD's offline linear tracker (``modules/tracking/linear.py``), numba-compiled, with the tracking-based
filtering and inpainting of ``modules/pseudo_labeler.py: EventSeqData._track / _track_filter``.

A whole sequence is given as flat arrays: the sorted frame indices that hold boxes, the number of boxes in each
such frame, and all boxes frame after frame (centre x, centre y, w, h), their class ids and GT flags. One
compiled kernel runs the tracker over frames ``0..max(frame_idx)`` (empty frames included, as LEOD calls
``LinearTracker.update`` for every frame) and returns, for every box, whether its tracklet was "short and
finished", plus the inpainted boxes. :func:`filter_and_inpaint` runs the forward pass (with inpainting) and the
backward pass and combines them as LEOD does.

The tracker, rule by rule (LEOD ``LinearTracker.update``, ``LinearBoxTracker``):

1. tracklets whose (last matched) box has area <= 0 are finished (``done``);
2. every other tracklet predicts: ``age += 1``, centre += velocity, the predicted box is the state clamped to
   ``[0, W-1] x [0, H-1]`` (the state itself is not clamped; the clamp sides are remembered);
3. IoU (centre format, 0 between different classes) between predicted boxes and the frame's detections;
   tracklets in descending confidence (ties: list order) greedily take their best free detection if its
   IoU >= ``iou_threshold``; nothing is matched if the IoU matrix has no positive entry;
4. a matched tracklet: ``hits = age + 1`` (the frame span, not a count), velocity = new centre - previous
   centre (along a clamped side, the opposite edge is used), box replaced, ``is_gt |= det_is_gt``,
   ``conf = (w conf + 1) / (w + 1)`` with ``w = q (1 - q^age) / (1 - q)``, pending missed boxes confirmed;
5. an unmatched tracklet: ``conf *= q``; its predicted box is cached for this frame unless the frame has a GT box;
6. each unmatched detection starts a tracklet (conf ``q``, hits 1, age 0);
7. tracklets with ``conf < min_conf`` are finished (their pending cache is dropped);
8. after the last frame, live tracklets are closed with ``done = False``.

A box is rejected by a pass iff its tracklet is ``done`` and not GT and ``hits < min_track_len``. Kept tracklets
contribute their confirmed missed boxes (gaps that were re-matched later, never the tail, never GT frames).

Numeric conventions (they fix the float-rounding choices LEOD leaves to NumPy): all box geometry is float32 — in
LEOD the tracklet state is a view of the float32 detection rows, and under NumPy >= 2 (NEP 50) the scalar clamp and
edge-velocity arithmetic stays float32 too; this reproduces the golden inpainted boxes bit for bit. IoU is float32
and compared with ``float32(iou_threshold)``; confidence is float64 with ``q ** age`` by C ``pow``. Ties in
confidence are visited in list (creation) order (LEOD's ``np.argsort`` does not specify an order for ties). LEOD
asserts that opposite sides of a predicted box are never both clamped; here the bottom/right rule wins instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

IGNORE_LABEL = 1024
TRACK_METHODS = ("forward or backward", "forward")


@dataclass(frozen=True)
class TrackerConfig:
    """LEOD's ``model.pseudo_label`` tracking options and ``LinearTracker`` parameters."""

    min_track_len: int = 6          # keep a finished pseudo tracklet only if it spans >= this many frames
    iou_threshold: float = 0.45
    min_conf: float = 0.55          # tracklets below this confidence are finished (0.9**6 = 0.53)
    q: float = 0.9                  # initial confidence and per-miss decay
    inpaint: bool = True            # emit the predicted boxes at re-matched gaps (forward pass only)
    track_method: str = "forward or backward"  # 'forward or backward' (remove iff both reject) | 'forward'
    ignore_label: int = IGNORE_LABEL  # class written for removed and inpainted boxes

    def __post_init__(self) -> None:
        if self.track_method not in TRACK_METHODS:
            raise ValueError(f"track_method must be one of {TRACK_METHODS}, got {self.track_method!r}")
        if not 0.0 < self.q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {self.q}")


@nb.njit(cache=True)
def conf_after_match(conf, age, q):
    """Tracklet confidence after a match at ``age`` frames since birth: ``(w conf + 1) / (w + 1)``,
    ``w = q (1 - q^age) / (1 - q)`` (LEOD ``LinearBoxTracker.update``)."""
    w = q * (1.0 - math.pow(q, float(age))) / (1.0 - q)
    return (w * conf + 1.0) / (w + 1.0)


@nb.njit(cache=True)
def _grow(a, new_len):
    out = np.empty((new_len,) + a.shape[1:], dtype=a.dtype)
    out[:a.shape[0]] = a
    return out


@nb.njit(cache=True)
def track_sequence(frame_idx, counts, boxes, classes, is_gt, img_h, img_w, min_track_len, iou_threshold,
                   min_conf, q, inpaint):
    """One tracking pass over frames ``0..frame_idx[-1]``.

    ``frame_idx`` int64 [F] strictly increasing, ``counts`` int64 [F], ``boxes`` float32 [N,4] centre format,
    ``classes`` int64 [N], ``is_gt`` bool [N]. Returns ``reject`` bool [N] (tracklet short and finished) and
    the inpainted boxes ``(frame int64 [M], boxes float32 [M,4], classes int64 [M])`` ordered by frame, then by
    tracklet creation.
    """
    n_box = boxes.shape[0]
    n_frames = frame_idx.shape[0]
    f32 = np.float32
    half = f32(2.0)
    zero = f32(0.0)
    wm1 = f32(img_w - 1.0)
    hm1 = f32(img_h - 1.0)
    thr = f32(iou_threshold)

    # tracklets, struct of arrays; every tracklet is born from a box, so n_box is an upper bound
    cap = max(n_box, 1)
    t_box = np.empty((cap, 4), dtype=np.float32)
    t_last = np.empty((cap, 2), dtype=np.float32)     # previous centre (w, h never change)
    t_lastwh = np.empty((cap, 2), dtype=np.float32)
    t_pred = np.empty((cap, 4), dtype=np.float32)
    t_vel = np.zeros((cap, 2), dtype=np.float32)
    t_clamp = np.zeros((cap, 4), dtype=np.bool_)      # top, down, left, right of the last prediction
    t_cls = np.empty(cap, dtype=np.int64)
    t_conf = np.empty(cap, dtype=np.float64)
    t_age = np.empty(cap, dtype=np.int64)
    t_hits = np.empty(cap, dtype=np.int64)
    t_gt = np.zeros(cap, dtype=np.bool_)
    t_done = np.zeros(cap, dtype=np.bool_)
    t_pending = np.full(cap, -1, dtype=np.int64)      # head of the pending missed-box list
    alive = np.empty(cap, dtype=np.int64)             # live tracklets in creation (list) order
    alive_tmp = np.empty(cap, dtype=np.int64)
    n_alive = 0
    n_tracks = 0
    box_track = np.empty(n_box, dtype=np.int64)

    # missed boxes (inpainting candidates): growable buffer, each entry linked to its tracklet's previous one
    ip_cap = max(16, n_box)
    ip_frame = np.empty(ip_cap, dtype=np.int64)
    ip_track = np.empty(ip_cap, dtype=np.int64)
    ip_box = np.empty((ip_cap, 4), dtype=np.float32)
    ip_prev = np.empty(ip_cap, dtype=np.int64)
    ip_ok = np.zeros(ip_cap, dtype=np.bool_)
    n_ip = 0

    last_frame = frame_idx[n_frames - 1] if n_frames > 0 else -1
    k = 0
    start = 0
    for f in range(last_frame + 1):
        n_det = 0
        s = start
        if k < n_frames and frame_idx[k] == f:
            n_det = counts[k]
            start += n_det
            k += 1
        if n_det == 0 and n_alive == 0:
            continue
        has_gt = False
        for j in range(s, s + n_det):
            if is_gt[j]:
                has_gt = True

        # 1. finish tracklets with an empty box; 2. predict the others
        m = 0
        for a in range(n_alive):
            t = alive[a]
            if t_box[t, 2] * t_box[t, 3] <= f32(0.0):
                t_done[t] = True
                continue
            alive[m] = t
            m += 1
            t_age[t] += 1
            t_last[t, 0] = t_box[t, 0]
            t_last[t, 1] = t_box[t, 1]
            t_lastwh[t, 0] = t_box[t, 2]
            t_lastwh[t, 1] = t_box[t, 3]
            t_box[t, 0] = t_box[t, 0] + t_vel[t, 0]
            t_box[t, 1] = t_box[t, 1] + t_vel[t, 1]
            x = t_box[t, 0]
            y = t_box[t, 1]
            w = t_box[t, 2]
            h = t_box[t, 3]
            x1_ = x - w / half
            y1_ = y - h / half
            x2_ = x + w / half
            y2_ = y + h / half
            x1 = min(max(x1_, zero), wm1)
            x2 = min(max(x2_, zero), wm1)
            y1 = min(max(y1_, zero), hm1)
            y2 = min(max(y2_, zero), hm1)
            t_clamp[t, 0] = y1 != y1_
            t_clamp[t, 1] = y2 != y2_
            t_clamp[t, 2] = x1 != x1_
            t_clamp[t, 3] = x2 != x2_
            t_pred[t, 0] = (x1 + x2) / half
            t_pred[t, 1] = (y1 + y2) / half
            t_pred[t, 2] = x2 - x1
            t_pred[t, 3] = y2 - y1
        n_alive = m

        # 3. greedy association by descending confidence (stable)
        matched_det = np.full(n_det, -1, dtype=np.int64)
        matched_trk = np.zeros(n_alive, dtype=np.bool_)
        if n_alive > 0 and n_det > 0:
            iou = np.empty((n_alive, n_det), dtype=np.float32)
            gmax = -np.inf
            has_nan = False
            for a in range(n_alive):
                t = alive[a]
                tx1 = t_pred[t, 0] - t_pred[t, 2] / half
                ty1 = t_pred[t, 1] - t_pred[t, 3] / half
                tx2 = t_pred[t, 0] + t_pred[t, 2] / half
                ty2 = t_pred[t, 1] + t_pred[t, 3] / half
                tarea = t_pred[t, 2] * t_pred[t, 3]
                for d in range(n_det):
                    j = s + d
                    if classes[j] != t_cls[t]:
                        v = f32(0.0)
                    else:
                        xx1 = max(tx1, boxes[j, 0] - boxes[j, 2] / half)
                        yy1 = max(ty1, boxes[j, 1] - boxes[j, 3] / half)
                        xx2 = min(tx2, boxes[j, 0] + boxes[j, 2] / half)
                        yy2 = min(ty2, boxes[j, 1] + boxes[j, 3] / half)
                        iw = max(f32(0.0), xx2 - xx1)
                        ih = max(f32(0.0), yy2 - yy1)
                        inter = iw * ih
                        den = tarea + boxes[j, 2] * boxes[j, 3] - inter
                        if den == f32(0.0):
                            v = f32(np.nan) if inter == f32(0.0) else f32(np.inf)
                        else:
                            v = inter / den
                    iou[a, d] = v
                    if np.isnan(v):
                        has_nan = True
                    elif v > gmax:
                        gmax = v
            if (not has_nan) and gmax > 0.0:
                neg = np.empty(n_alive, dtype=np.float64)
                for a in range(n_alive):
                    neg[a] = -t_conf[alive[a]]
                order = np.argsort(neg, kind="mergesort")
                taken = np.zeros(n_det, dtype=np.bool_)
                for oi in range(n_alive):
                    a = order[oi]
                    best = -1
                    bv = f32(-np.inf)
                    for d in range(n_det):
                        if not taken[d] and iou[a, d] > bv:
                            bv = iou[a, d]
                            best = d
                    if best < 0 or bv < thr:
                        continue
                    taken[best] = True
                    matched_det[best] = a
                    matched_trk[a] = True

        # 4. update matched tracklets; 5. decay unmatched ones
        for a in range(n_alive):
            t = alive[a]
            if not matched_trk[a]:
                t_conf[t] *= q
                if inpaint and not has_gt:
                    if n_ip == ip_cap:
                        ip_cap *= 2
                        ip_frame = _grow(ip_frame, ip_cap)
                        ip_track = _grow(ip_track, ip_cap)
                        ip_box = _grow(ip_box, ip_cap)
                        ip_prev = _grow(ip_prev, ip_cap)
                        ip_ok = _grow(ip_ok, ip_cap)
                    ip_frame[n_ip] = f
                    ip_track[n_ip] = t
                    ip_box[n_ip, :] = t_pred[t, :]
                    ip_prev[n_ip] = t_pending[t]
                    ip_ok[n_ip] = False
                    t_pending[t] = n_ip
                    n_ip += 1
        for d in range(n_det):
            a = matched_det[d]
            j = s + d
            if a < 0:
                continue
            t = alive[a]
            box_track[j] = t
            t_hits[t] = t_age[t] + 1
            vx = boxes[j, 0] - t_last[t, 0]
            vy = boxes[j, 1] - t_last[t, 1]
            if t_clamp[t, 0] or t_clamp[t, 1] or t_clamp[t, 2] or t_clamp[t, 3]:
                oy = t_last[t, 1]
                ox = t_last[t, 0]
                oh = t_lastwh[t, 1]
                ow = t_lastwh[t, 0]
                ny = boxes[j, 1]
                nx = boxes[j, 0]
                nh = boxes[j, 3]
                nw = boxes[j, 2]
                if t_clamp[t, 0]:
                    vy = (ny + nh / half) - (oy + oh / half)
                if t_clamp[t, 1]:
                    vy = (ny - nh / half) - (oy - oh / half)
                if t_clamp[t, 2]:
                    vx = (nx + nw / half) - (ox + ow / half)
                if t_clamp[t, 3]:
                    vx = (nx - nw / half) - (ox - ow / half)
            t_vel[t, 0] = vx
            t_vel[t, 1] = vy
            t_box[t, :] = boxes[j, :]
            if is_gt[j]:
                t_gt[t] = True
            t_conf[t] = conf_after_match(t_conf[t], t_age[t], q)
            e = t_pending[t]
            while e >= 0:
                ip_ok[e] = True
                e = ip_prev[e]
            t_pending[t] = -1

        # 6. unmatched detections start tracklets
        for d in range(n_det):
            if matched_det[d] >= 0:
                continue
            j = s + d
            t = n_tracks
            n_tracks += 1
            t_box[t, :] = boxes[j, :]
            t_vel[t, 0] = f32(0.0)
            t_vel[t, 1] = f32(0.0)
            t_cls[t] = classes[j]
            t_conf[t] = q
            t_age[t] = 0
            t_hits[t] = 1
            t_gt[t] = is_gt[j]
            t_done[t] = False
            t_pending[t] = -1
            alive[n_alive] = t
            n_alive += 1
            box_track[j] = t

        # 7. finish unconfident tracklets (their pending cache is dropped)
        m = 0
        for a in range(n_alive):
            t = alive[a]
            if t_conf[t] < min_conf:
                t_done[t] = True
            else:
                alive_tmp[m] = t
                m += 1
        alive[:m] = alive_tmp[:m]
        n_alive = m

    # 8. live tracklets end unfinished (done=False); a pass rejects boxes of short, finished pseudo tracklets
    reject_trk = np.zeros(max(n_tracks, 1), dtype=np.bool_)
    for t in range(n_tracks):
        reject_trk[t] = t_done[t] and (not t_gt[t]) and t_hits[t] < min_track_len
    reject = np.zeros(n_box, dtype=np.bool_)
    for j in range(n_box):
        reject[j] = reject_trk[box_track[j]]

    n_out = 0
    for e in range(n_ip):
        if ip_ok[e] and not reject_trk[ip_track[e]]:
            n_out += 1
    out_frame = np.empty(n_out, dtype=np.int64)
    out_box = np.empty((n_out, 4), dtype=np.float32)
    out_cls = np.empty(n_out, dtype=np.int64)
    m = 0
    for e in range(n_ip):
        if ip_ok[e] and not reject_trk[ip_track[e]]:
            out_frame[m] = ip_frame[e]
            out_box[m, :] = ip_box[e, :]
            out_cls[m] = t_cls[ip_track[e]]
            m += 1
    return reject, out_frame, out_box, out_cls


def _run_pass(frame_idx, counts, boxes, classes, is_gt, img_hw, cfg: TrackerConfig, inpaint: bool):
    return track_sequence(frame_idx, counts, boxes, classes, is_gt, int(img_hw[0]), int(img_hw[1]),
                          int(cfg.min_track_len), float(cfg.iou_threshold), float(cfg.min_conf), float(cfg.q),
                          bool(inpaint))


def filter_and_inpaint(frame_idx, counts, boxes_cxcywh, classes, is_gt, img_hw, cfg: TrackerConfig = TrackerConfig()):
    """LEOD's ``EventSeqData._track_filter`` on one sequence.

    ``frame_idx`` [F] strictly increasing frame indices that hold boxes; ``counts`` [F] boxes per such frame;
    ``boxes_cxcywh`` [N,4] (centre x, centre y, w, h; float32 precision is used); ``classes`` [N] int class ids;
    ``is_gt`` [N] bool; ``img_hw`` (H, W) of the box coordinates.

    Returns ``(removed_mask [N] bool, inpaint_frame_idx [K] int64, inpaint_counts [K] int64,
    inpaint_boxes_cxcywh_cls [M,5] float32)``: boxes LEOD relabels to ``cfg.ignore_label`` (forward-rejected AND
    backward-rejected for 'forward or backward'; forward-rejected for 'forward'; never GT), and the inpainted
    boxes of the forward pass grouped by frame (centre format; their last column is the tracklet's class id —
    LEOD writes them with class ``ignore_label`` and zero scores). ``min_track_len <= 0`` disables everything.
    """
    frame_idx = np.ascontiguousarray(frame_idx, dtype=np.int64).reshape(-1)
    counts = np.ascontiguousarray(counts, dtype=np.int64).reshape(-1)
    boxes = np.ascontiguousarray(np.asarray(boxes_cxcywh)[:, :4], dtype=np.float32).reshape(-1, 4)
    classes = np.ascontiguousarray(classes, dtype=np.int64).reshape(-1)
    is_gt = np.ascontiguousarray(is_gt, dtype=np.bool_).reshape(-1)
    n = boxes.shape[0]
    if frame_idx.shape != counts.shape:
        raise ValueError("frame_idx and counts must have the same length")
    if classes.shape[0] != n or is_gt.shape[0] != n or int(counts.sum()) != n:
        raise ValueError("boxes, classes, is_gt and counts.sum() must agree")
    if np.any(counts < 0) or np.any(frame_idx < 0) or np.any(np.diff(frame_idx) <= 0):
        raise ValueError("frame_idx must be non-negative and strictly increasing, counts non-negative")
    empty = (np.zeros(n, dtype=bool), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 5), np.float32))
    if frame_idx.shape[0] == 0 or cfg.min_track_len <= 0:
        return empty

    reject, ip_frame, ip_box, ip_cls = _run_pass(frame_idx, counts, boxes, classes, is_gt, img_hw, cfg, cfg.inpaint)
    removed = reject
    if "backward" in cfg.track_method:
        rev_frames = np.ascontiguousarray(frame_idx[-1] - frame_idx[::-1])
        bwd, _, _, _ = _run_pass(rev_frames, np.ascontiguousarray(counts[::-1]), np.ascontiguousarray(boxes[::-1]),
                                 np.ascontiguousarray(classes[::-1]), np.ascontiguousarray(is_gt[::-1]), img_hw, cfg,
                                 False)
        removed = reject & bwd[::-1]
    removed = removed & ~is_gt
    if not cfg.inpaint or ip_frame.shape[0] == 0:
        return (removed,) + empty[1:]
    inpaint_frames, inpaint_counts = np.unique(ip_frame, return_counts=True)   # ip_frame is already sorted
    inpaint_boxes = np.concatenate([ip_box, ip_cls[:, None].astype(np.float32)], axis=1)
    return removed, inpaint_frames.astype(np.int64), inpaint_counts.astype(np.int64), inpaint_boxes
