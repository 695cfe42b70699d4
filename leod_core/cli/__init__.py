"""``leod <command>``: the one entry point the workflow rules call.

Each command parses its arguments, sets up logging, and calls one library function. Library modules are
imported inside the command so that ``leod --help`` stays fast. The commands live by stage: :mod:`.data`
(synth, preprocess, split, download), :mod:`.model` (train, import-checkpoint, evaluate, predict, visualize),
:mod:`.pseudo` (pseudo-label, merge-shards, label-quality) and :mod:`.report` (tables, profile).
"""
from __future__ import annotations

import argparse
import logging
import sys

import yaml

from leod_core.cli import data, model, pseudo, report

log = logging.getLogger("leod")

#: Errors of bad input or a failed environment: logged as one line (they name the file), exit status 1. A YAML
#: syntax error names the file, line and column.
USER_ERRORS = (ValueError, OSError, yaml.YAMLError)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leod", description="LEOD label-efficient event-camera detection")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--no-progress", action="store_true", help="disable progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in (data, model, pseudo, report):
        for add in stage.PARSERS:
            add(sub)
    return parser


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
