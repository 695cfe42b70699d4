"""Plain NumPy/Python reference of LEOD's offline linear tracker, used ONLY by tests and benchmarks.

It follows the structure of LEOD's ``modules/tracking/linear.py`` (one object per tracklet, a tracker that
keeps a list of live tracklets) and ``modules/pseudo_labeler.py: EventSeqData._track / _track_filter``,
written for readability, with the same numeric conventions as ``leod_core.pseudo.tracker`` so that both make
identical decisions:

* all box geometry is float32, as in LEOD where the tracklet state is a view of the float32 detection rows and
  NumPy >= 2 keeps ``np.float32 scalar op python float`` in float32 (NEP 50): the centre moves by a float32
  addition, clamping and the clamp-aware edge velocities are float32 (this reproduces the golden inpainted
  boxes bit for bit);
* the IoU matrix is float32 and is compared with ``float32(iou_threshold)`` (NEP 50 again);
* tracklet confidence is float64 with ``q ** age`` evaluated by C ``pow`` (``math.pow``);
* tracklets are visited by descending confidence with ties in list (creation) order (a stable sort).
"""
from __future__ import annotations

import math

import numpy as np

F32 = np.float32


def clamp_xywh(bbox: np.ndarray, img_hw) -> tuple[np.ndarray, bool, bool, bool, bool]:
    """Clamp a centre-format box to ``[0, W-1] x [0, H-1]``; return it (float32) and the clamp flags t/d/l/r."""
    h_img, w_img = img_hw
    two, zero, xmax, ymax = F32(2.0), F32(0.0), F32(w_img - 1.0), F32(h_img - 1.0)
    x, y, w, h = (F32(v) for v in bbox)
    x1_, y1_, x2_, y2_ = x - w / two, y - h / two, x + w / two, y + h / two
    x1 = min(max(x1_, zero), xmax)
    x2 = min(max(x2_, zero), xmax)
    y1 = min(max(y1_, zero), ymax)
    y2 = min(max(y2_, zero), ymax)
    out = np.array([(x1 + x2) / two, (y1 + y2) / two, x2 - x1, y2 - y1], dtype=F32)
    return out, y1 != y1_, y2 != y2_, x1 != x1_, x2 != x2_


def iou_matrix_xywh(trk: np.ndarray, det: np.ndarray) -> np.ndarray:
    """IoU between centre-format boxes ``[N,5]`` x ``[M,5]`` (float32), 0 between different classes."""
    a = trk[:, None, :4].astype(F32)
    b = det[None, :, :4].astype(F32)
    two = F32(2.0)
    xx1 = np.maximum(a[..., 0] - a[..., 2] / two, b[..., 0] - b[..., 2] / two)
    yy1 = np.maximum(a[..., 1] - a[..., 3] / two, b[..., 1] - b[..., 3] / two)
    xx2 = np.minimum(a[..., 0] + a[..., 2] / two, b[..., 0] + b[..., 2] / two)
    yy2 = np.minimum(a[..., 1] + a[..., 3] / two, b[..., 1] + b[..., 3] / two)
    inter = np.maximum(F32(0.0), xx2 - xx1) * np.maximum(F32(0.0), yy2 - yy1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)
    iou[trk[:, None, 4] != det[None, :, 4]] = F32(0.0)
    return iou


def greedy_matching(iou: np.ndarray, order: np.ndarray, thresh: float) -> list[tuple[int, int]]:
    """Each track, in ``order``, takes its best still-free detection if that IoU >= thresh."""
    cost = iou.astype(F32).copy()
    matches = []
    for i in order:
        if cost[i].max() < F32(thresh):
            continue
        j = int(np.argmax(cost[i]))
        cost[:, j] = -np.inf
        matches.append((int(i), j))
    return matches


class BoxTrack:
    """One tracklet: constant-velocity centre, fixed size and class, confidence decaying by ``q`` per miss."""

    def __init__(self, track_id: int, det: np.ndarray, box_idx: int, is_gt: bool, img_hw, q: float):
        self.id = track_id
        self.img_hw = img_hw
        self.q = q
        self.bbox = np.array(det[:4], dtype=F32)
        self.class_id = float(det[4])
        self.last_bbox = None
        self.pred_bbox = None
        self.vxvy = np.zeros(2, dtype=F32)
        self.clamp = (False, False, False, False)   # top, down, left, right
        self.box_idx = [box_idx]
        self.missed = {}          # frame -> predicted box, confirmed by a later match
        self.missed_cache = {}    # frame -> predicted box, pending
        self.is_gt = bool(is_gt)
        self.conf = q
        self.age = 0
        self.hits = 1
        self.time_since_update = 0
        self.done = False

    @property
    def area(self) -> float:
        return float(self.bbox[2] * self.bbox[3])

    def predict(self) -> np.ndarray:
        self.age += 1
        self.time_since_update += 1
        self.last_bbox = self.bbox.copy()
        self.bbox[:2] += self.vxvy
        box, *flags = clamp_xywh(self.bbox, self.img_hw)
        self.clamp = tuple(flags)
        self.pred_bbox = np.append(box, F32(self.class_id)).astype(F32)
        return self.pred_bbox.copy()

    def _velocity(self, det: np.ndarray) -> np.ndarray:
        v = (det[:2].astype(F32) - self.last_bbox[:2]).astype(F32)
        top, down, left, right = self.clamp
        two = F32(2.0)
        ox, oy, ow, oh = (F32(t) for t in self.last_bbox)
        nx, ny, nw, nh = (F32(t) for t in det[:4])
        # LEOD asserts that opposite sides are never both clamped; here the later rule simply wins
        if top:
            v[1] = (ny + nh / two) - (oy + oh / two)
        if down:
            v[1] = (ny - nh / two) - (oy - oh / two)
        if left:
            v[0] = (nx + nw / two) - (ox + ow / two)
        if right:
            v[0] = (nx - nw / two) - (ox - ow / two)
        return v

    def update(self, det: np.ndarray, box_idx: int, is_gt: bool) -> None:
        assert float(det[4]) == self.class_id
        self.hits = self.age + 1
        self.time_since_update = 0
        self.vxvy = self._velocity(det)
        self.bbox = np.array(det[:4], dtype=F32)
        self.box_idx.append(box_idx)
        self.is_gt = self.is_gt or bool(is_gt)
        w = self.q * (1.0 - math.pow(self.q, float(self.age))) / (1.0 - self.q)
        self.conf = (w * self.conf + 1.0) / (w + 1.0)
        self.missed.update(self.missed_cache)
        self.missed_cache = {}

    def miss(self, frame: int, has_gt: bool) -> None:
        self.conf *= self.q
        if not has_gt:
            self.missed_cache[frame] = self.pred_bbox.copy()

    def finish(self, done: bool) -> None:
        self.done = done
        self.missed_cache = {}


class LinearTrackerRef:
    """LEOD's ``LinearTracker``: greedy IoU association by descending tracklet confidence."""

    def __init__(self, img_hw, min_conf=0.55, iou_threshold=0.45, q=0.9):
        self.img_hw = tuple(int(v) for v in img_hw)
        self.min_conf, self.iou_threshold, self.q = min_conf, iou_threshold, q
        self.tracks: list[BoxTrack] = []
        self.finished: list[BoxTrack] = []
        self.track_count = 0
        self.box_count = 0

    def _delete(self, i: int, done: bool = True) -> None:
        trk = self.tracks.pop(i)
        trk.finish(done)
        self.finished.append(trk)

    def update(self, frame: int, dets: np.ndarray, is_gt: np.ndarray) -> None:
        if len(dets) == 0 and len(self.tracks) == 0:
            return
        for i in reversed([i for i, t in enumerate(self.tracks) if t.area <= 0.0]):
            self._delete(i)
        preds = [t.predict() for t in self.tracks]
        neg_conf = np.array([-t.conf for t in self.tracks], dtype=np.float64)
        order = np.argsort(neg_conf, kind="stable")
        matches = []
        if preds and len(dets):
            iou = iou_matrix_xywh(np.stack(preds), dets)
            if iou.max() > 0:      # NaN anywhere (0/0 between empty boxes) disables matching, as in LEOD
                matches = greedy_matching(iou, order, self.iou_threshold)
        matched_t = {m[0] for m in matches}
        matched_d = {m[1] for m in matches}
        for ti, di in matches:
            self.tracks[ti].update(dets[di], self.box_count + di, bool(is_gt[di]))
        has_gt = bool(np.any(is_gt))
        for ti, trk in enumerate(self.tracks):
            if ti not in matched_t:
                trk.miss(frame, has_gt)
        for di in range(len(dets)):
            if di not in matched_d:
                self.tracks.append(BoxTrack(self.track_count, dets[di], self.box_count + di, bool(is_gt[di]),
                                            self.img_hw, self.q))
                self.track_count += 1
        for i in reversed(range(len(self.tracks))):
            if self.tracks[i].conf < self.min_conf:
                self._delete(i)
        self.box_count += len(dets)

    def finish(self) -> None:
        for i in reversed(range(len(self.tracks))):
            self._delete(i, done=False)


def track_ref(frame_idx, counts, boxes_cxcywh_cls, is_gt, img_hw, min_track_len=6, inpaint=False,
              min_conf=0.55, iou_threshold=0.45, q=0.9):
    """One pass of ``EventSeqData._track``: (reject mask [N], {frame: [boxes cx,cy,w,h,cls]})."""
    frame_idx = [int(f) for f in frame_idx]
    boxes = np.asarray(boxes_cxcywh_cls, dtype=F32)
    is_gt = np.asarray(is_gt, dtype=bool)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    model = LinearTrackerRef(img_hw, min_conf, iou_threshold, q)
    pos = {f: k for k, f in enumerate(frame_idx)}
    for f in range(max(frame_idx) + 1 if frame_idx else 0):
        if f in pos:
            k = pos[f]
            model.update(f, boxes[starts[k]:starts[k + 1]], is_gt[starts[k]:starts[k + 1]])
        else:
            model.update(f, np.empty((0, 5), dtype=F32), np.zeros(0, dtype=bool))
    model.finish()
    reject = np.zeros(len(boxes), dtype=bool)
    inpainted: dict[int, list[np.ndarray]] = {}
    for trk in model.finished:
        short = trk.done and not trk.is_gt and trk.hits < min_track_len
        if short:
            reject[trk.box_idx] = True
        elif inpaint:
            for f, b in trk.missed.items():
                inpainted.setdefault(f, []).append(b)
    return reject, inpainted


def filter_and_inpaint_ref(frame_idx, counts, boxes_cxcywh_cls, is_gt, img_hw, min_track_len=6,
                           track_method="forward or backward", inpaint=True):
    """``EventSeqData._track_filter``: removal = forward AND backward rejection; inpainting from forward only."""
    frame_idx = np.asarray(frame_idx, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    boxes = np.asarray(boxes_cxcywh_cls, dtype=F32)
    is_gt = np.asarray(is_gt, dtype=bool)
    if len(frame_idx) == 0 or min_track_len <= 0:
        return np.zeros(len(boxes), dtype=bool), {}
    remove, inpainted = track_ref(frame_idx, counts, boxes, is_gt, img_hw, min_track_len, inpaint)
    if "backward" in track_method:
        rev_frames = frame_idx.max() - frame_idx[::-1]
        bwd, _ = track_ref(rev_frames, counts[::-1], boxes[::-1], is_gt[::-1], img_hw, min_track_len, False)
        remove = remove & bwd[::-1]
    assert not np.any(remove & is_gt), "GT relabelled"
    return remove, inpainted
