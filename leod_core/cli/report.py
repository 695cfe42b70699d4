"""``leod tables | profile install``: result tables and plots, and the Snakemake profiles."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from leod_core.workflow.paths import BENCHMARKS_DIR

log = logging.getLogger("leod")


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


def cmd_profile_install(args: argparse.Namespace) -> None:
    from leod_core.workflow.profiles import SlurmSettings, install_profile

    settings = SlurmSettings(args.cpu_partition, args.gpu_partition, args.account)
    print(install_profile(args.name, settings, force=args.force).report())


def add_tables(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--benchmarks", default=BENCHMARKS_DIR,
                   help="Snakemake benchmark files (the ablation's pseudo-labelling time: pseudo/shards/*.tsv; default "
                        "%(default)s)")
    p.set_defaults(func=cmd_tables)


def add_profile(sub: argparse._SubParsersAction) -> None:
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


#: This module's commands, in ``leod --help`` order.
PARSERS = (add_tables, add_profile)
