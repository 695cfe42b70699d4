"""Tests of the LEOD training loaders: random access, streaming, mixed sampling and label semantics.

The sequences are tiny and known: representation ``r`` has ``ev[r, c, 0, 0] == r`` and ``ev[r, c, 0, 1] == c``,
and the ground truth of the labeled frame at representation ``r`` has ``t == 1000 * (r + 1)``.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from leod_core.data import label_tensors as lt
from leod_core.data import sequence as sequence_module
from leod_core.data.augment import AugmentConfig, SamplerAugmentConfig
from leod_core.data.batch import Batch, Sample, collate_samples, merge_mixed_batches
from leod_core.data.formats import (EV_REPR_CHANNELS, IGNORE_CLASS_ID, PROPHESEE_BBOX_DTYPE, PSEUDO_BBOX_DTYPE,
                                    EventReprWriter, SequenceLabels, SequencePaths, write_labels, write_npy)
from leod_core.data.loaders import (MixedLoader, RandomAccessDataset, StreamingDataset, build_streams,
                                    build_train_loader, mixed_split, select_sequences)
from leod_core.data.sequence import (RandomAccessSequence, SequenceReader, StreamSequence,
                                     guaranteed_label_ranges)
from leod_core.data.splits import LabelSplit, write_split

HW = (16, 24)
C = EV_REPR_CHANNELS
NO_AUG = None
TFLIP_ONLY = SamplerAugmentConfig(prob_hflip=0.0, prob_tflip=1.0, prob_zoom=0.0)


# ------------------------------------------------------------------------------------------- fixtures
def label_t(repr_idx: int) -> int:
    return 1000 * (repr_idx + 1)


def repr_of(labels: torch.Tensor) -> int:
    """Representation index a GT label tensor belongs to (from its ``t``)."""
    return round(float(labels[0, lt.T]) / 1000) - 1


def write_sequence(root: Path, name: str, num_reprs: int, labeled_reprs: list[int], *, hw=HW,
                   boxes: dict[int, list[tuple]] | None = None, pseudo: bool = False,
                   downsampled_by_2: bool = False) -> Path:
    """Write ``{root}/train/{name}``; ``boxes[r]``: rows ``(x, y, w, h, class_id[, confidence, objectness])``."""
    seq = root / "train" / name
    paths = SequencePaths(seq)
    height, width = hw
    data = np.zeros((num_reprs, C, height, width), dtype=np.uint8)
    data[:, :, 0, 0] = np.arange(num_reprs)[:, None]
    data[:, :, 0, 1] = np.arange(C)[None, :]
    paths.ev_repr_dir.mkdir(parents=True, exist_ok=True)
    with EventReprWriter(paths.ev_repr_file(downsampled_by_2), C, height, width) as writer:
        writer.append(data)
    write_npy(paths.objframe_idx_2_repr_idx, np.asarray(labeled_reprs, dtype=np.int64))
    frames = []
    for r in labeled_reprs:
        rows = (boxes or {}).get(r, [(2.0, 3.0, 4.0, 5.0, 0)])
        arr = np.zeros(len(rows), dtype=PSEUDO_BBOX_DTYPE if pseudo else PROPHESEE_BBOX_DTYPE)
        for i, row in enumerate(rows):
            arr[i]["t"] = 0 if pseudo else label_t(r)
            for key, value in zip(("x", "y", "w", "h", "class_id"), row[:5]):
                arr[i][key] = value
            arr[i]["class_confidence"] = row[5] if len(row) > 5 else 1.0
            if pseudo:
                arr[i]["objectness"] = row[6] if len(row) > 6 else 1.0
        frames.append(arr)
    write_labels(paths.labels, SequenceLabels.from_frames(frames))
    return seq


def check_reprs(sample_or_ev, repr_idx, reversed_channels: bool = False) -> None:
    """The sample's pixels hold exactly representations ``repr_idx`` (-1: zero padding)."""
    ev = sample_or_ev.ev_repr if isinstance(sample_or_ev, Sample) else sample_or_ev
    for step, r in enumerate(repr_idx):
        if r < 0:
            assert not ev[step].any()
            continue
        assert torch.all(ev[step, :, 0, 0] == r)
        channels = torch.arange(C - 1, -1, -1) if reversed_channels else torch.arange(C)
        assert torch.equal(ev[step, :, 0, 1].long(), channels)


def label_reprs(labels: list) -> list[int | None]:
    return [None if lab is None else repr_of(lab) for lab in labels]


#: 30 representations, labeled every 3rd from 2: frames 0..9 at reprs 2, 5, ..., 29.
REPRS_30 = list(range(2, 30, 3))


@pytest.fixture()
def one_seq(tmp_path):
    write_sequence(tmp_path, "s0", 30, REPRS_30)
    return tmp_path


# ------------------------------------------------------------------------------------- random access
def test_random_access_windows_end_at_labeled_frames(one_seq):
    reader = SequenceReader(one_seq / "train" / "s0")
    seq = RandomAccessSequence(reader, sequence_length=4, tflip_offset=-1)
    assert seq.start_idx_offset == 1  # repr 2 has 3 reprs of history, repr 5 is the first with >= L-1 = 3
    assert len(seq) == len(REPRS_30) - 1
    for index in range(len(seq)):
        sample = seq.sample(index, time_flip=False, gen=None)
        end = REPRS_30[index + 1]
        expected = list(range(end - 3, end + 1))
        assert sample.repr_idx.tolist() == expected
        check_reprs(sample, expected)
        assert sample.is_first_sample and not sample.is_reversed and not sample.is_padded_mask.any()
        # labels at every labeled frame inside the window, GT at the window end
        assert label_reprs(sample.labels) == [r if r in REPRS_30 else None for r in expected]
        assert sample.labels[-1] is not None
        assert all(s is None for s in sample.skipped_labels)


def test_random_access_sequence_without_history_is_not_sampled(tmp_path):
    write_sequence(tmp_path, "short", 3, [0, 2])
    write_sequence(tmp_path, "ok", 30, REPRS_30)
    readers = [SequenceReader(tmp_path / "train" / n) for n in ("short", "ok")]
    assert len(RandomAccessSequence(readers[0], 4, -1)) == 0
    ds = RandomAccessDataset(readers, 4, NO_AUG)
    assert len(ds) == len(REPRS_30) - 1
    assert {ds[i].sequence for i in range(len(ds))} == {"ok"}


@pytest.mark.parametrize("offset", [-1, -2])
def test_random_access_time_flip_index_shift_and_channel_reversal(one_seq, offset):
    reader = SequenceReader(one_seq / "train" / "s0")
    seq = RandomAccessSequence(reader, sequence_length=4, tflip_offset=offset)
    gen = torch.Generator().manual_seed(0)
    for index in range(len(REPRS_30) - 1):  # time flip indexes objframes directly (no start offset)
        sample = seq.sample(index, time_flip=True, gen=gen)
        assert sample.is_reversed and sample.is_first_sample
        idx = sample.repr_idx.tolist()
        assert idx == sorted(idx, reverse=True) and len(idx) == 4
        check_reprs(sample, idx, reversed_channels=True)
        # step p shows repr idx[p] and carries the label of repr idx[p] + offset
        for p, lab in enumerate(sample.labels):
            target = idx[p] + offset
            assert (lab is not None) == (target in REPRS_30)
            if lab is not None:
                assert repr_of(lab) == target
        # LEOD's window: end = min(T, repr - offset + L); the labeled frame sits at the latest possible step
        end = min(30, REPRS_30[index] - offset + 4)
        assert idx == list(range(end - 1, end - 5, -1))
        assert repr_of(sample.labels[idx.index(REPRS_30[index] - offset)]) == REPRS_30[index]


def test_random_access_time_flip_last_frame_is_redrawn(tmp_path):
    write_sequence(tmp_path, "s0", 12, [3, 7, 11])  # the last labeled frame is the last repr
    seq = RandomAccessSequence(SequenceReader(tmp_path / "train" / "s0"), 4, -1)
    assert len(seq) == 3
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        sample = seq.sample(2, time_flip=True, gen=gen)  # objframe 2 = real last: redrawn to 0 or 1
        assert any(lab is not None for lab in sample.labels)
        assert 11 not in [r for r in label_reprs(sample.labels) if r is not None]


def test_wsod_split_keeps_and_skips_labels(one_seq):
    kept = [1, 5, 9]
    split = LabelSplit("wsod", 0.5, 4, {"s0": kept})
    write_split(one_seq / "split.json", split)
    selected = select_sequences(one_seq, split)
    assert [(s.path.name, s.kept_frames, s.guarantee_labels) for s in selected] == [("s0", (1, 5, 9), False)]
    reader = SequenceReader(selected[0].path, kept_frames=selected[0].kept_frames)
    assert reader.skip_label
    kept_reprs = {REPRS_30[k] for k in kept}
    ds = RandomAccessDataset([reader], 4, NO_AUG, seed=0)
    for i in range(len(ds)):
        sample = ds[i]
        assert any(lab is not None for lab in sample.labels)  # windows without kept labels are redrawn
        for r, lab, skipped in zip(sample.repr_idx.tolist(), sample.labels, sample.skipped_labels):
            assert (lab is not None) == (r in kept_reprs)
            assert (skipped is not None) == (r in REPRS_30 and r not in kept_reprs)
            if skipped is not None:
                assert repr_of(skipped) == r
    # streaming a WSOD sequence: the whole sequence from max(first labeled repr - L + 1, 0) = 0
    stream = build_streams([reader], [False], 4, -1)
    assert len(stream) == 1 and stream[0].range == (0, 30)
    first, second = stream[0].sample(0, time_flip=False), stream[0].sample(1, time_flip=False)
    assert label_reprs(first.labels) == [None] * 4 and label_reprs(first.skipped_labels) == [None, None, 2, None]
    assert label_reprs(second.labels) == [None, 5, None, None] and label_reprs(second.skipped_labels) == [None] * 4


def test_ssod_split_drops_unlabeled_sequences(tmp_path):
    for name in ("a", "b", "c"):
        write_sequence(tmp_path, name, 30, REPRS_30)
    split = LabelSplit("ssod", 0.34, 4, {"a": list(range(10)), "b": [], "c": list(range(10))})
    selected = select_sequences(tmp_path, split)
    assert [(s.path.name, s.guarantee_labels) for s in selected] == [("a", True), ("c", True)]
    assert select_sequences(tmp_path, None)[1].kept_frames is None
    with pytest.raises(ValueError, match="disagree"):
        select_sequences(tmp_path, LabelSplit("ssod", 0.5, 4, {"a": [0], "b": []}))


def test_wsod_sequences_without_labeled_frames_are_logged_once_with_their_count(tmp_path, caplog):
    for name in ("a", "b", "c"):
        write_sequence(tmp_path, name, 30, REPRS_30)
    with caplog.at_level(logging.WARNING):
        selected = select_sequences(tmp_path, LabelSplit("wsod", 0.1, 4, {"a": [], "b": [3], "c": []}))
        select_sequences(tmp_path, LabelSplit("ssod", 0.34, 4, {"a": [], "b": list(range(10)), "c": []}))
    assert [s.path.name for s in selected] == ["b"]
    (warning,) = caplog.records                         # SSOD's unlabeled sequences are by design: not logged
    assert warning.message == "2 of 3 WSOD sequences keep no labeled frame and are left out of training: a, c"


# ------------------------------------------------------------------------------------------ labels
def test_labels_clamped_and_objectness_from_confidence(tmp_path):
    write_sequence(tmp_path, "s0", 8, [5], boxes={5: [(-2.0, 1.0, 6.0, 20.0, 1, 0.75), (3.0, 3.0, 2.0, 2.0, 0, 0.5)]})
    reader = SequenceReader(tmp_path / "train" / "s0")
    lab = reader.frame_labels(0)
    assert lab.shape == (2, 8) and lab.dtype == torch.float32
    torch.testing.assert_close(lab[0], torch.tensor([6000, 0, 1, 4, 14, 1, 0.75, 0.75]))  # x1 = 4, y1 = H-1 = 15
    torch.testing.assert_close(lab[1], torch.tensor([6000, 3, 3, 2, 2, 0, 0.5, 0.5]))


def test_pseudo_labels_keep_ignore_rows(tmp_path):
    boxes = {5: [(1.0, 1.0, 5.0, 5.0, 0, 0.9, 0.8), (8.0, 2.0, 4.0, 4.0, IGNORE_CLASS_ID, 0.3, 0.2)]}
    write_sequence(tmp_path, "s0", 8, [5], boxes=boxes, pseudo=True)
    reader = SequenceReader(tmp_path / "train" / "s0")
    lab = reader.frame_labels(0)
    assert lt.is_pseudo(lab).all()
    assert lt.is_ignore(lab).tolist() == [False, True]
    torch.testing.assert_close(lab[:, lt.OBJECTNESS], torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(lab[:, lt.CLASS_CONFIDENCE], torch.tensor([0.9, 0.3]))


def test_downsampled_boxes_are_halved(tmp_path):
    # ds2 file holds 8x12 frames of a 16x24 sensor; a box reaching the sensor edge is clamped then halved
    write_sequence(tmp_path, "s0", 8, [5], hw=(8, 12), downsampled_by_2=True,
                   boxes={5: [(4.0, 2.0, 6.0, 8.0, 0), (18.0, 10.0, 10.0, 10.0, 1)]})
    reader = SequenceReader(tmp_path / "train" / "s0", downsampled_by_2=True)
    assert reader.resolution_hw == (16, 24) and reader.frame_hw == (8, 12)
    lab = reader.frame_labels(0)
    torch.testing.assert_close(lab[:, lt.X:lt.H + 1], torch.tensor([[2.0, 1.0, 3.0, 4.0], [9.0, 5.0, 2.0, 2.0]]))
    # sensor clamp: x1 = min(28, 23) = 23, y1 = 15; halved: x1 = min(11.5, 11) = 11, y1 = min(7.5, 7) = 7


# ---------------------------------------------------------------------------------------- streaming
def test_stream_chunks_start_offset_and_padding(tmp_path):
    write_sequence(tmp_path, "s0", 25, [6, 10, 14, 18])
    stream = StreamSequence(SequenceReader(tmp_path / "train" / "s0"), 4, -1)
    assert stream.range == (3, 25)  # max(6 - 4 + 1, 0)
    assert list(zip(stream.start_indices, stream.stop_indices)) == [(3, 7), (7, 11), (11, 15), (15, 19), (19, 23),
                                                                   (23, 25)]
    samples = [stream.sample(i, time_flip=False) for i in range(len(stream))]
    assert [s.is_first_sample for s in samples] == [True] + [False] * 5
    last = samples[-1]
    assert last.repr_idx.tolist() == [23, 24, -1, -1]
    assert last.is_padded_mask.tolist() == [False, False, True, True]
    check_reprs(last, [23, 24, -1, -1])
    assert label_reprs(samples[0].labels) == [None, None, None, 6]


def test_stream_time_flip_chunks_from_the_end(tmp_path):
    write_sequence(tmp_path, "s0", 25, [6, 10, 14, 18])
    stream = StreamSequence(SequenceReader(tmp_path / "train" / "s0"), 4, -1)
    idx = [stream.sample(i, time_flip=True).repr_idx.tolist() for i in range(len(stream))]
    assert idx == [[24, 23, 22, 21], [20, 19, 18, 17], [16, 15, 14, 13], [12, 11, 10, 9], [8, 7, 6, 5],
                   [4, 3, -1, -1]]
    sample = stream.sample(1, time_flip=True)
    check_reprs(sample, idx[1], reversed_channels=True)
    assert label_reprs(sample.labels) == [None, 18, None, None]  # repr 19 carries label 18 (offset -1)
    last = stream.sample(5, time_flip=True)
    assert last.is_padded_mask.tolist() == [False, False, True, True] and last.is_reversed


def test_guaranteed_label_ranges_split_at_gaps():
    assert guaranteed_label_ranges(np.array([6, 10, 14, 30, 33, 50]), 4) == [(3, 15), (27, 34), (47, 51)]
    assert guaranteed_label_ranges(np.array([1, 3]), 4) == [(0, 4)]


def test_stream_slots_concatenate_every_sequence_once(tmp_path):
    lengths = {"a": 9, "b": 13, "c": 6}
    for name, n in lengths.items():
        write_sequence(tmp_path, name, n, [3])  # whole sequence streamed from max(3 - 4 + 1, 0) = 0
    readers = [SequenceReader(tmp_path / "train" / n) for n in lengths]
    streams = build_streams(readers, [False] * 3, 4, -1)
    ds = StreamingDataset(streams, batch_size=3, aug=NO_AUG, seed=1)
    batches = list(ds)
    assert len(batches) == sum(len(s) for s in streams) == 3 + 4 + 2
    for b in batches:
        assert b.ev_repr.shape == (4, 3, C, *HW) and b.num_stream == 3 and b.worker_id == 0
    for slot in range(3):
        names = [b.sequences[slot] for b in batches]
        firsts = [bool(b.is_first_sample[slot]) for b in batches]
        runs = [n for i, n in enumerate(names) if firsts[i]]
        assert sorted(runs) == sorted(lengths)  # every sequence once per slot
        for i, b in enumerate(batches):  # chunks consecutive inside a sequence
            if not firsts[i]:
                assert names[i] == names[i - 1]
                assert b.repr_idx[0, slot] == batches[i - 1].repr_idx[-1, slot] + 1
            check_reprs(b.ev_repr[:, slot], b.repr_idx[:, slot].tolist())


def test_stream_augmentation_drawn_once_per_sequence(tmp_path):
    for name in ("a", "b"):
        write_sequence(tmp_path, name, 17, [5, 9, 13])
    readers = [SequenceReader(tmp_path / "train" / n) for n in ("a", "b")]
    cfg = SamplerAugmentConfig(prob_hflip=0.5, prob_tflip=0.5, prob_zoom=0.5, zoom_in_weight=0.0,
                               zoom_out_weight=1.0)
    for seed in range(3):
        ds = StreamingDataset(build_streams(readers, [False, False], 4, -1), batch_size=2, aug=cfg, seed=seed)
        states = defaultdict(set)
        for b in ds:
            for slot in range(2):
                states[(slot, b.sequences[slot])].add(b.augmentation[slot])
                assert bool(b.is_reversed[slot]) == b.augmentation[slot].t_flip
        assert all(len(v) == 1 for v in states.values())


# -------------------------------------------------------------------------------------------- mixed
@pytest.mark.parametrize("batch, workers, w_s, w_r, expected", [
    (8, 8, 1, 1, (4, 4, 4, 4)),
    (8, 2, 1, 3, (2, 6, 1, 1)),   # round(6) = 6; workers ceil(2 * 6 / 8) = 2 capped at 1
    (2, 0, 1, 10, (1, 1, 0, 0)),  # round(1.82) = 2 capped at B - 1 = 1
    (12, 8, 1, 1, (6, 6, 4, 4)),
    (8, 4, 3, 1, (6, 2, 3, 1)),
])
def test_mixed_split(batch, workers, w_s, w_r, expected):
    assert mixed_split(batch, workers, w_s, w_r) == expected


def test_mixed_split_rejects():
    with pytest.raises(ValueError):
        mixed_split(1, 2, 1, 1)
    with pytest.raises(ValueError):
        mixed_split(4, 1, 1, 1)
    with pytest.raises(ValueError, match="no random sample"):
        mixed_split(8, 2, 1, 0.01)


def test_mixed_loader_concatenates_stream_then_random(one_seq):
    loader = build_train_loader(one_seq, None, "mixed", batch_size=3, sequence_length=4, num_workers=0,
                                aug_config=None, w_stream=2, w_random=1, seed=0)
    assert isinstance(loader, MixedLoader)
    batches = list(loader)
    assert len(batches) == len(REPRS_30) - 1  # random loader (9 samples, bs 1) is the longer one
    for i, b in enumerate(batches):
        assert b.ev_repr.shape == (4, 3, C, *HW) and b.num_stream == 2
        assert b.is_first_sample[2]  # random column
        assert b.labels[-1][2] is not None
        assert len(b.labels) == 4 and all(len(step) == 3 for step in b.labels)
    assert batches[0].is_first_sample[:2].all() and not batches[1].is_first_sample[:2].any()


@pytest.mark.parametrize("sampling", ["random", "stream", "mixed"])
def test_reseeding_the_loader_generator_replays_a_pass(one_seq, sampling):
    loader = build_train_loader(one_seq, None, sampling, batch_size=2, sequence_length=4, seed=5)
    gens = [loader.stream_loader.generator, loader.random_loader.generator] if sampling == "mixed" \
        else [loader.generator]

    def one_pass(seed: int) -> list:
        for k, gen in enumerate(gens):
            gen.manual_seed(seed + k)
        return [(b.repr_idx.tolist(), b.augmentation, float(b.ev_repr.sum())) for b in loader]

    first = one_pass(100)
    assert one_pass(100) == first
    assert any(one_pass(200 + k) != first for k in range(3))


def test_merge_and_collate_shapes(one_seq):
    reader = SequenceReader(one_seq / "train" / "s0")
    seq = RandomAccessSequence(reader, 4, -1)
    samples = [seq.sample(i, False, None) for i in range(3)]
    a, b = collate_samples(samples[:2], worker_id=3, stream=True), collate_samples(samples[2:], 5, stream=False)
    merged = merge_mixed_batches(a, b)
    assert merged.worker_id == 3 and merged.num_stream == 2 and merged.batch_size == 3
    assert merged.is_padded_mask.shape == (4, 3) and merged.repr_idx.shape == (4, 3)
    assert merged.labels[3][2] is samples[2].labels[3]
    assert merged.to("cpu").ev_repr.shape == (4, 3, C, *HW)


# ------------------------------------------------------------------------------------------ workers
def test_two_workers_stream_each_sequence_once_per_slot(tmp_path):
    names = ["a", "b", "c"]
    for i, name in enumerate(names):
        write_sequence(tmp_path, name, 8 + 4 * i, [3 + 4 * i])
    split = LabelSplit("wsod", 0.5, 4, {n: [0] for n in names})
    write_split(tmp_path / "split.json", split)
    loader = build_train_loader(tmp_path, tmp_path / "split.json", "stream", batch_size=1, sequence_length=4,
                                num_workers=2, aug_config=AugmentConfig(), seed=0, ev_dtype=torch.uint8)
    per_worker = defaultdict(list)
    for b in loader:
        assert isinstance(b, Batch) and b.ev_repr.dtype == torch.uint8
        per_worker[b.worker_id].append(b)
    assert set(per_worker) == {0, 1}
    for batches in per_worker.values():
        starts = [b.sequences[0] for b in batches if b.is_first_sample[0]]
        assert sorted(starts) == names  # each worker's slot covers every sequence exactly once
        for b in batches:
            if not (b.augmentation[0].h_flip or b.augmentation[0].zoom_out):
                check_reprs(b.ev_repr[:, 0], b.repr_idx[:, 0].tolist(), reversed_channels=bool(b.is_reversed[0]))
    assert not any(str(tmp_path) in key for key in sequence_module._HANDLES._files)  # only workers opened HDF5
    rnd = build_train_loader(tmp_path, split, "random", batch_size=2, sequence_length=4, num_workers=2, seed=0)
    got = list(rnd)
    assert len(got) == 1 and {b.worker_id for b in got} <= {0, 1}


def test_unknown_sampling_rejected(one_seq):
    with pytest.raises(ValueError, match="unknown sampling"):
        build_train_loader(one_seq, None, "shuffle", 2, 4)
