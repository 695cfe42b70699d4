"""The paper's plan at full scale: paper.yaml planned (and executed as a no-op) on a fake Gen1 / 1Mpx tree with
the real sequence counts and lengths. Issue 20, item 2; targets: the full plan built in under 60 s, under 2 GB.

The tree (``tests/workflow/fake_tree.py``): RVT's Gen1 (1458 / 429 / 470 sequences of 55-60 s, 240x304, labels
at 4 Hz) and 1Mpx (670 / 135 / 135 sequences of 55-60 s, 360x640 down-sampled, labels on a 100 ms period: the
1Mpx counts are an estimate, see ``fake_tree.GEN4``), with index files of the real length and tiny payloads (one
box per label frame; the HDF5 has the real shape and no chunk written). paper.yaml's datasets point at it through
an overlay config (``preprocessed: {path}``), so ``link_preprocessed`` links it instead of downloading.

Stages, each timed with its peak RSS (``/usr/bin/time -v``, else ``getrusage(RUSAGE_CHILDREN)``):

1. ``dry``: ``snakemake -n`` of the default target: the DAG before any checkpoint (``shard_list`` and ``gate``
   are checkpoints; ``split`` is a plain rule). No pseudo-label job is planned yet: their number is the shard
   list's.
2. ``shards``: every round's shard list built for real (``link_preprocessed``, ``leod split``, the
   ``shard_list`` checkpoint: cheap CPU rules that read the tree), then ``dry-after-shards``: ``snakemake -n``
   again, now with every pseudo-label job (only the gates are still open).
3. ``--execute``: a no-op execution of the whole default target, through every checkpoint: ``snakemake`` runs the
   real Snakefile with a mocked ``leod`` / ``python`` first on PATH (``fake_tree.write_mock_bin``): split,
   write-config, shard-list, gate and link-data run for real, train / pseudo-label / merge-shards /
   label-quality / evaluate / tables only write their declared outputs, and ``prepare-resume`` only makes its
   directory. Why this and not ``--touch``: touch marks outputs without running any code, so the checkpoints'
   files would be empty and reading them (``read_shard_count``, ``read_gate_file``) would fail; nor does the
   dry run ever evaluate a checkpoint. Mocking at the command boundary keeps the Snakefile, its input functions
   and checkpoints, Snakemake's scheduler and its re-evaluation of the DAG after each checkpoint exactly as in a
   real run; every mock ``label-quality`` reports precision 0.9, so every gate passes: the largest plan.
   ``jobs after checkpoints`` is the number of jobs this run executed.
4. ``--sweep offsets``: the dry run's time and memory with 1, 2 and 3 label split offsets (the experiment count
   grows about linearly); ``--sweep sequences``: with the trees' sequence counts scaled 1/8 .. 1 (the dry run
   reads no sequence: only ``split`` and ``shard_list`` jobs do). The slope is a least-squares fit of seconds
   against jobs (or sequences).

Run: ``python benchmarks/bench_paper_plan.py [--scale 1] [--execute] [--sweep offsets sequences]``.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "workflow"))
from bench_common import REPO_ROOT, load_average, print_markdown_table, provenance  # noqa: E402
from fake_tree import PAPER_DATASETS, mock_env, write_fake_tree, write_mock_bin, write_overlay  # noqa: E402
from runner import copy_config, job_counts, snakemake_command  # noqa: E402

SCRIPT = "bench_paper_plan.py"
PAPER = REPO_ROOT / "workflow_config/paper.yaml"
GNU_TIME = Path("/usr/bin/time")


def measured(cmd: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd``; (result, wall seconds, peak RSS in MB of its largest process)."""
    timed_cmd = [str(GNU_TIME), "-v", *cmd] if GNU_TIME.exists() else cmd
    if not GNU_TIME.exists():
        import resource
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run(timed_cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    wall = time.perf_counter() - start
    if GNU_TIME.exists():
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
        rss_mb = int(match[1]) / 1024 if match else float("nan")
    else:   # RUSAGE_CHILDREN keeps the maximum over all children so far: exact only if this one is the largest
        rss_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return result, wall, rss_mb


def executed_counts(log: str) -> dict[str, int]:
    """Jobs per rule that a real run executed (its ``rule X:`` / ``localrule X:`` / ``checkpoint X:`` lines)."""
    counts: dict[str, int] = {}
    for rule in re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):$", log, flags=re.M):
        counts[rule] = counts.get(rule, 0) + 1
    counts["total"] = sum(counts.values())
    return counts


def shard_list_targets(workdir: Path, configs: list[str]) -> list[str]:
    """Every round's shard_list.json of the default plan (from the dry run's list of planned outputs)."""
    result = subprocess.run(snakemake_command(workdir, *configs), capture_output=True, text=True, cwd=REPO_ROOT)
    return sorted(set(re.findall(r"results/\S+/pseudo/shard_list\.json", result.stdout)))


class Bench:
    def __init__(self, root: Path, scale: float, offsets: list[int] | None = None, trees: dict | None = None):
        self.root = root
        self.trees = trees or {}
        self.workdir = copy_config(root / "work")
        extra = {"split_offsets": offsets} if offsets is not None else {}
        self.overlay = write_overlay(root / "overlay.yaml", self.trees, **extra)
        self.configs = ["--configfile", str(PAPER), str(self.overlay)]

    def run(self, *args: str, dry_run: bool = True, env: dict | None = None):
        result, wall, rss = measured(snakemake_command(self.workdir, *args, *self.configs, dry_run=dry_run), env)
        if result.returncode != 0:
            raise RuntimeError(f"snakemake {' '.join(args)[:200]} failed:\n{result.stderr[-6000:]}")
        return result, wall, rss


def build_trees(root: Path, scale: float) -> tuple[dict[str, Path], float, dict]:
    trees, summaries = {}, {}
    start = time.perf_counter()
    for name, shape in PAPER_DATASETS.items():
        trees[name] = root / "data" / name
        summaries[name] = write_fake_tree(trees[name], shape.scaled(scale) if scale != 1 else shape)
    return trees, time.perf_counter() - start, summaries


def fit_slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0]) if len(x) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real sequence counts")
    parser.add_argument("--execute", action="store_true", help="also the no-op execution through every checkpoint")
    parser.add_argument("--cores", type=int, default=4, help="--cores of the no-op execution")
    parser.add_argument("--offsets", type=int, nargs="+", help="label split offsets (default: paper.yaml's 0 1 2)")
    parser.add_argument("--no-shards", action="store_true", help="skip building the shard lists (stage 2)")
    parser.add_argument("--sweep", nargs="*", default=[], choices=("offsets", "sequences"))
    parser.add_argument("--workdir", type=Path, help="keep the trees and runs here (default: a temporary dir)")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench_paper_plan_"))
    root.mkdir(parents=True, exist_ok=True)
    prov = provenance(torch.device("cpu"), SCRIPT)
    rows, lines = [], []

    def row(what: str, seconds: float, jobs, rss_mb: float, note: str = "") -> None:
        rows.append(f"| paper plan: {what} | {prov} | {load_average()} | {seconds:.1f} | {jobs} | {rss_mb:.0f} | "
                    f"{note} |")
        print(f"{what}: {seconds:.1f} s, {jobs} jobs, {rss_mb:.0f} MB, load {load_average()}", file=sys.stderr,
              flush=True)   # as it comes: a long run can be stopped without losing the rows so far

    try:
        trees, tree_s, summary = build_trees(root / "full", args.scale)
        seqs = {name: sum(s["sequences"] for s in split.values()) for name, split in summary.items()}
        lines.append(f"fake trees: {summary} ({tree_s:.1f} s)")
        bench = Bench(root / "full", args.scale, offsets=args.offsets, trees=trees)

        result, wall, rss = bench.run()
        before = job_counts(result.stdout)
        row("dry run, before checkpoints", wall, before["total"], rss, f"sequences {seqs}")
        lines.append(f"dry run before checkpoints: {before}")

        if not args.no_shards:
            targets = shard_list_targets(bench.workdir, bench.configs)
            result, wall, rss = bench.run("--cores", "2", *targets, dry_run=False)
            built = executed_counts(result.stderr)
            row("shard lists built for real (link, split, shard_list)", wall, built["total"], rss)
            lines.append(f"shard lists built: {built}")
            result, wall, rss = bench.run()
            after_shards = job_counts(result.stdout)
            row("dry run after the shard_list checkpoints", wall, after_shards["total"], rss,
                f"pseudo_label {after_shards.get('pseudo_label', 0)}")
            lines.append(f"dry run after shard lists: {after_shards}")

        if args.execute:
            mock_bin = write_mock_bin(root / "mock_bin")
            result, wall, rss = bench.run("--cores", str(args.cores), "--resources", "gpu=1000", dry_run=False,
                                          env=mock_env(mock_bin))
            done = executed_counts(result.stderr)
            row("no-op execution through every checkpoint (mock GPU jobs)", wall, done["total"], rss,
                f"{args.cores} cores; pseudo_label {done.get('pseudo_label', 0)}")
            lines.append(f"no-op execution executed: {done}")
            result, wall, rss = bench.run()
            lines.append("dry run after the execution: " + ("nothing to be done" if "Nothing to be done" in
                                                             result.stdout + result.stderr else result.stdout[-500:]))

        if "offsets" in args.sweep:
            xs, ys = [], []
            for n in (1, 2, 3):
                sweep = Bench(root / f"offsets{n}", args.scale, offsets=list(range(n)), trees=trees)
                result, wall, rss = sweep.run()
                jobs = job_counts(result.stdout)["total"]
                xs.append(jobs), ys.append(wall)
                row(f"dry run, split offsets 0..{n - 1}", wall, jobs, rss)
            lines.append(f"dry-run slope vs jobs (offsets sweep): {1000 * fit_slope(xs, ys):.2f} ms per job")
        if "sequences" in args.sweep:
            xs, ys = [], []
            for fraction in (1 / 8, 1 / 4, 1 / 2, 1):
                sub_trees, _, sub = build_trees(root / f"seq{fraction:g}", args.scale * fraction)
                sweep = Bench(root / f"seq{fraction:g}", args.scale * fraction, trees=sub_trees)
                result, wall, rss = sweep.run()
                n = sum(s["sequences"] for split in sub.values() for s in split.values())
                xs.append(n), ys.append(wall)
                row(f"dry run, sequences x{fraction:g}", wall, job_counts(result.stdout)["total"], rss,
                    f"{n} sequences")
                shutil.rmtree(root / f"seq{fraction:g}")
            lines.append(f"dry-run slope vs sequences: {1000 * fit_slope(xs, ys):.3f} ms per sequence")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)

    print_markdown_table(("seconds", "jobs", "peak RSS MB", "note"), rows)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
