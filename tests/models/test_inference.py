"""Streaming inference: slot scheduling, chunking, frame selection, timestamps, Prophesee conversion."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from builders import spread_logit_model, write_sequence
from leod_core.data.formats import PROPHESEE_BBOX_DTYPE, SequencePaths, read_event_repr
from leod_core.models.inference import (InferenceConfig, SequencePredictions, clamp_detections,
                                        iter_sequence_predictions, predictions_to_prophesee,
                                        sequence_to_prophesee)
from leod_core.models.postprocess import postprocess

HW = (64, 96)
CONF = 0.3


SEQS = {"seq_long": (13, [2, 5, 8, 12]), "seq_short": (4, [0, 3]), "seq_mid": (8, [1, 4, 7])}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("infer")
    for i, (name, (n, labeled)) in enumerate(SEQS.items()):
        write_sequence(root / "test" / name, n, labeled, seed=i)
    return root


def make_model(hw=HW) -> torch.nn.Module:
    return spread_logit_model(seed=0, hw=hw)


@pytest.fixture(scope="module")
def model():
    return make_model()


def reference(model, root: Path, name: str, start: int = 0) -> list[np.ndarray]:
    """Predictions of every representation from ``start`` by a plain loop: one sequence, batch 1, zero state."""
    data = read_event_repr(SequencePaths(root / "test" / name).ev_repr_file(False))
    out, states = [], None
    with torch.inference_mode():
        for x in data[start:]:
            features, states = model.forward_backbone(torch.from_numpy(x[None]).float(), states)
            det = postprocess(model.forward_detect(features), 2, CONF, 0.45)[0]
            out.append(det.numpy())
    return out


def run(model, root, **kw) -> dict[str, SequencePredictions]:
    frames = kw.pop("frames", "all")
    cfg = InferenceConfig(confidence_threshold=CONF, **kw)
    return {p.name: p for p in iter_sequence_predictions(model, root, "test", cfg, "cpu", frames=frames,
                                                         progress=False)}


def assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def refs(model, dataset):
    return {name: reference(model, dataset, name) for name in SEQS}


def test_slots_process_every_repr_once_in_order_with_resets(model, dataset, refs):
    preds = run(model, dataset, batch_size=2, sequence_length=3, start_from_zero=True)
    assert set(preds) == set(SEQS)
    for name, (n, labeled) in SEQS.items():
        p = preds[name]
        np.testing.assert_array_equal(p.repr_idx, np.arange(n))
        assert p.stream_range == (0, n)
        assert sum(len(d) for d in refs[name]) > 0
        assert_same(p.detections, refs[name])


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batch_size_does_not_change_predictions(model, dataset, refs, batch_size):
    preds = run(model, dataset, batch_size=batch_size, sequence_length=4, start_from_zero=True)
    for name in SEQS:
        assert_same(preds[name].detections, refs[name])


def test_sequence_length_chunking_does_not_change_results(model, dataset):
    a = run(model, dataset, batch_size=2, sequence_length=3, start_from_zero=True)
    b = run(model, dataset, batch_size=2, sequence_length=7, start_from_zero=True)
    for name in SEQS:
        np.testing.assert_array_equal(a[name].repr_idx, b[name].repr_idx)
        assert_same(a[name].detections, b[name].detections)


def test_rvt_stream_start_is_first_label_minus_sequence_length(model, dataset):
    L = 2
    preds = run(model, dataset, batch_size=2, sequence_length=L)
    for name, (n, labeled) in SEQS.items():
        start = max(labeled[0] - L + 1, 0)
        assert preds[name].stream_range == (start, n)
        np.testing.assert_array_equal(preds[name].repr_idx, np.arange(start, n))
        assert_same(preds[name].detections, reference(model, dataset, name, start))


def test_labeled_frames_and_timestamps(model, dataset, refs):
    preds = run(model, dataset, batch_size=2, sequence_length=3, start_from_zero=True, frames="labeled")
    for name, (n, labeled) in SEQS.items():
        p = preds[name]
        np.testing.assert_array_equal(p.repr_idx, labeled)
        np.testing.assert_array_equal(p.objframe_idx, np.arange(len(labeled)))
        np.testing.assert_array_equal(p.timestamps_us, 50_000 + 50_000 * np.asarray(labeled))
        assert_same(p.detections, [refs[name][r] for r in labeled])
    all_frames = run(model, dataset, batch_size=2, sequence_length=3, start_from_zero=True)
    p = all_frames["seq_long"]
    np.testing.assert_array_equal(p.timestamps_us, 50_000 + 50_000 * np.arange(13))
    expected = np.full(13, -1)
    expected[SEQS["seq_long"][1]] = np.arange(4)
    np.testing.assert_array_equal(p.objframe_idx, expected)


def test_sequence_subset_and_unknown_name(model, dataset):
    preds = run(model, dataset, batch_size=4, sequence_length=5, start_from_zero=True)
    cfg = InferenceConfig(confidence_threshold=CONF, start_from_zero=True)
    only = list(iter_sequence_predictions(model, dataset, "test", cfg, sequences=["seq_mid"], frames="all",
                                          progress=False))
    assert [p.name for p in only] == ["seq_mid"]
    assert_same(only[0].detections, preds["seq_mid"].detections)
    with pytest.raises(ValueError, match="unknown sequences"):
        list(iter_sequence_predictions(model, dataset, "test", cfg, sequences=["nope"], progress=False))


def test_boxes_clamped_into_the_frame_only_on_request(model, dataset):
    raw = run(model, dataset, batch_size=2, sequence_length=5, start_from_zero=True)
    clamped = run(model, dataset, batch_size=2, sequence_length=5, start_from_zero=True, clamp_to_frame=True)
    outside = 0
    for name in SEQS:
        for r, c in zip(raw[name].detections, clamped[name].detections):
            assert r.shape == c.shape
            assert np.all(c[:, 0:4:2] >= 0) and np.all(c[:, 0:4:2] <= HW[1] - 1)
            assert np.all(c[:, 1:4:2] >= 0) and np.all(c[:, 1:4:2] <= HW[0] - 1)
            np.testing.assert_array_equal(r[:, 4:], c[:, 4:])
            outside += int(np.any(r[:, :4] != c[:, :4]))
    assert outside > 0  # the untrained model predicts boxes crossing the border; RVT keeps them as they are


def test_clamp_detections():
    det = torch.tensor([[-5.0, -2.0, 100.0, 70.0, 0.5, 0.6, 1.0]])
    out = clamp_detections(det, HW)
    assert out[0, :4].tolist() == [0.0, 0.0, 95.0, 63.0]
    assert det[0, 0] == -5.0


def test_bf16_autocast_close_to_fp32(model, dataset):
    fp32 = run(model, dataset, batch_size=2, sequence_length=5, start_from_zero=True, frames="labeled")
    amp = run(model, dataset, batch_size=2, sequence_length=5, start_from_zero=True, frames="labeled",
              autocast_dtype="bfloat16")
    matched = total = 0
    for name in SEQS:
        np.testing.assert_array_equal(fp32[name].repr_idx, amp[name].repr_idx)
        for a, b in zip(fp32[name].detections, amp[name].detections):
            for box in a:  # an fp32 box is matched by a bf16 box of the same class with IoU > 0.8
                same = b[b[:, 6] == box[6]]
                lt, rb = np.maximum(same[:, :2], box[:2]), np.minimum(same[:, 2:4], box[2:4])
                inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
                area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
                iou = inter / (area(same) + area(box) - inter)
                matched += int(np.any(iou > 0.8))
                total += 1
    assert total > 0 and matched >= 0.8 * total


def test_predictions_to_prophesee_dtype_fields_and_sorting():
    dets = [np.array([[10, 20, 40, 60, 0.9, 0.8, 1]], np.float32),
            np.zeros((0, 7), np.float32),
            np.array([[1, 2, 3, 5, 0.5, 0.25, 0], [5, 5, 9, 9, 0.4, 0.3, 1]], np.float32)]
    out = predictions_to_prophesee(dets, [300, 200, 100])
    assert out.dtype == PROPHESEE_BBOX_DTYPE
    assert out["t"].tolist() == [100, 100, 300]
    first = out[0]
    assert (first["x"], first["y"], first["w"], first["h"]) == (1, 2, 2, 3)
    assert first["class_id"] == 0 and first["track_id"] == 0
    assert first["class_confidence"] == np.float32(0.25)  # the class probability, as RVT's to_prophesee
    assert out[2]["class_confidence"] == np.float32(0.8) and out[2]["class_id"] == 1
    assert predictions_to_prophesee([], []).dtype == PROPHESEE_BBOX_DTYPE
    with pytest.raises(ValueError):
        predictions_to_prophesee(dets, [1, 2])


def test_sequence_to_prophesee_uses_repr_timestamps(model, dataset):
    p = run(model, dataset, batch_size=2, sequence_length=5, start_from_zero=True, frames="labeled")["seq_mid"]
    boxes = sequence_to_prophesee(p)
    assert len(boxes) == p.num_detections > 0
    assert set(np.unique(boxes["t"]).tolist()) <= set(p.timestamps_us.tolist())
    assert np.all(np.diff(boxes["t"].astype(np.int64)) >= 0)


def test_config_validation():
    with pytest.raises(ValueError):
        InferenceConfig(batch_size=0)
    with pytest.raises(ValueError):
        InferenceConfig(autocast_dtype="int8")
    assert InferenceConfig(autocast_dtype="bf16").torch_autocast_dtype is torch.bfloat16
    assert InferenceConfig().confidence_threshold == 0.001
