"""(slow, slurm) The shrunk embedded default, end to end through a real SLURM: `snakemake --profile
profiles/slurm` against a single-node cluster on 127.0.0.1 that the fixture installs (apt, as root) and
starts. The cluster's partitions take the profile's names, so the profile runs unedited; the command line
adds only what fits the test node (its CPUs and memory) and faster status polling. Checks that every
non-local job went through sbatch, GPU rules to the GPU partition with a GPU GRES, the grouped CPU rules as
group jobs, and that GPU jobs saw CUDA_VISIBLE_DEVICES from the GRES."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from runner import EXP, REPO, copy_config, shrink
from slurm_cluster import SlurmCluster, ensure_installed

PROFILE = REPO / "profiles/slurm"
RUN_TIMEOUT_S = 780
GPU_RULES = {"train_round0", "train_self", "pseudo_label", "evaluate"}
# Non-local rules of the shrunk default (WSOD round 0, two pseudo-label shards, round 1; the full baseline's round 0)
# and their job counts.
REMOTE_JOBS = {"synth_raw": 1, "preprocess": 1, "split": 2, "train_round0": 2, "evaluate": 3, "pseudo_label": 2,
               "merge_pseudo": 1, "label_quality": 1, "train_self": 1}

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def load_profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


@pytest.fixture(scope="module")
def cluster():
    """A single-node SLURM (2 fake GPUs) with the profile's CPU and GPU partition names; installed with apt
    when missing. Every daemon it started is stopped again, also when the test fails."""
    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    profile = load_profile()
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="leod-slurm-")),
                           cpu_partition=profile["default-resources"]["slurm_partition"],
                           gpu_partition=profile["set-resources"]["train_round0"]["slurm_partition"])
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def run_snakemake(cluster: SlurmCluster, workdir: Path) -> tuple[int, str]:
    """snakemake --profile profiles/slurm plus test-only settings; its own process group, killed on timeout."""
    command = ["snakemake", "--profile", str(PROFILE), "--directory", str(workdir),
               "--snakefile", str(REPO / "Snakefile"),
               "--cores", str(cluster.num_cpus),                        # threads per job <= the node's CPUs
               "--resources", f"mem_mb={cluster.memory_mb // 2}",       # per job (mem_mb is a local resource)
               "--slurm-init-seconds-before-status-checks", "2",       # default 40 s
               "--latency-wait", "10"]
    log_path = workdir / "snakemake.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=cluster.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = -1
        finally:                            # also on pytest-timeout's exception: no snakemake outlives the test
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return rc, log_path.read_text(errors="replace")


def slurm_minutes(limit: str) -> int:
    """SLURM's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = limit.rpartition("-")
    hours, minutes, _ = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + minutes


def test_the_shrunk_default_runs_through_slurm(cluster, tmp_path):
    workdir = copy_config(tmp_path)
    shrink(workdir, threshold=0.0, max_rounds=1)

    start = time.perf_counter()
    rc, output = run_snakemake(cluster, workdir)
    elapsed = time.perf_counter() - start
    print(f"snakemake --profile profiles/slurm: {elapsed:.0f} s")
    assert rc == 0, f"rc {rc}\n{output[-6000:]}\n{cluster.logs()}"
    for path in ("results/tables/synth.md", "results/tables/synth.csv", f"{EXP}/round1/model.ckpt",
                 f"{EXP}/round1/eval/test_metrics.json"):
        assert (workdir / path).is_file(), path

    # Every submission is a SLURM job of this run (named by its run UUID) that COMPLETED.
    run_id = re.search(r"SLURM run ID: (\S+)", output)[1]
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
    jobs = {job["JobId"]: job for job in cluster.jobs() if job.get("JobName") == run_id}
    assert set(jobs) == submitted, (sorted(jobs), sorted(submitted))
    assert all(job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0" for job in jobs.values()), jobs
    states = cluster.run("squeue", "--states=all", "-h", "--name", run_id, "-o", "%i %T").split()
    assert sorted(states[1::2]) == ["COMPLETED"] * len(submitted) and set(states[::2]) == submitted, states
    for job in sorted(jobs.values(), key=lambda job: int(job["JobId"])):
        print(job["JobId"], job["Comment"], job["Partition"], job["TRES"], job.get("TresPerJob", "-"),
              job["TimeLimit"], job["StartTime"], job["EndTime"])

    # Each job's comment names its rule (rule_<rule>_wildcards_<values>) or its group (rule_<group>_<rules>):
    # one job per non-local job outside the profile's groups, one per group (a whole chain in one sbatch).
    profile = load_profile()
    groups = dict(entry.split("=") for entry in profile["groups"])           # rule -> group
    by_name: dict[str, list[dict]] = {}
    for job in jobs.values():
        name = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", job["Comment"])[1]
        name = next((group for group in set(groups.values()) if name.startswith(f"{group}_")), name)
        by_name.setdefault(name, []).append(job)
    expected = {rule: count for rule, count in REMOTE_JOBS.items() if rule not in groups}
    expected.update({groups[rule]: 1 for rule in REMOTE_JOBS if rule in groups})
    assert {name: len(found) for name, found in by_name.items()} == expected
    assert len(jobs) == sum(expected.values())

    # GPU rules on the GPU partition with a GPU in their TRES and the profile's runtime; CPU jobs without.
    for name, found in by_name.items():
        for job in found:
            gres = job.get("TresPerJob", "") + job.get("JOB_GRES", "")
            if name in GPU_RULES:
                assert job["Partition"] == cluster.gpu_partition and "gpu" in gres, job
                assert slurm_minutes(job["TimeLimit"]) == profile["set-resources"][name]["runtime"], job
            else:
                assert job["Partition"] == cluster.cpu_partition and "gpu" not in gres, job

    # Inside its GPU job, leod train / pseudo-label logged the GRES' CUDA_VISIBLE_DEVICES and that job's id.
    # (Without cgroups SLURM hands out the node's device index: 0, or 1 while another GPU job holds 0.)
    rule_logs = {"train_round0": ["logs/synth/wsod_0.1/round0/train.log"],
                 "train_self": ["logs/synth/wsod_0.1/round1/train.log"],
                 "pseudo_label": [f"logs/synth/wsod_0.1/round1/pseudo/shards/{k}.log" for k in (0, 1)]}
    for rule, logs in rule_logs.items():
        for log in logs:
            text = (workdir / log).read_text()
            devices = re.search(r"CUDA_VISIBLE_DEVICES=(\S*)", text)
            job_id = re.search(r"SLURM_JOB_ID=(\d+)", text)
            assert devices and re.fullmatch(r"[01]", devices[1]), (log, text[:2000])
            assert job_id and job_id[1] in {job["JobId"] for job in by_name[rule]}, (log, text[:2000])
