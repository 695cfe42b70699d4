"""Atomic file writes: write to a temporary sibling, then rename over the target.

A job killed half-way leaves only a ``*.tmp-*`` file behind, never a file that looks complete.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it to ``target``.

    The caller writes the temporary path (with any library: h5py, numpy, json). If the body raises,
    the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():   # mkstemp makes it 0600; give it the mode a plain open() would under this umask
            tmp.chmod(0o666 & ~_current_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def make_tmp_dir(final: Path, tag: str = "tmp") -> Path:
    """A new hidden sibling directory of ``final`` (created with the umask's permissions, unlike mkdtemp)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = final.parent / f".{final.name}.{tag}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def swap_in(tmp: Path, final: Path) -> None:
    """Replace directory ``final`` by ``tmp``: rename the old one aside, rename the new one in, delete the old."""
    old = make_tmp_dir(final, "old")
    old.rmdir()
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a new hidden sibling directory to fill; on success it becomes ``final`` (replacing an existing
    ``final`` by :func:`swap_in`), on error it is removed and ``final`` is left as it was."""
    final = Path(final)
    tmp = make_tmp_dir(final)
    try:
        yield tmp
        if os.path.lexists(final):
            swap_in(tmp, final)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
