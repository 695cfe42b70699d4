"""Kill-anywhere soak: interrupt the workflow at seeded random moments, resume it, and check nothing changed.

1. An uninterrupted run of a small embedded configuration (``soak_config.yaml`` over workflow_config/config.yaml)
   gives the reference results and every job's run time (its ``benchmark:`` file).
2. Kills are planned across all rule types: the rule types are visited in a seeded random order, and for each a
   job of that rule and a moment inside its reference run time are drawn.
3. Each soaked run starts from scratch in its own directory. For each of its kills, snakemake (with
   ``--rerun-incomplete``) runs until the target job has been announced and the drawn moment has passed; then
   snakemake and every job process are killed with SIGKILL (as a node failure would) and the directory is
   unlocked. A last run finishes the workflow.
4. The run's metrics, gates, label quality, splits, tables and pseudo labels are compared byte for byte with the
   reference, and every output of a job snakemake had reported finished before a kill must be untouched
   (a finished pseudo-label shard recomputed is a failure).

Usage: python reliability/soak.py --kills 20 [--kills-per-run 1] [--seed 0] [--workdir DIR] [--json FILE]
Prints a Markdown table (one row per soaked run) and a summary; exits 1 unless every run is identical and no
finished shard was recomputed. RELIABILITY.md records the results.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from snakemake_jobs import JobBlock, benchmark_seconds, finished_jobids, parse_job_blocks

REPO = Path(__file__).resolve().parents[1]
OVERLAY = Path(__file__).with_name("soak_config.yaml")
POLL_S = 0.02
ATTEMPT_TIMEOUT_S = 1800
REFERENCE_CONSOLE = "soak_reference.log"
UNKILLABLE_RULES = frozenset({"all"})       # a rule without a command: nothing runs that a kill could interrupt
COMPARED_RESULTS = ("results/**/eval/*.json", "results/**/gate.json", "results/**/quality.json",
                    "results/**/split.json", "results/tables/*.md", "results/tables/*.csv",
                    "results/**/pseudo/dataset/**/*.npz", "results/**/pseudo/dataset/**/*.npy")


@dataclass(frozen=True)
class PlannedKill:
    """Kill ``delay_s`` seconds after the job ``key`` (of rule ``rule``) has been announced."""

    rule: str
    key: str
    delay_s: float


@dataclass
class RunReport:
    """One soaked run: its kills, the jobs they interrupted, and how the resumed result compares."""

    run: int
    kills: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)    # rules of the jobs running at each kill
    resumes: int = 0
    identical: bool = False
    differences: list[str] = field(default_factory=list)
    recomputed: list[str] = field(default_factory=list)     # outputs of finished jobs written again

    @property
    def shards_recomputed(self) -> int:
        return sum(1 for path in self.recomputed if path.endswith("/shard.json"))


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    """Replace ``base``'s keys by ``overlay``'s, recursing into mappings both have."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value


def prepare_workdir(workdir: Path) -> Path:
    """A fresh working directory with workflow_config/ whose config.yaml has the soak overlay merged in."""
    shutil.copytree(REPO / "workflow_config", workdir / "workflow_config")
    config_path = workdir / "workflow_config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    deep_merge(config, yaml.safe_load(OVERLAY.read_text()))
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def snakemake_command(workdir: Path, cores: int, *args: str) -> list[str]:
    return ["snakemake", "--cores", str(cores), "--directory", str(workdir), "--snakefile", str(REPO / "Snakefile"),
            *args]


def start_snakemake(workdir: Path, cores: int, console: Path, *args: str) -> subprocess.Popen:
    """Snakemake in its own process group (so one killpg reaches every job), console output to ``console``."""
    with console.open("ab") as out:
        return subprocess.Popen(snakemake_command(workdir, cores, *args), cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def run_to_completion(workdir: Path, cores: int, console: Path, *args: str) -> str:
    """Run snakemake to the end; return its console output; raise if it fails."""
    proc = start_snakemake(workdir, cores, console, *args)
    if proc.wait(timeout=ATTEMPT_TIMEOUT_S) != 0:
        raise RuntimeError(f"snakemake failed (rc {proc.returncode}) in {workdir}; see {console}")
    return console.read_text()


def plan_kills(jobs: list[JobBlock], durations: dict[str, float], kills: int, seed: int) -> list[PlannedKill]:
    """``kills`` kills spread over the rule types: each pass over the rule types (in a fresh seeded order) draws
    one job of each rule and a moment uniformly inside that job's reference run time."""
    rng = random.Random(seed)
    by_rule: dict[str, list[JobBlock]] = {}
    for job in jobs:
        if job.rule not in UNKILLABLE_RULES:
            by_rule.setdefault(job.rule, []).append(job)
    planned: list[PlannedKill] = []
    while len(planned) < kills:
        rules = sorted(by_rule)
        rng.shuffle(rules)
        for rule in rules[:kills - len(planned)]:
            job = rng.choice(by_rule[rule])
            planned.append(PlannedKill(rule, job.key, rng.uniform(0.0, durations[job.key])))
    return planned


def kill_during(workdir: Path, cores: int, console: Path, kill: PlannedKill, finished: set[str]) -> str | None:
    """One attempt: run until ``kill`` is due, SIGKILL the process group and unlock; return a description of the
    kill, or None when the workflow ended first. A target job that an earlier attempt finished is replaced by the
    next job this attempt announces (with the same delay); a target that finishes before the drawn moment is
    killed at once, between it and the next job."""
    start = console.stat().st_size if console.exists() else 0
    proc = start_snakemake(workdir, cores, console, "--rerun-incomplete")
    target = None
    while target is None:
        blocks = parse_job_blocks(console.read_text()[start:])
        target = next((b for b in blocks if b.key == kill.key), blocks[0] if kill.key in finished and blocks else None)
        if target is None and proc.poll() is not None:
            return None
        time.sleep(POLL_S)
    announced_at = time.monotonic()
    while time.monotonic() < announced_at + kill.delay_s and proc.poll() is None \
            and target.jobid not in finished_jobids(console.read_text()[start:]):
        time.sleep(POLL_S)
    if proc.poll() is not None:
        return None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(snakemake_command(workdir, cores, "--unlock"), cwd=REPO, check=True, capture_output=True)
    return f"{kill.rule} +{time.monotonic() - announced_at:.1f}s"


def record_finished(workdir: Path, output: str, finished: set[str], outputs: dict[str, int]) -> list[str]:
    """Note the jobs ``output`` reports finished (keys into ``finished``, their outputs' mtimes into ``outputs``,
    first sighting only); return the rules of the jobs it announced but did not finish (those the kill
    interrupted)."""
    done = finished_jobids(output)
    running = []
    for job in parse_job_blocks(output):
        if job.jobid not in done:
            running.append(job.rule)
            continue
        finished.add(job.key)
        for path in job.outputs:
            if path not in outputs and os.path.lexists(workdir / path):
                outputs[path] = os.lstat(workdir / path).st_mtime_ns
    return running


def result_files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for pattern in COMPARED_RESULTS for p in root.glob(pattern)}


def compare_results(reference: Path, workdir: Path) -> list[str]:
    """The compared results that differ between the two runs (missing on one side, or other bytes)."""
    ours, theirs = result_files(workdir), result_files(reference)
    differences = [f"only in the reference: {p}" for p in sorted(theirs.keys() - ours.keys())]
    differences += [f"only in the soaked run: {p}" for p in sorted(ours.keys() - theirs.keys())]
    differences += [f"differs: {p}" for p in sorted(ours.keys() & theirs.keys())
                    if ours[p].read_bytes() != theirs[p].read_bytes()]
    return differences


def soak_run(run: int, workdir: Path, reference: Path, kills: list[PlannedKill], cores: int) -> RunReport:
    """Run the workflow from scratch in ``workdir`` with ``kills``, finish it, and compare with ``reference``."""
    report = RunReport(run)
    prepare_workdir(workdir)
    finished: set[str] = set()
    outputs: dict[str, int] = {}
    for attempt, kill in enumerate(kills):
        console = workdir / f"soak_attempt{attempt}.log"
        landed = kill_during(workdir, cores, console, kill, finished)
        if landed is None:
            break
        report.kills.append(landed)
        report.interrupted.extend(record_finished(workdir, console.read_text(), finished, outputs))
    report.resumes = len(report.kills)
    run_to_completion(workdir, cores, workdir / "soak_final.log", "--rerun-incomplete")
    report.recomputed = sorted(path for path, mtime in outputs.items() if os.lstat(workdir / path).st_mtime_ns != mtime)
    report.differences = compare_results(reference, workdir)
    report.identical = not report.differences
    return report


Timeline = tuple[list[JobBlock], dict[str, float]]


def timeline(workdir: Path, output: str) -> Timeline:
    """A finished run's jobs in the order announced, and their run times (s) by job key."""
    jobs = parse_job_blocks(output)
    return jobs, {job.key: benchmark_seconds(workdir, job) for job in jobs}


def reference_run(workdir: Path, cores: int) -> Timeline:
    """The uninterrupted run, in a fresh ``workdir``."""
    prepare_workdir(workdir)
    return timeline(workdir, run_to_completion(workdir, cores, workdir / REFERENCE_CONSOLE))


def soak(root: Path, kills: int, kills_per_run: int, seed: int, cores: int,
         reference: Timeline | None = None, runs: set[int] | None = None) -> list[RunReport]:
    """The whole soak under ``root``: ``root/reference`` (run here unless its ``reference`` timeline is given)
    and ``root/run{i}``, one per ``kills_per_run`` kills (only the runs numbered in ``runs``, when given)."""
    jobs, durations = reference or reference_run(root / "reference", cores)
    plan = plan_kills(jobs, durations, kills, seed)
    order = {job.key: i for i, job in enumerate(jobs)}
    reports = []
    for run, first in enumerate(range(0, kills, kills_per_run)):
        if runs is not None and run not in runs:
            continue
        run_kills = sorted(plan[first:first + kills_per_run], key=lambda k: order[k.key])
        reports.append(soak_run(run, root / f"run{run}", root / "reference", run_kills, cores))
        print(markdown_row(reports[-1]), flush=True)
    return reports


def markdown_row(report: RunReport) -> str:
    return (f"| {report.run} | {', '.join(report.kills)} | {', '.join(report.interrupted) or '-'} | "
            f"{report.resumes} | {'yes' if report.identical else 'NO: ' + '; '.join(report.differences[:3])} | "
            f"{len(report.recomputed)} | {report.shards_recomputed} |")


def summary(reports: list[RunReport], planned: int) -> dict[str, Any]:
    interrupted = sorted({rule for r in reports for rule in r.interrupted})
    return {"kills_planned": planned, "kills": sum(len(r.kills) for r in reports),
            "resumes": sum(r.resumes for r in reports), "runs": len(reports),
            "identical_runs": sum(r.identical for r in reports),
            "finished_outputs_recomputed": sum(len(r.recomputed) for r in reports),
            "finished_shards_recomputed": sum(r.shards_recomputed for r in reports),
            "rules_interrupted": interrupted}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills in all (default 20)")
    parser.add_argument("--kills-per-run", type=int, default=1,
                        help="kills before a soaked run is finished and compared (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill plan")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the runs go (default: a new temporary directory, kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write the reports here")
    parser.add_argument("--runs", type=int, nargs="+", default=None,
                        help="only these runs of the plan (to repeat one); a finished reference run in --workdir is "
                             "reused, so the plan is the same")
    args = parser.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="leod-soak-"))
    print(f"soak in {root}: {args.kills} kills, {args.kills_per_run} per run, seed {args.seed}", flush=True)
    reference_console = root / "reference" / REFERENCE_CONSOLE
    reference = None
    if args.runs is not None and reference_console.is_file():
        print(f"reusing the reference run in {reference_console.parent}", flush=True)
        reference = timeline(root / "reference", reference_console.read_text())
    print("| run | kills (rule +s after its start) | jobs interrupted | resumes | identical | finished outputs "
          "recomputed | finished shards recomputed |\n|---|---|---|---|---|---|---|", flush=True)
    reports = soak(root, args.kills, args.kills_per_run, args.seed, args.cores, reference,
                   set(args.runs) if args.runs is not None else None)
    result = summary(reports, len(reports) * args.kills_per_run)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": result, "runs": [asdict(r) for r in reports]}, indent=2))
    ok = result["identical_runs"] == len(reports) and result["finished_shards_recomputed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
