"""Compiled inference: the streaming engine's model step through ``torch.compile`` (inductor), or eager.

:func:`model_step` gives the two callables :class:`~leod_core.models.streaming.StreamingEngine` runs:

* ``backbone(x, states)``: one recurrent step, ``x: Tensor[B, C, H, W]`` (padded by the model) and per-stage
  ConvLSTM states ``[(h_k, c_k)]``, ``h_k, c_k: Tensor[B, C_k, H_pad / s_k, W_pad / s_k]`` (None at a run's
  first step) -> (features ``{k: Tensor[B, C_k, H_pad / s_k, W_pad / s_k]}``, new states);
* ``detect(features)``: FPN + YOLOX head on ``{k: Tensor[N, C_k, ...]}`` for any ``N`` selected rows.

Compiled, each is traced once and reused for the whole run:

* the first step's ``states=None`` is replaced by zero states (what the ConvLSTM cells use for None, bit for bit),
  so the first step and every later one share one graph;
* the batch dimension of every input is marked dynamic, so a batch that shrinks (the last sequences of a shard;
  slots removed once the queue is empty) or a head batch of another size reuses the graph. Dynamo still
  specialises sizes 0 and 1, so a batch of one row costs at most one more graph per callable.

Every graph handed to inductor is counted (:attr:`ModelStep.graphs`) and timed; :meth:`ModelStep.log_summary`
logs the totals. If compiling fails (no C compiler, an inductor or dynamo error) the step logs a WARNING naming
the exception and runs eager from then on; an input that fails eager too raises the eager error.

The compiled step is built once per model, options and weights (:func:`model_step` remembers it), because dynamo
caches graphs per code object and backend: engines made one after another on the same model reuse its graphs.
Inductor's ``freezing`` option (see :data:`CPU_INFERENCE_OPTIONS`) bakes the weights into the graph, so a model
whose weights changed (:func:`weights_version`) gets a new step.
"""
from __future__ import annotations

import itertools
import logging
import time
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: The batch dimension of the model inputs, outputs and recurrent states.
BATCH_DIM = 0
#: Inductor option of the modes that capture CUDA graphs (``"reduce-overhead"``, ``"max-autotune"``): their outputs
#: are overwritten by later replays, so each backbone call starts a new cudagraph generation
#: (:func:`torch.compiler.cudagraph_mark_step_begin`): the previous step's states are read by that call, its
#: features by the head before it, and what the engine keeps longer it copies (``index_select``).
CUDAGRAPHS_OPTION = "triton.cudagraphs"
#: Inductor options for CPU inference: constant-fold the weights into the graph (needs ``torch.no_grad`` or
#: ``torch.inference_mode`` when the graph is compiled, as the engine's callers run), which lets inductor prepack
#: them for oneDNN / MKL (``mkldnn::_convolution_pointwise`` with the following SiLU fused, ``mkl::_mkl_linear``).
CPU_INFERENCE_OPTIONS: Mapping[str, Any] = {"freezing": True}
#: Inductor options dynamo itself reads from the global config while it traces (not from ``torch.compile``'s
#: ``options``): with ``freezing`` off there, dynamo passes the parameters to the graph as inputs, and inductor's
#: freezing then has no constant to fold or prepack. They are set for the duration of each compiled call.
TRACE_TIME_OPTIONS = ("freezing",)
#: ``torch.compile``'s mode when none is given.
DEFAULT_MODE = "default"
#: What the INFO lines call each path.
COMPILED_LABEL, EAGER_LABEL = "compiled (inductor)", "eager"

LstmStates = List[Tuple[Tensor, Tensor]]
Features = Dict[int, Tensor]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def zero_states(model: nn.Module, x: Tensor) -> LstmStates:
    """Zero ConvLSTM states of an :class:`~leod_core.models.detector.RVTDetector` for input ``x: Tensor[B, C, H,
    W]``: per stage ``k`` ``(h, c)`` of ``Tensor[B, C_k, H_pad / s_k, W_pad / s_k]`` in ``x``'s dtype and device
    (the padded size is the model's ``pad_to_multiple``).

    Channels-last in memory, like the cells' own zero states (``zeros_like`` of the permuted attention output) and
    the states they return, so the gate convolution takes the same kernel (the same bits) as with None, and every
    step's states have the same strides.
    """
    height, width = (_round_up(side, model.pad_multiple) for side in x.shape[-2:])
    backbone = model.backbone
    states = []
    for dim, stride in zip(backbone.stage_dims, backbone.strides):
        shape = (x.shape[BATCH_DIM], height // stride, width // stride, dim)
        states.append((x.new_zeros(shape).permute(0, 3, 1, 2), x.new_zeros(shape).permute(0, 3, 1, 2)))
    return states


def describe_failure(exc: BaseException) -> str:
    """``"Type: first line"`` of the error behind ``exc`` (dynamo wraps the backend's own error)."""
    inner = getattr(exc, "inner_exception", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


def _channels_last(t: Tensor) -> Tensor:
    """``t: Tensor[B, C, H, W]`` channels-last in memory (itself if it already is)."""
    return t.contiguous(memory_format=torch.channels_last)


def _mark_batch_dynamic(tensors: Sequence[Tensor]) -> None:
    """Mark the batch dimension of ``tensors`` dynamic (a hint: sizes 0 and 1 stay specialised)."""
    for tensor in tensors:
        torch._dynamo.maybe_mark_dynamic(tensor, BATCH_DIM)


class _CompiledCallable:
    """One model method compiled by inductor, with its graph count, compile time and eager fallback.

    Called as ``callable(model, *args)``: the method is compiled unbound, so that nothing here holds the model.

    Args:
        name: what the logs call it ("backbone", "detect").
        eager: the model class's method (unbound).
        dynamic_inputs: the tensors of a call's arguments (after the model) whose batch dimension is dynamic.
        prepare: the arguments as the compiled function gets them: one memory layout at every step (the engine's
            states and head features come channels-last from the model, or contiguous after ``index_select`` /
            ``torch.cat``; a new layout would be a new graph).
        mode, options: ``torch.compile`` mode and inductor options (None: defaults).
        starts_step: each call starts a streamed step (a new cudagraph generation, see :data:`CUDAGRAPHS_OPTION`).
    """

    def __init__(self, name: str, eager: Callable, dynamic_inputs: Callable[..., Sequence[Tensor]],
                 prepare: Callable[..., Tuple], mode: Optional[str], options: Optional[Mapping[str, Any]],
                 starts_step: bool = False) -> None:
        self.name, self.eager, self.dynamic_inputs, self.prepare = name, eager, dynamic_inputs, prepare
        self.graphs = 0
        self.compile_s = 0.0
        self.failure: Optional[BaseException] = None
        self.config_patches = {**torch._inductor.list_mode_options(mode or DEFAULT_MODE), **(options or {})}
        self.trace_patches = {key: bool(self.config_patches.get(key, False)) for key in TRACE_TIME_OPTIONS}
        self.marks_step = starts_step and bool(self.config_patches.get(CUDAGRAPHS_OPTION))
        self.compiled = torch.compile(eager, backend=self._backend, dynamic=None)

    def _backend(self, graph_module: torch.fx.GraphModule, example_inputs: List[Tensor]) -> Callable:
        """Inductor, counting the graphs it compiles (dynamo calls it once per graph and recompilation)."""
        from torch._inductor.compile_fx import compile_fx

        compiled_graph = compile_fx(graph_module, example_inputs, config_patches=self.config_patches)
        self.graphs += 1
        return compiled_graph

    @property
    def active(self) -> str:
        return EAGER_LABEL if self.failure is not None else COMPILED_LABEL

    def __call__(self, model: nn.Module, *args: Any) -> Any:
        if self.failure is not None:
            return self.eager(model, *args)
        prepared = self.prepare(*args)
        _mark_batch_dynamic(self.dynamic_inputs(*prepared))
        if self.marks_step:
            torch.compiler.cudagraph_mark_step_begin()
        graphs, start = self.graphs, time.perf_counter()
        try:
            with torch._inductor.config.patch(self.trace_patches):
                out = self.compiled(model, *prepared)
        except Exception as exc:  # the compiler's failure unless eager fails too (then eager's error is raised)
            out = self.eager(model, *args)
            self._fall_back(exc)
            return out
        if self.graphs > graphs:
            seconds = time.perf_counter() - start
            self.compile_s += seconds
            log.info("compiled model %s: graph %d for a batch of %d rows in %.1f s", self.name, self.graphs,
                     self.dynamic_inputs(*args)[0].shape[BATCH_DIM], seconds)
        return out

    def _fall_back(self, exc: BaseException) -> None:
        self.failure = exc
        log.warning("compiling model %s failed (%s); running it eager", self.name, describe_failure(exc))


def _backbone_inputs(x: Tensor, states: LstmStates) -> List[Tensor]:
    return [x, *(t for pair in states for t in pair)]


def _detect_inputs(features: Features) -> List[Tensor]:
    return list(features.values())


def _prepare_backbone(x: Tensor, states: LstmStates) -> Tuple[Tensor, LstmStates]:
    return x, [(_channels_last(h), _channels_last(c)) for h, c in states]


def _prepare_detect(features: Features) -> Tuple[Features]:
    return {k: _channels_last(f) for k, f in features.items()},


class ModelStep:
    """The model callables of a streaming run: :meth:`backbone` and :meth:`detect`, eager or compiled.

    Args:
        model: an :class:`~leod_core.models.detector.RVTDetector` (``forward_backbone``, ``forward_detect``,
            ``backbone.stage_dims`` / ``strides``, ``pad_multiple``), in eval mode.
        compile: compile with inductor (else the model's own methods run).
        mode, options: ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``, ``"reduce-overhead"``) and
            inductor options (e.g. :data:`CPU_INFERENCE_OPTIONS`); None: inductor's defaults.
    """

    def __init__(self, model: nn.Module, compile: bool = True, mode: Optional[str] = None,
                 options: Optional[Mapping[str, Any]] = None) -> None:
        self._model = weakref.ref(model)  # weak: :func:`model_step` keeps steps per model without keeping models
        self._backbone: Optional[_CompiledCallable] = None
        self._detect: Optional[_CompiledCallable] = None
        if compile:
            self._compile(type(model), mode, options)
        log.info("model step: %s%s", self.path, f" (mode {mode}, options {dict(options or {})})"
                 if compile and (mode or options) else "")

    @property
    def model(self) -> nn.Module:
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this step was deleted")
        return model

    def _compile(self, model_class: type, mode: Optional[str], options: Optional[Mapping[str, Any]]) -> None:
        try:
            self._backbone = _CompiledCallable("backbone", model_class.forward_backbone, _backbone_inputs,
                                               _prepare_backbone, mode, options, starts_step=True)
            self._detect = _CompiledCallable("detect", model_class.forward_detect, _detect_inputs, _prepare_detect,
                                             mode, options)
        except Exception as exc:  # torch.compile refused (e.g. an unsupported Python): run eager
            log.warning("torch.compile is unavailable (%s); running the model eager", describe_failure(exc))
            self._backbone = self._detect = None

    @property
    def compiled(self) -> List[_CompiledCallable]:
        return [c for c in (self._backbone, self._detect) if c is not None]

    @property
    def path(self) -> str:
        """``"compiled (inductor)"`` while every callable is compiled, else ``"eager"`` (or which ones fell back)."""
        if not self.compiled:
            return EAGER_LABEL
        paths = {c.name: c.active for c in self.compiled}
        if len(set(paths.values())) == 1:
            return next(iter(paths.values()))
        return ", ".join(f"{name} {active}" for name, active in paths.items())

    @property
    def graphs(self) -> int:
        """Graphs compiled so far, backbone and detect together (0 when eager)."""
        return sum(c.graphs for c in self.compiled)

    @property
    def compile_s(self) -> float:
        """Wall seconds spent in the calls that compiled a graph (tracing + inductor + the first run)."""
        return sum(c.compile_s for c in self.compiled)

    def backbone(self, x: Tensor, states: Optional[LstmStates]) -> Tuple[Features, LstmStates]:
        """One recurrent step (see the module docstring for shapes); ``states=None`` means zero states."""
        model = self.model
        if self._backbone is None:
            return model.forward_backbone(x, states)
        return self._backbone(model, x, zero_states(model, x) if states is None else states)

    def detect(self, features: Features) -> Any:
        """FPN + head on ``{k: Tensor[N, C_k, h_k, w_k]}`` -> the model's head output."""
        if self._detect is None:
            return self.model.forward_detect(features)
        return self._detect(self.model, features)

    def log_summary(self) -> None:
        """INFO, compiled: the active path, the graphs compiled so far and the time they took (eager: nothing)."""
        if not self.compiled:
            return
        counts = ", ".join(f"{c.name} {c.graphs}" for c in self.compiled)
        log.info("model step ran %s: %d graphs compiled (%s) in %.1f s", self.path, self.graphs, counts,
                 self.compile_s)


#: model -> (compile, mode, options, weights version) -> its step; weak keys (steps hold their model weakly), so a
#: dropped model frees its steps.
_STEPS: "weakref.WeakKeyDictionary[nn.Module, Dict[Tuple, ModelStep]]" = weakref.WeakKeyDictionary()


def weights_version(model: nn.Module) -> int:
    """The sum of the in-place update counters of ``model``'s parameters and buffers: it grows whenever the
    weights change (optimiser step, ``load_state_dict``)."""
    return sum(t._version for t in itertools.chain(model.parameters(), model.buffers()))


def model_step(model: nn.Module, compile: bool, mode: Optional[str] = None,
               options: Optional[Mapping[str, Any]] = None) -> ModelStep:
    """The :class:`ModelStep` of ``model`` with these settings, built on first use and shared by every later
    engine on the same model while its weights are unchanged (with inductor's ``freezing`` the weights are part of
    the compiled graphs; changed weights get a new step)."""
    key = (compile, mode, tuple(sorted((options or {}).items())), weights_version(model))
    per_model = _STEPS.setdefault(model, {})
    if key not in per_model:
        per_model.clear()  # steps of other settings or older weights are not used again
        per_model[key] = ModelStep(model, compile, mode, options)
    return per_model[key]
