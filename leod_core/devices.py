"""The devices of a job, settled once when a GPU job starts: the environment the scheduler gave it and, on a host
whose GPUs several jobs share, the GPU slot(s) it claims for its lifetime (:mod:`leod_core.gpu_slots`)."""
from __future__ import annotations

import logging
import os
import socket
import sys

from leod_core.gpu_slots import SlotClaim, acquire_slots, gpu_pool, slot_dir, visible_devices

log = logging.getLogger(__name__)

DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")
#: Set by a job that claimed slots (to the claimed devices): the processes it starts (DDP ranks) inherit it and
#: use the parent's devices instead of claiming their own.
HELD_VARIABLE = "LEOD_GPU_SLOTS_HELD"
#: Torch devices and Lightning accelerators that take devices from the slot pool (``auto``: when the host has GPUs).
POOL_DEVICES = ("cuda", "cuda:0", "gpu", "auto")


def device_environment() -> str:
    """``device environment: host=<name> CUDA_VISIBLE_DEVICES=<value or unset> SLURM_JOB_ID=<value or unset>``."""
    values = " ".join(f"{name}={os.environ.get(name, 'unset')}" for name in DEVICE_VARIABLES)
    return f"device environment: host={socket.gethostname()} {values}"


def _no_claim_reason(device: str) -> str | None:
    """Why a job on ``device`` claims no slot from the pool (before looking at the pool), or None."""
    if device == "cpu":
        return "device cpu needs no GPU"
    if device not in POOL_DEVICES:
        return f"device {device} is not one the pool hands out ({', '.join(POOL_DEVICES)})"
    if "SLURM_JOB_ID" in os.environ:
        return f"SLURM job {os.environ['SLURM_JOB_ID']}: its GRES gives this job its own GPU(s)"
    if HELD_VARIABLE in os.environ:
        return f"the parent process holds GPU(s) {os.environ[HELD_VARIABLE]}"
    if "LOCAL_RANK" in os.environ:
        return f"a rank process of a distributed job (LOCAL_RANK={os.environ['LOCAL_RANK']})"
    return None


def _cuda_initialised() -> bool:
    """Whether this process has initialised CUDA (then a new ``CUDA_VISIBLE_DEVICES`` no longer takes effect)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()


def claim_job_devices(device: str, count: int = 1) -> SlotClaim | None:
    """Claim this job's ``count`` GPU slot(s) of the host's pool for the rest of the process's life (waiting while
    none is free) and set ``CUDA_VISIBLE_DEVICES`` to them, so that ``cuda``, ``cuda:0`` and Lightning's
    ``devices=count`` mean the claimed GPUs. Call it before anything initialises CUDA.

    ``device``: a torch device (``cpu``, ``cuda``, ``cuda:N``) or a Lightning accelerator (``cpu``, ``gpu``,
    ``auto``). Nothing is claimed on the CPU, for an explicit ``cuda:N`` with N > 0, under SLURM (its GRES
    assigns the devices), in a process started by a job that holds slots, or when the host has no GPU. Logs the
    device environment and one line with the slot(s) taken or why none. Returns the claim, or None."""
    log.info("%s", device_environment())
    reason = _no_claim_reason(device)
    if reason is not None:
        log.info("GPU slots: none claimed: %s", reason)
        return None
    pool = gpu_pool()
    if not pool:
        log.info("GPU slots: none claimed: no GPU on this host (CUDA_VISIBLE_DEVICES is empty, or nvidia-smi lists "
                 "none or is missing)")
        return None
    if _cuda_initialised():
        log.warning("GPU slots: none claimed: CUDA is already initialised in this process, so "
                    "CUDA_VISIBLE_DEVICES can no longer select the GPU (claim first thing in the job)")
        return None
    return _claim(count, pool)


def _claim(count: int, pool: tuple[str, ...]) -> SlotClaim:
    """Take ``count`` slots of ``pool`` (waiting while they are busy) and point ``CUDA_VISIBLE_DEVICES`` at them."""
    claim = acquire_slots(count, pool, slot_dir())
    if visible_devices() is None:   # device k of the pool is then nvidia-smi's GPU k
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    os.environ["CUDA_VISIBLE_DEVICES"] = os.environ[HELD_VARIABLE] = ",".join(claim.devices)
    log.info("GPU slots: took GPU %s of pool %s (lock %s); CUDA_VISIBLE_DEVICES=%s", ",".join(claim.devices),
             ",".join(pool), ", ".join(map(str, claim.lock_files)), os.environ["CUDA_VISIBLE_DEVICES"])
    return claim
