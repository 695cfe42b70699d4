"""Writes that fail midway leave no file that looks complete, and an existing file stays as it was.

Each writer runs in a child process whose file-size limit (``RLIMIT_FSIZE``) is far below what it has to write:
the kernel stops the write midway, either by killing the process (``SIGXFSZ``, as a node failure would) or, with
the signal ignored, by failing the write with ``EFBIG`` (as a full disk fails it with ``ENOSPC``).
"""
from __future__ import annotations

import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WRITE_LIMIT_BYTES = 64 * 1024      # every case below writes several times this

WRITERS = {
    "model checkpoint": """
        from leod_core.models.checkpoint import save_model_checkpoint
        from leod_core.models.detector import RVTConfig, build_detector
        config = RVTConfig.tiny(2, (64, 96))
        save_model_checkpoint(TARGET, build_detector(config), config)""",
    "event representations (HDF5)": """
        import numpy as np
        from leod_core.data.formats import EventReprWriter
        with EventReprWriter(TARGET, 20, 64, 96) as writer:
            for _ in range(50):
                writer.append(np.random.default_rng(0).integers(0, 255, (1, 20, 64, 96), dtype=np.uint8))""",
    "raw events (HDF5)": """
        import numpy as np
        from leod_core.data.formats import RawEvents, write_raw_events
        n = 200_000
        rng = np.random.default_rng(0)
        write_raw_events(TARGET, RawEvents(x=rng.integers(0, 96, n).astype(np.uint16),
                                           y=rng.integers(0, 64, n).astype(np.uint16),
                                           p=rng.integers(0, 2, n).astype(np.int8),
                                           t=np.sort(rng.integers(0, 10**6, n)).astype(np.int64), height=64, width=96))""",
    "npy array": """
        import numpy as np
        from leod_core.data.formats import write_npy
        write_npy(TARGET, np.arange(100_000, dtype=np.int64))""",
    "JSON manifest": """
        import json
        from leod_core.data.atomic import write_text_atomic
        write_text_atomic(TARGET, json.dumps({"sequences": [f"seq_{i:06d}" for i in range(20_000)]}))""",
}


def run_limited(code: str, target: Path, ignore_sigxfsz: bool) -> subprocess.CompletedProcess:
    """Run ``code`` (with ``TARGET`` bound to ``target``) in a child limited to writing WRITE_LIMIT_BYTES per file."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (WRITE_LIMIT_BYTES, WRITE_LIMIT_BYTES))

    handler = "SIG_IGN" if ignore_sigxfsz else "SIG_DFL"     # (Python itself starts with SIGXFSZ ignored)
    program = f"import signal\nsignal.signal(signal.SIGXFSZ, signal.{handler})\nTARGET = {str(target)!r}\n"
    return subprocess.run([sys.executable, "-c", program + textwrap.dedent(code)], preexec_fn=limit,
                          capture_output=True, text=True, timeout=300)


def looks_complete(directory: Path, target: Path) -> list[str]:
    """Files in ``directory`` a reader would take for ``target`` or for any other finished output (only hidden
    temporary siblings, ``.{name}.tmp-*``, may be left by a killed writer)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith(f".{target.name}.tmp-"))


@pytest.mark.parametrize("ignore_sigxfsz", [False, True], ids=["killed midway", "write error midway"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_write_stopped_midway_leaves_no_file_that_looks_complete(tmp_path, writer, ignore_sigxfsz):
    target = tmp_path / "out" / "artifact"
    result = run_limited(WRITERS[writer], target, ignore_sigxfsz)
    if ignore_sigxfsz:    # an exception (each library words it its way); HDF5 may instead crash (SIGSEGV) closing
        assert result.returncode in (1, -signal.SIGSEGV), result.stderr[-2000:]
    else:
        assert result.returncode == -signal.SIGXFSZ, result.stderr[-2000:]
    assert looks_complete(target.parent, target) == []
    if result.returncode == 1:                      # the writer saw the error: it removed its temporary file too
        assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_failed_rewrite_keeps_the_old_file(tmp_path, writer):
    target = tmp_path / "artifact"
    target.write_bytes(b"the complete old version")
    result = run_limited(WRITERS[writer], target, ignore_sigxfsz=False)
    assert result.returncode == -signal.SIGXFSZ, result.stderr[-2000:]
    assert target.read_bytes() == b"the complete old version"
    assert looks_complete(tmp_path, target) == ["artifact"]
