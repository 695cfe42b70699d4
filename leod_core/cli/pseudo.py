"""``leod pseudo-label | merge-shards | label-quality``: LEOD's pseudo labels and their quality."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from leod_core.config import load_yaml_mapping, replace_fields
from leod_core.data.cameras import camera_names

log = logging.getLogger("leod")


def cmd_pseudo_label(args: argparse.Namespace) -> None:
    from leod_core.pseudo.shard_job import pseudo_label_shard
    from leod_core.pseudo.shard_list import read_shard_list
    from leod_core.pseudo.tracker import TrackerConfig
    from leod_core.pseudo.tta import TTAConfig

    if args.num_shards is not None:
        raise ValueError("--num-shards was replaced by --shard-list FILE: the shard list (python -m "
                         "leod_core.workflow shard-list) assigns the sequences of every --shard K")
    overrides = load_yaml_mapping(Path(args.config)) if args.config else {}
    unknown = set(overrides) - {"tta", "tracker"}
    if unknown:
        raise ValueError(f"{args.config}: unknown section(s) {sorted(unknown)} (known: tta, tracker)")
    tta = replace_fields(TTAConfig.for_camera(args.camera), overrides.get("tta", {}),
                         f"{args.config}:tta")
    flags = {"batch_size": args.batch_size, "sequence_length": args.sequence_length, "autocast_dtype": args.autocast,
             "compile_model": args.compile_model}
    if args.no_tta:
        flags.update(hflip=False, tflip=False)
    tta = replace_fields(tta, {k: v for k, v in flags.items() if v is not None}, "leod pseudo-label")
    tracker = replace_fields(TrackerConfig(), overrides.get("tracker", {}), f"{args.config}:tracker")
    pseudo_label_shard(Path(args.checkpoint), Path(args.data), Path(args.split), Path(args.out), args.shard,
                       read_shard_list(args.shard_list), tta, tracker, device=args.device,
                       progress=not args.no_progress)


def cmd_merge_shards(args: argparse.Namespace) -> None:
    from leod_core.pseudo.shard_list import read_shard_list
    from leod_core.pseudo.shards import merge_shards

    if args.num_shards is not None:
        raise ValueError("--num-shards was replaced by --shard-list FILE: the shard list the shards were labelled "
                         "from")
    listing = read_shard_list(args.shard_list)
    summary = merge_shards([Path(d) for d in args.shards], Path(args.out), Path(args.data), listing,
                           overwrite=args.overwrite)
    log.info("merged %d shards into %s: %s", listing.num_shards, args.out,
             ", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, (int, float))))


def cmd_label_quality(args: argparse.Namespace) -> None:
    from leod_core.data.splits import read_split
    from leod_core.pseudo.quality import QualityConfig, evaluate_pseudo_labels, write_quality

    cfg = QualityConfig.for_dataset(args.camera, **({"refilter_min_track_len": args.refilter_min_track_len}
                                                    if args.refilter_min_track_len is not None else {}))
    result = evaluate_pseudo_labels(Path(args.pseudo_data), Path(args.data), read_split(Path(args.split)), cfg,
                                    downsampled_by_2=args.downsampled_by_2)
    write_quality(Path(args.out), result)


def add_pseudo_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pseudo-label", help="pseudo-label one shard of the training sequences (4-view TTA + tracker)")
    p.add_argument("--checkpoint", required=True, help="model.ckpt of the previous round")
    p.add_argument("--data", required=True, help="the original preprocessed dataset")
    p.add_argument("--split", required=True, help="label split JSON (its kept GT passes through unchanged)")
    p.add_argument("--out", required=True, help="shard directory (gets train/<seq> and shard.json)")
    p.add_argument("--shard-list", required=True,
                   help="shard list JSON (python -m leod_core.workflow shard-list): which sequences each shard labels")
    p.add_argument("--shard", type=int, default=0, help="this job's shard index K in the shard list")
    p.add_argument("--num-shards", help=argparse.SUPPRESS)      # replaced by --shard-list: an error naming it
    p.add_argument("--camera", default="gen1", choices=camera_names(),
                   help="gen4: time-flip offset -2, x2-downsampled input, L=10")
    p.add_argument("--config", help="YAML with `tta` and `tracker` sections overriding LEOD's defaults")
    p.add_argument("--batch-size", type=int, help="sequences per batch (x4 views)")
    p.add_argument("--sequence-length", type=int, help="stream chunk length L (LEOD: the dataset's)")
    p.add_argument("--autocast", choices=("bfloat16", "float16"))
    p.add_argument("--compile-model", action="store_true", default=None,
                   help="run the model through torch.compile (inductor), eager if compiling fails (default: the "
                        "config's tta.compile_model)")
    p.add_argument("--no-tta", action="store_true", help="identity view only (ablation)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_pseudo_label)


def add_merge_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge-shards", help="assemble the pseudo dataset from complete shards (RVT layout)")
    p.add_argument("--shard-list", required=True, help="the shard list JSON the shards were labelled from")
    p.add_argument("--shards", nargs="+", required=True, help="shard directories 0..N-1 of the shard list")
    p.add_argument("--num-shards", help=argparse.SUPPRESS)      # replaced by --shard-list: an error naming it
    p.add_argument("--data", required=True, help="the original preprocessed dataset (val/test are linked)")
    p.add_argument("--out", required=True, help="pseudo dataset root to write")
    p.add_argument("--overwrite", action="store_true", help="replace a merged dataset made from other shards")
    p.set_defaults(func=cmd_merge_shards)


def add_label_quality(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label-quality", help="precision/recall of pseudo labels on withheld-GT frames (LEOD val_dst)")
    p.add_argument("--pseudo-data", required=True, help="pseudo-label dataset (merged)")
    p.add_argument("--data", required=True, help="the original preprocessed dataset")
    p.add_argument("--split", required=True, help="the label split the pseudo labels were made with")
    p.add_argument("--out", required=True, help="quality JSON to write")
    p.add_argument("--camera", default="gen1", choices=camera_names(), help="class names and chunk length")
    p.add_argument("--downsampled-by-2", action="store_true")
    p.add_argument("--refilter-min-track-len", type=int,
                   help="val_dst's forward-only tracking re-filter before measuring (LEOD 6; 0 = off)")
    p.set_defaults(func=cmd_label_quality)


#: This module's commands, in ``leod --help`` order.
PARSERS = (add_pseudo_label, add_merge_shards, add_label_quality)
