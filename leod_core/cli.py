"""``leod <command>``: the one entry point the workflow rules call.

Each command parses its arguments, sets up logging, and calls one library function. Library modules are
imported inside the command so that ``leod --help`` stays fast.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

log = logging.getLogger("leod")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _replace_fields(base: Any, overrides: dict[str, Any], source: str) -> Any:
    """Return dataclass ``base`` with ``overrides`` applied (nested dataclasses from nested dicts).

    An unknown key raises ``ValueError`` naming it and ``source``.
    """
    fields = {f.name: f for f in dataclasses.fields(base)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"{source}: unknown setting '{key}' (known: {', '.join(sorted(fields))})")
        current = getattr(base, key)
        changes[key] = (_replace_fields(current, value, f"{source}.{key}")
                        if dataclasses.is_dataclass(current) and isinstance(value, dict) else value)
    return dataclasses.replace(base, **changes)


def _load_yaml_mapping(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    return data


# ------------------------------------------------------------------------------------------- commands
def cmd_synth(args: argparse.Namespace) -> None:
    from leod_core.data.synth import SynthConfig, generate_dataset

    overrides = {k: v for k, v in {
        "seed": args.seed, "height": args.height, "width": args.width, "duration_s": args.duration_s,
        "num_train": args.num_train, "num_val": args.num_val, "num_test": args.num_test}.items() if v is not None}
    config = _replace_fields(SynthConfig(), overrides, "leod synth")
    summary = generate_dataset(Path(args.out), config, workers=args.workers, progress=not args.no_progress)
    log.info("synthetic dataset written to %s: %s", args.out, json.dumps(summary))


def cmd_preprocess(args: argparse.Namespace) -> None:
    from leod_core.data.preprocess import PRESETS, preprocess_dataset

    config = PRESETS[args.preset]
    if args.config:
        config = _replace_fields(config, _load_yaml_mapping(Path(args.config)), str(args.config))
    preprocess_dataset(Path(args.raw), Path(args.out), config, workers=args.workers,
                       progress=not args.no_progress)


def cmd_split(args: argparse.Namespace) -> None:
    from leod_core.data.splits import make_split, parse_ratio, write_split

    split = make_split(Path(args.data) / "train", args.setting, parse_ratio(args.ratio), args.sequence_length)
    write_split(Path(args.out), split)


# --------------------------------------------------------------------------------------------- parser
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a synthetic event-camera dataset in RVT's raw layout")
    p.add_argument("--out", required=True, help="output directory (gets train/ val/ test/)")
    p.add_argument("--seed", type=int)
    p.add_argument("--height", type=int, help="sensor height in pixels")
    p.add_argument("--width", type=int, help="sensor width in pixels")
    p.add_argument("--duration-s", type=float, help="seconds per sequence")
    p.add_argument("--num-train", type=int, help="training sequences")
    p.add_argument("--num-val", type=int, help="validation sequences")
    p.add_argument("--num-test", type=int, help="test sequences")
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
    p.add_argument("--out", required=True, help="split JSON to write")
    p.set_defaults(func=cmd_split)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leod", description="LEOD label-efficient event-camera detection")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--no-progress", action="store_true", help="disable progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_synth, _add_preprocess, _add_split)
    for add in adders:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        args.func(args)
    except (ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
