"""``leod <command>``: the one entry point the workflow rules call.

Each command parses its arguments, sets up logging, and calls one library function. Library modules are
imported inside the command so that ``leod --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

import yaml

from leod_core.config import load_yaml_mapping, replace_fields

log = logging.getLogger("leod")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


# ------------------------------------------------------------------------------------------- commands
def cmd_synth(args: argparse.Namespace) -> None:
    from leod_core.data.synth import SynthConfig, generate_dataset

    overrides = {k: v for k, v in {
        "seed": args.seed, "height": args.height, "width": args.width, "duration_s": args.duration_s,
        "num_train": args.num_train, "num_val": args.num_val, "num_test": args.num_test,
        "initial_objects_mean": args.initial_objects_mean, "min_initial_objects": args.min_initial_objects,
        "arrival_rate_hz": args.arrival_rate_hz}.items() if v is not None}
    config = replace_fields(SynthConfig(), overrides, "leod synth").with_object_size(args.min_object_px,
                                                                                    args.max_object_px)
    summary = generate_dataset(Path(args.out), config, workers=args.workers, progress=not args.no_progress)
    log.info("synthetic dataset written to %s: %s", args.out, json.dumps(summary))


def cmd_preprocess(args: argparse.Namespace) -> None:
    from leod_core.data.preprocess import PRESETS, preprocess_dataset

    config = PRESETS[args.preset]
    if args.config:
        config = replace_fields(config, load_yaml_mapping(Path(args.config)), str(args.config))
    preprocess_dataset(Path(args.raw), Path(args.out), config, workers=args.workers,
                       progress=not args.no_progress)


def cmd_split(args: argparse.Namespace) -> None:
    from leod_core.data.splits import make_split, parse_ratio, write_split

    split = make_split(Path(args.data) / "train", args.setting, parse_ratio(args.ratio), args.sequence_length,
                       args.offset)
    write_split(Path(args.out), split)


def cmd_train(args: argparse.Namespace) -> None:
    from leod_core.models.train_job import job_from_mapping, run_train_job

    overrides = load_yaml_mapping(Path(args.config)) if args.config else {}
    job = job_from_mapping(overrides, args.config or "defaults")
    flags = {
        "model": {"size": args.size, "num_classes": args.num_classes},
        "optim": {"max_steps": args.steps, "learning_rate": args.lr},
        "data": {"batch_size": args.batch_size, "sequence_length": args.sequence_length,
                 "num_workers": args.num_workers, "sampling": args.sampling},
        "trainer": {"devices": args.devices, "accelerator": args.accelerator, "precision": args.precision,
                    "checkpoint_every_n_steps": args.checkpoint_every, "progress_bar": not args.no_progress},
        "validation": {"every_n_steps": args.val_every, "camera": args.camera},
        "seed": args.seed,
    }
    flags = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
             for k, v in flags.items() if v is not None}
    job = replace_fields(job, flags, "leod train")
    init = Path(args.init_weights) if args.init_weights else None
    if args.pseudo_data:
        if args.split:
            raise ValueError("--split and --pseudo-data exclude each other: a pseudo dataset uses every frame")
        run_train_job(job, Path(args.pseudo_data), Path(args.out), split=None, pseudo=True, init_weights=init)
    else:
        if not (args.data and args.split):
            raise ValueError("round 0 needs --data and --split (or --pseudo-data for a self-training round)")
        run_train_job(job, Path(args.data), Path(args.out), split=Path(args.split), pseudo=False, init_weights=init)


def cmd_import_checkpoint(args: argparse.Namespace) -> None:
    from leod_core.data.download import verify_checksum
    from leod_core.models.released import import_into_config, import_released_checkpoint, size_label
    from leod_core.models.train_job import detector_config, job_from_mapping

    if (args.height is None) != (args.width is None):
        raise ValueError("leod import-checkpoint: give both --height and --width, or neither (camera default)")
    if (args.config is None) != (args.data is None):
        raise ValueError("leod import-checkpoint: --config and --data go together (the model a train config builds "
                         "for that data)")
    if args.md5 or args.crc32:
        verify_checksum(Path(args.checkpoint), args.md5, args.crc32)
    if args.config:
        config = detector_config(job_from_mapping(load_yaml_mapping(Path(args.config)), args.config), Path(args.data))
        import_into_config(Path(args.checkpoint), Path(args.out), config)
    else:
        input_hw = None if args.height is None else (args.height, args.width)
        config, _ = import_released_checkpoint(Path(args.checkpoint), Path(args.out), camera=args.camera,
                                               size=args.size, input_hw=input_hw)
    log.info("imported %s as %s (%d classes, %dx%d, partition split %d) into %s", args.checkpoint,
             size_label(config.size), config.num_classes, *config.input_hw, config.partition_split_32, args.out)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from leod_core.evaluation.evaluate import evaluate_checkpoint, format_summary
    from leod_core.evaluation.detection import CAMERAS
    from leod_core.models.inference import InferenceConfig

    cfg = InferenceConfig(batch_size=args.batch_size, sequence_length=args.sequence_length,
                          confidence_threshold=args.confidence, nms_threshold=args.nms,
                          autocast_dtype=args.autocast, downsampled_by_2=args.downsampled_by_2)
    result = evaluate_checkpoint(Path(args.checkpoint), Path(args.data), out=Path(args.out), camera=args.camera,
                                 split=args.split, cfg=cfg, device=args.device, backend=args.backend,
                                 progress=not args.no_progress)
    log.info("%s", format_summary(result, CAMERAS[args.camera].classes))


def cmd_visualize(args: argparse.Namespace) -> None:
    from leod_core.evaluation.detection import CAMERAS
    from leod_core.evaluation.video import render_sequence_video
    from leod_core.models.checkpoint import load_model_checkpoint
    from leod_core.models.inference import InferenceConfig, iter_sequence_predictions, predictions_to_prophesee

    model, _ = load_model_checkpoint(Path(args.checkpoint))
    model = model.to(args.device).eval()
    cfg = InferenceConfig(batch_size=1, sequence_length=args.sequence_length, confidence_threshold=args.score_threshold,
                          downsampled_by_2=args.downsampled_by_2, start_from_zero=True, clamp_to_frame=True)
    (preds,) = iter_sequence_predictions(model, Path(args.data), args.split, cfg, device=args.device,
                                         sequences=[args.sequence], frames="all", progress=not args.no_progress)
    per_repr = {int(r): predictions_to_prophesee([det], [t])
                for r, t, det in zip(preds.repr_idx, preds.timestamps_us, preds.detections)}
    written = render_sequence_video(Path(args.data) / args.split / args.sequence, Path(args.out), per_repr,
                                    CAMERAS[args.camera].classes, fps=args.fps, downsampled_by_2=args.downsampled_by_2,
                                    max_frames=args.max_frames, score_threshold=args.score_threshold,
                                    format=args.format, scale=args.scale, progress=not args.no_progress)
    log.info("wrote %s", written)


def cmd_pseudo_label(args: argparse.Namespace) -> None:
    from leod_core.pseudo.shard_job import pseudo_label_shard
    from leod_core.pseudo.tracker import TrackerConfig
    from leod_core.pseudo.tta import TTAConfig

    overrides = load_yaml_mapping(Path(args.config)) if args.config else {}
    unknown = set(overrides) - {"tta", "tracker"}
    if unknown:
        raise ValueError(f"{args.config}: unknown section(s) {sorted(unknown)} (known: tta, tracker)")
    tta = replace_fields(TTAConfig.gen4() if args.camera == "gen4" else TTAConfig(), overrides.get("tta", {}),
                         f"{args.config}:tta")
    flags = {"batch_size": args.batch_size, "sequence_length": args.sequence_length, "autocast_dtype": args.autocast}
    if args.no_tta:
        flags.update(hflip=False, tflip=False)
    tta = replace_fields(tta, {k: v for k, v in flags.items() if v is not None}, "leod pseudo-label")
    tracker = replace_fields(TrackerConfig(), overrides.get("tracker", {}), f"{args.config}:tracker")
    pseudo_label_shard(Path(args.checkpoint), Path(args.data), Path(args.split), Path(args.out), args.shard,
                       args.num_shards, tta, tracker, device=args.device, progress=not args.no_progress)


def cmd_merge_shards(args: argparse.Namespace) -> None:
    from leod_core.pseudo.shards import merge_shards

    summary = merge_shards([Path(d) for d in args.shards], Path(args.out), Path(args.data), args.num_shards,
                           overwrite=args.overwrite)
    log.info("merged %d shards into %s: %s", args.num_shards, args.out,
             ", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, (int, float))))


def cmd_label_quality(args: argparse.Namespace) -> None:
    from leod_core.data.splits import read_split
    from leod_core.pseudo.quality import QualityConfig, evaluate_pseudo_labels, write_quality

    cfg = QualityConfig.for_dataset(args.camera, **({"min_track_len": args.min_track_len}
                                                    if args.min_track_len is not None else {}))
    result = evaluate_pseudo_labels(Path(args.pseudo_data), Path(args.data), read_split(Path(args.split)), cfg,
                                    downsampled_by_2=args.downsampled_by_2)
    write_quality(Path(args.out), result)


def cmd_tables(args: argparse.Namespace) -> None:
    from leod_core.evaluation.ablation import collect_ablation, datasets_with_variants, write_ablation_tables
    from leod_core.evaluation.plots import write_plots
    from leod_core.evaluation.tables import collect_gates, collect_results, write_tables

    written = []
    if args.write in ("all", "paper"):
        results = collect_results(Path(args.results))
        if results.empty:
            raise ValueError(f"{args.results}: no round*/eval/test_metrics.json found")
        gates = collect_gates(Path(args.results))
        written += write_tables(results, Path(args.out), gates) + write_plots(results, Path(args.plots))
    if args.write in ("all", "ablation"):
        ablation = collect_ablation(Path(args.results), Path(args.benchmarks))
        datasets = args.datasets or datasets_with_variants(ablation)
        written += write_ablation_tables(ablation, Path(args.out), datasets)
    log.info("wrote %s", ", ".join(str(p) for p in written))


def cmd_download(args: argparse.Namespace) -> None:
    from leod_core.data.checksum import Checksum
    from leod_core.data.download import DownloadConfig, download_dataset

    overrides = {k: v for k, v in {"retries": args.retries, "timeout_s": args.timeout_s}.items() if v is not None}
    cfg = replace_fields(DownloadConfig(), overrides, "leod download")
    checksum = Checksum.parse("crc32", args.crc32) if args.crc32 else Checksum.parse("md5", args.md5)
    summary = download_dataset(args.url, Path(args.archive), checksum, Path(args.out) if args.out else None, cfg,
                               strip_single_top_level=not args.keep_top_level, progress=not args.no_progress)
    log.info("%s: %s", args.out or args.archive, json.dumps(summary, sort_keys=True))


def cmd_profile_install(args: argparse.Namespace) -> None:
    from leod_core.workflow.profiles import SlurmSettings, install_profile

    settings = SlurmSettings(args.cpu_partition, args.gpu_partition, args.account)
    print(install_profile(args.name, settings, force=args.force).report())


# --------------------------------------------------------------------------------------------- parser
def _add_synth(sub: argparse._SubParsersAction) -> None:
    from leod_core.data.synth_config import SynthConfig  # a small settings module: `leod --help` stays fast

    default = SynthConfig()
    p = sub.add_parser("synth", help="generate a synthetic event-camera dataset in RVT's raw layout")
    p.add_argument("--out", required=True, help="output directory (gets train/ val/ test/)")
    p.add_argument("--seed", type=int)
    p.add_argument("--height", type=int, help="sensor height in pixels")
    p.add_argument("--width", type=int, help="sensor width in pixels")
    p.add_argument("--duration-s", type=float, help="seconds per sequence")
    p.add_argument("--num-train", type=int, help="training sequences")
    p.add_argument("--num-val", type=int, help="validation sequences")
    p.add_argument("--num-test", type=int, help="test sequences")
    (car_min, car_max), (ped_min, ped_max) = default.car_width_px, default.ped_height_px
    p.add_argument("--min-object-px", type=float, help="smallest longer side of an object (car width, pedestrian "
                   f"height) in pixels (default {car_min:g} for cars, {ped_min:g} for pedestrians); e.g. 32 for "
                   "Gen1-sized data (240x304), whose evaluation drops boxes under 30 px diagonal or 10 px side")
    p.add_argument("--max-object-px", type=float, help="largest longer side of an object in pixels (default "
                   f"{car_max:g} for cars, {ped_max:g} for pedestrians)")
    p.add_argument("--initial-objects-mean", type=float, help="Poisson mean of the objects in view at the start "
                   f"(default {default.initial_objects_mean:g})")
    p.add_argument("--min-initial-objects", type=int, help="at least this many objects in view at the start "
                   f"(default {default.min_initial_objects})")
    p.add_argument("--arrival-rate-hz", type=float, help="objects entering the view per second (default "
                   f"{default.arrival_rate_hz:g})")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_synth)


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="raw events + boxes -> RVT's stacked-histogram layout")
    p.add_argument("--raw", required=True, help="raw dataset directory with train/ val/ test/")
    p.add_argument("--out", required=True, help="output directory (RVT preprocessed layout)")
    p.add_argument("--preset", choices=("gen1", "gen4", "synth"), default="gen1",
                   help="RVT's settings for Gen1 / 1Mpx, or the synthetic camera's")
    p.add_argument("--config", help="YAML file overriding preset fields (custom datasets)")
    p.add_argument("--workers", type=int, default=1, help="sequences processed in parallel")
    p.set_defaults(func=cmd_preprocess)


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="choose the labeled frames/sequences for a label ratio (WSOD/SSOD/full)")
    p.add_argument("--data", required=True, help="preprocessed dataset directory (with train/)")
    p.add_argument("--setting", required=True, choices=("wsod", "ssod", "full"))
    p.add_argument("--ratio", required=True, help="label ratio in (0, 1], e.g. 0.01")
    p.add_argument("--sequence-length", type=int, required=True,
                   help="training sequence length L (WSOD's first usable frame needs L representations)")
    p.add_argument("--offset", type=int, default=0,
                   help="which split of this ratio: sub-sampling starts at this index (0 .. WSOD stride - 1, "
                        "SSOD step k - 1; full: 0). LEOD averages the paper over offsets 0, 1, 2")
    p.add_argument("--out", required=True, help="split JSON to write")
    p.set_defaults(func=cmd_split)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train RVT: round 0 on a label split, or a self-training round on pseudo labels")
    p.add_argument("--data", help="preprocessed dataset (round 0)")
    p.add_argument("--split", help="label split JSON of `leod split` (round 0)")
    p.add_argument("--pseudo-data", help="pseudo-label dataset (rounds >= 1: soft anchor assignment)")
    p.add_argument("--out", required=True, help="round directory: gets model.ckpt, train_state/, logs/")
    p.add_argument("--config", help="YAML with model/loss/optim/data/trainer/validation settings (LEOD defaults "
                                    "otherwise)")
    p.add_argument("--size", help="RVT size: tiny, small, base")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--sequence-length", type=int)
    p.add_argument("--sampling", choices=("random", "stream", "mixed"))
    p.add_argument("--num-workers", type=int)
    p.add_argument("--devices", type=int, help="devices of this job (DDP when > 1)")
    p.add_argument("--accelerator", help="cpu, gpu or auto")
    p.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed")
    p.add_argument("--checkpoint-every", type=int, help="steps between train_state/last.ckpt writes")
    p.add_argument("--val-every", type=int, help="validate every N steps and at the last step (0: never); "
                                                 "model.ckpt then gets the best weights by val AP")
    p.add_argument("--camera", choices=("gen1", "gen4", "synth"), help="validation protocol: class names and "
                                                                       "box-size filters")
    p.add_argument("--seed", type=int)
    p.add_argument("--init-weights", help="start from this detector checkpoint's weights (LEOD's weight=), "
                                          "e.g. the previous round's model.ckpt")
    p.set_defaults(func=cmd_train)


def _add_import_checkpoint(sub: argparse._SubParsersAction) -> None:
    from leod_core.workflow.settings import CAMERA_TRAIN_DEFAULTS

    p = sub.add_parser("import-checkpoint", help="convert a released RVT/LEOD checkpoint into ours (strict load); "
                                                 "its pickled code never runs")
    p.add_argument("--checkpoint", required=True, help="RVT or LEOD .ckpt (Lightning or bare state dict), "
                                                       "e.g. rvt-s-gen1x0.01_ss-final.ckpt")
    p.add_argument("--out", required=True, help="model.ckpt to write")
    p.add_argument("--size", choices=("tiny", "small", "base"),
                   help="RVT size; inferred from the weights when omitted (a different one is an error)")
    p.add_argument("--camera", choices=tuple(CAMERA_TRAIN_DEFAULTS),
                   help="camera the model is for (class count, partition split, frame size); inferred from the "
                        "class count when omitted: 2 gen1, 3 gen4")
    p.add_argument("--height", type=int, help="frame height the model sees (default: the camera's, gen4 360)")
    p.add_argument("--width", type=int, help="frame width the model sees (default: the camera's, gen4 640)")
    p.add_argument("--config", help="instead of size and camera: the model of this leod train config (YAML) ...")
    p.add_argument("--data", help="... at the frame size of this preprocessed dataset (the workflow's import_round0)")
    checksum = p.add_mutually_exclusive_group()
    checksum.add_argument("--md5", help="check the checkpoint's MD5 (or a prefix of >= 6 hex digits) first")
    checksum.add_argument("--crc32", help="check the checkpoint's CRC-32 (8 hex digits) first")
    p.set_defaults(func=cmd_import_checkpoint)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Prophesee-protocol COCO mAP of a checkpoint on whole sequences")
    p.add_argument("--checkpoint", required=True, help="model.ckpt (ours, or imported)")
    p.add_argument("--data", required=True, help="preprocessed dataset")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--camera", default="gen1", choices=("gen1", "gen4", "synth"),
                   help="class names and box-size filters of the protocol")
    p.add_argument("--downsampled-by-2", action="store_true", help="gen4 data at half resolution")
    p.add_argument("--sequence-length", type=int, default=21, help="chunk length L (also the warm-up before "
                                                                   "the first label, as RVT)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences streamed side by side")
    p.add_argument("--confidence", type=float, default=0.001, help="postprocess score threshold (LEOD final: 0.001)")
    p.add_argument("--nms", type=float, default=0.45, help="class-wise NMS IoU threshold")
    p.add_argument("--autocast", choices=("bfloat16", "float16"), help="autocast dtype (default fp32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--backend", default="auto", choices=("auto", "pycocotools", "faster-coco-eval"))
    p.set_defaults(func=cmd_evaluate)


def _add_visualize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="MP4 (or GIF) of a sequence's event frames with GT and predictions")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="preprocessed dataset")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--sequence", required=True, help="sequence directory name")
    p.add_argument("--out", required=True, help="video path (.mp4, or .gif)")
    p.add_argument("--camera", default="gen1", choices=("gen1", "gen4", "synth"), help="class names")
    p.add_argument("--downsampled-by-2", action="store_true")
    p.add_argument("--sequence-length", type=int, default=21)
    p.add_argument("--score-threshold", type=float, default=0.1, help="LEOD's vis_pred.py uses 0.1")
    p.add_argument("--fps", type=float, default=20.0, help="20 = real time at 50 ms per frame")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--format", default="auto", choices=("auto", "mp4", "gif"))
    p.add_argument("--scale", type=int, default=2, help="integer upscaling (LEOD uses 2)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_visualize)


def _add_pseudo_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pseudo-label", help="pseudo-label one shard of the training sequences (4-view TTA + tracker)")
    p.add_argument("--checkpoint", required=True, help="model.ckpt of the previous round")
    p.add_argument("--data", required=True, help="the original preprocessed dataset")
    p.add_argument("--split", required=True, help="label split JSON (its kept GT passes through unchanged)")
    p.add_argument("--out", required=True, help="shard directory (gets train/<seq> and shard.json)")
    p.add_argument("--shard", type=int, default=0, help="this job's shard index K")
    p.add_argument("--num-shards", type=int, default=1, help="number of shards N")
    p.add_argument("--camera", default="gen1", choices=("gen1", "gen4", "synth"),
                   help="gen4: time-flip offset -2, x2-downsampled input, L=10")
    p.add_argument("--config", help="YAML with `tta` and `tracker` sections overriding LEOD's defaults")
    p.add_argument("--batch-size", type=int, help="sequences per batch (x4 views)")
    p.add_argument("--sequence-length", type=int, help="stream chunk length L (LEOD: the dataset's)")
    p.add_argument("--autocast", choices=("bfloat16", "float16"))
    p.add_argument("--no-tta", action="store_true", help="identity view only (ablation)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_pseudo_label)


def _add_merge_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge-shards", help="assemble the pseudo dataset from complete shards (RVT layout)")
    p.add_argument("--shards", nargs="+", required=True, help="shard directories 0..N-1")
    p.add_argument("--num-shards", type=int, required=True)
    p.add_argument("--data", required=True, help="the original preprocessed dataset (val/test are linked)")
    p.add_argument("--out", required=True, help="pseudo dataset root to write")
    p.add_argument("--overwrite", action="store_true", help="replace a merged dataset made from other shards")
    p.set_defaults(func=cmd_merge_shards)


def _add_label_quality(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label-quality", help="precision/recall of pseudo labels on withheld-GT frames (LEOD val_dst)")
    p.add_argument("--pseudo-data", required=True, help="pseudo-label dataset (merged)")
    p.add_argument("--data", required=True, help="the original preprocessed dataset")
    p.add_argument("--split", required=True, help="the label split the pseudo labels were made with")
    p.add_argument("--out", required=True, help="quality JSON to write")
    p.add_argument("--camera", default="gen1", choices=("gen1", "gen4", "synth"), help="class names and chunk length")
    p.add_argument("--downsampled-by-2", action="store_true")
    p.add_argument("--min-track-len", type=int, help="val_dst's tracking re-filter (LEOD 6; 0 = off)")
    p.set_defaults(func=cmd_label_quality)


def _add_tables(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tables", help="paper-style tables (Markdown: mean ± std over the label splits; CSV: one row "
                                      "per split) and plots from every evaluated round")
    p.add_argument("--results", default="results", help="results directory to scan")
    p.add_argument("--out", default="results/tables", help="directory for {dataset}.md / .csv")
    p.add_argument("--plots", default="results/plots",
                   help="directory for the PNG plots ({dataset}_map, _label_efficiency, _pseudo_quality)")
    p.add_argument("--write", choices=("all", "paper", "ablation"), default="all",
                   help="the paper tables and plots, the ablation tables ({dataset}_ablation.md / .csv), or both")
    p.add_argument("--datasets", nargs="+", metavar="DATASET",
                   help="ablation tables of these datasets, written even without variants (default: every "
                        "dataset with a +variant experiment)")
    p.add_argument("--benchmarks", default="benchmarks",
                   help="Snakemake benchmark files (the ablation's pseudo-labelling time: pseudo/shards/*.tsv)")
    p.set_defaults(func=cmd_tables)


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download a file (resumable, retried, checksum-checked) and extract an "
                                         "archive")
    p.add_argument("--url", required=True, help="file URL (e.g. RVT's preprocessed gen1.tar, a released checkpoint)")
    checksum = p.add_mutually_exclusive_group(required=True)
    checksum.add_argument("--crc32", help="expected CRC-32 of the file, 8 hex digits (e.g. 5acab6f3)")
    checksum.add_argument("--md5", help="expected MD5 of the file, or a prefix of at least 6 hex digits (RVT "
                                        "publishes 6 per checkpoint, e.g. 840f2b)")
    p.add_argument("--archive", required=True, help="where the archive goes (<archive>.part while downloading)")
    p.add_argument("--out", help="directory to extract into (atomically); without it the archive is only downloaded")
    p.add_argument("--keep-top-level", action="store_true",
                   help="extract as is; by default the archive's single top-level folder (gen1/, train/) is "
                        "stripped so that --out holds its contents")
    p.add_argument("--retries", type=int, help="failed attempts in a row tolerated before giving up "
                                                "(an attempt that receives new bytes resets the count)")
    p.add_argument("--timeout-s", type=float, help="socket timeout of each connect / read, in seconds")
    p.set_defaults(func=cmd_download)


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="install a Snakemake profile of this repository (snakemake --profile NAME)")
    actions = p.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    p = actions.add_parser("install", help="copy profiles/NAME into your Snakemake profile directory "
                                           "($XDG_CONFIG_HOME/snakemake, default ~/.config/snakemake)")
    p.add_argument("name", metavar="NAME", help="a directory of profiles/, e.g. slurm")
    p.add_argument("--cpu-partition", help="SLURM partition of the CPU jobs (the profile's '<- EDIT' line)")
    p.add_argument("--gpu-partition", help="SLURM partition of the GPU jobs: training, pseudo labels, evaluation")
    p.add_argument("--account", help="SLURM account (sbatch -A), if your cluster needs one")
    p.add_argument("--force", action="store_true",
                   help="replace an installed profile of that name (the old one is kept as NAME.bak-<time>)")
    p.set_defaults(func=cmd_profile_install)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leod", description="LEOD label-efficient event-camera detection")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--no-progress", action="store_true", help="disable progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
        _add_synth, _add_preprocess, _add_split, _add_train, _add_import_checkpoint, _add_evaluate,
        _add_visualize, _add_pseudo_label, _add_merge_shards, _add_label_quality, _add_tables, _add_download,
        _add_profile)
    for add in adders:
        add(sub)
    return parser


#: Errors of bad input or a failed environment: logged as one line (they name the file), exit status 1. A YAML
#: syntax error names the file, line and column.
USER_ERRORS = (ValueError, OSError, yaml.YAMLError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        if getattr(args, "device", None):   # one GPU job: evaluate, visualize, pseudo-label (train: run_train_job)
            from leod_core.devices import claim_job_devices
            claim_job_devices(args.device)
        args.func(args)
    except USER_ERRORS as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
