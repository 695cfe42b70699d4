"""What a running snakemake is doing, read from its console output: the job blocks it announces (rule, job id,
outputs, log, benchmark) and the jobs it reports finished.

A job block, as Snakemake 9 prints it before it starts the job::

    [Wed Dec  2 14:14:16 2026]
    localrule synth_raw:                  (or: rule, checkpoint, localcheckpoint)
        output: results/raw/synth/summary.json
        log: logs/raw/synth/synth.log
        jobid: 4
        benchmark: benchmarks/raw/synth/synth.tsv
        ...

and when the job is done (after snakemake has recorded it as complete)::

    Finished jobid: 4 (Rule: synth_raw)
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

RULE_LINE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")     # (checkpoints are rules too)
FIELD_LINE = re.compile(r"^\s+(\w+): (.*)$")
FINISHED_LINE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


@dataclass(frozen=True)
class JobBlock:
    """One job as snakemake announced it. Paths are relative to the working directory."""

    rule: str
    jobid: int
    outputs: tuple[str, ...]
    log: str | None
    benchmark: str | None

    @property
    def key(self) -> str:
        """What identifies the job across runs of the same configuration (job ids do not): its log path, which
        every rule of this workflow has and which holds its wildcards; the rule name for rules without one."""
        return self.log or self.rule


def parse_job_blocks(output: str) -> list[JobBlock]:
    """Every job block in ``output``, in the order announced (a block cut off at the end of ``output`` is left
    out until its ``jobid`` line has arrived)."""
    blocks, lines = [], output.splitlines()
    for i, line in enumerate(lines):
        rule = RULE_LINE.match(line)
        if not rule:
            continue
        fields = {}
        for field_line in lines[i + 1:]:
            field = FIELD_LINE.match(field_line)
            if not field:
                break
            fields[field[1]] = field[2]
        if "jobid" in fields:
            blocks.append(JobBlock(rule=rule[1], jobid=int(fields["jobid"]),
                                   outputs=tuple(fields["output"].split(", ")) if "output" in fields else (),
                                   log=fields.get("log"), benchmark=fields.get("benchmark")))
    return blocks


def finished_jobids(output: str) -> set[int]:
    """The ids of the jobs ``output`` reports finished."""
    return {int(m[1]) for m in map(FINISHED_LINE.match, output.splitlines()) if m}


def benchmark_seconds(workdir: Path, job: JobBlock) -> float:
    """The job's wall-clock run time in seconds, from its ``benchmark:`` file (column ``s``); 0 without one."""
    if job.benchmark is None:
        return 0.0
    with (workdir / job.benchmark).open() as f:
        return float(next(csv.DictReader(f, delimiter="\t"))["s"])
