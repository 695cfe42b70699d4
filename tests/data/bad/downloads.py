"""Bad downloads, run through ``leod download``: wrong checksums, HTTP errors, broken or hostile archives, and
an output directory that is not a previous extraction."""
from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import Callable

from leod_core.data.download import ArchiveError, DownloadError

from .common import ARCHIVE_TOP, BadCase, Call, Pristine, crc32_hex, leod_call, truncate, watched_dir


def download_call(work: Path, url: str, crc32: str, archive: Path | None = None) -> Call:
    """``leod download`` into ``{work}/datasets/gen1``, ``datasets/`` watched. Without ``archive`` (a file
    already there, whose directory is then watched too) the download's archive must not appear."""
    datasets = watched_dir(work / "datasets")
    target = archive or work / "downloads" / f"{ARCHIVE_TOP}.tar"
    argv = ["download", "--url", url, "--crc32", crc32, "--archive", str(target), "--out", str(datasets / ARCHIVE_TOP),
            "--retries", "0"]
    if archive is None:
        return leod_call(argv, datasets, must_not_exist=(target,))
    return leod_call(argv, datasets, archive.parent)


def served_with_wrong_crc(work: Path, pristine: Pristine) -> Call:
    wrong = f"{zlib.crc32(pristine.archive.read_bytes()) ^ 1:08x}"
    return download_call(work, pristine.archive_url, wrong)


def served_404(work: Path, pristine: Pristine) -> Call:
    return download_call(work, f"{pristine.base_url}/no-such.tar", crc32_hex(pristine.archive))


def bad_crc_string(work: Path, pristine: Pristine) -> Call:
    return download_call(work, pristine.archive_url, "not-hex!")


def local_archive_path(work: Path) -> Path:
    """``{work}/downloads/gen1.tar``, its directory created: where an archive already on disk lies."""
    archive = work / "downloads" / f"{ARCHIVE_TOP}.tar"
    archive.parent.mkdir()
    return archive


def local_archive_case(write: Callable[[Path, Pristine], str]) -> Callable[[Path, Pristine], Call]:
    """An archive already at ``--archive``; ``write`` creates it and returns the CRC-32 passed to leod."""
    def build(work: Path, pristine: Pristine) -> Call:
        archive = local_archive_path(work)
        crc32 = write(archive, pristine)
        return download_call(work, pristine.archive_url, crc32, archive)
    return build


def half_downloaded(archive: Path, pristine: Pristine) -> str:
    """The first half of the real archive (a copy cut short), checked against the real CRC-32."""
    shutil.copy(pristine.archive, archive)
    truncate(archive)
    return crc32_hex(pristine.archive)


def truncated_gzip_with_its_crc(archive: Path, pristine: Pristine) -> str:
    """A gzipped tar cut short whose (wrongly configured) CRC-32 matches: extraction must catch it."""
    archive.write_bytes(gzip.compress(pristine.archive.read_bytes()))
    truncate(archive)
    return crc32_hex(archive)


def html_page_with_its_crc(archive: Path, pristine: Pristine) -> str:
    archive.write_text("<html><body>503 Service Unavailable</body></html>\n")
    return crc32_hex(archive)


def add_bytes(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


def two_top_level_folders(archive: Path, pristine: Pristine) -> str:
    with tarfile.open(archive, "w") as tar:
        tar.add(pristine.data / "train", arcname=f"{ARCHIVE_TOP}/train")
        add_bytes(tar, "README.txt", b"not inside the dataset folder\n")
    return crc32_hex(archive)


def member_escaping_the_output(archive: Path, pristine: Pristine) -> str:
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, f"{ARCHIVE_TOP}/../../escaped.txt", b"outside the output directory\n")
    return crc32_hex(archive)


def foreign_output_directory(work: Path, pristine: Pristine) -> Call:
    """``--out`` is a directory the user made (no ``download_summary.json``); the archive is fine."""
    archive = local_archive_path(work)
    shutil.copy(pristine.archive, archive)
    out = watched_dir(work / "datasets" / ARCHIVE_TOP)
    return leod_call(["download", "--url", pristine.archive_url, "--crc32", crc32_hex(archive), "--archive",
                      str(archive), "--out", str(out)], out, archive.parent)


DOWNLOAD_CASES = [
    # downloads: leod download
    BadCase("download-crc-mismatch", "downloads", served_with_wrong_crc, DownloadError,
            r"crc32 mismatch for http://\S+/gen1\.tar: gen1\.tar \(\d+ bytes\) has crc32 [0-9a-f]{8}, expected"),
    BadCase("download-http-404", "downloads", served_404, DownloadError,
            r"http://\S+/no-such\.tar: HTTP 404 .*\(not retried\)"),
    BadCase("download-malformed-crc32", "downloads", bad_crc_string, ValueError,
            r"crc32 must be 8 hex digits such as 5acab6f3, got 'not-hex!'"),
    BadCase("download-half-downloaded-archive", "downloads", local_archive_case(half_downloaded), DownloadError,
            r"gen1\.tar exists but its crc32 is [0-9a-f]{8}, expected [0-9a-f]{8}"),
    BadCase("download-truncated-gzip", "downloads", local_archive_case(truncated_gzip_with_its_crc),
            ArchiveError, r"gen1\.tar: cannot extract"),
    BadCase("download-html-instead-of-tar", "downloads", local_archive_case(html_page_with_its_crc),
            ArchiveError, r"gen1\.tar: cannot extract \(ReadError"),
    BadCase("download-two-top-level-entries", "downloads", local_archive_case(two_top_level_folders),
            ArchiveError, r"gen1\.tar: expected a single top-level folder to strip"),
    BadCase("download-member-escapes-output", "downloads", local_archive_case(member_escaping_the_output),
            ArchiveError, r"gen1\.tar: cannot extract \(OutsideDestinationError"),
    BadCase("download-foreign-output-dir", "downloads", foreign_output_directory, FileExistsError,
            r"datasets/gen1 exists and is not an extraction made by leod download"),
]
