"""The kill-anywhere soak (reliability/soak.py) in its CI size, and two runs on one directory.

The soak's uninterrupted reference run is also the first of two concurrent runs: a second snakemake started on
the same directory stops with snakemake's lock message, and the first one finishes (its results are then the
reference the soaked run must reproduce exactly)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "reliability"))
import soak  # noqa: E402
from snakemake_jobs import JobBlock, finished_jobids, parse_job_blocks  # noqa: E402

CI_KILLS = 3
LOCK_WAIT_S = 300
CONSOLE = """\
[Wed Dec  2 14:14:16 2026]
localrule synth_raw:
    output: results/raw/synth/summary.json
    log: logs/raw/synth/synth.log
    jobid: 4
    benchmark: benchmarks/raw/synth/synth.tsv
    wildcards: dataset=synth
Select jobs to execute...
[Wed Dec  2 14:14:17 2026]
Finished jobid: 4 (Rule: synth_raw)
1 of 12 steps (8%) done

[Wed Dec  2 14:14:18 2026]
localcheckpoint gate:
    input: results/synth/wsod_0.1/round1/pseudo/quality.json
    output: results/synth/wsod_0.1/round1/gate.json
    log: logs/synth/wsod_0.1/round1/gate.log
    jobid: 9

[Wed Dec  2 14:14:18 2026]
rule merge_pseudo:
    input: results/synth/wsod_0.1/round1/pseudo/shards/0/shard.json, results/data/synth/.linked
    output: results/synth/wsod_0.1/round1/pseudo/dataset, results/synth/wsod_0.1/round1/pseudo/extra.json
    log: logs/synth/wsod_0.1/round1/pseudo/merge.log
    jobid: 17
"""


def test_console_output_gives_the_jobs_and_which_finished():
    assert parse_job_blocks(CONSOLE) == [
        JobBlock("synth_raw", 4, ("results/raw/synth/summary.json",), "logs/raw/synth/synth.log",
                 "benchmarks/raw/synth/synth.tsv"),
        JobBlock("gate", 9, ("results/synth/wsod_0.1/round1/gate.json",), "logs/synth/wsod_0.1/round1/gate.log",
                 None),
        JobBlock("merge_pseudo", 17, ("results/synth/wsod_0.1/round1/pseudo/dataset",
                                      "results/synth/wsod_0.1/round1/pseudo/extra.json"),
                 "logs/synth/wsod_0.1/round1/pseudo/merge.log", None)]
    assert finished_jobids(CONSOLE) == {4}
    cut = CONSOLE[:CONSOLE.index("    jobid: 17")]        # a block still arriving is not a job yet
    assert [job.rule for job in parse_job_blocks(cut)] == ["synth_raw", "gate"]


def test_kills_cover_every_rule_type_before_any_repeats():
    jobs = [JobBlock(rule, i, (), f"logs/{rule}{i}.log", None)
            for i, rule in enumerate(["a", "b", "b", "c", "all"])]
    durations = {job.key: 2.0 for job in jobs}
    plan = soak.plan_kills(jobs, durations, kills=7, seed=3)
    assert len(plan) == 7 and "all" not in {k.rule for k in plan}
    assert {k.rule for k in plan[:3]} == {k.rule for k in plan[3:6]} == {"a", "b", "c"}
    assert all(0.0 <= k.delay_s <= 2.0 for k in plan)
    assert plan == soak.plan_kills(jobs, durations, kills=7, seed=3) != soak.plan_kills(jobs, durations, 7, seed=4)


def wait_for_lock(workdir: Path, proc: subprocess.Popen) -> None:
    locks = workdir / ".snakemake/locks"
    deadline = time.monotonic() + LOCK_WAIT_S
    while not (locks.is_dir() and any(locks.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "the first run never locked its directory"
        time.sleep(soak.POLL_S)


@pytest.mark.slow
@pytest.mark.timeout(2400)      # two toy runs of the loop plus resumes: ~4 min on 2 quiet cores
def test_second_concurrent_run_is_locked_out_and_killed_runs_resume_to_the_reference(tmp_path):
    reference = soak.prepare_workdir(tmp_path / "reference")
    first = soak.start_snakemake(reference, 2, reference / soak.REFERENCE_CONSOLE)
    wait_for_lock(reference, first)
    second = subprocess.run(soak.snakemake_command(reference, 2), cwd=REPO, capture_output=True, text=True)
    assert second.returncode != 0
    assert "Directory cannot be locked: another snakemake run" in second.stdout + second.stderr
    assert first.wait(timeout=1800) == 0, (reference / soak.REFERENCE_CONSOLE).read_text()[-4000:]

    timeline = soak.timeline(reference, (reference / soak.REFERENCE_CONSOLE).read_text())
    (report,) = soak.soak(tmp_path, kills=CI_KILLS, kills_per_run=CI_KILLS, seed=0, cores=2, reference=timeline)
    assert len(report.kills) == CI_KILLS and report.resumes == CI_KILLS
    assert report.identical, report.differences
    assert report.recomputed == [] and report.shards_recomputed == 0
