"""``leod train | import-checkpoint | evaluate | predict | visualize``: the detector."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from leod_core.config import load_yaml_mapping, replace_fields
from leod_core.data.cameras import camera_names, get_camera

log = logging.getLogger("leod")


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
    from leod_core.models.inference import InferenceConfig

    cfg = InferenceConfig(batch_size=args.batch_size, sequence_length=args.sequence_length,
                          confidence_threshold=args.confidence_threshold, nms_threshold=args.nms_threshold,
                          autocast_dtype=args.autocast, downsampled_by_2=args.downsampled_by_2,
                          start_from_zero=args.start_from_zero, compile_model=args.compile_model)
    result = evaluate_checkpoint(Path(args.checkpoint), Path(args.data), out=Path(args.out), camera=args.camera,
                                 split=args.split, cfg=cfg, device=args.device, backend=args.backend,
                                 progress=not args.no_progress,
                                 predictions_dir=Path(args.predictions) if args.predictions else None)
    log.info("%s", format_summary(result, get_camera(args.camera).classes))


def cmd_predict(args: argparse.Namespace) -> None:
    from leod_core.data.formats import write_npy
    from leod_core.data.preprocess import PRESETS
    from leod_core.data.recording_reprs import RecordingRepresentations
    from leod_core.evaluation.video import render_stream_video
    from leod_core.models.checkpoint import load_model_checkpoint
    from leod_core.models.inference import InferenceConfig
    from leod_core.models.predict import predict_recording

    camera = get_camera(args.camera)
    reprs = RecordingRepresentations(Path(args.recording), PRESETS[camera.name])
    out = Path(args.out) if args.out else Path(f"{reprs.name}_detections.npy")
    for target in (out, Path(args.video) if args.video else None):
        if target is not None and target.exists() and not args.overwrite:
            raise ValueError(f"{target} exists; pass --overwrite to replace it")
    model, config = load_model_checkpoint(Path(args.checkpoint))
    cfg = InferenceConfig(batch_size=1, sequence_length=args.sequence_length or camera.sequence_length,
                          confidence_threshold=args.confidence_threshold, nms_threshold=args.nms_threshold,
                          autocast_dtype=args.autocast, downsampled_by_2=camera.downsampled_by_2,
                          start_from_zero=True, compile_model=args.compile_model)
    result = predict_recording(model, config.input_hw, reprs, cfg, device=args.device, every_us=args.every_us,
                               progress=not args.no_progress)
    write_npy(out, result.boxes)
    log.info("wrote %d detections (Prophesee boxes, sensor pixels) to %s", len(result.boxes), out)
    if args.video:
        written = render_stream_video(reprs, reprs.timestamps_us, Path(args.video), result.per_repr, camera.classes,
                                      fps=args.fps, confidence_threshold=args.confidence_threshold,
                                      scale=args.scale, progress=not args.no_progress)
        log.info("wrote %s", written)


def cmd_visualize(args: argparse.Namespace) -> None:
    from leod_core.evaluation.video import render_sequence_video
    from leod_core.models.checkpoint import load_model_checkpoint
    from leod_core.models.inference import InferenceConfig, iter_sequence_predictions, predictions_to_prophesee

    model, _ = load_model_checkpoint(Path(args.checkpoint))
    model = model.to(args.device).eval()
    cfg = InferenceConfig(batch_size=1, sequence_length=args.sequence_length, confidence_threshold=args.confidence_threshold,
                          downsampled_by_2=args.downsampled_by_2, start_from_zero=True, clamp_to_frame=True)
    (preds,) = iter_sequence_predictions(model, Path(args.data), args.split, cfg, device=args.device,
                                         sequences=[args.sequence], frames="all", progress=not args.no_progress)
    per_repr = {int(r): predictions_to_prophesee([det], [t])
                for r, t, det in zip(preds.repr_idx, preds.timestamps_us, preds.detections)}
    written = render_sequence_video(Path(args.data) / args.split / args.sequence, Path(args.out), per_repr,
                                    get_camera(args.camera).classes, fps=args.fps, downsampled_by_2=args.downsampled_by_2,
                                    max_frames=args.max_frames, confidence_threshold=args.confidence_threshold,
                                    format=args.format, scale=args.scale, progress=not args.no_progress)
    log.info("wrote %s", written)


def add_train(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--camera", choices=camera_names(), help="validation protocol: class names and "
                                                                       "box-size filters")
    p.add_argument("--seed", type=int)
    p.add_argument("--init-weights", help="start from this detector checkpoint's weights (LEOD's weight=), "
                                          "e.g. the previous round's model.ckpt")
    p.set_defaults(func=cmd_train)


def add_import_checkpoint(sub: argparse._SubParsersAction) -> None:
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


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Prophesee-protocol COCO mAP of a checkpoint on whole sequences")
    p.add_argument("--checkpoint", required=True, help="model.ckpt (ours, or imported)")
    p.add_argument("--data", required=True, help="preprocessed dataset")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--camera", default="gen1", choices=camera_names(),
                   help="class names and box-size filters of the protocol")
    p.add_argument("--downsampled-by-2", action="store_true", help="gen4 data at half resolution")
    p.add_argument("--sequence-length", type=int, default=21, help="chunk length L (also the warm-up before "
                                                                   "the first label, as RVT)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences streamed side by side")
    p.add_argument("--confidence-threshold", type=float, default=0.001,
                   help="postprocess score threshold (LEOD final: 0.001)")
    p.add_argument("--nms-threshold", type=float, default=0.45, help="class-wise NMS IoU threshold")
    p.add_argument("--autocast", choices=("bfloat16", "float16"), help="autocast dtype (default fp32)")
    p.add_argument("--compile-model", action="store_true",
                   help="run the model through torch.compile (inductor), eager if compiling fails")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--backend", default="auto", choices=("auto", "pycocotools", "faster-coco-eval"))
    p.add_argument("--start-from-zero", action="store_true",
                   help="stream every sequence from its first representation (LEOD's stream.start_from_zero) "
                        "instead of L - 1 before its first label")
    p.add_argument("--predictions", help="also write each sequence's detections of the evaluated frames to "
                                         "DIR/{seq}.npy (Prophesee boxes, sensor pixels)")
    p.set_defaults(func=cmd_evaluate)


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="run a checkpoint on a raw recording (DAT, EVT 2.0/3.0 RAW, RVT h5), "
                                       "streamed: detections as Prophesee boxes, optionally a video")
    p.add_argument("--checkpoint", required=True, help="model.ckpt (ours, or imported)")
    p.add_argument("--recording", required=True, help="event file: *_td.dat, *.raw, *_td.dat.h5")
    p.add_argument("--camera", default="gen1", choices=camera_names(),
                   help="the camera the model was trained for: sensor size when the file names none, "
                        "representations (window, bins, half resolution) and class names")
    p.add_argument("--out", help="detections .npy to write (default: {recording}_detections.npy here)")
    p.add_argument("--video", help="also render the frames with the detections (.mp4, or .gif)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--every-us", type=int, help="keep the detections of the representations ending at multiples "
                                                "of this (µs), e.g. the label period; default: every one")
    p.add_argument("--sequence-length", type=int, help="chunk length L (default: the camera's)")
    p.add_argument("--confidence-threshold", type=float, default=0.1,
                   help="postprocess score threshold (LEOD's vis_pred.py: 0.1; its evaluation: 0.001)")
    p.add_argument("--nms-threshold", type=float, default=0.45, help="class-wise NMS IoU threshold")
    p.add_argument("--autocast", choices=("bfloat16", "float16"), help="autocast dtype (default fp32)")
    p.add_argument("--compile-model", action="store_true",
                   help="run the model through torch.compile (inductor), eager if compiling fails")
    p.add_argument("--fps", type=float, default=20.0, help="video frames per second")
    p.add_argument("--scale", type=int, default=2, help="video: integer upscaling")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.set_defaults(func=cmd_predict)


def add_visualize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="MP4 (or GIF) of a sequence's event frames with GT and predictions")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="preprocessed dataset")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--sequence", required=True, help="sequence directory name")
    p.add_argument("--out", required=True, help="video path (.mp4, or .gif)")
    p.add_argument("--camera", default="gen1", choices=camera_names(), help="class names")
    p.add_argument("--downsampled-by-2", action="store_true")
    p.add_argument("--sequence-length", type=int, default=21)
    p.add_argument("--confidence-threshold", type=float, default=0.1,
                   help="postprocess score threshold (LEOD's vis_pred.py: 0.1)")
    p.add_argument("--fps", type=float, default=20.0, help="20 = real time at 50 ms per frame")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--format", default="auto", choices=("auto", "mp4", "gif"))
    p.add_argument("--scale", type=int, default=2, help="integer upscaling (LEOD uses 2)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_visualize)


#: This module's commands, in ``leod --help`` order.
PARSERS = (add_train, add_import_checkpoint, add_evaluate, add_predict, add_visualize)
