"""Fast-vs-reference differential tests of the training loader's per-batch path.

The references below are the straightforward implementations the loader used before its per-batch CPU cost was
cut (torch flips, ``F.interpolate`` zooms on the cropped / full frames, ``torch.stack`` collation, a
``torch.cat`` padding); the loader must produce exactly the same batches (values, dtypes, labels, augmentation
states and random draws) for every sampling mode, event dtype and a frame size whose zoom windows are odd.
``F.interpolate`` rounds its source indices differently per dtype, channel count / memory format and output
size, so the augmentation is compared over all of these.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leod_core.data import label_tensors as lt
from leod_core.data import train_datasets
from leod_core.data.augment import (NO_LABEL_WARNING, AugmentConfig, AugmentState, SamplerAugmentConfig,
                                    apply_augmentation, sample_augment_state, sample_zoom_in_window, uniform)
from leod_core.data.batch import Batch, Sample, collate_samples
from leod_core.data.loaders import build_train_loader
from leod_core.data.sequence import SequenceReader
from leod_core.data.splits import LabelSplit
from builders import random_boxes, write_sequence

#: Odd frame sizes, so that zoom windows ``int(H / f)`` resample unevenly.
HW = (38, 54)
NUM_REPRS = 23
LABELED = [4, 6, 9, 13, 14, 19, 22]
SEQUENCE_LENGTH = 4
EV_DTYPES = (torch.uint8, torch.float32)
BOXES_PER_FRAME = 3
#: Augmentation states drawn per frame kind.
TRIALS = 12


# ------------------------------------------------------------------------------------------ references
def reference_zoom_in_frames(ev: torch.Tensor, x0: int, y0: int, factor: float) -> torch.Tensor:
    height, width = ev.shape[-2:]
    win_h, win_w = int(height / factor), int(width / factor)
    crop = ev[..., y0:y0 + win_h, x0:x0 + win_w]
    return F.interpolate(crop, size=(height, width), mode="nearest-exact")


def reference_zoom_out_frames(ev: torch.Tensor, x0: int, y0: int, factor: float) -> torch.Tensor:
    height, width = ev.shape[-2:]
    win_h, win_w = int(height / factor), int(width / factor)
    out = torch.zeros_like(ev)
    out[..., y0:y0 + win_h, x0:x0 + win_w] = F.interpolate(ev, size=(win_h, win_w), mode="nearest-exact")
    return out


def _map_labels(labels, fn):
    out = []
    for lab in labels:
        new = None if lab is None else fn(lab)
        out.append(None if new is None or len(new) == 0 else new)
    return out


def _latest_labels(labels):
    for lab in reversed(labels):
        if lab is not None and len(lab) > 0:
            return lab
    return None


def reference_apply_augmentation(ev, labels, skipped, state, cfg, gen):
    height, width = ev.shape[-2:]
    hw = (height, width)
    if state.h_flip:
        ev = ev.flip(-1)
        labels = _map_labels(labels, lambda lab: lt.flip_lr(lab, width))
        skipped = _map_labels(skipped, lambda lab: lt.flip_lr(lab, width))
    if state.zoom_in:
        factor = uniform(cfg.zoom_in_min, cfg.zoom_in_max, gen)
        latest = _latest_labels(labels)
        if factor == 1 or latest is None:
            if factor != 1:
                warnings.warn(NO_LABEL_WARNING, UserWarning, stacklevel=2)
            state = replace(state, zoom_in=False, zoom_in_x0=0, zoom_in_y0=0, zoom_in_factor=1.0)
        else:
            x0, y0 = sample_zoom_in_window(latest, hw, int(height / factor), int(width / factor), gen)
            ev = reference_zoom_in_frames(ev, x0, y0, factor)
            labels = _map_labels(labels, lambda lab: lt.zoom_in(lab, x0, y0, factor, hw))
            skipped = _map_labels(skipped, lambda lab: lt.zoom_in(lab, x0, y0, factor, hw))
            state = replace(state, zoom_in_x0=x0, zoom_in_y0=y0, zoom_in_factor=factor)
    if state.zoom_out:
        x0, y0, factor = state.zoom_out_x0, state.zoom_out_y0, state.zoom_out_factor
        if factor != 1:
            ev = reference_zoom_out_frames(ev, x0, y0, factor)
            labels = _map_labels(labels, lambda lab: lt.zoom_out(lab, x0, y0, factor, hw))
            skipped = _map_labels(skipped, lambda lab: lt.zoom_out(lab, x0, y0, factor, hw))
    return ev, labels, skipped, state


def reference_finish(sample, aug, state, gen, ev_dtype):
    if aug is not None and state is not None:
        ev, labels, skipped, state = reference_apply_augmentation(sample.ev_repr, sample.labels,
                                                                  sample.skipped_labels, state, aug, gen)
        sample.ev_repr, sample.labels, sample.skipped_labels, sample.augmentation = ev, labels, skipped, state
    sample.ev_repr = sample.ev_repr.to(ev_dtype)
    return sample


def reference_build_sample(reader: SequenceReader, start: int, stop: int, length: int, time_flip: bool,
                           tflip_offset: int, is_first_sample: bool) -> Sample:
    labels, skipped = reader.labels_in_range(start, stop, tflip_offset if time_flip else 0)
    ev = reader.read_reprs(start, stop)
    idx = torch.arange(start, stop, dtype=torch.int64)
    pad = length - (stop - start)
    padded = torch.zeros(length, dtype=torch.bool)
    if pad:
        zeros = torch.zeros((pad, *ev.shape[1:]), dtype=ev.dtype)
        minus = torch.full((pad,), -1, dtype=torch.int64)
        if time_flip:
            ev, idx = torch.cat([zeros, ev]), torch.cat([minus, idx])
            labels, skipped = [None] * pad + labels, [None] * pad + skipped
            padded[:pad] = True
        else:
            ev, idx = torch.cat([ev, zeros]), torch.cat([idx, minus])
            labels, skipped = labels + [None] * pad, skipped + [None] * pad
            padded[length - pad:] = True
    if time_flip:
        ev = ev.flip(0).flip(1)
        idx, padded = idx.flip(0), padded.flip(0)
        labels, skipped = labels[::-1], skipped[::-1]
    return Sample(ev_repr=ev, labels=labels, skipped_labels=skipped, is_first_sample=is_first_sample,
                  is_padded_mask=padded, is_reversed=time_flip, sequence=reader.name, repr_idx=idx)


def reference_collate_samples(samples: list[Sample], worker_id: int, stream: bool) -> Batch:
    length = samples[0].length
    return Batch(
        ev_repr=torch.stack([s.ev_repr for s in samples], dim=1),
        labels=[[s.labels[t] for s in samples] for t in range(length)],
        skipped_labels=[[s.skipped_labels[t] for s in samples] for t in range(length)],
        is_first_sample=torch.tensor([s.is_first_sample for s in samples], dtype=torch.bool),
        is_padded_mask=torch.stack([s.is_padded_mask for s in samples], dim=1),
        is_reversed=torch.tensor([s.is_reversed for s in samples], dtype=torch.bool),
        sequences=[s.sequence for s in samples],
        repr_idx=torch.stack([s.repr_idx for s in samples], dim=1),
        worker_id=worker_id,
        num_stream=len(samples) if stream else 0,
        augmentation=[s.augmentation for s in samples],
    )


def use_references(monkeypatch) -> None:
    """Route the loaders through the reference implementations."""
    monkeypatch.setattr(SequenceReader, "build_sample", reference_build_sample)
    monkeypatch.setattr(train_datasets, "_finish", reference_finish)
    monkeypatch.setattr(train_datasets, "collate_samples", reference_collate_samples)


# ------------------------------------------------------------------------------------------ comparison
def assert_same_tensor(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def assert_same_label_seq(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert_same_tensor(x, y)


def assert_same_batch(a: Batch, b: Batch) -> None:
    for name in ("ev_repr", "is_first_sample", "is_padded_mask", "is_reversed", "repr_idx"):
        assert_same_tensor(getattr(a, name), getattr(b, name))
    for got, want in zip(a.labels + a.skipped_labels, b.labels + b.skipped_labels):
        assert_same_label_seq(got, want)
    assert (a.sequences, a.worker_id, a.num_stream, a.augmentation) == \
        (b.sequences, b.worker_id, b.num_stream, b.augmentation)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("equivalence")
    for k in range(3):
        num_reprs = NUM_REPRS + 4 * k  # the longer ones get a last labeled frame at their very end
        labeled = LABELED + ([num_reprs - 1] if k else [])
        write_sequence(root / "train" / f"seq_{k}", num_reprs, labeled, seed=k, hw=HW, boxes_per_frame=BOXES_PER_FRAME)
    return root


#: Every augmentation often: zoom-in and zoom-out both frequent, flips at 1/2.
HEAVY = SamplerAugmentConfig(prob_zoom=0.9, zoom_in_weight=1.0, zoom_out_weight=1.0, zoom_out_max=1.5)
AUG_CONFIGS = {"leod": AugmentConfig(), "heavy": AugmentConfig(random=HEAVY, stream=HEAVY)}
NUM_BATCHES = 8


def take_batches(data_root: Path, sampling: str, ev_dtype: torch.dtype, aug: str, split=None) -> list[Batch]:
    loader = build_train_loader(data_root, split, sampling, batch_size=3, sequence_length=SEQUENCE_LENGTH,
                                aug_config=AUG_CONFIGS[aug], seed=11, ev_dtype=ev_dtype)
    batches = []
    while len(batches) < NUM_BATCHES:
        count = len(batches)
        for batch in loader:
            batches.append(batch)
            if len(batches) == NUM_BATCHES:
                break
        assert len(batches) > count, "a pass of the loader yields no batch"
    return batches


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("sampling", ["random", "stream", "mixed"])
@pytest.mark.parametrize("ev_dtype", EV_DTYPES, ids=str)
@pytest.mark.parametrize("aug", sorted(AUG_CONFIGS))
def test_loader_batches_equal_the_reference(data_root, monkeypatch, sampling, ev_dtype, aug):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fast = take_batches(data_root, sampling, ev_dtype, aug)
        with monkeypatch.context() as patch:
            use_references(patch)
            reference = take_batches(data_root, sampling, ev_dtype, aug)
    for got, want in zip(fast, reference, strict=True):
        assert_same_batch(got, want)


def test_wsod_split_batches_equal_the_reference(data_root, monkeypatch):
    """Skipped labels (withheld ground truth) go through the same transforms."""
    names = sorted(p.name for p in (data_root / "train").iterdir())
    split = LabelSplit("wsod", 0.5, SEQUENCE_LENGTH, {n: [1, 4] for n in names})
    fast = take_batches(data_root, "mixed", torch.uint8, "heavy", split)
    with monkeypatch.context() as patch:
        use_references(patch)
        reference = take_batches(data_root, "mixed", torch.uint8, "heavy", split)
    for got, want in zip(fast, reference, strict=True):
        assert_same_batch(got, want)


#: (channels, channels-last memory format) of augmented frames: torch's resize kernels (and their index rounding)
#: differ between these.
FRAME_LAYOUTS = [(4, False), (1, False), (3, False), (5, True)]


@pytest.mark.parametrize("hw", [(38, 54), (240, 304), (17, 9)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", FRAME_LAYOUTS, ids=str)
def test_apply_augmentation_equals_the_reference(hw, dtype, layout):
    """Many drawn states on random frames: same frames, labels, states and random draws after the call."""
    height, width = hw
    channels, channels_last = layout
    rng = np.random.default_rng(0)
    gen_state = torch.Generator().manual_seed(1)
    for trial in range(TRIALS):
        ev = torch.from_numpy(rng.integers(0, 11, size=(3, channels, height, width), dtype=np.uint8)).to(dtype)
        if channels_last:
            ev = ev.contiguous(memory_format=torch.channels_last)
        labels = [None, lt.from_structured(random_boxes(rng, BOXES_PER_FRAME, hw)), None]
        skipped = [lt.from_structured(random_boxes(rng, BOXES_PER_FRAME, hw)), None, None]
        state = sample_augment_state(HEAVY, hw, gen_state)
        gen_fast, gen_ref = torch.Generator().manual_seed(trial), torch.Generator().manual_seed(trial)
        got = apply_augmentation(ev, labels, skipped, state, HEAVY, gen_fast)
        want = reference_apply_augmentation(ev, labels, skipped, state, HEAVY, gen_ref)
        assert_same_tensor(got[0], want[0])
        assert_same_label_seq(got[1], want[1])
        assert_same_label_seq(got[2], want[2])
        assert got[3] == want[3]
        assert torch.equal(gen_fast.get_state(), gen_ref.get_state())


def test_fused_cast_equals_augmenting_then_casting():
    """``dtype=`` casts in the gather (uint8 to float32 is exact) or after it (any other pair)."""
    rng = np.random.default_rng(1)
    ev = torch.from_numpy(rng.integers(0, 256, size=(2, 20, *HW), dtype=np.uint8))
    labels = [lt.from_structured(random_boxes(rng, BOXES_PER_FRAME, HW)), None]
    for state in (AugmentState(h_flip=True, zoom_in=True), AugmentState(zoom_out=True, zoom_out_x0=3,
                                                                        zoom_out_y0=2, zoom_out_factor=1.3)):
        for src, dst in ((torch.uint8, torch.float32), (torch.float64, torch.float32), (torch.uint8, torch.uint8)):
            fused = apply_augmentation(ev.to(src), labels, [None, None], state, HEAVY,
                                       torch.Generator().manual_seed(0), dtype=dst)[0]
            plain = reference_apply_augmentation(ev.to(src), labels, [None, None], state, HEAVY,
                                                 torch.Generator().manual_seed(0))[0].to(dst)
            assert_same_tensor(fused, plain)


@pytest.mark.parametrize("time_flip", [False, True])
@pytest.mark.parametrize("window", [(0, 4), (5, 7), (NUM_REPRS - 1, NUM_REPRS)])
def test_build_sample_equals_the_reference(data_root, time_flip, window):
    reader = SequenceReader(data_root / "train" / "seq_0")
    start, stop = window
    got = reader.build_sample(start, stop, SEQUENCE_LENGTH, time_flip, -1, is_first_sample=True)
    want = reference_build_sample(reader, start, stop, SEQUENCE_LENGTH, time_flip, -1, is_first_sample=True)
    for name in ("ev_repr", "is_padded_mask", "repr_idx"):
        assert_same_tensor(getattr(got, name), getattr(want, name))
    assert_same_label_seq(got.labels, want.labels)
    assert_same_label_seq(got.skipped_labels, want.skipped_labels)
    assert (got.is_reversed, got.is_first_sample, got.sequence) == (want.is_reversed, want.is_first_sample,
                                                                    want.sequence)


def test_collate_equals_the_reference(data_root):
    reader = SequenceReader(data_root / "train" / "seq_1")
    samples = [reader.build_sample(s, s + SEQUENCE_LENGTH, SEQUENCE_LENGTH, s % 2 == 1, -1, True) for s in range(3)]
    for stream in (False, True):
        assert_same_batch(collate_samples(samples, 2, stream), reference_collate_samples(samples, 2, stream))
