"""``leod synth | preprocess | split | download``: data in RVT's layouts and label splits."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from leod_core.config import load_yaml_mapping, replace_fields
from leod_core.data.cameras import camera_names

log = logging.getLogger("leod")


def cmd_synth(args: argparse.Namespace) -> None:
    from leod_core.data.synth import SynthConfig, generate_dataset

    overrides = {k: v for k, v in {
        "seed": args.seed, "height": args.height, "width": args.width, "duration_s": args.duration_s,
        "num_train": args.num_train, "num_val": args.num_val, "num_test": args.num_test,
        "initial_objects_mean": args.initial_objects_mean, "min_initial_objects": args.min_initial_objects,
        "arrival_rate_hz": args.arrival_rate_hz, "unlabeled_fraction": args.unlabeled_fraction}.items()
        if v is not None}
    config = replace_fields(SynthConfig(), overrides, "leod synth").with_object_size(args.min_object_px,
                                                                                    args.max_object_px)
    summary = generate_dataset(Path(args.out), config, workers=args.workers, progress=not args.no_progress,
                               fmt=args.format, layout=args.layout)
    log.info("synthetic dataset written to %s: %s", args.out, json.dumps(summary))


def cmd_preprocess(args: argparse.Namespace) -> None:
    from leod_core.data.preprocess import PRESETS, preprocess_dataset

    config = PRESETS[args.preset]
    if args.config:
        config = replace_fields(config, load_yaml_mapping(Path(args.config)), str(args.config))
    preprocess_dataset(Path(args.raw), Path(args.out), config, workers=args.workers,
                       progress=not args.no_progress)


def cmd_split(args: argparse.Namespace) -> None:
    from leod_core.data.sequence_index import build_sequence_index, read_sequence_index
    from leod_core.data.splits import parse_ratio, split_from_index, write_split

    ratio = parse_ratio(args.ratio)
    if args.sequence_index:
        index = read_sequence_index(Path(args.sequence_index))
    else:
        index = build_sequence_index(Path(args.data) / "train")
    split = split_from_index(index, args.setting, ratio, args.sequence_length, args.offset)
    write_split(Path(args.out), split)


def cmd_download(args: argparse.Namespace) -> None:
    from leod_core.data.checksum import Checksum
    from leod_core.data.download import DownloadConfig, download_dataset

    overrides = {k: v for k, v in {"retries": args.retries, "timeout_s": args.timeout_s}.items() if v is not None}
    cfg = replace_fields(DownloadConfig(), overrides, "leod download")
    checksum = Checksum.parse("crc32", args.crc32) if args.crc32 else Checksum.parse("md5", args.md5)
    summary = download_dataset(args.url, Path(args.archive), checksum, Path(args.out) if args.out else None, cfg,
                               strip_single_top_level=not args.keep_top_level, progress=not args.no_progress)
    log.info("%s: %s", args.out or args.archive, json.dumps(summary, sort_keys=True))


def add_synth(sub: argparse._SubParsersAction) -> None:
    # a small settings module: `leod --help` stays fast
    from leod_core.data.synth_config import DEFAULT_EVENT_FORMAT, DEFAULT_LAYOUT, EVENT_FORMATS, LAYOUTS, SynthConfig

    default = SynthConfig()
    p = sub.add_parser("synth", help="generate a synthetic event-camera dataset in RVT's raw layout")
    p.add_argument("--out", required=True, help="output directory (gets train/ val/ test/, or with --layout flat "
                                                "every sequence directly)")
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
    p.add_argument("--format", choices=EVENT_FORMATS, default=DEFAULT_EVENT_FORMAT,
                   help="file format of each sequence's events: h5 = RVT's {seq}_td.dat.h5 (default), dat = "
                        "Prophesee DAT {seq}_td.dat, evt2 / evt3 = EVT 2.0 / 3.0 RAW {seq}_td.raw")
    p.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT,
                   help=f"splits = RVT's raw layout, train/ val/ test/ folders (default {DEFAULT_LAYOUT}); flat = every "
                        "sequence of every split in --out itself, like a camera's folder of recordings (the "
                        "workflow's recordings source)")
    p.add_argument("--unlabeled-fraction", type=float, help="this fraction of the train sequences is written "
                   "without its {seq}_bbox.npy (unlabeled recordings), spread evenly over them (default "
                   f"{default.unlabeled_fraction:g})")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_synth)


def add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="raw events + boxes -> RVT's stacked-histogram layout")
    p.add_argument("--raw", required=True, help="raw dataset directory with train/ val/ test/, each holding "
                   "{seq}_bbox.npy beside one event file: {seq}_td.dat.h5 (RVT), {seq}_td.dat (Prophesee DAT) or "
                   "{seq}.raw / {seq}_td.raw (EVT 2.0 / 3.0)")
    p.add_argument("--out", required=True, help="output directory (RVT preprocessed layout)")
    p.add_argument("--preset", choices=camera_names(), default="gen1",
                   help="RVT's settings for Gen1 / 1Mpx, or the synthetic camera's")
    p.add_argument("--config", help="YAML file overriding preset fields (custom datasets)")
    p.add_argument("--workers", type=int, default=1, help="sequences processed in parallel")
    p.set_defaults(func=cmd_preprocess)


def add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="choose the labeled frames/sequences for a label ratio (WSOD/SSOD/full)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="preprocessed dataset directory (with train/)")
    source.add_argument("--sequence-index", help="the training sequences' index file instead (written once per "
                                                 "dataset by `python -m leod_core.workflow sequence-index`)")
    p.add_argument("--setting", required=True, choices=("wsod", "ssod", "full"))
    p.add_argument("--ratio", required=True, help="label ratio in (0, 1], e.g. 0.01")
    p.add_argument("--sequence-length", type=int, required=True,
                   help="training sequence length L (WSOD's first usable frame needs L representations)")
    p.add_argument("--offset", type=int, default=0,
                   help="which split of this ratio: sub-sampling starts at this index (0 .. WSOD stride - 1, "
                        "SSOD step k - 1; full: 0). LEOD averages the paper over offsets 0, 1, 2")
    p.add_argument("--out", required=True, help="split JSON to write")
    p.set_defaults(func=cmd_split)


def add_download(sub: argparse._SubParsersAction) -> None:
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


#: This module's commands, in ``leod --help`` order.
PARSERS = (add_synth, add_preprocess, add_split, add_download)
