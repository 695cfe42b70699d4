"""TTA pseudo-labelling end to end against the model alone, and 4 batched views against 1 view.

End to end (``pseudo_label_sequences``): HDF5 read -> 4 views (identity, h-flip, time flip, both) in one batch
of ``4 x batch`` -> per-view filter -> merge -> tracker -> ``write_pseudo_sequence``, on synthetic
preprocessed sequences of Gen1 shape (240x304, 20 channels) and/or the 1Mpx down-sampled shape (360x640,
``_ds2_nearest`` files, boxes x2), written to a temporary directory with the project's writers.

Model only (the limit of the device): the same model, batch width and precision, on an in-memory input of the
same shape: backbone step with recurrent state + FPN/head on every row, per streamed step; no reading, no
post-processing, no tracking, no writing. It feeds frames already zero-padded to the model's multiple, as the
engine writes them (its uint8 input holds the padding), so neither side pays the model's own pad copy.

The four measurements of a shape run interleaved (``--repeats`` rounds of e2e-4, model-4, e2e-1, model-1) in
one process; medians are reported. The detector has random weights whose score logits are spread (as in the
tests' ``spread_logit_model``) so that boxes pass the filters and the tracker and writer have work; the boxes
per frame are printed.

Usage: python benchmarks/bench_tta_pipeline.py [--shapes gen1 1mpx-ds2] [--batch 2] [--reprs 40] [--repeats 3]
       [--size tiny --embed-dim 16] [--autocast bf16] [--device cuda]
Prints one Markdown row per shape for BENCHMARKS.md. ``--device cuda`` is supported but untested here.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path

import torch

from bench_common import (FRAME_SHAPES, SyntheticSequenceConfig, interleaved_medians, load_average, provenance,
                          write_synthetic_split)
from leod_core.data.splits import LabelSplit
from leod_core.models.detector import RVTConfig, build_detector
from leod_core.models.inference import AUTOCAST_DTYPES, autocast_context
from leod_core.pseudo.labeler import LabelerConfig, pseudo_label_sequences
from leod_core.data.cameras import get_camera
from leod_core.pseudo.tta import TTAConfig

#: Scale of the objectness / class logit weights: spreads the scores of random weights (std ~1 logit; the tests'
#: ``spread_logit_model`` uses the same value).
SCORE_LOGIT_SCALE = 3e4
#: Objectness logit bias: with it a few hundred anchors per frame pass the 0.01 score threshold into the NMS and a
#: few boxes per frame pass LEOD's 0.6 / 0.3 thresholds (Gen1 has ~2 objects per labeled frame).
OBJECTNESS_LOGIT_BIAS = -6.0


def benchmark_model(size: str, embed_dim: int | None, frame_hw: tuple[int, int], num_classes: int, seed: int = 0):
    """RVT of ``size`` (``embed_dim`` overrides the width) predicting ``num_classes`` classes, with random weights,
    spread score logits and a negative objectness bias (see the constants above); in eval mode."""
    torch.manual_seed(seed)
    overrides = {} if embed_dim is None else {"embed_dim": embed_dim, "dim_head": embed_dim}
    model = build_detector(RVTConfig.for_size(size, num_classes, frame_hw, **overrides)).eval()
    head = model.yolox_head
    with torch.no_grad():
        for conv in head.obj_preds:
            conv.bias.fill_(OBJECTNESS_LOGIT_BIAS)
            conv.weight.mul_(SCORE_LOGIT_SCALE)
        for conv in head.cls_preds:
            conv.bias.zero_()
            conv.weight.mul_(SCORE_LOGIT_SCALE)
    return model


@torch.inference_mode()
def model_only(model, width: int, steps: int, frame_hw: tuple[int, int], device: torch.device,
               amp: torch.dtype | None) -> None:
    """``steps`` recurrent steps of a ``width``-wide batch: backbone + FPN/head on every row (no data, no I/O), on
    frames zero-padded to the model's multiple beforehand (as the engine's input is)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 11, (width, 20, *frame_hw), generator=gen).to(device=device, dtype=torch.float32)
    x = model.pad_to_multiple(x)
    states = None
    for _ in range(steps):
        with autocast_context(device, amp):
            features, states = model.forward_backbone(x, states)
            model.forward_detect(features)


def end_to_end(model, data_dir: Path, split: LabelSplit, out_root: Path, cfg: TTAConfig, device: torch.device,
               labeler_cfg: LabelerConfig = LabelerConfig()) -> dict[str, float]:
    """``pseudo_label_sequences`` into a fresh directory under ``out_root``; returns its counts."""
    out_dir = Path(tempfile.mkdtemp(dir=out_root))
    return pseudo_label_sequences(model, data_dir, split, None, out_dir, cfg, device=device, progress=False,
                                  labeler_cfg=labeler_cfg)


#: The pipeline's optional speed-ups switched on one after the other: (name, TTAConfig overrides, LabelerConfig).
OPTIMISATION_STEPS = (
    ("none (NMS on all candidates, inline reads, inline track + write)",
     dict(prefilter_scores=False, prefetch_reads=False), LabelerConfig(background_write=False)),
    ("+ exact score pre-filter before the per-view NMS",
     dict(prefilter_scores=True, prefetch_reads=False), LabelerConfig(background_write=False)),
    ("+ HDF5 reads prefetched in a thread", dict(prefilter_scores=True, prefetch_reads=True),
     LabelerConfig(background_write=False)),
    ("+ track + write in a background thread (all on: the default)", dict(prefilter_scores=True,
                                                                           prefetch_reads=True), LabelerConfig()),
)


def optimisation_rows(shape: str, args, device: torch.device, work: Path) -> list[str]:
    """End to end with the optional speed-ups switched on one by one, interleaved with the model alone."""
    data_dir, split, cfg4, _, model, out_root, steps, _ = prepare(shape, args, device, work)
    amp = cfg4.torch_autocast_dtype
    runs = [lambda o=o, lc=lc: end_to_end(model, data_dir, split, out_root, dataclasses.replace(cfg4, **o), device,
                                          lc) for _, o, lc in OPTIMISATION_STEPS]
    runs.append(lambda: model_only(model, 4 * args.batch, steps, FRAME_SHAPES[shape], device, amp))
    medians, _ = interleaved_medians(runs, args.repeats, device)
    frame_views = 4 * args.sequences * args.reprs
    model_fps = 4 * args.batch * steps / medians[-1]
    return [f"| {shape} | {name} | {frame_views / t:.1f} | {frame_views / t / model_fps:.0%} | {load_average()} |"
            for (name, _, _), t in zip(OPTIMISATION_STEPS, medians)]


def prepare(shape: str, args, device: torch.device, work: Path):
    """Sequences of ``shape`` under ``work``, the split, 4-view and 1-view configs, the model (warmed up with one
    end-to-end pass), an output root, the streamed steps of one batch and the counts of the warm-up pass."""
    frame_hw = FRAME_SHAPES[shape]
    ds2 = shape == "1mpx-ds2"
    data_dir = work / shape / "train"
    if data_dir.exists():
        names = sorted(p.name for p in data_dir.iterdir())
    else:
        names = write_synthetic_split(data_dir, args.sequences, SyntheticSequenceConfig(
            num_reprs=args.reprs, frame_hw=frame_hw, downsampled_by_2=ds2))
    camera = "gen4" if ds2 else "gen1"
    length = get_camera(camera).pseudo_sequence_length
    split = LabelSplit("ssod", 0.0, length, {n: [] for n in names})  # no kept GT: every frame is predicted
    cfg4 = TTAConfig.for_camera(camera, batch_size=args.batch, autocast_dtype=args.autocast)
    cfg1 = TTAConfig.for_camera(camera, batch_size=args.batch, autocast_dtype=args.autocast, hflip=False, tflip=False)
    model = benchmark_model(args.size, args.embed_dim, frame_hw, get_camera(camera).num_classes).to(device)
    out_root = Path(tempfile.mkdtemp(dir=work / shape))
    steps = -(-args.sequences // args.batch) * args.reprs  # streamed steps of one slot-filled batch
    counts = end_to_end(model, data_dir, split, out_root, cfg4, device)  # warm-up: numba, allocator, files
    model_only(model, 4 * args.batch, 2, frame_hw, device, cfg4.torch_autocast_dtype)
    return data_dir, split, cfg4, cfg1, model, out_root, steps, counts


def bench_shape(shape: str, args, device: torch.device, work: Path) -> str:
    """End to end vs model only, 4 views and 1 view, interleaved; one Markdown row."""
    data_dir, split, cfg4, cfg1, model, out_root, steps, counts = prepare(shape, args, device, work)
    frame_hw, amp = FRAME_SHAPES[shape], cfg4.torch_autocast_dtype
    medians, _ = interleaved_medians([
        lambda: end_to_end(model, data_dir, split, out_root, cfg4, device),
        lambda: model_only(model, 4 * args.batch, steps, frame_hw, device, amp),
        lambda: end_to_end(model, data_dir, split, out_root, cfg1, device),
        lambda: model_only(model, args.batch, steps, frame_hw, device, amp)], args.repeats, device)
    e2e4, model4, e2e1, model1 = medians
    fv4 = counts["frame_views"]
    e2e4_fps, model4_fps = fv4 / e2e4, 4 * args.batch * steps / model4
    boxes = (counts["pseudo_boxes"] + counts["inpainted"]) / max(counts["frames"], 1)
    return (f"| {shape} {frame_hw[0]}x{frame_hw[1]}, {args.sequences} seqs x {args.reprs} reprs, "
            f"{cfg4.precision}, model batch {4 * args.batch} (1 view: {args.batch}), {boxes:.1f} boxes/frame | "
            f"{provenance(device, 'bench_tta_pipeline.py')} | {load_average()} | {e2e4_fps:.1f} | "
            f"{model4_fps:.1f} | {e2e4_fps / model4_fps:.0%} | {e2e4 / e2e1:.2f}x | {model4 / model1:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(FRAME_SHAPES), choices=list(FRAME_SHAPES))
    parser.add_argument("--batch", type=int, default=2, help="sequences side by side (model batch 4x this)")
    parser.add_argument("--sequences", type=int, default=None, help="sequences per shape (default: --batch)")
    parser.add_argument("--reprs", type=int, default=40, help="representations per sequence (50 ms each)")
    parser.add_argument("--size", default="tiny", help="RVT size: tiny, small, base")
    parser.add_argument("--embed-dim", type=int, default=16, help="override the RVT width (0: the size's own)")
    parser.add_argument("--autocast", default=None, choices=sorted(AUTOCAST_DTYPES), help="default float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--optimisations", action="store_true",
                        help="also time end to end with the optional speed-ups switched on one by one")
    args = parser.parse_args()
    args.sequences = args.sequences or args.batch
    args.embed_dim = args.embed_dim or None
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench_tta_") as tmp:
        rows = [bench_shape(shape, args, device, Path(tmp)) for shape in args.shapes]
        steps = [r for shape in args.shapes for r in optimisation_rows(shape, args, device, Path(tmp))] \
            if args.optimisations else []
    print("| benchmark | device | torch | commit | command | load | end to end (frame-views/s) | model only "
          "(frame-views/s) | end to end / model | 4 views / 1 view, end to end (time) | 4 views / 1 view, "
          "model only (time) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if steps:
        print(f"\nOptimisation steps, 4 views ({provenance(device, 'bench_tta_pipeline.py')}):\n")
        print("| shape | speed-ups on | end to end (frame-views/s) | of model only | load |")
        print("|---|---|---|---|---|")
        print("\n".join(steps))


if __name__ == "__main__":
    main()
