"""The streaming engine: chunked / reversed / prefetched reads, the identity view equals evaluation's predictions,
and the flipped views equal the identity view on flipped input files."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import spread_logit_model, write_sequence
from leod_core.data.formats import EventReprWriter, SequencePaths, read_event_repr
from leod_core.data.sequence import SequenceReader, chunk_spans
from leod_core.models.inference import InferenceConfig, iter_sequence_predictions
from leod_core.models.postprocess import postprocess
from leod_core.models.streaming import ALL_VIEWS, IDENTITY, StreamingEngine, StreamJob

HW = (64, 96)
L = 4
#: name -> (num_reprs, labeled reprs)
SEQS = {"a": (11, [5, 9]), "b": (6, [0, 3]), "c": (9, [2, 7])}
CONF = 0.05
#: Tolerance between runs whose batches differ in width or row order (same maths, other kernels' rounding).
ATOL = 1e-4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("streaming")
    for i, (name, (n, labeled)) in enumerate(SEQS.items()):
        write_sequence(root / "train" / name, n, labeled, seed=10 + i, hw=HW)
    return root


@pytest.fixture(scope="module")
def model():
    return spread_logit_model(seed=1, hw=HW)


def run_engine(model, roots, views, chunk_steps, batch_size=2, tflip_offset=0):
    """Engine outputs: view name -> sequence name -> frame -> raw detections float32 [N, 7] (read-frame pixels)."""
    cfg = InferenceConfig(batch_size=batch_size, sequence_length=L, confidence_threshold=CONF, start_from_zero=True)

    def decode(head, owners):
        return [d.numpy() for d in postprocess(head, model.num_classes, CONF, cfg.nms_threshold)]

    engine = StreamingEngine(model, cfg, torch.device("cpu"), decode, views, chunk_steps, tflip_offset)
    out = {v.name: {} for v in views}
    with torch.inference_mode():
        for job in engine.run([StreamJob.open(r, cfg) for r in roots]):
            for view, frames in job.outputs.items():
                out[view][job.name] = frames
    return out


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for frame in a:
        assert a[frame].shape == b[frame].shape, frame
        np.testing.assert_allclose(a[frame], b[frame], atol=ATOL, rtol=0)


def rewrite(src: Path, dst: Path, transform) -> None:
    """Copy sequence ``src`` to ``dst`` with its representations ``uint8 [T, C, H, W]`` replaced by
    ``transform(data)`` (same labels and timestamps)."""
    shutil.copytree(src, dst)
    ev_file = SequencePaths(dst).ev_repr_file(False)
    data = np.ascontiguousarray(transform(read_event_repr(ev_file)))
    ev_file.unlink()
    with EventReprWriter(ev_file, data.shape[1], data.shape[2], data.shape[3]) as writer:
        writer.append(data)


# ------------------------------------------------------------------------------------------------ reader
@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_iter_chunks_cover_the_range_in_processing_order(data_dir, prefetch, reverse):
    reader = SequenceReader(data_dir / "train" / "a", load_labels=False)
    full = reader.read_reprs(0, reader.num_reprs).numpy()
    executor = ThreadPoolExecutor(max_workers=1) if prefetch else None
    try:
        chunks = list(reader.iter_chunks(2, 11, 4, reverse=reverse, executor=executor))
    finally:
        if executor is not None:
            executor.shutdown()
    idx = np.concatenate([i for i, _ in chunks])
    data = np.concatenate([d for _, d in chunks])
    assert [len(i) for i, _ in chunks] == ([4, 4, 1])
    if reverse:  # cut from the end, steps backwards, channels reversed
        assert idx.tolist() == list(range(10, 1, -1))
        np.testing.assert_array_equal(data, full[10:1:-1, ::-1])
    else:
        assert idx.tolist() == list(range(2, 11))
        np.testing.assert_array_equal(data, full[2:11])


@pytest.mark.parametrize("reverse", [False, True])
def test_a_short_first_chunk_then_chunks_of_the_given_size(data_dir, reverse):
    reader = SequenceReader(data_dir / "train" / "a", load_labels=False)
    full = reader.read_reprs(0, reader.num_reprs).numpy()
    with ThreadPoolExecutor(max_workers=1) as executor:
        chunks = list(reader.iter_chunks(2, 11, 4, reverse=reverse, executor=executor, first_chunk=1))
    assert [len(i) for i, _ in chunks] == [1, 4, 4]
    data = np.concatenate([d for _, d in chunks])
    np.testing.assert_array_equal(data, full[10:1:-1, ::-1] if reverse else full[2:11])


def test_chunk_spans_cover_the_range_in_reading_order():
    assert chunk_spans(2, 11, 4) == [(2, 6), (6, 10), (10, 11)]
    assert chunk_spans(2, 11, 4, reverse=True) == [(7, 11), (3, 7), (2, 3)]
    assert chunk_spans(2, 11, 4, first_chunk=1) == [(2, 3), (3, 7), (7, 11)]
    assert chunk_spans(2, 11, 4, reverse=True, first_chunk=2) == [(9, 11), (5, 9), (2, 5)]
    assert chunk_spans(5, 5, 4) == [] and chunk_spans(0, 3, 8, first_chunk=8) == [(0, 3)]
    with pytest.raises(ValueError, match="chunk sizes"):
        chunk_spans(0, 3, 2, first_chunk=0)


def test_iter_chunks_closed_early_waits_for_the_read_in_flight(data_dir):
    reader = SequenceReader(data_dir / "train" / "a", load_labels=False)
    with ThreadPoolExecutor(max_workers=1) as executor:
        chunks = reader.iter_chunks(0, reader.num_reprs, 2, executor=executor)
        idx, _ = next(chunks)
        chunks.close()
    assert idx.tolist() == [0, 1]
    with pytest.raises(IndexError):
        next(reader.iter_chunks(0, reader.num_reprs + 1, 2))


def test_reader_without_labels_refuses_label_queries(data_dir):
    reader = SequenceReader(data_dir / "train" / "b", load_labels=False)
    assert reader.stream_start(L) == 0 and reader.read_timestamps_us().shape == (reader.num_reprs,)
    with pytest.raises(RuntimeError, match="load_labels=False"):
        reader.frame_labels(0)


# ------------------------------------------------------------------------------------------------- views
def test_identity_view_equals_evaluation(model, data_dir):
    """Evaluation's chunk cadence (head every L steps) gives evaluation's bytes; the pseudo-labelling cadence (head
    every step) and a 4-view batch give the same predictions within rounding."""
    cfg = InferenceConfig(batch_size=2, sequence_length=L, confidence_threshold=CONF, start_from_zero=True)
    evaluation = {p.name: dict(zip(p.repr_idx.tolist(), p.detections))
                  for p in iter_sequence_predictions(model, data_dir, "train", cfg, frames="all", progress=False)}
    roots = [data_dir / "train" / n for n in SEQS]
    same_cadence = run_engine(model, roots, (IDENTITY,), chunk_steps=L)["id"]
    assert same_cadence.keys() == evaluation.keys()
    for name in SEQS:
        assert same_cadence[name].keys() == evaluation[name].keys()
        for frame, det in evaluation[name].items():
            assert same_cadence[name][frame].tobytes() == det.tobytes()
    per_step = run_engine(model, roots, (IDENTITY,), chunk_steps=1)["id"]
    four_views = run_engine(model, roots, ALL_VIEWS, chunk_steps=1)["id"]
    for name in SEQS:
        assert_close(per_step[name], evaluation[name])
        assert_close(four_views[name], evaluation[name])
    assert sum(len(d) for per in evaluation.values() for d in per.values()) > 0


def test_flipped_views_equal_the_identity_view_on_flipped_files(model, data_dir, tmp_path):
    roots = [data_dir / "train" / n for n in SEQS]
    views = run_engine(model, roots, ALL_VIEWS, chunk_steps=1)
    for root in roots:
        rewrite(root, tmp_path / "mirrored" / root.name, lambda x: x[..., ::-1])
        rewrite(root, tmp_path / "reversed" / root.name, lambda x: x[::-1, ::-1])
        rewrite(root, tmp_path / "both" / root.name, lambda x: x[::-1, ::-1, :, ::-1])
    flipped = {kind: run_engine(model, [tmp_path / kind / n for n in SEQS], (IDENTITY,), chunk_steps=1)["id"]
               for kind in ("mirrored", "reversed", "both")}
    for name, (num_reprs, _) in SEQS.items():
        assert_close(views["hflip"][name], flipped["mirrored"][name])  # boxes stay in mirrored pixels here
        # tflip_offset 0: the reversed stream's step on representation j is step T - 1 - j of the reversed file
        for view, kind in (("tflip", "reversed"), ("tflip_hflip", "both")):
            assert_close(views[view][name], {num_reprs - 1 - j: d for j, d in flipped[kind][name].items()})


def test_views_must_be_every_combination_of_their_flips(model):
    cfg = InferenceConfig()
    with pytest.raises(ValueError, match="every combination"):
        StreamingEngine(model, cfg, torch.device("cpu"), lambda head, owners: [], (ALL_VIEWS[0], ALL_VIEWS[3]))
