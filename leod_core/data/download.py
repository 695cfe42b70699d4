"""Robust downloads of dataset archives (RVT's Gen1 / 1Mpx tars) and their atomic extraction.

:func:`download` streams a URL with urllib into ``{dest}.part``: an interrupted transfer resumes with an HTTP
``Range`` request, transient failures (connection errors, truncated bodies, timeouts, HTTP 5xx / 408 / 429)
are retried with exponential backoff, and ``dest`` appears (``os.replace`` from ``.part``) only after the
file's checksum matches the configured one (:class:`~leod_core.data.checksum.Checksum`: RVT publishes CRC-32
checksums of its archives, RVT and LEOD MD5 prefixes of their checkpoints). A file whose checksum does not
match is moved to ``{dest}.corrupt`` so that the next attempt starts afresh.

:func:`extract_archive` unpacks a tar (plain, or compressed: ``.tar.gz``) with tarfile's ``data`` filter
(no absolute paths, no links or files escaping the destination, no device files) into a hidden sibling of
the output directory, writes ``download_summary.json`` into it, and renames it into place: an output
directory that exists is a complete extraction. It never replaces a directory it did not create.

:func:`download_dataset` (``leod download``) does both, skipping what is already done.
"""
from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping

from tqdm import tqdm

from leod_core.data.atomic import make_tmp_dir, swap_in, write_text_atomic
from leod_core.data.checksum import Checksum

log = logging.getLogger(__name__)

SUMMARY_NAME = "download_summary.json"
PART_SUFFIX = ".part"
CORRUPT_SUFFIX = ".corrupt"
#: Retried HTTP statuses besides 5xx (server errors).
RETRIED_HTTP_STATUSES = frozenset({HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


class DownloadError(OSError):
    """A download failed for good: retries used up, an HTTP error that retrying cannot fix, or a checksum
    mismatch. The message names the URL and the file."""


class ArchiveError(ValueError):
    """An archive cannot be extracted (unreadable, or a member the ``data`` filter refuses)."""


class _TruncatedBody(http.client.HTTPException):
    """The server closed the connection before sending the announced number of bytes (retried)."""


#: Errors worth another attempt. Local disk errors (a full disk) are plain ``OSError`` and are not retried.
_TRANSIENT_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class DownloadConfig:
    """How hard :func:`download` tries.

    Attributes:
        retries: failed attempts in a row tolerated before giving up. An attempt that leaves more bytes on
            disk than ever before resets the count, so a long transfer over a flaky link keeps going.
        backoff_s: wait before the first retry (seconds).
        backoff_factor: each further failure in a row waits this many times longer.
        max_backoff_s: longest wait between attempts (seconds).
        chunk_bytes: bytes read from the socket per write, and per read when computing the CRC-32.
        timeout_s: socket timeout for connecting and for each read (seconds).
        user_agent: HTTP ``User-Agent`` header.
    """

    retries: int = 5
    backoff_s: float = 2.0
    backoff_factor: float = 2.0
    max_backoff_s: float = 120.0
    chunk_bytes: int = 1 << 20
    timeout_s: float = 60.0
    user_agent: str = "leod-workflow"

    def __post_init__(self) -> None:
        if self.retries < 0 or self.chunk_bytes <= 0 or self.timeout_s <= 0:
            raise ValueError(f"download config: retries must be >= 0, chunk_bytes and timeout_s > 0, got {self}")
        if self.backoff_s < 0 or self.backoff_factor < 1 or self.max_backoff_s < 0:
            raise ValueError(f"download config: backoff_s and max_backoff_s must be >= 0, backoff_factor >= 1, "
                             f"got {self}")

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` (>= 1) failed attempts in a row."""
        return min(self.max_backoff_s, self.backoff_s * self.backoff_factor ** (failures - 1))


def verify_checksum(path: Path, md5: str | None = None, crc32: str | None = None) -> None:
    """Check a local file against an MD5 (prefix) or a CRC-32; :class:`DownloadError` naming both on a mismatch."""
    expected = Checksum.parse("md5", md5) if md5 else Checksum.parse("crc32", crc32)
    actual = expected.digest(path)
    if not expected.matches(actual):
        raise DownloadError(f"{path}: {expected.algorithm} is {actual}, expected {expected.hex}")
    log.info("%s: %s ok", path, expected)


def part_path(dest: Path) -> Path:
    """Where :func:`download` keeps the bytes of ``dest`` received so far."""
    return dest.with_name(dest.name + PART_SUFFIX)


# ------------------------------------------------------------------------------------------- download
def download(url: str, dest: Path, checksum: Checksum | str, cfg: DownloadConfig = DownloadConfig(),
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (resumable, retried, checksum-checked) and return ``dest``.

    ``checksum`` is a :class:`Checksum` or a CRC-32 string (8 hex digits). Bytes go to ``{dest}.part``; a ``.part``
    left by an earlier attempt is resumed with ``Range: bytes=N-``. ``dest`` is created only once the checksum
    matches; on a mismatch the file becomes ``{dest}.corrupt`` and :class:`DownloadError` is raised. An existing
    ``dest`` with the right checksum is kept as it is (nothing downloaded); one with another checksum is an error
    (it is never overwritten).
    """
    dest = Path(dest)
    expected = checksum if isinstance(checksum, Checksum) else Checksum.parse("crc32", checksum)
    if dest.exists():
        actual = expected.digest(dest, cfg.chunk_bytes)
        if expected.matches(actual):
            log.info("%s already downloaded (%s matches): nothing to do", dest, expected)
            return dest
        raise DownloadError(f"{dest} exists but its {expected.algorithm} is {actual}, expected {expected.hex} for "
                            f"{url}; it is not replaced: move it away to download again")
    part = part_path(dest)
    with _locked_part(part, url) as fh:
        log.info("downloading %s to %s", url, dest)
        _fetch_with_retries(url, fh, cfg, progress, dest.name)
        fh.flush()
        os.fsync(fh.fileno())
        size = fh.seek(0, os.SEEK_END)
        actual = expected.digest(part, cfg.chunk_bytes)
        if not expected.matches(actual):
            corrupt = dest.with_name(dest.name + CORRUPT_SUFFIX)
            os.replace(part, corrupt)
            raise DownloadError(f"{expected.algorithm} mismatch for {url}: {dest.name} ({size} bytes) has "
                                f"{expected.algorithm} {actual}, expected {expected.hex}; the bad file was moved to "
                                f"{corrupt} so the next attempt starts afresh")
        os.replace(part, dest)
    log.info("downloaded %s: %d bytes, %s ok", dest, size, expected)
    return dest


@contextlib.contextmanager
def _locked_part(part: Path, url: str) -> Iterator[BinaryIO]:
    """``part`` opened for appending under an exclusive lock (a second download of the same file fails)."""
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise DownloadError(f"{part}: another process is downloading {url} to this file") from err
        try:
            yield fh
        finally:
            if fh.seek(0, os.SEEK_END) == 0:   # nothing received: leave no empty .part behind
                part.unlink(missing_ok=True)


def _fetch_with_retries(url: str, fh: BinaryIO, cfg: DownloadConfig, progress: bool, label: str) -> None:
    """Call :func:`_fetch_once` until the body is complete; retry transient errors with backoff."""
    failures = 0
    best = fh.seek(0, os.SEEK_END)
    while True:
        try:
            _fetch_once(url, fh, cfg, progress, label)
            return
        except urllib.error.HTTPError as err:
            err.close()
            if not (err.code >= HTTPStatus.INTERNAL_SERVER_ERROR or err.code in RETRIED_HTTP_STATUSES):
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason} (not retried)") from err
            error: Exception = err
        except _TRANSIENT_ERRORS as err:
            error = err
        size = fh.seek(0, os.SEEK_END)
        if size > best:
            best, failures = size, 0
        failures += 1
        if failures > cfg.retries:
            kept = f"; the {size} bytes received are kept in {fh.name} and the next download resumes there" \
                if size else ""
            raise DownloadError(f"{url}: giving up after {failures} failed attempts in a row (last: "
                                f"{type(error).__name__}: {error}){kept}") from error
        wait = cfg.backoff(failures)
        log.warning("%s: attempt failed (%s: %s) with %d bytes on disk; retry %d/%d in %.1f s", label,
                    type(error).__name__, error, size, failures, cfg.retries, wait)
        time.sleep(wait)


def _fetch_once(url: str, fh: BinaryIO, cfg: DownloadConfig, progress: bool, label: str) -> None:
    """One HTTP request appending the rest of the body to ``fh``; raises if it ends early."""
    offset = fh.seek(0, os.SEEK_END)
    headers = {"User-Agent": cfg.user_agent}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        log.info("%s: resuming at byte %d", label, offset)
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=cfg.timeout_s)
    except urllib.error.HTTPError as err:
        if not (offset and err.code == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE):
            raise
        total = _content_range(err.headers.get("Content-Range"))[1]
        err.close()
        if total is None or total == offset:
            log.info("%s: the server has no bytes after the %d on disk (HTTP 416): transfer complete", label, offset)
            return
        log.warning("%s: %d bytes on disk but the file has %d (HTTP 416): restarting from byte 0", label,
                    offset, total)
        fh.truncate(0)
        _fetch_once(url, fh, cfg, progress, label)
        return
    with response:
        if response.status == HTTPStatus.PARTIAL_CONTENT:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise DownloadError(f"{url}: asked for bytes from {offset}, the server sent Content-Range "
                                    f"{response.headers.get('Content-Range')!r}")
        elif response.status == HTTPStatus.OK:
            if offset:
                log.warning("%s: the server ignored the Range request (HTTP 200): restarting from byte 0, "
                            "dropping the %d bytes on disk", label, offset)
                fh.truncate(0)
                offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        else:
            raise DownloadError(f"{url}: unexpected HTTP {response.status} {response.reason}")
        with tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  disable=not progress) as bar:
            while chunk := response.read(cfg.chunk_bytes):
                fh.write(chunk)
                bar.update(len(chunk))
    fh.flush()
    size = fh.seek(0, os.SEEK_END)
    if total is not None and size != total:
        raise _TruncatedBody(f"connection closed at byte {size} of {total}")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a ``Content-Range`` header; None where it is ``*`` or the header is absent."""
    match = _CONTENT_RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start is not None else None), (int(total) if total != "*" else None)


# -------------------------------------------------------------------------------------------- extract
def extract_archive(archive: Path, out_dir: Path, strip_single_top_level: bool = False,
                    summary: Mapping[str, object] | None = None, progress: bool = False) -> dict:
    """Extract tar ``archive`` (plain or compressed) so that ``out_dir`` appears complete or not at all.

    Members are unpacked with tarfile's ``data`` filter into a hidden sibling of ``out_dir``. With
    ``strip_single_top_level`` the archive must hold one top-level folder (RVT's ``gen1.tar`` holds ``gen1/``
    with ``train/ val/ test/``; a raw split tar holds its split folder), whose contents become ``out_dir``.
    ``{out_dir}/download_summary.json`` (``summary`` plus archive path, bytes and member count) is written
    last, then the directory is renamed into place. An existing ``out_dir`` is replaced only if it is empty
    or an earlier extraction (holds the summary); otherwise ``FileExistsError``. Returns the summary.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    _check_replaceable(out_dir)
    if not hasattr(tarfile, "data_filter"):
        raise ArchiveError("this Python's tarfile has no 'data' extraction filter (needs Python >= 3.10.12 or "
                           ">= 3.11.4): refusing to extract archives unsafely")
    tmp = make_tmp_dir(out_dir, "extract")
    try:
        log.info("extracting %s into %s", archive, out_dir)
        members = _extract_into(archive, tmp, progress)
        root = _content_root(tmp, archive, strip_single_top_level)
        if (root / SUMMARY_NAME).exists():
            raise ArchiveError(f"{archive}: holds its own {SUMMARY_NAME}, which extraction would overwrite")
        record = {**(summary or {}), "archive": str(archive), "archive_bytes": archive.stat().st_size,
                  "members": members, "stripped_top_level": root.name if root != tmp else None}
        write_text_atomic(root / SUMMARY_NAME, json.dumps(record, indent=2, sort_keys=True))
        _check_replaceable(out_dir)
        if os.path.lexists(out_dir):
            log.info("replacing the earlier extraction in %s", out_dir)
            swap_in(root, out_dir)
        else:
            os.rename(root, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)   # a failed extraction, or the folder left empty by stripping
    log.info("extracted %d members of %s into %s", members, archive.name, out_dir)
    return record


def _check_replaceable(out_dir: Path) -> None:
    """Raise unless ``out_dir`` is absent, an empty directory, or an earlier extraction (has the summary)."""
    if not os.path.lexists(out_dir):
        return
    if out_dir.is_dir() and not out_dir.is_symlink() and (
            (out_dir / SUMMARY_NAME).is_file() or not any(out_dir.iterdir())):
        return
    raise FileExistsError(f"{out_dir} exists and is not an extraction made by leod download (no {SUMMARY_NAME}): "
                          f"it is never replaced; move it away or choose another output directory")


def _extract_into(archive: Path, tmp: Path, progress: bool) -> int:
    """Unpack every member of ``archive`` into ``tmp`` with the ``data`` filter; return the member count."""
    try:
        with tarfile.open(archive, "r:*") as tar, tqdm(unit="B", unit_scale=True, unit_divisor=1024,
                                                       desc=f"extract {archive.name}", disable=not progress) as bar:
            tar.extractall(tmp, members=_with_progress(tar, bar), filter="data")
            return len(tar.getmembers())
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise ArchiveError(f"{archive}: cannot extract ({type(err).__name__}: {err})") from err


def _with_progress(tar: tarfile.TarFile, bar: tqdm) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        bar.update(member.size)
        yield member


def _content_root(tmp: Path, archive: Path, strip_single_top_level: bool) -> Path:
    """``tmp``, or its single top-level folder when stripping."""
    if not strip_single_top_level:
        return tmp
    entries = sorted(tmp.iterdir())
    if len(entries) != 1 or entries[0].is_symlink() or not entries[0].is_dir():
        raise ArchiveError(f"{archive}: expected a single top-level folder to strip, found "
                           f"{[e.name for e in entries]} (keep the top level to extract it as it is)")
    return entries[0]


# -------------------------------------------------------------------------------------------- together
def download_dataset(url: str, archive: Path, checksum: Checksum | str, out_dir: Path | None = None,
                     cfg: DownloadConfig = DownloadConfig(), strip_single_top_level: bool = True,
                     progress: bool = True) -> dict:
    """Download ``url`` to ``archive`` (see :func:`download`; ``checksum`` as there), then extract it into
    ``out_dir`` if given (see :func:`extract_archive`). An ``out_dir`` whose summary records the same checksum is
    done: neither the archive nor the directory is touched (the archive may have been deleted to save space).

    Returns the summary: ``url``, the checksum (``crc32`` or ``md5`` key), ``archive``, ``archive_bytes``
    (+ ``members``, ``stripped_top_level`` when extracted).
    """
    expected = checksum if isinstance(checksum, Checksum) else Checksum.parse("crc32", checksum)
    record = {"url": url, expected.algorithm: expected.hex}
    if out_dir is not None:
        done = _done_summary(Path(out_dir), expected)
        if done is not None:
            log.info("%s already holds the extraction of %s (%s): nothing to do", out_dir, url, expected)
            return done
    archive = download(url, Path(archive), expected, cfg, progress)
    if out_dir is None:
        return {**record, "archive": str(archive), "archive_bytes": archive.stat().st_size}
    return extract_archive(archive, Path(out_dir), strip_single_top_level, record, progress)


def _done_summary(out_dir: Path, expected: Checksum) -> dict | None:
    """The summary of an earlier extraction into ``out_dir`` of the archive with checksum ``expected``."""
    marker = out_dir / SUMMARY_NAME
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("%s is unreadable (%s): extracting again", marker, err)
        return None
    return done if isinstance(done, dict) and done.get(expected.algorithm) == expected.hex else None
