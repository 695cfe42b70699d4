"""One run per working directory.

Snakemake locks a working directory while it runs, but it checks for incomplete files *before* it looks at the
locks: a second run started while the first one's jobs are writing stops with "The files below seem to be
incomplete" and advises ``--rerun-incomplete`` or ``--cleanup-metadata`` -- advice that, followed, would pull the
running jobs' outputs from under them. The rules call :func:`concurrent_run_message` first, once, when a run is
about to execute jobs, and stop with the lock message instead.
"""
from __future__ import annotations

from pathlib import Path

LOCK_DIR = Path(".snakemake/locks")


def concurrent_run_message(workdir: Path) -> str | None:
    """The error for a run in ``workdir`` while another run holds it (lock files in ``.snakemake/locks``), else
    None. A run that was killed leaves its locks too; ``snakemake --unlock`` removes them."""
    locks = workdir / LOCK_DIR
    if not (locks.is_dir() and any(locks.iterdir())):
        return None
    return (f"Directory cannot be locked: another snakemake run is using {workdir.resolve()} (its locks are in "
            f"{LOCK_DIR}/). Wait for it to finish. If no run is active (it was killed), remove its locks with "
            "`snakemake --unlock`, then rerun with --rerun-incomplete: finished jobs are kept.")
