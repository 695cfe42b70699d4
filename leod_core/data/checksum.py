"""Expected checksums of downloaded files: the full CRC-32 (what RVT publishes for its dataset archives) or a
hex prefix of the MD5 (what RVT publishes for its checkpoints: 6 digits, e.g. ``md5: 840f2b`` for Gen1 RVT-S)."""
from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

#: Bytes read per chunk when hashing a file.
CHUNK_BYTES = 1 << 20
#: Shortest MD5 prefix accepted: 6 hex digits (24 bits), what RVT's README publishes per checkpoint. Against
#: accidental damage (a truncated or corrupted download) that leaves one undetected case in 16.7 million.
MIN_MD5_PREFIX = 6
_MD5_HEX_DIGITS = 32
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Checksum:
    """An expected checksum of a file.

    Attributes:
        algorithm: ``"crc32"`` (``hex`` is all 8 digits) or ``"md5"`` (``hex`` is a prefix of the 32-digit
            digest, at least :data:`MIN_MD5_PREFIX` digits).
        hex: lower-case hex digits, without ``0x``.
    """

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        if self.algorithm == "crc32":
            if len(self.hex) != 8 or not _HEX.fullmatch(self.hex):
                raise ValueError(f"crc32 must be 8 hex digits such as 5acab6f3, got {self.hex!r}")
        elif self.algorithm == "md5":
            if not (MIN_MD5_PREFIX <= len(self.hex) <= _MD5_HEX_DIGITS) or not _HEX.fullmatch(self.hex):
                raise ValueError(f"md5 must be {MIN_MD5_PREFIX} to {_MD5_HEX_DIGITS} hex digits (a prefix of the "
                                 f"digest is fine), got {self.hex!r}")
        else:
            raise ValueError(f"unknown checksum algorithm {self.algorithm!r}, expected crc32 or md5")

    @classmethod
    def parse(cls, algorithm: str, text: str) -> "Checksum":
        """``Checksum.parse("crc32", "0x5ACAB6F3")``: case-insensitive, optional ``0x``."""
        return cls(algorithm, str(text).strip().lower().removeprefix("0x"))

    def digest(self, path: Path, chunk_bytes: int = CHUNK_BYTES) -> str:
        """The file's full digest in this algorithm (hex, lower case)."""
        crc, md5 = 0, hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while chunk := f.read(chunk_bytes):
                if self.algorithm == "crc32":
                    crc = zlib.crc32(chunk, crc)
                else:
                    md5.update(chunk)
        return f"{crc:08x}" if self.algorithm == "crc32" else md5.hexdigest()

    def matches(self, digest: str) -> bool:
        """Whether a full digest (:meth:`digest`) agrees with this one (a prefix for MD5)."""
        return digest.startswith(self.hex)

    def __str__(self) -> str:
        return f"{self.algorithm} {self.hex}"
