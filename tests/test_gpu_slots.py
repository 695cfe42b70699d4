"""GPU slots: concurrent GPU jobs on one host each take their own device(s) (flock'd lock files), on a CPU-only
machine with ``LEOD_GPU_SLOTS`` faking the devices."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from leod_core.devices import HELD_VARIABLE, claim_job_devices
from leod_core.gpu_slots import SLOT_DIR_VARIABLE, SLOTS_VARIABLE, acquire_slots, gpu_pool, lock_file

REPO = Path(__file__).resolve().parents[1]
FAST_POLL_S = 0.05
RELEASE_AFTER_S = 0.5
JOB_SECONDS = 1.0
SNAKEMAKE_JOBS_PER_SLOT = 2
SNAKEMAKE_SLOTS = 2
#: Variables a claim reads or writes: cleared for each test.
CLAIM_VARIABLES = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", HELD_VARIABLE, "SLURM_JOB_ID", "LOCAL_RANK",
                   SLOTS_VARIABLE, SLOT_DIR_VARIABLE)


@pytest.fixture
def claim_env() -> Iterator[None]:
    """No claim variable set; the environment as it was afterwards (a claim sets variables)."""
    saved = dict(os.environ)
    for name in CLAIM_VARIABLES:
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def slots(claim_env, tmp_path) -> Path:
    """Two fake GPU slots in a fresh slot directory; returns the directory."""
    os.environ[SLOTS_VARIABLE] = "2"
    os.environ[SLOT_DIR_VARIABLE] = str(tmp_path / "slots")
    return tmp_path / "slots"


def is_free(directory: Path, device: str) -> bool:
    """Whether no process holds ``device``'s slot (probed with a lock taken and dropped at once)."""
    fd = os.open(lock_file(directory, device), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------ pool
def test_pool_from_the_environment(slots, monkeypatch):
    assert gpu_pool() == ("0", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-8a1f,5")
    assert gpu_pool() == ("3", "GPU-8a1f")
    monkeypatch.delenv(SLOTS_VARIABLE)
    assert gpu_pool() == ("3", "GPU-8a1f", "5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_pool() == ()
    assert lock_file(slots, "MIG-4f2a/1/0") == slots / "gpuMIG-4f2a_1_0.lock"
    monkeypatch.setenv(SLOTS_VARIABLE, "two")
    with pytest.raises(ValueError, match="LEOD_GPU_SLOTS='two'"):
        gpu_pool()


# --------------------------------------------------------------------------------------------- locking
def test_claims_take_different_slots_and_a_third_waits(slots, caplog):
    caplog.set_level(logging.INFO)
    first, second = acquire_slots(1, gpu_pool(), slots), acquire_slots(1, gpu_pool(), slots)
    assert {first.devices, second.devices} == {("0",), ("1",)}
    waiter: dict[str, object] = {}
    thread = threading.Thread(target=lambda: waiter.update(
        claim=acquire_slots(1, gpu_pool(), slots, FAST_POLL_S), at=time.monotonic()))
    thread.start()
    time.sleep(RELEASE_AFTER_S)
    assert thread.is_alive(), "the third claim must wait while both slots are held"
    released_at = time.monotonic()
    second.release()
    thread.join(timeout=5)
    assert waiter["claim"].devices == second.devices and waiter["at"] >= released_at
    assert caplog.text.count("waiting for one to be released") == 1
    first.release()
    waiter["claim"].release()


def test_a_multi_gpu_claim_takes_all_its_slots_at_once(slots):
    both = acquire_slots(2, gpu_pool(), slots)
    assert both.devices == ("0", "1") and not is_free(slots, "0") and not is_free(slots, "1")
    both.release()
    one = acquire_slots(1, gpu_pool(), slots)
    waiter: dict[str, object] = {}
    thread = threading.Thread(target=lambda: waiter.update(claim=acquire_slots(2, gpu_pool(), slots, FAST_POLL_S)))
    thread.start()
    time.sleep(RELEASE_AFTER_S)
    assert thread.is_alive() and is_free(slots, "1"), "a waiting 2-GPU claim holds no slot meanwhile"
    one.release()
    thread.join(timeout=5)
    assert waiter["claim"].devices == ("0", "1")
    waiter["claim"].release()
    with pytest.raises(ValueError, match="asks for 3 GPU"):
        acquire_slots(3, gpu_pool(), slots)


def test_a_killed_job_frees_its_slot_at_once(slots):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time
        from leod_core.devices import claim_job_devices
        claim_job_devices("cuda")
        print("claimed", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert holder.stdout.readline().strip() == "claimed"
        assert not is_free(slots, "0") and is_free(slots, "1")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert is_free(slots, "0")


# ----------------------------------------------------------------------------------------- job claims
def test_a_gpu_job_claims_and_sets_cuda_visible_devices(slots, caplog):
    caplog.set_level(logging.INFO)
    claim = claim_job_devices("gpu", count=2)
    assert claim.devices == ("0", "1") and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert os.environ[HELD_VARIABLE] == "0,1" and os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "device environment: host=" in caplog.text
    assert f"GPU slots: took GPU 0,1 of pool 0,1 (lock {slots}/gpu0.lock, {slots}/gpu1.lock); " \
           "CUDA_VISIBLE_DEVICES=0,1" in caplog.text
    assert claim_job_devices("cuda") is None, "the held marker: this process (or its DDP ranks) claims no more"
    assert "none claimed: the parent process holds GPU(s) 0,1" in caplog.text
    claim.release()


def test_a_child_of_a_claiming_job_does_not_claim(slots):
    claim = claim_job_devices("cuda")
    child = subprocess.run([sys.executable, "-c", "from leod_core.devices import claim_job_devices; import os; "
                            "assert claim_job_devices('cuda') is None; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                           capture_output=True, text=True, env=os.environ.copy(), check=True)
    assert child.stdout.strip() == "0" and is_free(slots, "1")
    claim.release()


@pytest.mark.parametrize("device, variables, reason", [
    ("cpu", {}, "device cpu needs no GPU"),
    ("cuda:1", {}, "device cuda:1 is not one the pool hands out"),
    ("cuda", {"SLURM_JOB_ID": "4242"}, "SLURM job 4242: its GRES gives this job its own GPU(s)"),
    ("cuda", {"LOCAL_RANK": "1"}, "a rank process of a distributed job (LOCAL_RANK=1)"),
    ("auto", {SLOTS_VARIABLE: "0"}, "no GPU on this host"),
])
def test_no_claim(slots, monkeypatch, caplog, device, variables, reason):
    caplog.set_level(logging.INFO)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert claim_job_devices(device) is None
    assert f"GPU slots: none claimed: {reason}" in caplog.text
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and not slots.exists()


# ------------------------------------------------------------------------------------------ snakemake
SNAKEFILE = """
JOBS = range({jobs})

rule all:
    input: expand("job{{i}}.json", i=JOBS)

rule gpu_job:
    output: "job{{i}}.json"
    resources: gpu=1
    shell: "{python} {script} {{output}}"
"""

JOB_SCRIPT = """
import json, os, sys, time
from leod_core.devices import claim_job_devices
claim = claim_job_devices("cuda")
start = time.time()
time.sleep({seconds})
json.dump({{"slot": claim.devices[0], "start": start, "end": time.time(),
           "visible": os.environ["CUDA_VISIBLE_DEVICES"]}}, open(sys.argv[1], "w"))
"""


def test_snakemake_gpu_jobs_never_share_a_slot(slots, tmp_path):
    jobs = SNAKEMAKE_SLOTS * SNAKEMAKE_JOBS_PER_SLOT
    (tmp_path / "job.py").write_text(JOB_SCRIPT.format(seconds=JOB_SECONDS))
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(jobs=jobs, python=sys.executable, script="job.py"))
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", "--resources", f"gpu={SNAKEMAKE_SLOTS}",
                          "--directory", str(tmp_path), "--snakefile", str(tmp_path / "Snakefile")],
                         capture_output=True, text=True, env={**os.environ, SLOTS_VARIABLE: str(SNAKEMAKE_SLOTS)},
                         cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    records = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(jobs)]
    assert all(r["visible"] == r["slot"] for r in records)
    assert {r["slot"] for r in records} == {str(k) for k in range(SNAKEMAKE_SLOTS)}
    running_at_each_start = [sum(b["start"] <= a["start"] < b["end"] for b in records) for a in records]
    assert max(running_at_each_start) <= SNAKEMAKE_SLOTS
    for i, a in enumerate(records):
        for b in records[i + 1:]:
            assert not (a["start"] < b["end"] and b["start"] < a["end"] and a["slot"] == b["slot"]), (a, b)


# ------------------------------------------------------------------------------------------------ CLI
def run_leod(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leod_core.cli", "--no-progress", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=REPO, timeout=600)


@pytest.mark.parametrize("command, claimed", [
    (["visualize", "--checkpoint", "{tmp}/missing.ckpt", "--data", "{tmp}", "--sequence", "s", "--out", "{tmp}/v.gif",
      "--device", "cuda"], "0"),
    (["train", "--data", "{tmp}/missing", "--split", "{tmp}/s.json", "--out", "{tmp}/r0", "--accelerator", "gpu",
      "--devices", "2"], "0,1"),
])
def test_the_cli_claims_before_the_command_runs(slots, tmp_path, command, claimed):
    """A GPU command with two fake slots (visualize: one; train: trainer.devices): the slot line comes first,
    then the command runs (here failing on a missing input, before anything needs a GPU)."""
    run = run_leod(*(arg.format(tmp=tmp_path) for arg in command), env={})
    assert run.returncode == 1
    assert f"GPU slots: took GPU {claimed} of pool 0,1" in run.stderr
    assert f"CUDA_VISIBLE_DEVICES={claimed}" in run.stderr
    assert run.stderr.index("GPU slots:") < run.stderr.index("missing")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from leod_core.models.checkpoint import save_model_checkpoint
    from leod_core.models.detector import RVTConfig, build_detector

    config = RVTConfig.tiny(2, (64, 96), embed_dim=16, dim_head=16)
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    save_model_checkpoint(path, build_detector(config), config)
    return path


def evaluate(checkpoint: Path, dataset, out: Path, device: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_leod("evaluate", "--checkpoint", str(checkpoint), "--data", str(dataset.root), "--out", str(out),
                    "--camera", "synth", "--sequence-length", "5", "--batch-size", "2", "--device", device, env=env)


def test_evaluate_on_the_cpu_claims_nothing(slots, small_dataset, tiny_checkpoint, tmp_path):
    run = evaluate(tiny_checkpoint, small_dataset, tmp_path / "m.json", "cpu", env={})
    assert run.returncode == 0, run.stderr
    assert "GPU slots: none claimed: device cpu needs no GPU" in run.stderr and not slots.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_evaluate_on_a_gpu_runs_on_its_claimed_slot(claim_env, small_dataset, tiny_checkpoint, tmp_path):
    directory = tmp_path / "slots"
    pool = gpu_pool()
    busy = acquire_slots(1, pool[:1], directory) if len(pool) > 1 else None   # the job must take another GPU
    expected = pool[1] if busy else pool[0]
    run = evaluate(tiny_checkpoint, small_dataset, tmp_path / "m.json", "cuda", env={SLOT_DIR_VARIABLE: str(directory)})
    assert run.returncode == 0, run.stderr
    assert f"GPU slots: took GPU {expected} of pool" in run.stderr
    assert f"CUDA_VISIBLE_DEVICES={expected}" in run.stderr
    if busy:
        busy.release()
