"""(slow, slurm) The shrunk embedded default, end to end through a real SLURM, started as docs/slurm.md tells a
user: `leod profile install slurm --cpu-partition ... --gpu-partition ...`, then, literally,
`snakemake --profile slurm`. The single-node cluster on 127.0.0.1 (installed with apt, as root, and started by
the fixture) has partition names of its own, so the run also shows that the install filled them in. The only
test-only settings go into the installed copy (as a user edits theirs): the test node's CPUs and memory, faster
status polling, and the repository's Snakefile (snakemake runs in a scratch directory).

The uninterrupted run is shared by two tests: one checks where every job went (sbatch, partitions, GRES,
group jobs); the other runs the same workflow again and hits it with four cluster faults, through SLURM
itself, and must end with the same results, no finished output written twice, and only the cancelled jobs
submitted again."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from runner import EXP, REPO, copy_config, edit_config, shrink
from slurm_cluster import QueuedJob, SlurmCluster, ensure_installed

sys.path.insert(0, str(REPO / "reliability"))
import soak  # noqa: E402

PROFILE = "slurm"
SNAKEMAKE = ["snakemake", "--profile", PROFILE]                  # exactly what docs/slurm.md says to run
CPU_PARTITION, GPU_PARTITION = "leodcpu", "leodgpu"              # not the profile's own names (cpu, gpu)
CONSOLE = "snakemake.log"
RUN_TIMEOUT_S = 1500                # 4-5 min on 2 quiet cores; round 1 alone takes 10 min on busy ones
FAULTED_RUN_TIMEOUT_S = 2400
POLL_S = 0.2
NODE_DOWN_TIMEOUT_S = 120          # the controller marked the node DOWN 24-27 s after slurmd died (any SlurmdTimeout)
#: Round 1 trains this many steps (0.14 s each on one core of a 2-core machine with some load), validating and
#: saving its state every ROUND1_EVERY_N_STEPS: ~55 s, so its job still runs when the node goes DOWN ~25 s
#: after slurmd died (the test also passes when it finished first, but then that path goes untested).
SELF_TRAIN_STEPS = 400
ROUND1_EVERY_N_STEPS = 50
#: Written into the installed profile for the test node (the install itself leaves them as they are).
TEST_NODE_SETTINGS = {"slurm-init-seconds-before-status-checks": 2,    # default 40 s
                      "latency-wait": 10}
GPU_RULES = {"train_round0", "train_self", "pseudo_label", "evaluate"}
# Non-local rules of the shrunk default (WSOD round 0, two pseudo-label shards, round 1; the full baseline's round 0)
# and their job counts.
REMOTE_JOBS = {"synth_raw": 1, "preprocess": 1, "sequence_index": 1, "split": 2, "train_round0": 2, "evaluate": 3,
               "pseudo_label": 2, "merge_pseudo": 1, "label_quality": 1, "train_self": 1}
#: Log lines of a running job: leod started (it logs the job's SLURM_JOB_ID first), and training began.
JOB_STARTED = "device environment:"
TRAINING_STARTED = "leod_core.models.train: training "
MODEL_CHECKPOINTS = "results/**/model.ckpt"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
#: Set by .ci/run: there the SLURM tests must run, so a cluster that cannot start fails instead of skipping.
REQUIRE_SLURM_ENV = "LEOD_REQUIRE_SLURM"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    """A single-node SLURM (2 fake GPUs); installed with apt when missing. Every daemon it started is stopped
    again, also when a test fails. (Its directory is not under pytest's tmp_path: user munge must reach it.)"""
    reason = ensure_installed()
    if reason and os.environ.get(REQUIRE_SLURM_ENV):
        pytest.fail(f"{REQUIRE_SLURM_ENV} is set but no SLURM cluster can be started: {reason}")
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="leod-slurm-")), cpu_partition=CPU_PARTITION,
                           gpu_partition=GPU_PARTITION)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@dataclass(frozen=True)
class Profile:
    env: dict[str, str]          # snakemake's environment: SLURM_CONF and the XDG_CONFIG_HOME it was installed in
    config: dict[str, Any]       # the installed profile as the install wrote it


@pytest.fixture(scope="module")
def profile(cluster, tmp_path_factory) -> Profile:
    """`leod profile install slurm` with the cluster's partition names into a fresh XDG_CONFIG_HOME, then the
    test node's settings added to the installed copy."""
    env = dict(cluster.env, XDG_CONFIG_HOME=str(tmp_path_factory.mktemp("xdg_config")))
    result = subprocess.run(["leod", "profile", "install", PROFILE, "--cpu-partition", CPU_PARTITION,
                             "--gpu-partition", GPU_PARTITION], env=env, capture_output=True, text=True, timeout=60)
    installed = Path(env["XDG_CONFIG_HOME"], "snakemake", PROFILE, "config.yaml")
    assert result.returncode == 0, result.stderr
    assert f"in {installed.parent}\n" in result.stdout and f"snakemake --profile {PROFILE}" in result.stdout
    config = yaml.safe_load(installed.read_text())
    fit_to_test_node(installed, cluster)
    return Profile(env, config)


def fit_to_test_node(config_file: Path, cluster: SlurmCluster) -> None:
    """The test node's limits and faster polling in the installed profile, and the repository's Snakefile
    (snakemake runs in a scratch directory)."""
    config = yaml.safe_load(config_file.read_text())
    config.update(TEST_NODE_SETTINGS,
                  cores=cluster.num_cpus,                                 # threads per job <= the node's CPUs
                  resources={"mem_mb": cluster.memory_mb // 2},           # per job (mem_mb is a local resource)
                  snakefile=str(REPO / "Snakefile"))
    config_file.write_text("# leod profile install slurm, fitted to the test node by tests/workflow/test_slurm.py\n"
                           + yaml.safe_dump(config, sort_keys=False))


def prepare_workdir(workdir: Path) -> Path:
    """The shrunk default, with round 1 trained long enough for the slurmd outage, pseudo labels one sequence
    per batch (a resumed shard then batches like an uninterrupted one: reliability/soak_config.yaml),
    model.ckpt holding the last step's weights (the best by val AP may be an early step's): comparing the
    checkpoints then covers every trained step, the resumed ones included. Training and evaluation use one
    thread: two OpenMP threads sharing a core with another process slow training down 25-fold."""
    copy_config(workdir)
    shrink(workdir, threshold=0.0, max_rounds=1)

    def lengthen(config: dict[str, Any]) -> None:
        config["threads"].update(train=1, evaluate=1)
        synth = config["datasets"]["synth"]
        synth["train"]["validation"]["weights"] = "last"
        synth["pseudo"]["tta"]["batch_size"] = 1
        synth["self_train"].update(optim={"max_steps": SELF_TRAIN_STEPS},
                                   trainer={"checkpoint_every_n_steps": ROUND1_EVERY_N_STEPS},
                                   validation={"every_n_steps": ROUND1_EVERY_N_STEPS})

    edit_config(workdir, lengthen)
    return workdir


# ------------------------------------------------------------------------------------------------- running
@dataclass
class Run:
    workdir: Path
    rc: int
    elapsed_s: float
    output: str                              # snakemake's console
    jobs: dict[str, dict[str, str]]          # this run's SLURM jobs by id: `scontrol show job` fields

    def jobs_by_comment(self) -> Counter[str]:
        return Counter(job["Comment"] for job in self.jobs.values())


@contextlib.contextmanager
def snakemake_process(env: dict[str, str], workdir: Path) -> Iterator[subprocess.Popen]:
    """`snakemake --profile slurm` in ``workdir``, in its own process group, killed when the body leaves early
    (also on pytest-timeout's exception: no snakemake outlives the test)."""
    with (workdir / CONSOLE).open("w") as console:
        proc = subprocess.Popen(SNAKEMAKE, cwd=workdir, env=env, stdout=console, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def finish(cluster: SlurmCluster, workdir: Path, proc: subprocess.Popen, deadline: float,
           on_poll: Callable[[], None] = lambda: None) -> tuple[int, str, dict[str, dict[str, str]]]:
    """Wait for snakemake (-1 on timeout); its exit status, console output and SLURM jobs."""
    while proc.poll() is None and time.monotonic() < deadline:
        on_poll()
        time.sleep(POLL_S)
    rc = -1 if proc.poll() is None else proc.returncode
    output = (workdir / CONSOLE).read_text(errors="replace")
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    jobs = {job["JobId"]: job for job in cluster.jobs() if run_id and job.get("JobName") == run_id[1]}
    return rc, output, jobs


@pytest.fixture(scope="module")
def clean_run(cluster, profile, tmp_path_factory) -> Run:
    """The uninterrupted run (shared: it is also the reference of the faulted one)."""
    workdir = prepare_workdir(tmp_path_factory.mktemp("clean"))
    start = time.monotonic()
    with snakemake_process(profile.env, workdir) as proc:
        rc, output, jobs = finish(cluster, workdir, proc, start + RUN_TIMEOUT_S)
    run = Run(workdir, rc, time.monotonic() - start, output, jobs)
    print(f"\nclean run: `snakemake --profile {PROFILE}` {run.elapsed_s:.0f} s, rc {rc}, {len(jobs)} SLURM jobs")
    return run


def assert_succeeded(run: Run, cluster: SlurmCluster) -> None:
    assert run.rc == 0, f"rc {run.rc}\n{run.output[-6000:]}\n{cluster.logs()}"


def slurm_minutes(limit: str) -> int:
    """SLURM's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = limit.rpartition("-")
    hours, minutes, _ = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + minutes


# ---------------------------------------------------------------------------------------- uninterrupted run
@pytest.mark.timeout(3600)      # its setup: the cluster (it may wait for another test cluster) and the clean run
def test_the_shrunk_default_runs_through_slurm(cluster, profile, clean_run):
    assert_succeeded(clean_run, cluster)
    workdir, output, jobs = clean_run.workdir, clean_run.output, clean_run.jobs
    for path in ("results/tables/synth.md", "results/tables/synth.csv", f"{EXP}/round1/model.ckpt",
                 f"{EXP}/round1/eval/test_metrics.json"):
        assert (workdir / path).is_file(), path

    # Every submission is a SLURM job of this run (named by its run UUID) that COMPLETED.
    run_id = re.search(r"SLURM run ID: (\S+)", output)[1]
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
    assert set(jobs) == submitted, (sorted(jobs), sorted(submitted))
    assert all(job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0" for job in jobs.values()), jobs
    states = cluster.run("squeue", "--states=all", "-h", "--name", run_id, "-o", "%i %T").split()
    assert sorted(states[1::2]) == ["COMPLETED"] * len(submitted) and set(states[::2]) == submitted, states
    for job in sorted(jobs.values(), key=lambda job: int(job["JobId"])):
        print(job["JobId"], job["Comment"], job["Partition"], job["TRES"], job.get("TresPerJob", "-"),
              job["TimeLimit"], job["StartTime"], job["EndTime"])

    # Each job's comment names its rule (rule_<rule>_wildcards_<values>) or its group (rule_<group>_<rules>):
    # one job per non-local job outside the profile's groups, one per group (a whole chain in one sbatch).
    groups = dict(entry.split("=") for entry in profile.config["groups"])           # rule -> group
    by_name: dict[str, list[dict]] = {}
    for job in jobs.values():
        name = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", job["Comment"])[1]
        name = next((group for group in set(groups.values()) if name.startswith(f"{group}_")), name)
        by_name.setdefault(name, []).append(job)
    expected = {rule: count for rule, count in REMOTE_JOBS.items() if rule not in groups}
    expected.update({groups[rule]: 1 for rule in REMOTE_JOBS if rule in groups})
    assert {name: len(found) for name, found in by_name.items()} == expected
    assert len(jobs) == sum(expected.values())

    # GPU rules on the GPU partition that the install filled in, with a GPU in their TRES and the profile's
    # runtime; CPU jobs on the CPU partition, without.
    for name, found in by_name.items():
        for job in found:
            gres = job.get("TresPerJob", "") + job.get("JOB_GRES", "")
            if name in GPU_RULES:
                assert job["Partition"] == GPU_PARTITION and "gpu" in gres, job
                assert slurm_minutes(job["TimeLimit"]) == profile.config["set-resources"][name]["runtime"], job
            else:
                assert job["Partition"] == CPU_PARTITION and "gpu" not in gres, job

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


# ------------------------------------------------------------------------------------------------- faults
#: What became of a job that was hit: it ended CANCELLED (and snakemake submitted it again), SLURM requeued it
#: under its id (it ran again and COMPLETED), or it COMPLETED undisturbed (it finished while slurmd was down).
CANCELLED, REQUEUED, FINISHED = "cancelled", "requeued", "finished"


@dataclass(frozen=True)
class Fault:
    """Inject ``action`` into the first running job of ``rule`` (not hit before) whose log shows ``marker``;
    the action returns what became of the job."""

    name: str
    rule: str
    marker: str
    action: Callable[[SlurmCluster, QueuedJob], str]


@dataclass(frozen=True)
class Hit:
    fault: Fault
    job: QueuedJob
    outcome: str
    at_s: float                # seconds into the run
    took_s: float              # the action's own time (the slurmd outage)

    def describe(self) -> str:
        return (f"{self.fault.name} of job {self.job.job_id} ({self.job.comment}) at {self.at_s:.0f} s"
                f" (took {self.took_s:.0f} s): {self.outcome}")


def requeue(cluster: SlurmCluster, job: QueuedJob) -> str:
    cluster.requeue(job.job_id)
    return REQUEUED


def cancel(cluster: SlurmCluster, job: QueuedJob) -> str:
    cluster.cancel(job.job_id)
    return CANCELLED


def node_failure(cluster: SlurmCluster, job: QueuedJob) -> str:
    """slurmd dies and stays down until the controller has marked the node DOWN, then it is started again.
    A job still running then is requeued (its sbatch --requeue: the profile's slurm-requeue); one that ended
    meanwhile (its slurmstepd reports to the controller without slurmd) COMPLETED."""
    with cluster.slurmd_down():
        cluster.wait_node(("down",), NODE_DOWN_TIMEOUT_S)
        state = next((queued.state for queued in cluster.queue() if queued.job_id == job.job_id), "gone")
    cluster.wait_node(("idle", "mixed", "allocated"), NODE_DOWN_TIMEOUT_S)
    requeued, finished = ("PENDING", "REQUEUED"), ("COMPLETING", "COMPLETED")
    assert state in requeued + finished, f"job {job.job_id} is {state} after its node went DOWN"
    return REQUEUED if state in requeued else FINISHED


FAULTS = (
    Fault("scontrol requeue", "train_round0", TRAINING_STARTED, requeue),
    Fault("scancel", "train_round0", TRAINING_STARTED, cancel),
    Fault("scancel", "pseudo_label", JOB_STARTED, cancel),
    Fault("slurmd killed until the node was DOWN", "train_self", TRAINING_STARTED, node_failure),
)


def log_shows(workdir: Path, job_id: str, marker: str) -> bool:
    """Whether the rule log written by SLURM job ``job_id`` (leod logs SLURM_JOB_ID=<id> first) shows ``marker``."""
    own = re.compile(rf"SLURM_JOB_ID={job_id}\b")
    for log in workdir.glob("logs/**/*.log"):
        text = log.read_text(errors="replace")
        if own.search(text) and marker in text:
            return True
    return False


def find_target(cluster: SlurmCluster, workdir: Path, fault: Fault, hit: set[str]) -> QueuedJob | None:
    return next((job for job in cluster.queue()
                 if job.state == "RUNNING" and job.job_id not in hit
                 and job.comment.startswith(f"rule_{fault.rule}_wildcards_")
                 and log_shows(workdir, job.job_id, fault.marker)), None)


def wait_for_target(proc: subprocess.Popen, deadline: float, cluster: SlurmCluster, workdir: Path, fault: Fault,
                    hit: set[str], on_poll: Callable[[], None]) -> QueuedJob:
    """Poll (calling ``on_poll``) until a job for ``fault`` runs; fail when snakemake ends first or the deadline
    passes."""
    what = f"a running {fault.rule} job for {fault.name}"
    while (job := find_target(cluster, workdir, fault, hit)) is None:
        on_poll()
        assert proc.poll() is None, f"snakemake ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)
    return job


class FinishedOutputs:
    """The outputs of every job snakemake has reported finished, with their mtime at first sight (the soak's
    check): none may be written again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.mtimes: dict[str, int] = {}
        self.finished: set[str] = set()

    def update(self) -> None:
        output = (self.workdir / CONSOLE).read_text(errors="replace")
        # group jobs print their member blocks indented by 4: read them like the others
        output = re.sub(r"^    (?=(?:local)?(?:rule|checkpoint) \w+:$|    )", "", output, flags=re.MULTILINE)
        soak.record_finished(self.workdir, output, self.finished, self.mtimes)

    def rewritten(self) -> list[str]:
        return sorted(path for path, mtime in self.mtimes.items()
                      if os.lstat(self.workdir / path).st_mtime_ns != mtime)


def checkpoints_differ(reference: Path, workdir: Path) -> list[str]:
    """The model checkpoints (weights and training record) that differ from the reference run's, byte for byte,
    or that only one run has."""
    ours, theirs = ({str(p.relative_to(root)) for p in root.glob(MODEL_CHECKPOINTS)} for root in (workdir, reference))
    differences = [f"only in one run: {path}" for path in sorted(ours ^ theirs)]
    differences += [f"differs: {path}" for path in sorted(ours & theirs)
                    if (workdir / path).read_bytes() != (reference / path).read_bytes()]
    return differences


@pytest.mark.timeout(5400)      # the clean run (when this test runs alone) and the faulted one: ~12 min in all
def test_cluster_faults_through_slurm_end_with_the_uninterrupted_results(cluster, profile, clean_run, tmp_path):
    """One run, four faults in sequence: `scontrol requeue` of a running round-0 training, `scancel` of the
    other one, `scancel` of a running pseudo-label shard, and slurmd killed while round 1 trains, until the
    controller marks the node DOWN (and requeues the job, which still runs; on a machine fast enough to finish
    it first, the job just completes), then started again. The profile's retries resubmit the cancelled jobs;
    SLURM requeues the others under their job ids."""
    assert_succeeded(clean_run, cluster)
    workdir = prepare_workdir(tmp_path)
    finished = FinishedOutputs(workdir)
    hits: list[Hit] = []
    start = time.monotonic()
    deadline = start + FAULTED_RUN_TIMEOUT_S
    with snakemake_process(profile.env, workdir) as proc:
        for fault in FAULTS:
            target = wait_for_target(proc, deadline, cluster, workdir, fault, {hit.job.job_id for hit in hits},
                                     finished.update)
            at = time.monotonic()
            outcome = fault.action(cluster, target)
            hits.append(Hit(fault, target, outcome, at - start, time.monotonic() - at))
            print(f"\nfault: {hits[-1].describe()}", flush=True)
        rc, output, jobs = finish(cluster, workdir, proc, deadline, finished.update)
    run = Run(workdir, rc, time.monotonic() - start, output, jobs)
    finished.update()
    report_faulted_run(run, clean_run, hits, cluster)
    assert_succeeded(run, cluster)

    # Each fault landed: the cancelled jobs ended CANCELLED and were submitted again (snakemake's retry);
    # the requeued ones ran again under their job id and completed.
    expected_state = {CANCELLED: ("CANCELLED", 0), REQUEUED: ("COMPLETED", 1), FINISHED: ("COMPLETED", 0)}
    for hit in hits:
        record = jobs[hit.job.job_id]
        assert (record["JobState"], int(record["Restarts"])) == expected_state[hit.outcome], (hit.describe(), record)
    assert [hit.outcome for hit in hits[:3]] == [REQUEUED, CANCELLED, CANCELLED]
    retried = {hit.job.comment for hit in hits if hit.outcome == CANCELLED}
    assert run.output.count("Trying to restart job") == len(retried)
    # Every other job was submitted once, as in the uninterrupted run; the cancelled ones twice.
    expected = Counter({comment: count + (comment in retried)
                        for comment, count in clean_run.jobs_by_comment().items()})
    assert run.jobs_by_comment() == expected
    cancelled = {hit.job.job_id for hit in hits if hit.outcome == CANCELLED}
    assert all(record["JobState"] == "COMPLETED" for job_id, record in jobs.items() if job_id not in cancelled)

    # Nothing snakemake had reported finished was written again (shards included), and the results are the
    # uninterrupted run's: metrics, gates, label quality, splits, tables, pseudo labels, model weights.
    assert finished.mtimes and any(path.endswith("/shard.json") for path in finished.mtimes)
    assert finished.rewritten() == []
    assert soak.compare_results(clean_run.workdir, workdir) == []
    assert len(list(workdir.glob(MODEL_CHECKPOINTS))) == 3                  # round 0 of both, round 1 of WSOD
    assert checkpoints_differ(clean_run.workdir, workdir) == []


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:160].decode(errors="replace")
    except OSError:
        return "(exited)"


def report_faulted_run(run: Run, clean: Run, hits: list[Hit], cluster: SlurmCluster) -> None:
    """The figures RELIABILITY.md records (printed with -s)."""
    restarts = {job_id: record["Restarts"] for job_id, record in run.jobs.items() if record.get("Restarts") != "0"}
    print(f"\nfaulted run: {run.elapsed_s:.0f} s (clean {clean.elapsed_s:.0f} s), rc {run.rc}, "
          f"{len(run.jobs)} SLURM jobs (clean {len(clean.jobs)}), requeued (job id: restarts) {restarts}")
    for hit in hits:
        print(f"  {hit.describe()}")
    left = cluster.job_processes()           # SLURM lost track of them (no cgroups); stop() ends them
    print(f"  job processes still alive after the run: {len(left)}")
    for pid in left:
        print(f"    {pid}: {command_line(pid)}")
    for line in run.output.splitlines():
        if re.search(r"Trying to restart|Error in rule|failed|NODE_FAIL|requeue", line):
            print(f"  | {line.strip()}")
    controller_log = (cluster.root / "log/slurmctld.log").read_text(errors="replace").splitlines()
    for hit in hits:                                          # what the controller did with them
        for line in [line for line in controller_log if re.search(rf"JobId={hit.job.job_id}\b", line)][:8]:
            print(f"  slurmctld: {line.strip()}")
    for log in sorted(run.workdir.glob("logs/**/*.log")):     # how the jobs that were hit went on
        for line in log.read_text(errors="replace").splitlines():
            if re.search(r"resuming|already written|received SIG", line):
                print(f"  {log.relative_to(run.workdir)}: {line.strip()}")
