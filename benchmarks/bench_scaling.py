"""How each non-model stage's time and peak memory grow with the number of sequences (issue 20, item 1).

At Gen1 shape (240x304, the synthetic camera's event rates and boxes), for ``--sizes`` sequences (default 8, 32,
128, 512), every stage runs in a fresh child process (its wall time and peak RSS, ``ru_maxrss``, are its own):

* ``synth``: ``leod synth``'s generator, ``--duration-s`` long sequences (only at ``--synth-sizes``, default up to
  128: generation is per sequence, so the larger trees reuse the generated sequences, see below);
* ``preprocess``: ``leod preprocess`` (Gen1 preset) of those raw sequences;
* ``sequence_index``, ``split`` (WSOD 10 % from the index), ``shard_list`` (8 shards from the index);
* ``writer``: the pseudo-label writer, one pseudo sequence per training sequence into its shard, plus the shard
  manifests (the pseudo labels are the ground truth carried to every representation, jittered, with scores);
* ``tracker``: LEOD's track filter and inpainting on every sequence's pseudo labels;
* ``merge``: ``merge_shards`` of the 8 shards against the shard list, verifying every sequence;
* ``label_quality``: precision / recall of the merged pseudo labels against the withheld ground truth;
* ``evaluation``: COCO evaluation (faster-coco-eval when installed) of every sequence's labeled frames, with
  jittered ground truth plus false positives as the predictions;
* ``tables``: the paper tables of ``N`` experiments' metric files (tables grow with experiments, not sequences).

A tree of ``N`` sequences beyond the synthesised ones is the preprocessed sequences repeated under new names
(directory symlinks): what every later stage reads per sequence is the same. Each stage's slope is the per-sequence
cost of the linear fit ``seconds = fixed + c N``, and its growth the exponent ``b`` of ``seconds ~ N^b`` between
the two largest sizes (near 1: linear; see :func:`slope`). ``--plot PATH`` writes the curves (PNG).

Snakemake's own DAG build, checkpoint re-evaluation and per-job overhead against the sequence count are
``bench_paper_plan.py --sweep sequences`` (the plan reads no sequence; the shard lists read the index).

Run: ``python benchmarks/bench_scaling.py [--sizes 8 32 128 512] [--synth-sizes 8 32 128] [--duration-s 2]
[--plot benchmarks/scaling.png]``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_average, print_markdown_table, provenance  # noqa: E402

SCRIPT = "bench_scaling.py"
STAGES = ("synth", "preprocess", "sequence_index", "split", "shard_list", "writer", "tracker", "merge",
          "label_quality", "evaluation", "tables")
#: Stages measured only at ``--synth-sizes``.
SOURCE_STAGES = ("synth", "preprocess")
NUM_SHARDS = 8
SPLIT_SETTING, SPLIT_RATIO, SEQUENCE_LENGTH = "wsod", 0.1, 21
CAMERA = "gen1"
#: Validation and test sequences synthesised beside the N training ones (preprocessing needs every split).
HELD_OUT_SEQUENCES = 1
#: Pseudo labels: box centres jittered by this many pixels (std), scores uniform in this range.
JITTER_PX = 2.0
SCORE_RANGE = (0.3, 1.0)
#: Evaluation: false positives per labeled frame, added to the jittered ground truth.
FALSE_POSITIVES_PER_FRAME = 2
SEED = 0


# ------------------------------------------------------------------------------------------ the stages
def stage_synth(work: Path, n: int, duration_s: float) -> int:
    from dataclasses import replace

    from leod_core.data.synth import SynthConfig, generate_dataset
    from leod_core.data.cameras import get_camera

    camera = get_camera(CAMERA)
    height, width = camera.sensor_height, camera.sensor_width
    cfg = replace(SynthConfig(), height=height, width=width, duration_s=duration_s, num_train=n,
                  num_val=HELD_OUT_SEQUENCES, num_test=HELD_OUT_SEQUENCES, seed=SEED)
    summary = generate_dataset(work / "raw", cfg, workers=1, progress=False)
    return int(summary["splits"]["train"]["events"])


def stage_preprocess(work: Path, n: int, duration_s: float) -> int:
    from leod_core.data.preprocess import PRESETS, preprocess_dataset

    preprocess_dataset(work / "raw", work / "data", PRESETS[CAMERA], progress=False)
    return n


def stage_sequence_index(work: Path, n: int, duration_s: float) -> int:
    from leod_core.data.sequence_index import write_sequence_index

    return len(write_sequence_index(work / "data" / "train", work / "sequence_index.json").sequences)


def stage_split(work: Path, n: int, duration_s: float) -> int:
    from leod_core.data.sequence_index import read_sequence_index
    from leod_core.data.splits import split_from_index, write_split

    split = split_from_index(read_sequence_index(work / "sequence_index.json"), SPLIT_SETTING, SPLIT_RATIO,
                             SEQUENCE_LENGTH)
    write_split(work / "split.json", split)
    return split.num_labeled_frames


def stage_shard_list(work: Path, n: int, duration_s: float) -> int:
    from leod_core.pseudo.shard_list import write_shard_list

    listing = write_shard_list(work / "data", work / "split.json", NUM_SHARDS, False, work / "shard_list.json",
                               work / "sequence_index.json")
    return listing.num_sequences


def pseudo_labels(seq_dir: Path, kept_frames: list[int], rng: np.random.Generator):
    """What the pseudo-labeller writes for ``seq_dir``: the split's kept ground-truth frames (``kept_frames``,
    objframe indices) as they are, and at every other representation the ground truth of the nearest labeled
    frame with box centres jittered and scores drawn. ``(SequenceLabels, objframe_idx_2_repr_idx int64 [F])``, or
    None for a sequence without any box."""
    from leod_core.data.formats import PSEUDO_BBOX_DTYPE, SequenceLabels, SequencePaths, read_labels
    from leod_core.pseudo.writer import gt_to_pseudo_rows

    paths = SequencePaths(seq_dir)
    gt = read_labels(paths.labels)
    label_reprs = np.load(paths.objframe_idx_2_repr_idx, allow_pickle=False)
    num_reprs = len(np.load(paths.repr_timestamps, allow_pickle=False))
    kept = {int(label_reprs[k]): k for k in kept_frames}
    frames, reprs = [], []
    for r in range(num_reprs):
        nearest = kept.get(r, int(np.abs(label_reprs - r).argmin()))
        src = gt.frame(nearest)
        if not len(src):
            continue
        if r in kept:
            frames.append(gt_to_pseudo_rows(src))
            reprs.append(r)
            continue
        rows = np.zeros(len(src), PSEUDO_BBOX_DTYPE)
        for key in ("x", "y", "w", "h", "class_id"):
            rows[key] = src[key]
        rows["x"] += rng.normal(0.0, JITTER_PX, len(src))
        rows["y"] += rng.normal(0.0, JITTER_PX, len(src))
        rows["class_confidence"] = rng.uniform(*SCORE_RANGE, len(src))
        rows["objectness"] = rng.uniform(*SCORE_RANGE, len(src))
        frames.append(rows)
        reprs.append(r)
    if not frames:
        return None
    return SequenceLabels.from_frames(frames), np.asarray(reprs, dtype=np.int64)


def stage_writer(work: Path, n: int, duration_s: float) -> int:
    from leod_core.data.splits import read_split
    from leod_core.pseudo.shard_list import read_shard_list
    from leod_core.pseudo.shards import shard_sequence_dir, write_shard_manifest
    from leod_core.pseudo.writer import write_pseudo_sequence

    listing, rng, boxes = read_shard_list(work / "shard_list.json"), np.random.default_rng(SEED), 0
    kept = read_split(work / "split.json").labeled_frames
    for k in range(listing.num_shards):
        shard_dir, written, empty = work / "shards" / str(k), [], []
        for name in listing.sequences(k):
            pseudo = pseudo_labels(work / "data" / "train" / name, kept[name], rng)
            if pseudo is None:
                empty.append(name)
                continue
            write_pseudo_sequence(shard_sequence_dir(shard_dir, name), work / "data" / "train" / name, *pseudo,
                                  False)
            written.append(name)
            boxes += len(pseudo[0].labels)
        write_shard_manifest(shard_dir, k, listing.num_shards, written, empty, {"benchmark": SCRIPT})
    return boxes


def stage_tracker(work: Path, n: int, duration_s: float) -> int:
    from leod_core.data.cameras import get_camera
    from leod_core.data.formats import SequencePaths, read_labels
    from leod_core.pseudo.tracker import filter_and_inpaint

    tracked = 0
    for shard_dir in sorted((work / "shards").iterdir()):
        for seq_dir in sorted((shard_dir / "train").glob("*")):
            paths = SequencePaths(seq_dir)
            labels = read_labels(paths.labels)
            o2r = np.load(paths.objframe_idx_2_repr_idx, allow_pickle=False)
            rows = labels.labels
            counts = np.diff(np.append(labels.objframe_idx_2_label_idx, len(rows)))
            boxes = np.stack([rows["x"] + rows["w"] / 2, rows["y"] + rows["h"] / 2, rows["w"], rows["h"]], axis=1)
            filter_and_inpaint(o2r, counts, boxes, rows["class_id"], rows["t"] > 0, get_camera(CAMERA).frame_hw)
            tracked += len(rows)
    return tracked


def stage_merge(work: Path, n: int, duration_s: float) -> int:
    from leod_core.data.splits import read_split
    from leod_core.pseudo.shard_list import read_shard_list
    from leod_core.pseudo.shards import merge_shards

    listing = read_shard_list(work / "shard_list.json")
    shard_dirs = [work / "shards" / str(k) for k in range(listing.num_shards)]
    summary = merge_shards(shard_dirs, work / "merged", work / "data", listing,
                           kept_gt_frames=read_split(work / "split.json").labeled_frames, num_classes=2)
    return int(summary.get("num_sequences", n))


def stage_label_quality(work: Path, n: int, duration_s: float) -> int:
    from leod_core.data.splits import read_split
    from leod_core.pseudo.quality import QualityConfig, evaluate_pseudo_labels, write_quality

    result = evaluate_pseudo_labels(work / "merged", work / "data", read_split(work / "split.json"),
                                    QualityConfig.for_dataset(CAMERA))
    write_quality(work / "quality.json", result)
    return int(result.get("num_frames", 0))


def stage_evaluation(work: Path, n: int, duration_s: float) -> int:
    from leod_core.data.cameras import get_camera
    from leod_core.evaluation.coco_backends import FASTER_COCO_EVAL, PYCOCOTOOLS, fast_backend_available
    from leod_core.evaluation.detection import evaluate_detections
    from leod_core.evaluation.evaluate import load_ground_truth

    rng, gts, preds = np.random.default_rng(SEED), [], []
    camera = get_camera(CAMERA)
    height, width = camera.sensor_height, camera.sensor_width
    for seq_dir in sorted((work / "data" / "train").iterdir()):
        gt = load_ground_truth(seq_dir).boxes
        pred = np.concatenate([gt, gt[rng.integers(0, len(gt), FALSE_POSITIVES_PER_FRAME * len(gt) // 2)]])
        pred["x"] += rng.normal(0.0, JITTER_PX, len(pred))
        pred["y"] += rng.normal(0.0, JITTER_PX, len(pred))
        pred["class_confidence"] = rng.uniform(*SCORE_RANGE, len(pred))
        gts.append(gt)
        preds.append(np.sort(pred, order="t"))
    backend = FASTER_COCO_EVAL if fast_backend_available() else PYCOCOTOOLS
    evaluate_detections(gts, preds, height, width, CAMERA, False, backend)
    return sum(len(g) for g in gts)


def stage_tables(work: Path, n: int, duration_s: float) -> int:
    from leod_core.evaluation.tables import collect_gates, collect_results, write_tables, write_test_metrics

    rng, results = np.random.default_rng(SEED), work / "results"
    for k in range(n):
        ratio = ("0.01", "0.02", "0.05", "0.1")[k % 4]
        exp = results / CAMERA / f"wsod_{ratio}-s{k // 4}" if k >= 4 else results / CAMERA / f"wsod_{ratio}"
        for r in range(2):
            write_test_metrics(exp / f"round{r}" / "eval" / "test_metrics.json",
                               {"AP": float(rng.uniform(0.2, 0.5)), "AP50": float(rng.uniform(0.4, 0.7))})
    return len(write_tables(collect_results(results), work / "tables", collect_gates(results)))


STAGE_FUNCTIONS = {name: globals()[f"stage_{name}"] for name in STAGES}


# ------------------------------------------------------------------------------------------ the driver
def run_child(stage: str, work: Path, n: int, duration_s: float) -> None:
    """One stage in this (fresh) process: prints ``{"seconds", "peak_rss_mb", "items"}`` as JSON."""
    start = time.perf_counter()
    items = STAGE_FUNCTIONS[stage](work, n, duration_s)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "items": items}))


def measure(stage: str, work: Path, n: int, duration_s: float) -> dict:
    cmd = [sys.executable, __file__, "--child", stage, "--work", str(work), "--n", str(n),
           "--duration-s", str(duration_s)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        raise RuntimeError(f"stage {stage} at {n} sequences failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def replicate(source: Path, out: Path, n: int) -> None:
    """``out/{train,val,test}``: ``n`` training sequences, the source's repeated under new names (symlinks)."""
    names = sorted(p.name for p in (source / "train").iterdir())
    (out / "train").mkdir(parents=True)
    for k in range(n):
        (out / "train" / f"seq_{k:05d}").symlink_to((source / "train" / names[k % len(names)]).resolve(),
                                                     target_is_directory=True)
    for split in ("val", "test"):
        (out / split).mkdir()


def slope(sizes: list[int], seconds: list[float]) -> tuple[float, float, float]:
    """(fixed seconds and seconds per sequence of the linear least-squares fit ``seconds = a + c N``; the local
    exponent ``b = log(t2 / t1) / log(N2 / N1)`` between the two largest sizes, where a fixed cost (imports, JIT
    compilation) weighs least: ``b`` near 1 is linear, clearly above 1 super-linear)."""
    if len(sizes) < 2:
        return float("nan"), seconds[0] / sizes[0], float("nan")
    per_item, fixed = np.polyfit(sizes, seconds, 1)
    exponent = np.log(seconds[-1] / seconds[-2]) / np.log(sizes[-1] / sizes[-2])
    return float(fixed), float(per_item), float(exponent)


def run_all(sizes: list[int], synth_sizes: list[int], duration_s: float, base: Path) -> dict[str, dict[int, dict]]:
    results: dict[str, dict[int, dict]] = {stage: {} for stage in STAGES}
    largest_source = None
    for n in sorted(set(synth_sizes)):
        work = base / f"source_{n}"
        work.mkdir()
        for stage in SOURCE_STAGES:
            results[stage][n] = measure(stage, work, n, duration_s)
            print(f"{stage:>15} N={n:4d}: {results[stage][n]}", file=sys.stderr)
        largest_source = work / "data"
    for n in sizes:
        work = base / f"tree_{n}"
        replicate(largest_source, work / "data", n)
        for stage in STAGES[len(SOURCE_STAGES):]:
            results[stage][n] = measure(stage, work, n, duration_s)
            print(f"{stage:>15} N={n:4d}: {results[stage][n]}", file=sys.stderr)
    return results


#: Markers cycled with the colours, so that no two stages' curves look alike.
PLOT_MARKERS = "osD^vP*Xh<>"


def plot(results: dict[str, dict[int, dict]], path: Path) -> None:
    """Time (log-log) and peak memory against the sequences, one curve per stage (distinct colour and marker)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    ax_t, ax_m = fig.subplots(1, 2)
    colours = matplotlib.colormaps["tab20"].colors
    for k, (stage, by_size) in enumerate(results.items()):
        sizes = sorted(by_size)
        style = dict(color=colours[2 * k % 20 + (2 * k // 20) % 2], marker=PLOT_MARKERS[k % len(PLOT_MARKERS)],
                     label=stage)
        ax_t.loglog(sizes, [by_size[n]["seconds"] for n in sizes], **style)
        ax_m.semilogx(sizes, [by_size[n]["peak_rss_mb"] for n in sizes], **style)
    ax_t.set(xlabel="sequences", ylabel="seconds", title="time per stage")
    ax_m.set(xlabel="sequences", ylabel="peak RSS (MB)", title="peak memory per stage")
    ax_t.legend(fontsize=7, ncol=2)
    ax_t.grid(True, which="both", alpha=0.3)
    ax_m.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(results: dict[str, dict[int, dict]], load_before: str) -> None:
    import torch

    columns = ("sequences", "seconds", "peak RSS (MB)", "fixed s", "ms per sequence", "exponent b (top)")
    rows = []
    for stage, by_size in results.items():
        sizes = sorted(by_size)
        seconds = [by_size[n]["seconds"] for n in sizes]
        fixed, per_item, exponent = slope(sizes, seconds)
        peaks = " / ".join(f"{by_size[n]['peak_rss_mb']:.0f}" for n in sizes)
        rows.append(f"| {stage} | {provenance(torch.device('cpu'), SCRIPT)} | {load_before} → {load_average()} | "
                    f"{' / '.join(map(str, sizes))} | {' / '.join(f'{s:.2f}' for s in seconds)} | {peaks} | "
                    f"{fixed:.2f} | {1000 * per_item:.1f} | {exponent:.2f} |")
    print_markdown_table(columns, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128, 512])
    parser.add_argument("--synth-sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--duration-s", type=float, default=2.0, help="length of every synthesised sequence")
    parser.add_argument("--plot", type=Path, help="write the curves to this PNG")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.work, args.n, args.duration_s)
        return
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        results = run_all(args.sizes, args.synth_sizes, args.duration_s, Path(tmp))
    report(results, load_before)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
