"""LEOD's TTA pseudo-labelling inference: batched = one view at a time, flip equivariance, time-flip frame
offsets, per-view filters, view merge, GT pass-through, Gen4 (x2) scaling."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from builders import spread_logit_model, write_sequence
from leod_core.data.formats import (PROPHESEE_BBOX_DTYPE, PSEUDO_BBOX_DTYPE, EventReprWriter, SequenceLabels,
                                    SequencePaths, read_labels, write_labels, write_npy)
from leod_core.pseudo.tta import (ALL_VIEWS, MergedSequence, TTAConfig, filter_view_predictions, merge_views,
                                  predict_sequence_views)

HW = (64, 96)
L = 4
#: name -> (num_reprs, labeled reprs); with L = 4, "a" streams from repr 3, the others from 0
SEQS = {"a": (13, [6, 8, 10, 12]), "b": (6, [0, 3]), "c": (9, [1, 4, 7])}
KEPT = {"a": [0, 2], "b": [1], "c": []}          # objframe indices whose GT is kept ("c": unlabeled)
KEPT_REPRS = {"a": {6, 10}, "b": {3}, "c": set()}


# ------------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tta") / "train"
    for i, (name, (n, labeled)) in enumerate(SEQS.items()):
        write_sequence(root / name, n, labeled, seed=i)
    return root


def write_custom_sequence(root: Path, data: np.ndarray, labeled: list[int], ds2: bool = False) -> None:
    """A preprocessed sequence with the given representations ``uint8 [T, 20, H, W]`` and one GT box per labeled
    representation."""
    paths = SequencePaths(root)
    paths.ev_repr_dir.mkdir(parents=True)
    ts = 50_000 * (1 + np.arange(len(data), dtype=np.int64))
    with EventReprWriter(paths.ev_repr_file(ds2), data.shape[1], data.shape[2], data.shape[3]) as w:
        w.append(data)
    frames = []
    for k, r in enumerate(labeled):
        b = np.zeros(1, dtype=PROPHESEE_BBOX_DTYPE)
        b["t"], b["x"], b["y"], b["w"], b["h"] = ts[r], 5 + k, 6, 20, 15
        b["class_id"], b["class_confidence"] = k % 2, 1.0
        frames.append(b)
    write_labels(paths.labels, SequenceLabels.from_frames(frames))
    write_npy(paths.label_timestamps, ts[labeled])
    write_npy(paths.objframe_idx_2_repr_idx, np.asarray(labeled, dtype=np.int64))
    write_npy(paths.repr_timestamps, ts)


# ---------------------------------------------------------------------------------------------- models
def make_model():
    return spread_logit_model(seed=0, hw=HW, spread_boxes=True)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return make_model()


class _Stub(nn.Module):
    """Minimal detector interface: ``forward_backbone``, ``forward_detect`` (raw ``[B, A, 5 + C]`` predictions:
    cx, cy, w, h in pixels, objectness logit, class logits), ``reset_states``, ``num_classes``."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    @staticmethod
    def reset_states(states, reset_mask):
        keep = (~reset_mask.bool()).view(-1, 1, 1, 1)
        return [(h * keep, c * keep) for h, c in states]


class CounterStub(_Stub):
    """Emits one class-0 box (scores ~1) at the ``fire_at``-th step after a state reset (every step if None).
    The state counts the steps since the reset."""

    def __init__(self, fire_at: int | None, box_cxcywh=(47.5, 30.0, 55.0, 20.0)):
        super().__init__()
        self.fire_at = fire_at
        self.box = torch.tensor(box_cxcywh)

    def forward_backbone(self, x, states=None):
        n = x.shape[0]
        count = torch.zeros(n, 1, 1, 1, device=x.device) if states is None else states[0][0]
        return {1: count}, [(count + 1, count + 1)]

    def forward_detect(self, features):
        count = features[1].reshape(-1)
        fire = torch.ones_like(count, dtype=torch.bool) if self.fire_at is None else count == self.fire_at
        preds = torch.zeros(len(count), 1, 7, device=count.device)
        preds[:, 0, :4] = self.box.to(count.device)
        preds[:, 0, 4] = torch.where(fire, 10.0, -10.0)
        preds[:, 0, 5], preds[:, 0, 6] = 10.0, -10.0
        return preds


class ExtentStub(_Stub):
    """Pads the input at the bottom/right to a multiple of 32 (as RVT) and detects one class-0 box spanning the
    non-zero pixels (pixel-centre coordinates) -- exactly equivariant under LEOD's flip ``x' = W - 1 - x - w``."""

    def forward_backbone(self, x, states=None):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 32, 0, -h % 32))
        zero = torch.zeros(x.shape[0], 1, 1, 1, device=x.device)
        return {1: x}, [(zero, zero)]

    def forward_detect(self, features):
        occ = features[1].abs().sum(1) > 0                      # [B, H, W]
        cols, rows = occ.any(1).float(), occ.any(2).float()
        idx_c = torch.arange(cols.shape[1], device=cols.device).float()
        idx_r = torch.arange(rows.shape[1], device=rows.device).float()
        x1 = torch.where(cols > 0, idx_c, 1e9).amin(1)
        x2 = torch.where(cols > 0, idx_c, -1e9).amax(1)
        y1 = torch.where(rows > 0, idx_r, 1e9).amin(1)
        y2 = torch.where(rows > 0, idx_r, -1e9).amax(1)
        preds = torch.zeros(len(x1), 1, 7, device=x1.device)
        preds[:, 0, 0], preds[:, 0, 1] = (x1 + x2) / 2, (y1 + y2) / 2
        preds[:, 0, 2], preds[:, 0, 3] = x2 - x1, y2 - y1
        preds[:, 0, 4], preds[:, 0, 5], preds[:, 0, 6] = 10.0, 10.0, -10.0
        return preds


# --------------------------------------------------------------------------------------------- helpers
def run(model, data_dir, device="cpu", kept=KEPT, **kw) -> dict[str, MergedSequence]:
    cfg = TTAConfig(sequence_length=L, **kw)
    return {m.name: m for m in predict_sequence_views(model, data_dir, None, kept, cfg, device, keep_views=True)}


def as_matrix(rows: np.ndarray) -> np.ndarray:
    return np.stack([rows[k].astype(np.float64) for k in PSEUDO_BBOX_DTYPE.names], axis=1).reshape(len(rows), -1)


def assert_rows_match(a: np.ndarray, b: np.ndarray, atol: float, where: str) -> None:
    """Same multiset of rows up to ``atol`` in every field (order-insensitive, as LEOD's ``ObjectLabels.__eq__``)."""
    assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} boxes"
    if not len(a):
        return
    d = np.abs(as_matrix(a)[:, None] - as_matrix(b)[None]).max(-1)
    assert (d.min(1) <= atol).all() and (d.min(0) <= atol).all(), f"{where}: max field difference {d.min(1).max()}"


def assert_same_results(a: dict[str, MergedSequence], b: dict[str, MergedSequence], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        assert (x.stream_range, x.frame_hw, x.sensor_hw, x.num_frame_views) == \
               (y.stream_range, y.frame_hw, y.sensor_hw, y.num_frame_views)
        assert x.gt.keys() == y.gt.keys() and all(x.gt[f].tobytes() == y.gt[f].tobytes() for f in x.gt)
        assert x.views.keys() == y.views.keys()
        for view in x.views:
            assert x.views[view].keys() == y.views[view].keys(), (name, view)
            for f in x.views[view]:
                assert_rows_match(x.views[view][f], y.views[view][f], atol, f"{name} {view} frame {f}")
        assert x.pseudo.keys() == y.pseudo.keys()
        for f in x.pseudo:
            assert_rows_match(x.pseudo[f], y.pseudo[f], atol, f"{name} merged frame {f}")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax1, ay1, ax2, ay2 = a["x"], a["y"], a["x"] + a["w"], a["y"] + a["h"]
    bx1, by1, bx2, by2 = b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(ax1[:, None], bx1[None]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(ay1[:, None], by1[None]), 0, None)
    inter = iw * ih
    return inter / ((a["w"] * a["h"])[:, None] + (b["w"] * b["h"])[None] - inter)


def matched_fraction(a: dict[str, MergedSequence], b: dict[str, MergedSequence], iou: float = 0.9,
                     score_tol: float = 0.05) -> float:
    """Fraction of the merged and per-view boxes of ``a`` that have a same-class box in ``b`` (same frame) with
    IoU >= ``iou`` and both scores within ``score_tol``, in both directions (the lower of the two)."""
    def one_way(p, q):
        hit = total = 0
        for name in p:
            tables = [(p[name].pseudo, q[name].pseudo)] + [(p[name].views[v], q[name].views[v]) for v in p[name].views]
            for tp, tq in tables:
                for f, rows in tp.items():
                    total += len(rows)
                    other = tq.get(f, np.zeros(0, dtype=PSEUDO_BBOX_DTYPE))
                    if not len(rows) or not len(other):
                        continue
                    ok = (iou_matrix(rows, other) >= iou) & (rows["class_id"][:, None] == other["class_id"][None])
                    ok &= np.abs(rows["objectness"][:, None] - other["objectness"][None]) <= score_tol
                    ok &= np.abs(rows["class_confidence"][:, None] - other["class_confidence"][None]) <= score_tol
                    hit += int(ok.any(1).sum())
        return hit / max(total, 1)
    return min(one_way(a, b), one_way(b, a))


# ------------------------------------------------------------------------- batched == one view at a time
@pytest.fixture(scope="module")
def sequential_fp32(model, data_dir):
    return run(model, data_dir, batched=False, batch_size=1)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_batched_equals_sequential_fp32(model, data_dir, sequential_fp32, batch_size):
    batched = run(model, data_dir, batched=True, batch_size=batch_size)
    assert_same_results(batched, sequential_fp32, atol=1e-4)
    # the comparison is not vacuous: every view predicts plenty of boxes, the merge removes some
    for m in batched.values():
        assert set(m.views) == {v.name for v in ALL_VIEWS}
        assert all(len(rows) for per in m.views.values() for rows in per.values())
        merged = m.num_pseudo_boxes
        assert 0 < merged < sum(len(r) for per in m.views.values() for r in per.values())


@pytest.mark.parametrize("hflip,tflip", [(True, False), (False, True), (False, False)])
def test_batched_equals_sequential_fewer_views(model, data_dir, hflip, tflip):
    kw = dict(hflip=hflip, tflip=tflip, batch_size=2)
    a, b = run(model, data_dir, batched=True, **kw), run(model, data_dir, batched=False, **kw)
    assert_same_results(a, b, atol=1e-4)
    names = {v.name for v in TTAConfig(hflip=hflip, tflip=tflip).views}
    assert all(set(m.views) == names for m in a.values())
    if not (hflip or tflip):  # one view: no merge, the merged boxes are that view's boxes
        for m in a.values():
            assert m.pseudo.keys() == m.views["id"].keys()
            assert all(m.pseudo[f].tobytes() == m.views["id"][f].tobytes() for f in m.pseudo)


#: bf16 tolerance: >= 98 % of the boxes (merged and per view) must have a same-class partner in the other path
#: with IoU >= 0.9 and objectness / class scores within 0.05 (on this CPU the two paths agree bit for bit).
BF16_MIN_MATCHED = 0.98


def test_batched_equals_sequential_bf16_autocast(model, data_dir):
    kw = dict(autocast_dtype="bf16", batch_size=2)
    a, b = run(model, data_dir, batched=True, **kw), run(model, data_dir, batched=False, **kw)
    assert matched_fraction(a, b) >= BF16_MIN_MATCHED
    for name in a:
        assert a[name].gt.keys() == b[name].gt.keys()


@pytest.fixture
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batched_equals_sequential_cuda(data_dir, no_tf32, precision):
    model = make_model()
    kw = dict(batch_size=2, autocast_dtype=None if precision == "fp32" else "bf16")
    a = run(model, data_dir, "cuda", batched=True, **kw)
    b = run(model, data_dir, "cuda", batched=False, **kw)
    if precision == "fp32":
        assert_same_results(a, b, atol=1e-4)
    else:
        assert matched_fraction(a, b) >= BF16_MIN_MATCHED
    cpu = run(make_model(), data_dir, "cpu", batched=True, batch_size=2)
    assert matched_fraction(a, cpu) >= (0.999 if precision == "fp32" else 0.9)


# --------------------------------------------------------------------------------------- equivariance
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_hflip_view_maps_back_onto_identity_view(tmp_path, symmetric, batched):
    """An exactly flip-equivariant detector on a frame of width 80 (padded to 96 inside the model): the h-flip
    views' boxes, mapped back with x' = W - 1 - x - w, land exactly on the identity views' boxes."""
    data = np.zeros((5, 20, 64, 80), dtype=np.uint8)
    if symmetric:
        data[:, :, 10:41, 20:60] = 3  # columns 20..59: its own mirror in a width-80 frame
        assert np.array_equal(data, data[..., ::-1])
    else:
        data[:, :, 10:41, 7:30] = 3
    write_custom_sequence(tmp_path / "train" / "s", data, [4])
    out = run(ExtentStub(), tmp_path / "train", kept={}, batched=batched, batch_size=1)["s"]
    for plain, flipped in (("id", "hflip"), ("tflip", "tflip_hflip")):
        assert out.views[plain].keys() == out.views[flipped].keys() and out.views[plain]
        for f in out.views[plain]:
            assert out.views[flipped][f].tobytes() == out.views[plain][f].tobytes()
    x0 = 20 if symmetric else 7
    row = out.views["id"][4][0]
    assert (row["x"], row["y"], row["w"], row["h"]) == (x0, 10, 39 if symmetric else 22, 30)
    assert all(len(rows) == 1 for rows in out.pseudo.values())  # 4 identical views merge into one box


def test_real_model_hflip_of_mirror_symmetric_frame(model, tmp_path):
    """The real (not equivariant) model on a mirror-symmetric frame of width 80: the h-flip view sees exactly the
    identity view's input (flip before padding), so its boxes are the identity boxes mirrored by W - 1 - x - w."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 11, size=(6, 20, 64, 80), dtype=np.uint8)
    data[..., 40:] = data[..., :40][..., ::-1]
    write_custom_sequence(tmp_path / "train" / "s", data, [5])
    out = run(model, tmp_path / "train", kept={}, batched=True, batch_size=1)["s"]
    for plain, flipped in (("id", "hflip"), ("tflip", "tflip_hflip")):
        assert out.views[plain].keys() == out.views[flipped].keys()
        for f, rows in out.views[plain].items():
            mirrored = rows.copy()
            mirrored["x"] = np.float32(80 - 1) - rows["x"] - rows["w"]
            assert len(rows) > 5
            assert_rows_match(out.views[flipped][f], mirrored, 1e-4, f"{plain} frame {f}")


# --------------------------------------------------------------------------------- time-flip offsets
@pytest.mark.parametrize("batched,batch_size", [(True, 1), (True, 3), (False, 1)])
@pytest.mark.parametrize("offset,fire_at", [(-1, 0), (-2, 0), (-1, 9), (-2, 9), (-1, 5), (-1, 4)])
def test_time_flip_prediction_lands_on_frame_j_plus_offset(data_dir, batched, batch_size, offset, fire_at):
    """A stub that fires only at the K-th step after its state reset: forward views put the box at frame
    ``start + K``; reversed views stream from the last representation, so their K-th step is representation
    ``N - 1 - K`` and the box lands on frame ``N - 1 - K + offset`` (dropped below 0 and at kept-GT frames)."""
    out = run(CounterStub(fire_at), data_dir, batched=batched, batch_size=batch_size, tflip_offset=offset)
    for name, (n, labeled) in SEQS.items():
        m = out[name]
        start = max(labeled[0] - L + 1, 0)
        assert m.stream_range == (start, n)
        expect = {}
        if fire_at < n - start:
            fwd = start + fire_at
            rev = n - 1 - fire_at + offset
            expect = {"id": fwd, "hflip": fwd, "tflip": rev, "tflip_hflip": rev}
        for view, frames in m.views.items():
            f = expect.get(view)
            wanted = [] if f is None or f < 0 or f in KEPT_REPRS[name] else [f]
            assert sorted(frames) == wanted, (name, view)
        assert sorted(m.pseudo) == sorted({f for per in m.views.values() for f in per})
        assert all(len(rows) == 1 for rows in m.pseudo.values())


class ProbeStub(_Stub):
    """Reads the largest value ``v`` of the LAST input channel and, if ``v > 0``, detects a 10x10 class-0 box at
    ``x = 15 + 3 v``: it sees only time-flipped frames (channels reversed) of data that lives in channel 0."""

    def forward_backbone(self, x, states=None):
        zero = torch.zeros(x.shape[0], 1, 1, 1, device=x.device)
        return {1: x[:, -1].amax(dim=(-1, -2)).view(-1, 1, 1, 1)}, [(zero, zero)]

    def forward_detect(self, features):
        v = features[1].reshape(-1)
        preds = torch.zeros(len(v), 1, 7, device=v.device)
        preds[:, 0, 0], preds[:, 0, 1], preds[:, 0, 2], preds[:, 0, 3] = 20 + 3 * v, 30.0, 10.0, 10.0
        preds[:, 0, 4] = torch.where(v > 0, 10.0, -10.0)
        preds[:, 0, 5], preds[:, 0, 6] = 10.0, -10.0
        return preds


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("offset", [-1, -2])
def test_time_flip_reverses_channels_and_pairs_repr_j_with_frame_j_plus_offset(tmp_path, batched, offset):
    n = 10
    data = np.zeros((n, 20, 64, 96), dtype=np.uint8)
    for j in range(n):
        data[j, 0, 0, :] = j + 1  # repr j: its index + 1 in channel 0 (a whole row: flip-invariant)
    write_custom_sequence(tmp_path / "train" / "s", data, [3, 7])  # L = 4: streams start at repr 0
    out = run(ProbeStub(), tmp_path / "train", kept={"s": [1]}, batched=batched, batch_size=2,
              tflip_offset=offset)["s"]
    assert not out.views["id"] and not out.views["hflip"]  # forward frames: channel 19 is empty
    frames = [j + offset for j in range(n) if j + offset >= 0 and j + offset != 7]
    for view in ("tflip", "tflip_hflip"):
        assert sorted(out.views[view]) == frames
        for f in frames:
            (row,) = out.views[view][f]
            x = 15 + 3 * (f - offset + 1)  # the box of reversed repr j = f - offset
            assert row["x"] == (x if view == "tflip" else 96 - 1 - x - 10) and row["w"] == 10


def test_every_frame_but_kept_gt_is_predicted_once_per_view(data_dir):
    for batched in (True, False):
        out = run(CounterStub(None), data_dir, batched=batched, batch_size=2, tflip_offset=-2)
        for name, (n, labeled) in SEQS.items():
            m = out[name]
            start = max(labeled[0] - L + 1, 0)
            fwd = set(range(start, n)) - KEPT_REPRS[name]
            rev = {j - 2 for j in range(start, n) if j - 2 >= 0} - KEPT_REPRS[name]
            assert set(m.views["id"]) == set(m.views["hflip"]) == fwd
            assert set(m.views["tflip"]) == set(m.views["tflip_hflip"]) == rev
            assert set(m.pseudo) == fwd | rev and not set(m.pseudo) & set(m.gt)
            assert m.num_frame_views == 4 * (n - start)


# --------------------------------------------------------------------------------- GT pass-through
def test_kept_gt_passes_through_unchanged(model, data_dir):
    out = run(model, data_dir, batched=True, batch_size=2)
    for name, (n, labeled) in SEQS.items():
        m = out[name]
        file_labels = read_labels(SequencePaths(data_dir / name).labels)
        assert sorted(m.gt) == sorted(labeled[i] for i in KEPT[name])
        for i in KEPT[name]:
            src, got = file_labels.frame(i), m.gt[labeled[i]]
            assert got.dtype == PSEUDO_BBOX_DTYPE
            for k in ("t", "x", "y", "w", "h", "class_id", "class_confidence"):
                assert np.array_equal(got[k], src[k].astype(got[k].dtype)), k
            assert np.array_equal(got["objectness"], src["class_confidence"])
            assert (got["t"] > 0).all()
        for per in list(m.views.values()) + [m.pseudo]:
            assert not set(per) & set(m.gt)
            assert all((rows["t"] == 0).all() for rows in per.values())
        # withheld (skipped) GT frames are predicted
        skipped = [labeled[i] for i in range(len(labeled)) if i not in KEPT[name]]
        assert set(skipped) <= set(m.pseudo)


# ------------------------------------------------------------------------------------ per-view filters
FRAME = (64, 96)  # max width (9 * 96) // 10 = 86
#            x1     y1    x2     y2     obj   cls   class   expected
FILTER_CASES = [
    ((10, 10, 30, 30, 0.60, 0.90, 0), None),                 # obj == threshold: strict > drops it
    ((10, 10, 30, 30, 0.61, 0.61, 0), (10, 10, 20, 20)),
    ((10, 10, 30, 30, 0.35, 0.35, 0), None),                 # car thresholds 0.6
    ((10, 10, 30, 30, 0.35, 0.35, 1), (10, 10, 20, 20)),     # ped thresholds 0.3
    ((10, 10, 30, 30, 0.30, 0.90, 1), None),                 # obj == 0.3
    ((10, 10, 30, 30, 0.90, 0.30, 1), None),                 # cls == 0.3
    ((10, 10, 30, 30, 0.90, 0.90, 2), None),                 # no threshold for class 2
    ((10, 10, 14.9, 30, 0.9, 0.9, 0), None),                 # w < 5
    ((10, 10, 15, 30, 0.9, 0.9, 0), (10, 10, 5, 20)),        # w == 5 kept
    ((10, 10, 30, 14.99, 0.9, 0.9, 0), None),                # h < 5
    ((0, 0, 86, 20, 0.9, 0.9, 0), (0, 0, 86, 20)),           # w == (9 W) // 10 kept
    ((0, 0, 86.5, 20, 0.9, 0.9, 0), None),                   # w > (9 W) // 10
    ((-10, -5, 20, 70, 0.9, 0.9, 1), (0, 0, 20, 63)),        # clamped to [0, W-1] x [0, H-1]
    ((100, 10, 120, 30, 0.9, 0.9, 0), None),                 # outside: flat after clamping
    ((90, 60, 110, 80, 0.9, 0.9, 0), None),                  # clamped to h = 3 < 5
    ((-20, 10, 90, 30, 0.9, 0.9, 0), None),                  # clamped width 90 > 86
    ((-20, 10, 70, 30, 0.9, 0.9, 0), (0, 10, 70, 20)),       # raw width 90, clamped 70: kept
]


def _filter(hflip=False, scale=1.0, **cfg):
    det = torch.tensor([c[0] for c in FILTER_CASES], dtype=torch.float32)
    cfg = TTAConfig(**cfg)
    obj, cls = cfg.class_thresholds(2)
    return filter_view_predictions([det, det[:0]], [hflip, False], FRAME, obj, cls, cfg, scale)


def test_per_view_filters_thresholds_sizes_and_clamping():
    rows, empty = _filter()
    assert empty.shape == (0, 8)
    kept = [(c, e) for c, e in FILTER_CASES if e is not None]
    assert rows.shape == (len(kept), 8)
    for r, (c, e) in zip(rows.tolist(), kept):
        assert r[0] == 0                                       # pseudo label: t = 0
        assert r[1:5] == pytest.approx(e, abs=1e-5)
        assert (r[5], r[6], r[7]) == pytest.approx((c[6], c[5], c[4]))  # class, cls conf, obj conf


def test_per_view_hflip_back_and_x2_scale():
    base, _ = _filter()
    flipped, _ = _filter(hflip=True)
    expect = base.clone()
    expect[:, 1] = 96 - 1 - base[:, 1] - base[:, 3]
    torch.testing.assert_close(flipped, expect)
    scaled, _ = _filter(hflip=True, scale=2.0)
    expect[:, 1:5] *= 2
    torch.testing.assert_close(scaled, expect)


def test_thresholds_configuration():
    cfg = TTAConfig()
    assert (cfg.confidence_threshold, cfg.nms_threshold, cfg.tflip_offset, cfg.min_box_side) == (0.01, 0.45, -1, 5)
    assert cfg.class_thresholds(2) == ((0.6, 0.3), (0.6, 0.3))
    assert cfg.class_thresholds(3) == ((0.3, 0.3, 0.6), (0.3, 0.3, 0.6))   # gen4 [a, b] -> [b, b, a]
    assert TTAConfig(obj_thresh=0.5).class_thresholds(3)[0] == (0.5, 0.5, 0.5)
    assert [cfg.max_box_width(w) for w in (304, 640, 96, 10)] == [273, 576, 86, 9]  # (9 W) // 10
    g4 = TTAConfig.for_camera("gen4")
    assert (g4.tflip_offset, g4.downsampled_by_2, g4.sequence_length) == (-2, True, 10)
    assert [v.name for v in cfg.views] == ["id", "hflip", "tflip", "tflip_hflip"]
    with pytest.raises(ValueError):
        TTAConfig(autocast_dtype="int8")


def test_merge_views_classwise_nms_keeps_survivor_scores():
    #                   t  x   y   w   h  cls  cls_conf obj
    rows = torch.tensor([[0, 10, 10, 20, 20, 0, 0.80, 0.90],    # A .72, IoU(A, B) = .905: suppressed
                         [0, 11, 10, 20, 20, 0, 0.90, 0.90],    # B .81
                         [0, 10, 10, 20, 20, 1, 0.50, 0.50],    # C .25, other class: kept
                         [0, 50, 10, 10, 10, 0, 0.09, 0.10],    # D .009 < 0.01: dropped
                         [0, 20, 10, 20, 20, 0, 0.70, 0.70]])   # E .49, IoU(B, E) = .38: kept
    out = merge_views(rows, 0.01, 0.45)
    torch.testing.assert_close(out, rows[[1, 4, 2]])


# ------------------------------------------------------------------------------- downsampled (Gen4)
def test_downsampled_by_2_boxes_in_sensor_pixels(model, tmp_path):
    write_sequence(tmp_path / "full" / "s", 8, [2, 5], seed=3, ds2=False)
    write_sequence(tmp_path / "half" / "s", 8, [2, 5], seed=3, ds2=True)  # same representations, x2 GT
    full = run(model, tmp_path / "full", kept={"s": [1]}, batch_size=1)["s"]
    half = run(model, tmp_path / "half", kept={"s": [1]}, batch_size=1, downsampled_by_2=True)["s"]
    assert (full.sensor_hw, half.frame_hw, half.sensor_hw) == ((64, 96), (64, 96), (128, 192))
    assert full.pseudo.keys() == half.pseudo.keys() and full.pseudo
    for f in full.pseudo:
        a = full.pseudo[f].copy()
        for k in ("x", "y", "w", "h"):
            a[k] *= 2
        assert_rows_match(half.pseudo[f], a, 1e-4, f"frame {f}")
    src = read_labels(SequencePaths(tmp_path / "half" / "s").labels).frame(1)
    assert np.array_equal(half.gt[5]["x"], src["x"]) and np.array_equal(half.gt[5]["w"], src["w"])
    assert (half.gt[5]["x"] + half.gt[5]["w"]).max() > 96  # sensor pixels, untouched


# ------------------------------------------------------------------------------------------ throughput
def test_report_frame_views_per_second(model, data_dir, capsys):
    """Not asserted: frame-views/s (representations x views) of both paths for the tiny model on this CPU."""
    lines = []
    for batched, bs in ((True, 8), (False, 1)):
        run(model, data_dir, batched=batched, batch_size=bs)  # warm-up
        t0 = time.perf_counter()
        out = run(model, data_dir, batched=batched, batch_size=bs)
        dt = time.perf_counter() - t0
        fv = sum(m.num_frame_views for m in out.values())
        lines.append(f"{'batched' if batched else 'sequential'} (batch {bs} seqs): {fv} frame-views in {dt:.2f} s "
                     f"= {fv / dt:.1f} frame-views/s")
    with capsys.disabled():
        print("\n[tta throughput, tiny RVT 64x96, CPU] " + " | ".join(lines))


# ------------------------------------------------------------------------------------- optional fast paths
def assert_identical_results(a: dict[str, MergedSequence], b: dict[str, MergedSequence]) -> None:
    """Same frames and byte-identical rows, merged and per view."""
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        assert x.num_frame_views == y.num_frame_views and x.pseudo.keys() == y.pseudo.keys()
        assert all(x.pseudo[f].tobytes() == y.pseudo[f].tobytes() for f in x.pseudo)
        for view in x.views:
            assert x.views[view].keys() == y.views[view].keys()
            assert all(x.views[view][f].tobytes() == y.views[view][f].tobytes() for f in x.views[view])


@pytest.mark.parametrize("batched", [True, False])
def test_score_prefilter_and_read_prefetch_change_nothing(model, data_dir, batched):
    plain = run(model, data_dir, batched=batched, batch_size=2, prefilter_scores=False, prefetch_reads=False)
    fast = run(model, data_dir, batched=batched, batch_size=2, prefilter_scores=True, prefetch_reads=True)
    assert_identical_results(fast, plain)
    assert sum(m.num_pseudo_boxes for m in fast.values()) > 0


def test_min_passing_score_bounds_every_passing_box():
    cfg = TTAConfig(obj_thresh=(0.6, 0.3), cls_thresh=(0.7, 0.25))
    floor = cfg.min_passing_score(2)
    assert floor == float(torch.tensor(0.3, dtype=torch.float32) * torch.tensor(0.25, dtype=torch.float32))
    assert cfg.score_floor(2) == floor
    assert TTAConfig(prefilter_scores=False).score_floor(2) == 0.01
    # the smallest float32 scores just above the thresholds still clear the floor
    obj = torch.nextafter(torch.tensor(0.3), torch.tensor(1.0))
    cls = torch.nextafter(torch.tensor(0.25), torch.tensor(1.0))
    assert float(obj * cls) >= floor
