"""A per-host pool of GPU slots, so that concurrent GPU jobs on one machine each get their own device(s).

Each device of the pool has a lock file ``<slot dir>/gpu<device>.lock``. A job claims a slot by holding an
exclusive ``flock`` on it for its whole lifetime; the kernel drops the lock when the process ends, however it
ends (SIGKILL included), so a killed job never leaves a slot taken.

The pool is the entries of ``CUDA_VISIBLE_DEVICES`` when it is set, else the GPUs ``nvidia-smi -L`` lists (counted
in a subprocess: this process's CUDA stays uninitialised, so the ``CUDA_VISIBLE_DEVICES`` a claim sets still takes
effect). ``LEOD_GPU_SLOTS=N`` limits the pool to its first N devices, or fakes N devices on a CPU-only machine.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

SLOT_DIR_VARIABLE = "LEOD_GPU_SLOT_DIR"
SLOTS_VARIABLE = "LEOD_GPU_SLOTS"
DEFAULT_SLOT_DIR_ROOT = Path("/tmp")   # not $TMPDIR: schedulers set it per job, and the pool is per host
POLL_INTERVAL_S = 0.5
NVIDIA_SMI_TIMEOUT_S = 30.0
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class SlotClaim:
    """Slots held by this process: ``devices`` (entries of the pool) locked through the open ``fds``."""

    devices: tuple[str, ...]
    lock_files: tuple[Path, ...]
    fds: tuple[int, ...]

    def release(self) -> None:
        """Give the slots back (a job does not need to: its slots are freed when it exits)."""
        for fd in self.fds:
            os.close(fd)


def slot_dir() -> Path:
    """``$LEOD_GPU_SLOT_DIR``, else ``/tmp/leod-gpu-slots-<uid>`` (one pool per host and user)."""
    override = os.environ.get(SLOT_DIR_VARIABLE)
    return Path(override) if override else DEFAULT_SLOT_DIR_ROOT / f"leod-gpu-slots-{os.getuid()}"


def visible_devices() -> tuple[str, ...] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs), or None when it is unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return None if value is None else tuple(entry.strip() for entry in value.split(",") if entry.strip())


def host_gpu_count() -> int:
    """GPUs that ``nvidia-smi -L`` lists (0 without nvidia-smi); CUDA is not initialised in this process."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True,
                                 timeout=NVIDIA_SMI_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("nvidia-smi -L failed (%s): counting no GPU", err)
        return 0
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def gpu_pool() -> tuple[str, ...]:
    """The devices this host's jobs share: ``CUDA_VISIBLE_DEVICES``'s entries, else ``0..n-1`` for the host's n
    GPUs; ``LEOD_GPU_SLOTS=N`` keeps the first N (or, without ``CUDA_VISIBLE_DEVICES``, makes ``0..N-1``)."""
    visible = visible_devices()
    limit = os.environ.get(SLOTS_VARIABLE)
    if limit is None:
        return visible if visible is not None else tuple(str(i) for i in range(host_gpu_count()))
    if not limit.isdigit():
        raise ValueError(f"{SLOTS_VARIABLE}={limit!r}: expected a number of GPU slots")
    if visible is None:
        return tuple(str(i) for i in range(int(limit)))
    if int(limit) > len(visible):
        raise ValueError(f"{SLOTS_VARIABLE}={limit} but CUDA_VISIBLE_DEVICES lists {len(visible)} device(s)")
    return visible[:int(limit)]


def lock_file(directory: Path, device: str) -> Path:
    """``<directory>/gpu<device>.lock`` (a UUID's unusual characters replaced by ``_``)."""
    return directory / f"gpu{_UNSAFE_FILE_CHARS.sub('_', device)}.lock"


def _try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}\n".encode())   # who holds it, for `cat` (stale once unlocked)
    return fd


def _try_claim(count: int, pool: Sequence[str], directory: Path) -> SlotClaim | None:
    """``count`` free slots of ``pool``, or None (holding nothing) when fewer are free."""
    held: list[tuple[str, Path, int]] = []
    for device in pool:
        path = lock_file(directory, device)
        fd = _try_lock(path)
        if fd is not None:
            held.append((device, path, fd))
        if len(held) == count:
            devices, paths, fds = zip(*held)
            return SlotClaim(devices, paths, fds)
    for _, _, fd in held:
        os.close(fd)
    return None


def acquire_slots(count: int, pool: Sequence[str], directory: Path,
                  poll_interval_s: float = POLL_INTERVAL_S) -> SlotClaim:
    """Lock ``count`` slots of ``pool`` in ``directory``, waiting (polling) while fewer than ``count`` are free.

    All of them or none at once, so two multi-GPU jobs never hold part of each other's devices."""
    if not 1 <= count <= len(pool):
        raise ValueError(f"a job asks for {count} GPU(s) but this host's slot pool has {len(pool)} "
                         f"({', '.join(pool) or 'none'})")
    directory.mkdir(parents=True, exist_ok=True)
    claim = _try_claim(count, pool, directory)
    if claim is None:
        log.info("GPU slots: all busy (%d of %d wanted, pool %s in %s); waiting for one to be released",
                 count, len(pool), ",".join(pool), directory)
    while claim is None:
        time.sleep(poll_interval_s)
        claim = _try_claim(count, pool, directory)
    return claim
