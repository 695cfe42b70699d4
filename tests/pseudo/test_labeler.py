"""LEOD's pseudo-labeller after the TTA merge: tracking filter (ignore class 1024 with scores kept), inpainting
(class 1024, zero scores), GT untouched, LEOD's on-disk rows; end to end with a capturing writer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from builders import ModelPaddingItself, spread_logit_model, write_sequence
from leod_core.data.formats import PSEUDO_BBOX_DTYPE, SequenceLabels, SequencePaths, read_labels
from leod_core.data.splits import LabelSplit
from leod_core.pseudo.labeler import (LabelerConfig, concat_rows, pseudo_label_sequences, same_rows,
                                     track_and_summarize)
from leod_core.pseudo.tracker import TrackerConfig
from leod_core.pseudo.tta import MergedSequence, TTAConfig, predict_sequence_views

IGNORE = 1024


def rows(boxes, t=0, cls=0, scores=(0.8, 0.9)) -> np.ndarray:
    """``PSEUDO_BBOX_DTYPE`` rows of (x, y, w, h) boxes with (class_confidence, objectness) ``scores``."""
    out = np.zeros(len(boxes), dtype=PSEUDO_BBOX_DTYPE)
    for i, (x, y, w, h) in enumerate(boxes):
        out["x"][i], out["y"][i], out["w"][i], out["h"][i] = x, y, w, h
    out["t"], out["class_id"] = t, cls
    out["class_confidence"], out["objectness"] = scores
    return out


def hand_sequence() -> MergedSequence:
    """Frames 0..16 of a 304x240 sequence:

    * T1 (car): moves 5 px/frame over frames 0..9, missing at frame 4 -> long track, gap inpainted at frame 4;
    * T2 (ped): frames 8, 9 only -> short and finished both forwards and backwards -> ignore (1024), scores kept;
    * T3 (car): moves 2 px/frame over frames 10..16, missing at the GT frame 12 -> not inpainted there;
    * GT (ped) at frame 12: two boxes, one of them a one-frame "track" -> never touched.
    """
    pseudo = {f: rows([(20 + 5 * f, 50, 40, 30)], scores=(0.8, 0.9 - 0.01 * f)) for f in (0, 1, 2, 3, 5, 6, 7, 8, 9)}
    for f in (8, 9):
        pseudo[f] = concat_rows([pseudo[f], rows([(200, 100, 30, 30)], cls=1, scores=(0.4, 0.5))])
    for f in (10, 11, 13, 14, 15, 16):
        pseudo[f] = rows([(150 + 2 * f, 150, 40, 30)], scores=(0.7, 0.75))
    gt = {12: rows([(100, 100, 50, 40), (5, 150, 40, 30)], t=1_234_567, cls=1, scores=(0.9, 0.9))}
    return MergedSequence("hand", Path("."), 30, (240, 304), (240, 304), (0, 30), pseudo, gt)


def test_tracker_ignores_short_tracks_inpaints_gaps_and_keeps_gt():
    m = hand_sequence()
    res = track_and_summarize(m, TrackerConfig())
    o2r = res.objframe_idx_2_repr_idx
    assert o2r.dtype == np.int64 and list(o2r) == list(range(17))  # frame 4 created by inpainting
    assert res.labels.labels.dtype == PSEUDO_BBOX_DTYPE
    assert res.labels.objframe_idx_2_label_idx.dtype == np.int64
    frame = {int(f): res.labels.frame(i) for i, f in enumerate(o2r)}
    # inpainted: t = 0, class 1024, zero scores, the linearly extrapolated box
    (ip,) = frame[4]
    assert (ip["t"], ip["class_id"], ip["class_confidence"], ip["objectness"]) == (0, IGNORE, 0, 0)
    assert (ip["x"], ip["y"], ip["w"], ip["h"]) == pytest.approx((40, 50, 40, 30), abs=1e-4)
    # the short track becomes ignore boxes with their scores; the long tracks keep class and scores
    for f in (8, 9):
        car, ped = frame[f]
        assert same_rows(car[None], m.pseudo[f][:1])
        assert (ped["class_id"], ped["class_confidence"], ped["objectness"]) == (IGNORE, np.float32(0.4),
                                                                                 np.float32(0.5))
        assert (ped["x"], ped["y"], ped["w"], ped["h"], ped["t"]) == (200, 100, 30, 30, 0)
    for f in set(m.pseudo) - {8, 9}:
        assert same_rows(frame[f], m.pseudo[f])
    # GT untouched, and no inpainting on the GT frame although T3 misses it
    assert same_rows(frame[12], m.gt[12])
    assert (res.num_ignored, res.num_inpainted, res.num_gt, res.num_gt_frames, res.num_pseudo) == (2, 1, 2, 1, 17)
    assert len(res.labels.labels) == 17 + 1 + 2


def test_tracker_options_and_empty_sequence():
    m = hand_sequence()
    off = track_and_summarize(m, TrackerConfig(min_track_len=0))  # LEOD: min_track_len <= 0 disables it
    assert off.num_ignored == off.num_inpainted == 0 and 4 not in off.objframe_idx_2_repr_idx
    no_ip = track_and_summarize(m, TrackerConfig(inpaint=False))
    assert (no_ip.num_ignored, no_ip.num_inpainted) == (2, 0)
    empty = MergedSequence("e", Path("."), 5, (240, 304), (240, 304), (0, 5), {}, {})
    res = track_and_summarize(empty)
    assert len(res.labels.labels) == 0 and res.labels.labels.dtype == PSEUDO_BBOX_DTYPE
    assert res.objframe_idx_2_repr_idx.shape == (0,) and res.objframe_idx_2_repr_idx.dtype == np.int64


def test_gt_and_pseudo_on_one_frame_is_an_error():
    m = hand_sequence()
    m.pseudo[12] = rows([(1, 1, 10, 10)])
    with pytest.raises(AssertionError):
        track_and_summarize(m)


# ----------------------------------------------------------------------------------------- end to end
SEQS = {"a": (30, [6, 8, 10, 12, 20, 28]), "b": (16, [0, 3, 9]), "c": (22, [1, 4, 7, 15])}
SPLIT = LabelSplit(setting="wsod", ratio=0.5, sequence_length=4,
                   labeled_frames={"a": [0, 2, 4], "b": [1], "c": []})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labeler") / "train"
    for i, (name, (n, labeled)) in enumerate(SEQS.items()):
        write_sequence(root / name, n, labeled, seed=10 + i)
    return root


@pytest.fixture(scope="module")
def model():
    return spread_logit_model(seed=1, spread_boxes=True)


class CaptureWriter:
    def __init__(self):
        self.written: dict[str, tuple[Path, SequenceLabels, np.ndarray]] = {}

    def __call__(self, seq_name, source_seq_dir, labels, objframe_idx_2_repr_idx):
        assert seq_name not in self.written
        self.written[seq_name] = (Path(source_seq_dir), labels, objframe_idx_2_repr_idx)


def test_pseudo_label_sequences_end_to_end(model, data_dir):
    tta = TTAConfig(sequence_length=4, batch_size=2)
    writer = CaptureWriter()
    counts = pseudo_label_sequences(model, data_dir, SPLIT, None, None, tta, TrackerConfig(), "cpu", writer,
                                    progress=False)
    assert sorted(writer.written) == ["a", "b", "c"]
    # the same as running the steps by hand
    kept = SPLIT.labeled_frames
    merged = {m.name: m for m in predict_sequence_views(model, data_dir, None, kept, tta)}
    totals = dict(frames=0, ignored=0, inpainted=0, gt_boxes=0, pseudo_boxes=0)
    for name, (src, labels, o2r) in writer.written.items():
        n, labeled = SEQS[name]
        assert src == data_dir / name
        labels.validate(name, 64, 96)                         # boxes inside the sensor frame
        assert labels.labels.dtype == PSEUDO_BBOX_DTYPE
        assert o2r.dtype == np.int64 and np.all(np.diff(o2r) > 0) and o2r[0] >= 0 and o2r[-1] < n
        assert len(o2r) == labels.num_frames and all(len(labels.frame(i)) for i in range(len(o2r)))
        expect = track_and_summarize(merged[name])
        assert np.array_equal(expect.objframe_idx_2_repr_idx, o2r) and same_rows(expect.labels.labels, labels.labels)
        # GT frames of the split: present with the file's rows; nothing else has t != 0
        src_labels = read_labels(SequencePaths(data_dir / name).labels)
        pos = {int(r): i for i, r in enumerate(o2r)}
        gt_frames = {labeled[i] for i in kept[name]}
        for i in kept[name]:
            got, ref = labels.frame(pos[labeled[i]]), src_labels.frame(i)
            for k in ("t", "x", "y", "w", "h", "class_id", "class_confidence"):
                assert np.array_equal(got[k], ref[k].astype(got[k].dtype))
            assert np.array_equal(got["objectness"], ref["class_confidence"])
        for f, i in pos.items():
            fr = labels.frame(i)
            assert (fr["t"] != 0).all() if f in gt_frames else (fr["t"] == 0).all()
            assert set(fr["class_id"].tolist()) <= {0, 1, IGNORE}
            inpainted = (fr["class_id"] == IGNORE) & (fr["objectness"] == 0)
            assert (fr["class_confidence"][inpainted] == 0).all()
            assert ((fr["objectness"] > 0.3) | inpainted).all()   # everything else passed the thresholds
        totals["frames"] += len(o2r)
        totals["ignored"] += expect.num_ignored
        totals["inpainted"] += expect.num_inpainted
        totals["gt_boxes"] += expect.num_gt
        totals["pseudo_boxes"] += expect.num_pseudo
        assert len(labels.labels) == expect.num_pseudo + expect.num_inpainted + expect.num_gt
    for k, v in totals.items():
        assert counts[k] == v, k
    assert counts["sequences"] == 3 and counts["gt_frames"] == 4
    assert counts["frame_views"] == 4 * sum(n - max(lab[0] - 3, 0) for n, lab in SEQS.values())
    assert counts["frame_views_per_s"] > 0
    assert counts["pseudo_boxes"] > 0 and counts["ignored"] > 0  # the tracker does act on these predictions


def test_unknown_sequence_and_missing_writer(model, data_dir):
    with pytest.raises(ValueError, match="not in the label split"):
        pseudo_label_sequences(model, data_dir, SPLIT, ["zzz"], None, writer=CaptureWriter(), progress=False)
    with pytest.raises(ValueError, match="out_dir or a writer"):
        pseudo_label_sequences(model, data_dir, SPLIT, ["a"], None, progress=False)


def test_background_write_gives_the_same_labels_in_the_same_order(model, data_dir):
    tta = TTAConfig(sequence_length=4, batch_size=2)
    inline, background = CaptureWriter(), CaptureWriter()
    counts = [pseudo_label_sequences(model, data_dir, SPLIT, None, None, tta, TrackerConfig(), "cpu", writer,
                                     progress=False, labeler_cfg=LabelerConfig(background_write=flag,
                                                                               max_pending_sequences=1))
              for writer, flag in ((inline, False), (background, True))]
    assert list(inline.written) == list(background.written)
    for name, (src, labels, o2r) in inline.written.items():
        src_b, labels_b, o2r_b = background.written[name]
        assert src == src_b and o2r.tobytes() == o2r_b.tobytes()
        assert labels.labels.tobytes() == labels_b.labels.tobytes()
    timing = ("seconds", "frame_views_per_s")
    assert {k: v for k, v in counts[0].items() if k not in timing} == \
           {k: v for k, v in counts[1].items() if k not in timing}


def test_background_writer_error_reaches_the_caller(model, data_dir):
    def failing_writer(*_):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        pseudo_label_sequences(model, data_dir, SPLIT, None, None, TTAConfig(sequence_length=4, batch_size=2),
                               writer=failing_writer, progress=False, labeler_cfg=LabelerConfig())
    with pytest.raises(ValueError, match="max_pending_sequences"):
        LabelerConfig(max_pending_sequences=0)


#: A frame size that the model zero-pads (to 64 x 96), so that the engine's padded uint8 input is exercised.
UNPADDED_HW = (60, 90)


def test_engine_padding_the_input_gives_the_labels_of_the_model_padding_it(tmp_path):
    """The engine's fast path (bottom/right zero padding and the mirrored rows written into its uint8 input,
    feature rows handed to the head without a copy) against the model padding unpadded frames itself."""
    root = tmp_path / "train"
    for i, (name, (n, labeled)) in enumerate(SEQS.items()):
        write_sequence(root / name, n, labeled, seed=30 + i, hw=UNPADDED_HW)
    model = spread_logit_model(seed=1, hw=UNPADDED_HW, spread_boxes=True)
    tta = TTAConfig(sequence_length=4, batch_size=2, min_box_side=1.0)
    fast, reference = CaptureWriter(), CaptureWriter()
    for m, writer in ((model, fast), (ModelPaddingItself(model), reference)):
        pseudo_label_sequences(m, root, SPLIT, None, None, tta, TrackerConfig(), "cpu", writer, progress=False)
    assert list(fast.written) == list(reference.written)
    boxes = 0
    for name, (_, labels, o2r) in fast.written.items():
        _, labels_ref, o2r_ref = reference.written[name]
        assert o2r.tobytes() == o2r_ref.tobytes() and labels.labels.tobytes() == labels_ref.labels.tobytes()
        boxes += len(labels.labels)
    assert boxes > 0


def test_detector_rows_are_independent_of_their_batch_position():
    """The engine hands the head the feature rows in backbone order (mirrored views' rows after the others);
    it relies on a row's backbone and head outputs not depending on its position in the batch (bitwise)."""
    model = spread_logit_model(seed=1)
    x = torch.randint(0, 11, (6, 20, 64, 96), generator=torch.Generator().manual_seed(0)).float()
    perm = torch.tensor([0, 3, 1, 4, 2, 5])
    with torch.inference_mode():
        states = states_perm = None
        for _ in range(2):
            feats, states = model.forward_backbone(x, states)
            feats_perm, states_perm = model.forward_backbone(x[perm], states_perm)
        assert all(torch.equal(feats[k][perm], feats_perm[k]) for k in feats)
        head = model.forward_detect(feats).preds
        head_perm = model.forward_detect({k: v[perm] for k, v in feats.items()}).preds
    assert torch.equal(head[perm], head_perm)
