"""Compiled inference (``StreamConfig.compile_model``): inductor's detections equal eager's, a run whose batch
shrinks compiles a bounded number of graphs, and a failing compiler falls back to eager with a warning."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import spread_logit_model, write_sequence
from leod_core.models import compiled
from leod_core.models.compiled import COMPILED_LABEL, CPU_INFERENCE_OPTIONS, EAGER_LABEL, model_step
from leod_core.models.detector import RVTConfig, build_detector
from leod_core.models.inference import InferenceConfig
from leod_core.models.postprocess import postprocess
from leod_core.models.streaming import IDENTITY, StreamingEngine, StreamJob

log = logging.getLogger(__name__)

HW = (64, 96)
L = 4
BATCH = 3
#: name -> representations. With ``BATCH`` slots, ``L``-step chunks and longest first: a, b and c start, d takes
#: c's slot at step 6 and ends at 12, so the last chunk (step 12) runs a and b only: the batch shrinks 3 -> 2.
SEQS = {"a": 13, "b": 13, "c": 6, "d": 6}
CONF = 0.05
#: The streaming equivalence tests' fp32 tolerance (tests/models/test_streaming.py): same maths, other kernels.
ATOL = 1e-4
#: Graphs one compiled run may compile: backbone and head once each (batch dimension dynamic, one memory layout),
#: plus one spare for a specialisation dynamo may still make. Not growing with the run's steps.
MAX_GRAPHS = 3


def _inductor_skip_reason() -> str | None:
    """Why inductor cannot compile for the CPU here (no C++ compiler), or None."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as exc:  # inductor's own search for a compiler: any failure means it cannot build kernels
        return f"inductor has no C++ compiler: {compiled.describe_failure(exc)}"
    return None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compiled")
    for i, (name, n) in enumerate(SEQS.items()):
        write_sequence(root / "train" / name, n, [n - 1], seed=20 + i, hw=HW)
    return root


def run_engine(model, data_dir: Path, compile_model: bool, batch_size: int = BATCH, raw: bool = False) -> dict:
    """Detections of every sequence and frame: name -> frame -> float32 [N, 7] (read-frame pixels), or with
    ``raw`` the head's dense predictions float32 [A, 5 + classes] (boxes in pixels, logits)."""
    cfg = InferenceConfig(batch_size=batch_size, sequence_length=L, confidence_threshold=CONF,
                          start_from_zero=True, compile_model=compile_model)

    def decode(head, owners):
        if raw:
            return list(head.preds.float().numpy())
        return [d.numpy() for d in postprocess(head, model.num_classes, CONF, cfg.nms_threshold)]

    engine = StreamingEngine(model, cfg, torch.device("cpu"), decode, (IDENTITY,), chunk_steps=L)
    with torch.inference_mode():
        return {job.name: job.outputs["id"]
                for job in engine.run([StreamJob.open(data_dir / "train" / n, cfg) for n in SEQS])}


def engine_step(model):
    """The compiled step the CPU engine runs (its inductor options: the weights frozen into the graph)."""
    return model_step(model, True, options=CPU_INFERENCE_OPTIONS)


@pytest.mark.slow
def test_compiled_run_equals_eager_and_compiles_a_bounded_number_of_graphs(data_dir):
    reason = _inductor_skip_reason()
    if reason is not None:
        log.warning("skipping the compiled run: %s", reason)
        pytest.skip(reason)
    torch.manual_seed(3)  # plain random weights: the spread-logit head (x 3e4) would amplify rounding into flips
    model = build_detector(RVTConfig.tiny(2, HW, embed_dim=16, dim_head=16)).eval()
    eager = run_engine(model, data_dir, compile_model=False, raw=True)
    fast = run_engine(model, data_dir, compile_model=True, raw=True)
    step = engine_step(model)
    assert step.path == COMPILED_LABEL
    assert fast.keys() == eager.keys() == SEQS.keys()
    for name, frames in eager.items():
        assert fast[name].keys() == frames.keys() and len(frames) == SEQS[name]
        for frame, det in frames.items():
            assert fast[name][frame].shape == det.shape, (name, frame)
            np.testing.assert_allclose(fast[name][frame], det, atol=ATOL, rtol=0)
    assert not np.allclose(eager["a"][0], eager["a"][1], atol=ATOL)  # the frames' predictions differ
    graphs = step.graphs
    assert 2 <= graphs <= MAX_GRAPHS, f"{graphs} graphs for {max(SEQS.values())} steps"
    assert step.compile_s > 0
    run_engine(model, data_dir, compile_model=True, batch_size=BATCH - 1, raw=True)  # other widths: same graphs
    assert step.graphs == graphs
    ops = ops_run_by(lambda: step.backbone(torch.zeros(BATCH, 20, *HW), None))
    assert PREPACKED_CONV in ops and EAGER_CONV not in ops, sorted(ops)  # the weights were frozen and prepacked


#: The profiler's names of a convolution with oneDNN-prepacked weights (inductor's freezing) and of an eager one.
PREPACKED_CONV, EAGER_CONV = "mkldnn::_convolution_pointwise", "aten::mkldnn_convolution"


def ops_run_by(function) -> set[str]:
    """The operator names ``torch.profiler`` records while ``function()`` runs under ``torch.inference_mode``."""
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        function()
    return {event.key for event in prof.key_averages()}


def _failing_compile(message: str):
    """A ``torch.compile`` whose compiled functions raise ``RuntimeError(message)`` when called, as inductor does
    when it cannot build its kernels (compiling is lazy: it fails at the first call)."""
    def compile_(function, **kwargs):
        def compiled_function(*args, **kw):
            raise RuntimeError(message)
        return compiled_function
    return compile_


def test_failing_compiler_falls_back_to_eager_with_a_warning(data_dir, monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", _failing_compile("no C++ compiler found"))
    model = spread_logit_model(seed=4, hw=HW)
    eager = run_engine(model, data_dir, compile_model=False)
    with caplog.at_level(logging.INFO, logger=compiled.__name__):
        fallen = run_engine(model, data_dir, compile_model=True)
        fallen_again = run_engine(model, data_dir, compile_model=True)  # the same step: eager, no new warning
    step = engine_step(model)
    assert step.path == EAGER_LABEL and step.graphs == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # backbone and head, once each
    assert all("RuntimeError: no C++ compiler found" in w and "running it eager" in w for w in warnings)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(i.startswith(f"model step: {COMPILED_LABEL}") for i in infos), infos
    assert any(i.startswith(f"model step ran {EAGER_LABEL}: 0 graphs") for i in infos), infos
    for run in (fallen, fallen_again):
        for name, frames in eager.items():
            assert run[name].keys() == frames.keys()
            for frame, det in frames.items():
                assert run[name][frame].tobytes() == det.tobytes()


def test_torch_compile_refusing_runs_eager_with_a_warning(monkeypatch, caplog):
    def refuse(function, **kwargs):
        raise RuntimeError("torch.compile is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuse)
    model = spread_logit_model(seed=7, hw=HW)
    x = torch.rand(2, 20, *HW)
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        step = engine_step(model)
    assert step.path == EAGER_LABEL and "not supported on this Python" in caplog.text
    with torch.inference_mode():
        features, _ = step.backbone(x, None)
        expected, _ = model.forward_backbone(x, None)
    assert all(torch.equal(features[k], expected[k]) for k in expected)


def test_an_input_eager_rejects_raises_and_keeps_the_compiled_path(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise AssertionError("tracing must fail before the backend is reached")

    monkeypatch.setattr("torch._inductor.compile_fx.compile_fx", no_compiler)
    model = spread_logit_model(seed=5, hw=HW)
    step = engine_step(model)
    wrong_channels = torch.zeros(2, 3, *HW)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="channels"):
        step.backbone(wrong_channels, None)
    assert step.path == COMPILED_LABEL and step.graphs == 0


def test_zero_states_equal_none_states_exactly():
    model = spread_logit_model(seed=6, hw=HW)
    x = torch.rand(2, 20, *HW)
    with torch.inference_mode():
        from_none, states_none = model.forward_backbone(x, None)
        from_zero, states_zero = model.forward_backbone(x, compiled.zero_states(model, x))
    for k in from_none:
        assert torch.equal(from_none[k], from_zero[k])
    for (h0, c0), (h1, c1), (hz, cz) in zip(states_none, states_zero, compiled.zero_states(model, x)):
        assert torch.equal(h0, h1) and torch.equal(c0, c1)
        assert hz.shape == h0.shape and hz.stride() == h0.stride() and cz.stride() == c0.stride()
