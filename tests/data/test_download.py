"""Downloads against a local HTTP server (Range requests, cut connections, 503s, corrupted bytes) and the
atomic extraction of a small archive in RVT's preprocessed Gen1 layout (``gen1/{train,val,test}/{seq}``)."""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from builders import write_sequence
from leod_core.cli import main as leod
from leod_core.data.checksum import Checksum
from leod_core.data.download import (SUMMARY_NAME, ArchiveError, DownloadConfig, DownloadError, download,
                                     download_dataset, extract_archive)
from leod_core.data.formats import SPLITS
from leod_core.data.sequence import SequenceReader

FAST = DownloadConfig(retries=3, backoff_s=0.0, chunk_bytes=4096, timeout_s=5.0)
SEQ_HW = (16, 24)


# ------------------------------------------------------------------------------------------ the server
@dataclasses.dataclass
class Served:
    """What one request got: its Range header, the status, and the body bytes actually sent."""
    range: str | None
    status: int
    sent: int


@dataclasses.dataclass
class ServerState:
    data: bytes
    cut_first_after: int | None = None   # first request: close the connection after this many body bytes
    fail_503: int = 0                    # answer this many requests with 503 first
    corrupt: bool = False                # serve the data with one byte flipped
    ignore_range: bool = False           # answer Range requests with 200 and the whole file
    log: list[Served] = dataclasses.field(default_factory=list)

    def body(self) -> bytes:
        if not self.corrupt:
            return self.data
        mid = len(self.data) // 2
        return self.data[:mid] + bytes([self.data[mid] ^ 0xFF]) + self.data[mid + 1:]


class Handler(BaseHTTPRequestHandler):
    server: "Server"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state = self.server.state
        range_header = self.headers.get("Range")
        if self.path != "/archive.tar":
            state.log.append(Served(range_header, 404, 0))
            self.send_error(404)
            return
        if state.fail_503:
            state.fail_503 -= 1
            state.log.append(Served(range_header, 503, 0))
            self.send_error(503)
            return
        body = state.body()
        start, status = 0, 200
        if range_header and not state.ignore_range:
            start, status = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1)), 206
            if start >= len(body):
                state.log.append(Served(range_header, 416, 0))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        cut = state.cut_first_after is not None and not state.log
        if cut:
            payload = payload[:state.cut_first_after]
        state.log.append(Served(range_header, status, len(payload)))   # before the client can see the response
        self.wfile.write(payload)
        if cut:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # keep pytest output clean
        return


class Server(ThreadingHTTPServer):
    state: ServerState


@dataclasses.dataclass
class Archive:
    path: Path
    data: bytes
    crc32: str
    sequences: dict[str, list[str]]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Archive:
    """A tar in RVT's preprocessed Gen1 layout: top-level ``gen1/`` with ``train/ val/ test/``."""
    base = tmp_path_factory.mktemp("gen1_archive")
    sequences = {"train": ["seq_a", "seq_b"], "val": ["seq_c"], "test": ["seq_d"]}
    seed = 0
    for split, names in sequences.items():
        for name in names:
            write_sequence(base / "gen1" / split / name, num_reprs=6, labeled=[2, 4], seed=seed, hw=SEQ_HW)
            seed += 1
    path = base / "gen1.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(base / "gen1", arcname="gen1")
    data = path.read_bytes()
    return Archive(path, data, f"{zlib.crc32(data):08x}", sequences)


@pytest.fixture
def server(archive) -> Iterator[Server]:
    srv = Server(("127.0.0.1", 0), Handler)
    srv.state = ServerState(archive.data)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def url_of(srv: Server, name: str = "archive.tar") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{name}"


def leftovers(directory: Path) -> list[str]:
    """Temporary / partial files a finished download or extraction must not leave behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".part")


# --------------------------------------------------------------------------------------------- download
def test_interrupted_transfer_resumes_without_fetching_bytes_again(server, archive, tmp_path):
    cut = len(archive.data) // 3
    server.state.cut_first_after = cut
    dest = download(url_of(server), tmp_path / "gen1.tar", archive.crc32, FAST, progress=False)
    assert dest.read_bytes() == archive.data
    log = server.state.log
    assert [(s.range, s.status, s.sent) for s in log] == [(None, 200, cut),
                                                          (f"bytes={cut}-", 206, len(archive.data) - cut)]
    assert sum(s.sent for s in log) == len(archive.data)
    assert leftovers(tmp_path) == []


def test_a_503_is_retried(server, archive, tmp_path):
    server.state.fail_503 = 1
    dest = download(url_of(server), tmp_path / "gen1.tar", archive.crc32, FAST, progress=False)
    assert dest.read_bytes() == archive.data
    assert [s.status for s in server.state.log] == [503, 200]


def test_persistent_503_gives_up_after_the_configured_retries(server, archive, tmp_path):
    server.state.fail_503 = 10
    with pytest.raises(DownloadError, match="giving up after 3 failed attempts"):
        download(url_of(server), tmp_path / "gen1.tar", archive.crc32, dataclasses.replace(FAST, retries=2),
                 progress=False)
    assert len(server.state.log) == 3
    assert not (tmp_path / "gen1.tar").exists()


def test_a_404_is_not_retried(server, archive, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(url_of(server, "missing.tar"), tmp_path / "gen1.tar", archive.crc32, FAST, progress=False)
    assert len(server.state.log) == 1


def test_a_corrupted_archive_is_an_error_and_nothing_looks_done(server, archive, tmp_path):
    server.state.corrupt = True
    url, dest, out = url_of(server), tmp_path / "gen1.tar", tmp_path / "gen1"
    with pytest.raises(DownloadError) as info:
        download_dataset(url, dest, archive.crc32, out, FAST, progress=False)
    actual = f"{zlib.crc32(server.state.body()):08x}"
    message = str(info.value)
    for part in (url, "gen1.tar", archive.crc32, actual, "gen1.tar.corrupt"):
        assert part in message
    assert not dest.exists() and not out.exists()
    assert (tmp_path / "gen1.tar.corrupt").exists()
    assert leftovers(tmp_path) == []
    # the next attempt starts afresh (no Range request resuming the bad bytes) and succeeds
    server.state.corrupt = False
    server.state.log.clear()
    download_dataset(url, dest, archive.crc32, out, FAST, progress=False)
    assert [s.range for s in server.state.log] == [None]
    assert dest.read_bytes() == archive.data and (out / SUMMARY_NAME).is_file()


def test_a_server_answering_200_to_a_range_request_still_gives_the_right_file(server, archive, tmp_path, caplog):
    dest = tmp_path / "gen1.tar"
    (tmp_path / "gen1.tar.part").write_bytes(b"\x00" * 1000)   # bytes that must not survive the restart
    server.state.ignore_range = True
    download(url_of(server), dest, archive.crc32, FAST, progress=False)
    assert dest.read_bytes() == archive.data
    assert [(s.range, s.status) for s in server.state.log] == [("bytes=1000-", 200)]
    assert "ignored the Range request" in caplog.text


def test_a_complete_part_file_is_finished_after_a_416(server, archive, tmp_path):
    (tmp_path / "gen1.tar.part").write_bytes(archive.data)
    dest = download(url_of(server), tmp_path / "gen1.tar", archive.crc32, FAST, progress=False)
    assert dest.read_bytes() == archive.data
    assert [(s.range, s.status) for s in server.state.log] == [(f"bytes={len(archive.data)}-", 416)]


def test_an_existing_download_is_kept_and_a_foreign_file_is_never_overwritten(server, archive, tmp_path):
    dest = tmp_path / "gen1.tar"
    dest.write_bytes(archive.data)
    download(url_of(server), dest, archive.crc32, FAST, progress=False)
    assert server.state.log == []
    dest.write_bytes(b"user data")
    with pytest.raises(DownloadError, match="is not replaced"):
        download(url_of(server), dest, archive.crc32, FAST, progress=False)
    assert dest.read_bytes() == b"user data" and server.state.log == []


def test_a_second_download_to_the_same_file_is_refused_while_one_runs(server, archive, tmp_path):
    with open(tmp_path / "gen1.tar.part", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DownloadError, match="another process is downloading"):
            download(url_of(server), tmp_path / "gen1.tar", archive.crc32, FAST, progress=False)
    assert server.state.log == []


def test_a_bad_crc32_string_is_rejected(server, archive, tmp_path):
    with pytest.raises(ValueError, match="8 hex digits"):
        download(url_of(server), tmp_path / "gen1.tar", "xyz", FAST, progress=False)


def test_an_md5_prefix_is_checked_like_a_crc32(server, archive, tmp_path):
    """RVT publishes 6-digit MD5 prefixes of its checkpoints: a prefix of >= 6 digits (any case) is accepted, a
    wrong one moves the file aside, a shorter one is refused before anything is fetched."""
    md5 = hashlib.md5(archive.data).hexdigest()
    with pytest.raises(DownloadError, match=f"md5 mismatch .* expected 00000000"):
        download(url_of(server), tmp_path / "w.ckpt", Checksum.parse("md5", "00000000"), FAST, progress=False)
    assert (tmp_path / "w.ckpt.corrupt").read_bytes() == archive.data and not (tmp_path / "w.ckpt").exists()
    fetched = len(server.state.log)
    dest = download(url_of(server), tmp_path / "w.ckpt", Checksum.parse("md5", md5[:10].upper()), FAST,
                    progress=False)
    assert dest.read_bytes() == archive.data and len(server.state.log) == fetched + 1
    with pytest.raises(ValueError, match="6 to 32 hex digits"):
        download(url_of(server), tmp_path / "x.ckpt", Checksum.parse("md5", md5[:5]), FAST, progress=False)
    assert len(server.state.log) == fetched + 1


# -------------------------------------------------------------------------------------------- extraction
def test_extraction_gives_readable_train_val_test_and_a_summary(server, archive, tmp_path):
    out = tmp_path / "data" / "gen1"
    summary = download_dataset(url_of(server), tmp_path / "gen1.tar", archive.crc32, out, FAST, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([*SPLITS, SUMMARY_NAME])
    for split, names in archive.sequences.items():
        assert sorted(p.name for p in (out / split).iterdir()) == names
        for name in names:
            reader = SequenceReader(out / split / name)
            assert reader.num_reprs == 6 and reader.frame_hw == SEQ_HW and reader.num_frames == 2
    written = json.loads((out / SUMMARY_NAME).read_text())
    assert written == summary
    assert (written["url"], written["crc32"], written["archive_bytes"]) == (url_of(server), archive.crc32,
                                                                            len(archive.data))
    assert written["stripped_top_level"] == "gen1"
    assert leftovers(tmp_path / "data") == []
    # done already: nothing fetched or rewritten, even with the archive deleted to save space
    stamp = (out / SUMMARY_NAME).stat().st_mtime_ns
    (tmp_path / "gen1.tar").unlink()
    assert download_dataset(url_of(server), tmp_path / "gen1.tar", archive.crc32, out, FAST, progress=False) == summary
    assert len(server.state.log) == 1 and (out / SUMMARY_NAME).stat().st_mtime_ns == stamp


def test_extraction_never_replaces_a_directory_it_did_not_make(archive, tmp_path):
    out = tmp_path / "gen1"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="never replaced"):
        extract_archive(archive.path, out, strip_single_top_level=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert leftovers(tmp_path) == []


def test_an_earlier_extraction_or_an_empty_directory_is_replaced(archive, tmp_path):
    out = tmp_path / "gen1"
    out.mkdir()
    extract_archive(archive.path, out, strip_single_top_level=True)
    (out / "train" / "stale").mkdir()
    extract_archive(archive.path, out, strip_single_top_level=True)
    assert not (out / "train" / "stale").exists()
    assert leftovers(tmp_path) == []


def test_keep_top_level_and_tar_gz(archive, tmp_path):
    gz = tmp_path / "gen1.tar.gz"
    with tarfile.open(archive.path) as src, tarfile.open(gz, "w:gz") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    summary = extract_archive(gz, tmp_path / "out")
    assert (tmp_path / "out" / "gen1" / "train" / "seq_a").is_dir()
    assert summary["stripped_top_level"] is None and summary["members"] > 0


def test_unsafe_or_ambiguous_archives_are_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(ArchiveError, match="evil.tar"):
        extract_archive(evil, tmp_path / "out")
    two = tmp_path / "two.tar"
    with tarfile.open(two, "w") as tar:
        for name in ("train", "val"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
    with pytest.raises(ArchiveError, match="single top-level folder"):
        extract_archive(two, tmp_path / "out", strip_single_top_level=True)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------- CLI
def test_leod_download_end_to_end(server, archive, tmp_path, caplog):
    base = ["--no-progress", "download", "--url", url_of(server), "--archive", str(tmp_path / "gen1.tar"),
            "--retries", "2", "--timeout-s", "5"]
    assert leod([*base, "--crc32", "00000000", "--out", str(tmp_path / "gen1")]) == 1
    assert "crc32 mismatch" in caplog.text and not (tmp_path / "gen1").exists()
    (tmp_path / "gen1.tar.corrupt").unlink()
    assert leod([*base, "--crc32", archive.crc32, "--out", str(tmp_path / "gen1")]) == 0
    for split in SPLITS:
        assert (tmp_path / "gen1" / split).is_dir()
    assert json.loads((tmp_path / "gen1" / SUMMARY_NAME).read_text())["crc32"] == archive.crc32
    assert leod(["--no-progress", "download", "--url", url_of(server), "--archive", str(tmp_path / "w.ckpt"),
                 "--md5", hashlib.md5(archive.data).hexdigest()[:6]]) == 0
    assert (tmp_path / "w.ckpt").read_bytes() == archive.data
