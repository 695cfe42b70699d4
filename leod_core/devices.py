"""The device environment of a job, logged once when a GPU job starts (which devices the scheduler gave it)."""
from __future__ import annotations

import os
import socket

DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")


def device_environment() -> str:
    """``device environment: host=<name> CUDA_VISIBLE_DEVICES=<value or unset> SLURM_JOB_ID=<value or unset>``."""
    values = " ".join(f"{name}={os.environ.get(name, 'unset')}" for name in DEVICE_VARIABLES)
    return f"device environment: host={socket.gethostname()} {values}"
