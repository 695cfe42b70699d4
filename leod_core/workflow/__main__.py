"""``python -m leod_core.workflow <command>``: the workflow's own small jobs (gate, shard list, job configs,
linking user data, arranging a folder of recordings). The library's work is done by the ``leod`` CLI; these only glue the loop together."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from leod_core.config import load_yaml_mapping, replace_fields
from leod_core.data.preprocess import PRESETS
from leod_core.workflow import jobs, recordings

log = logging.getLogger("leod.workflow")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m leod_core.workflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("gate", help="decide whether a self-training round trains on its pseudo labels")
    p.add_argument("--quality", required=True, help="the round's quality.json of `leod label-quality`")
    p.add_argument("--round", type=int, required=True, help="the self-training round r >= 1")
    p.add_argument("--rule", required=True, choices=jobs.GATE_RULES,
                   help="threshold: precision >= --threshold; no_drop: precision >= round r-1's")
    p.add_argument("--threshold", type=float, required=True, help="minimum precision of rule threshold (fraction)")
    p.add_argument("--iou", type=float, required=True, help="IoU threshold of the precision (0.25, 0.5, 0.75)")
    p.add_argument("--from-round", type=int, required=True, help="rounds before it always train")
    p.add_argument("--previous-quality", help="round r-1's quality.json (rule no_drop, r >= --from-round)")
    p.add_argument("--out", required=True, help="gate.json to write")

    p = sub.add_parser("shard-list", help="the pseudo-labelling shards of a split (length-balanced): which "
                                          "sequences `leod pseudo-label --shard-list FILE --shard K` labels")
    p.add_argument("--data", required=True, help="preprocessed dataset")
    p.add_argument("--split", required=True, help="label split JSON")
    p.add_argument("--num-shards", type=int, required=True, help="requested shards (capped at the sequences)")
    p.add_argument("--downsampled-by-2", action="store_true")
    p.add_argument("--sequence-index", help="read the sequences' lengths from this index instead of --data's files")
    p.add_argument("--out", required=True, help="shard list JSON to write")

    p = sub.add_parser("sequence-index", help="index a dataset's training sequences once (lengths, label frames), "
                                              "for `leod split` and shard-list")
    p.add_argument("--data", required=True, help="preprocessed dataset (its train/ is indexed)")
    p.add_argument("--out", required=True, help="sequence index JSON to write")

    p = sub.add_parser("prepare-resume", help="keep a job's resumable state only if its inputs are unchanged")
    p.add_argument("--dir", required=True, help="the state directory (train_state/, a shard directory)")
    p.add_argument("--input", nargs="+", default=[], metavar="ROLE=PATH", help="the job's input files")
    p.add_argument("--extra", default="", help="anything else that identifies the job (e.g. the shard index)")

    p = sub.add_parser("write-config", help="write a job config (JSON on the command line) as YAML")
    p.add_argument("--json", required=True, help="the config as one JSON object")
    p.add_argument("--out", required=True)

    p = sub.add_parser("link-data", help="link user-provided raw or preprocessed data into results/")
    p.add_argument("--source", required=True, help="directory with train/ val/ test/")
    p.add_argument("--out", required=True, help="results/raw/{dataset} or results/data/{dataset}")
    p.add_argument("--kind", required=True, choices=("raw", "preprocessed"))
    p.add_argument("--marker", required=True, help="summary file written into --out last")
    p.add_argument("--hint", default="", help="appended to the error when the data is missing")

    holdout = recordings.Holdout()
    p = sub.add_parser("arrange-recordings", help="link a folder of event-camera recordings (flat, or with train/ "
                                                  "val/ test/) into RVT's raw layout, then write --out/summary.json")
    p.add_argument("--source", required=True, help="the folder of recordings")
    p.add_argument("--out", required=True, help="results/raw/{dataset}")
    p.add_argument("--format", choices=recordings.RECORDING_FORMATS, default=recordings.AUTO_FORMAT,
                   help=f"{recordings.AUTO_FORMAT} detects each file's format; a named one is checked")
    p.add_argument("--holdout-val", type=float, default=holdout.val,
                   help=f"fraction of a flat folder's labeled recordings held out for val (default {holdout.val:g})")
    p.add_argument("--holdout-test", type=float, default=holdout.test,
                   help=f"fraction held out for test (default {holdout.test:g})")
    p.add_argument("--preset", required=True, help="the preprocessing preset (a camera): how RVT's h5 files are "
                                                   "named")
    p.add_argument("--config", help="YAML file overriding preset fields (as `leod preprocess --config`)")
    return parser


def arrange_recordings(args: argparse.Namespace) -> None:
    """``arrange-recordings``: the preprocessing settings that `leod preprocess` will use decide RVT's h5 names."""
    preprocess = PRESETS[args.preset]
    if args.config:
        preprocess = replace_fields(preprocess, load_yaml_mapping(Path(args.config)), args.config)
    recordings.arrange_recordings(Path(args.source), Path(args.out), args.format,
                                  recordings.Holdout(args.holdout_val, args.holdout_test),
                                  preprocess.gen4_style_names)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command == "gate":
            gate = jobs.GateConfig(args.threshold, args.iou, args.rule, args.from_round)
            previous = Path(args.previous_quality) if args.previous_quality else None
            jobs.write_gate(Path(args.quality), args.round, gate, Path(args.out), previous)
        elif args.command == "shard-list":
            index = Path(args.sequence_index) if args.sequence_index else None
            jobs.write_shard_list(Path(args.data), Path(args.split), args.num_shards, args.downsampled_by_2,
                                  Path(args.out), index)
        elif args.command == "sequence-index":
            jobs.write_sequence_index(Path(args.data), Path(args.out))
        elif args.command == "prepare-resume":
            inputs = {}
            for item in args.input:
                role, sep, path = item.partition("=")
                if not sep or not role or not path:
                    raise ValueError(f"--input expects ROLE=PATH, got {item!r}")
                inputs[role] = Path(path)
            jobs.prepare_resume(Path(args.dir), inputs, args.extra)
        elif args.command == "write-config":
            jobs.write_config(json.loads(args.json), Path(args.out))
        elif args.command == "link-data":
            jobs.link_data(Path(args.source), Path(args.out), args.marker, args.kind, args.hint)
        elif args.command == "arrange-recordings":
            arrange_recordings(args)
    except (ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
