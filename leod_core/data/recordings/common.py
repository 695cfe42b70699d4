"""What the Prophesee recording formats share: the ``%`` text header, errors with byte offsets, the chunked
:class:`Recording` reader, time-base unwrapping, and the checks and header of the writers.

Header: ASCII lines that start with ``%`` (``% key value``), optionally closed by the line ``% end``; the binary
data starts at the first byte after the header. The sensor size (pixels, sensor resolution) comes from
``% Height H`` / ``% Width W`` (DAT), ``% format EVT3;height=H;width=W`` or ``% geometry WxH`` (RAW).
Decoded events are :class:`~leod_core.data.formats.RawEvents`: x, y uint16 (pixels), p int8 (0/1), t int64 (µs,
non-decreasing). Every error is a :class:`~leod_core.data.formats.FormatError` naming the file and a byte offset.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np

from leod_core.data.atomic import atomic_path
from leod_core.data.formats import FormatError, PathLike, RawEvents

log = logging.getLogger(__name__)

#: Events per chunk of :meth:`Recording.chunks` unless asked otherwise.
DEFAULT_CHUNK_EVENTS = 1 << 20
HEADER_MARK = ord("%")        # first byte of every header line
HEADER_END = "end"            # key of the line ``% end`` that closes a header
#: Longest header a reader accepts (bytes); real headers are a few hundred bytes.
MAX_HEADER_BYTES = 1 << 20
_GEOMETRY = re.compile(r"^(\d+)x(\d+)$")   # ``% geometry WxH``


def error_at(path: PathLike, offset: int, problem: str) -> FormatError:
    """A :class:`FormatError` for ``path`` naming the byte ``offset`` where ``problem`` was found."""
    return FormatError(path, f"at byte {offset}: {problem}")


@dataclass(frozen=True)
class Header:
    """The ``%`` header of a recording: ``entries`` (byte offset of the line, lower-case key, value) in file order,
    and ``data_offset``, the byte where the binary data starts."""

    entries: tuple[tuple[int, str, str], ...]
    data_offset: int

    def get(self, key: str) -> tuple[int, str] | None:
        """(offset, value) of the last line with ``key`` (lower case), or None."""
        found = [(offset, value) for offset, k, value in self.entries if k == key]
        return found[-1] if found else None


def read_header(path: PathLike) -> Header:
    """Parse the ``%`` lines at the start of ``path``; an empty file or an unterminated header line raises."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    if not head:
        raise error_at(path, 0, "the file is empty")
    entries, pos = [], 0
    while pos < len(head) and head[pos] == HEADER_MARK:
        newline = head.find(b"\n", pos)
        if newline < 0:
            raise error_at(path, pos, f"header line is not terminated by a newline within {len(head)} bytes")
        words = head[pos + 1:newline].decode("latin-1").strip().split(None, 1)
        if words:
            entries.append((pos, words[0].lower(), words[1].strip() if len(words) > 1 else ""))
        pos = newline + 1
        if words and words[0].lower() == HEADER_END:
            break
    return Header(entries=tuple(entries), data_offset=pos)


def _positive_int(path: PathLike, offset: int, key: str, text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise error_at(path, offset, f"header {key} must be a positive integer, got {text!r}")
    return int(text)


def sensor_size(path: PathLike, header: Header, sensor_hw: tuple[int, int] | None,
                max_side: int) -> tuple[int, int]:
    """(height, width) in pixels from the header (``format`` options, ``geometry``, ``height``/``width`` lines),
    else ``sensor_hw``; a side above ``max_side`` (what the format's address bits hold) raises."""
    height = width = None
    for offset, key, value in header.entries:
        if key in ("height", "width"):
            side = _positive_int(path, offset, key, value)
            height, width = (side, width) if key == "height" else (height, side)
        elif key == "geometry":
            match = _GEOMETRY.match(value)
            if not match:
                raise error_at(path, offset, f"header geometry must be WIDTHxHEIGHT, got {value!r}")
            width, height = _positive_int(path, offset, key, match[1]), _positive_int(path, offset, key, match[2])
        elif key == "format":
            for option in value.split(";")[1:]:
                name, _, text = option.partition("=")
                if name.strip().lower() in ("height", "width"):
                    side = _positive_int(path, offset, name.strip(), text.strip())
                    height, width = (side, width) if name.strip().lower() == "height" else (height, side)
    if height is None or width is None:
        if sensor_hw is None:
            raise error_at(path, 0, "the header gives no sensor size (height and width); pass sensor_hw")
        height, width = sensor_hw
    if max(height, width) > max_side:
        raise error_at(path, 0, f"sensor {height}x{width} exceeds the format's {max_side} pixels per side")
    return int(height), int(width)


def first_outside(x: np.ndarray, y: np.ndarray, height: int, width: int) -> int:
    """Index of the first event outside the ``height`` x ``width`` sensor, or -1."""
    bad = np.flatnonzero((x >= width) | (y >= height))
    return int(bad[0]) if len(bad) else -1


class Recording:
    """A recording file opened for reading: ``path``, ``format``, ``header``, ``height``, ``width`` (pixels).

    :meth:`chunks` streams the events as :class:`RawEvents` of at most ``max_events`` events each, holding only
    one chunk's words and events in memory; :meth:`read_all` concatenates them.
    """

    format: ClassVar[str]
    #: Largest sensor side the format's address bits can hold (pixels).
    max_side: ClassVar[int]
    #: Bytes of one data word (DAT: one event record).
    word_bytes: ClassVar[int]

    def __init__(self, path: PathLike, sensor_hw: tuple[int, int] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FormatError(self.path, "recording file is missing")
        self.header = read_header(self.path)
        self.data_offset = self._data_start()
        self.height, self.width = sensor_size(self.path, self.header, sensor_hw, self.max_side)
        size = self.path.stat().st_size
        tail = (size - self.data_offset) % self.word_bytes
        if tail:
            raise error_at(self.path, size - tail, f"truncated last word: {tail} of {self.word_bytes} bytes")
        self.num_words = (size - self.data_offset) // self.word_bytes

    def _data_start(self) -> int:
        """Byte where the data words start (after the header and any format preamble)."""
        return self.header.data_offset

    def chunks(self, max_events: int = DEFAULT_CHUNK_EVENTS) -> Iterator[RawEvents]:
        """Yield the events in order, in non-empty chunks of at most ``max_events`` events."""
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        raised = 0
        for x, y, p, t, n_raised in self._decode(max_events):
            raised += n_raised
            for start in range(0, len(t), max_events):
                end = start + max_events
                yield RawEvents(x=x[start:end], y=y[start:end], p=p[start:end], t=t[start:end],
                                height=self.height, width=self.width)
        if raised:
            log.warning("%s: raised %d decreasing event timestamps to the running maximum", self.path, raised)

    def read_all(self) -> RawEvents:
        """Every event of the recording in one :class:`RawEvents`."""
        parts = list(self.chunks())
        if not parts:
            empty = np.zeros(0, np.uint16)
            return RawEvents(x=empty, y=empty.copy(), p=np.zeros(0, np.int8), t=np.zeros(0, np.int64),
                             height=self.height, width=self.width)
        return RawEvents(*(np.concatenate([getattr(c, k) for c in parts]) for k in "xypt"),
                         height=self.height, width=self.width)

    def time_range_us(self) -> tuple[int, int] | None:
        """(first, last) event timestamp (µs, after the running-maximum correction), None without events: one
        decoding pass, holding one block in memory."""
        first = last = None
        for _, _, _, t, _ in self._decode(DEFAULT_CHUNK_EVENTS):
            if len(t):
                first = int(t[0]) if first is None else first
                last = int(t[-1])
        return None if first is None else (first, last)

    def _decode(self, max_events: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]:
        """Yield (x, y, p, t, timestamps raised) per block of data words; a format implements it."""
        raise NotImplementedError

    def _words(self, f, start_word: int, count: int) -> np.ndarray:
        """Data words ``start_word`` .. ``start_word + count`` (fewer at the end of the file)."""
        f.seek(self.data_offset + start_word * self.word_bytes)
        return np.fromfile(f, dtype=f"<u{self.word_bytes}", count=count)


def unwrap_time_high(raw: np.ndarray, bits: int, previous: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    """Unwrap the ``bits``-bit time-high words ``raw`` of one block: unwrapped values, and the index of the first
    word that steps backwards (-1 if none). ``previous`` is the (raw, unwrapped) last word of earlier blocks.

    Wrap rule: a word at forward distance ``(new - old) mod 2**bits`` below ``2**(bits - 1)`` moves time forward
    by that distance (across the wrap when ``new < old``); a larger distance is time going backwards.
    """
    if not len(raw):
        return raw.astype(np.int64), -1
    raw = raw.astype(np.int64)
    if previous is None:
        previous = (int(raw[0]), int(raw[0]))
    steps = np.diff(raw, prepend=previous[0]) % (1 << bits)
    backwards = np.flatnonzero(steps >= 1 << (bits - 1))
    return previous[1] + np.cumsum(steps), (int(backwards[0]) if len(backwards) else -1)


def time_high_words(high: np.ndarray, bits: int, max_step: int, written: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Time-high words a writer puts before each event, for unwrapped time-high values ``high`` (non-decreasing):
    (count per event, the ``bits``-bit raw values in file order). A word goes before the first event (unless
    ``written``, the last value already written, equals its value) and before every event whose time high
    changed, with extra words between so no step exceeds ``max_step`` (below half the wrap range, see
    :func:`unwrap_time_high`)."""
    if not len(high):
        return high, high
    start = high[0] - 1 if written is None else written
    previous = np.concatenate([[start], high[:-1]])
    counts = -(-(high - previous) // max_step)            # ceil: words needed to reach high[i] in legal steps
    group_start = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(int(counts.sum())) - group_start + 1     # 1 .. counts[i] within each event's group
    values = np.minimum(np.repeat(previous, counts) + k * max_step, np.repeat(high, counts))
    return counts, values & ((1 << bits) - 1)


def checked_events(events: RawEvents, max_side: int, max_time_us: int | None = None) -> RawEvents:
    """``events`` as x, y int64, p int64, t int64 after checking what every writer needs: equal lengths, t >= 0
    and non-decreasing (and below ``max_time_us`` if given), p in {0, 1}, events inside the sensor, sensor sides
    at most ``max_side``. Raises ValueError."""
    x, y, p, t = (np.asarray(getattr(events, k)).astype(np.int64) for k in "xypt")
    if not len(x) == len(y) == len(p) == len(t):
        raise ValueError("events x, y, p, t must have equal lengths")
    if not 0 < events.height <= max_side or not 0 < events.width <= max_side:
        raise ValueError(f"sensor {events.height}x{events.width} exceeds the format's {max_side} pixels per side")
    if len(t) and (t[0] < 0 or np.any(np.diff(t) < 0)):
        raise ValueError("event timestamps must be >= 0 and non-decreasing")
    if len(t) and max_time_us is not None and t[-1] >= max_time_us:
        raise ValueError(f"event timestamps must be below {max_time_us} µs in this format")
    if len(p) and not np.isin(p, (0, 1)).all():
        raise ValueError("polarity must be 0 or 1")
    if len(x) and (x.min() < 0 or y.min() < 0 or first_outside(x, y, events.height, events.width) >= 0):
        raise ValueError(f"events lie outside the {events.height}x{events.width} sensor")
    return RawEvents(x=x, y=y, p=p, t=t, height=events.height, width=events.width)


def write_recording_bytes(path: PathLike, header_lines: list[str], preamble: bytes, data: np.ndarray) -> None:
    """Write ``% line`` headers, ``preamble`` and the little-endian ``data`` words to ``path`` atomically."""
    text = "".join(f"% {line}\n" for line in header_lines).encode("latin-1")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(text + preamble)
        data.astype(data.dtype.newbyteorder("<")).tofile(f)
