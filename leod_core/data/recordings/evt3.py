"""Prophesee EVT 3.0 RAW (``.raw``; header ``% evt 3.0`` or ``% format EVT3;height=H;width=W``, then ``% end``).

Data: 16-bit little-endian words, the word type in bits 12-15; the decoder keeps a state (time, y, vector base)::

    EVT_ADDR_Y 0x0      bits 0-10 y (pixels), bit 11 system type (ignored)
    EVT_ADDR_X 0x2      one event at x = bits 0-10, polarity bit 11, with the current y and time
    VECT_BASE_X 0x3     bits 0-10 base x, bit 11 polarity of the following vector words
    VECT_12 0x4         bits 0-11: event at base x + k for each set bit k; then base x += 12
    VECT_8 0x5          bits 0-7: same with 8 bits; then base x += 8
    EVT_TIME_LOW 0x6    bits 0-11: low 12 bits of the 24-bit time (µs)
    EVT_TIME_HIGH 0x8   bits 0-11: high 12 bits; sets the time to time_high << 12 (low bits 0)
    CONTINUED_4 0x7, EXT_TRIGGER 0xA, OTHERS 0xE, CONTINUED_12 0xF   skipped

EVT_TIME_HIGH wraps every 2**24 µs (16.8 s): it follows the wrap rule of
:func:`~leod_core.data.recordings.common.unwrap_time_high` (12 bits); EVT_TIME_LOW may not go back under one
EVT_TIME_HIGH. An event before any EVT_TIME_HIGH, before any EVT_ADDR_Y, or a vector before any VECT_BASE_X raises.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numba
import numpy as np

from leod_core.data.atomic import atomic_path
from leod_core.data.formats import PathLike, RawEvents
from leod_core.data.recordings.common import Recording, checked_events, error_at, time_high_words

WORD_BYTES = 2
TYPE_SHIFT = 12
EVT_ADDR_Y = 0x0
EVT_ADDR_X = 0x2
VECT_BASE_X = 0x3
VECT_12 = 0x4
VECT_8 = 0x5
EVT_TIME_LOW = 0x6
CONTINUED_4 = 0x7         # skipped
EVT_TIME_HIGH = 0x8
EXT_TRIGGER = 0xA         # skipped
OTHERS = 0xE              # skipped
CONTINUED_12 = 0xF        # skipped
ADDR_MASK = 0x7FF         # 11-bit x, y
POLARITY_SHIFT = 11       # polarity bit of EVT_ADDR_X / VECT_BASE_X
PAYLOAD_MASK = 0xFFF      # 12-bit payload: time halves, VECT_12 validity
VECT_12_BITS = 12
VECT_8_BITS = 8
MAX_EVENTS_PER_WORD = VECT_12_BITS
MAX_SIDE = ADDR_MASK + 1
TIME_HALF_BITS = 12       # EVT_TIME_LOW and EVT_TIME_HIGH each hold 12 bits of the 24-bit time
HALF_HIGH_RANGE = 1 << (TIME_HALF_BITS - 1)
HIGH_RANGE = 1 << TIME_HALF_BITS
#: The writer emits every EVT_TIME_HIGH value (one per 4096 µs), as sensors do, so decoders that detect the
#: wrap only as a 4095 -> 0 step agree with this one.
TIME_HIGH_STEP = 1
HEADER_LINES = ("evt 3.0", "format EVT3;height={height};width={width}", "geometry {width}x{height}", "end")

# decoder state (int64 array), carried from block to block; -1 = not seen yet
S_HIGH_RAW, S_HIGH, S_TIME, S_Y, S_BASE_X, S_VECT_P = range(6)
# decoder outcomes
OK, FULL, NO_TIME_HIGH, NO_ADDR_Y, NO_BASE_X, OUTSIDE, BACKWARDS, UNKNOWN_TYPE = range(8)
PROBLEMS = {NO_TIME_HIGH: "event or EVT_TIME_LOW before any EVT_TIME_HIGH word",
            NO_ADDR_Y: "event before any EVT_ADDR_Y word", NO_BASE_X: "vector word before any VECT_BASE_X word",
            OUTSIDE: "event lies outside the sensor",
            BACKWARDS: "time goes back (EVT_TIME_LOW below the previous one, or EVT_TIME_HIGH beyond the 12-bit "
                       "wrap rule)",
            UNKNOWN_TYPE: "unknown EVT3 word type"}


@numba.njit(cache=True)
def _decode_words(words, state, height, width, x, y, p, t):
    """Decode ``words`` into x, y, p, t from index 0, updating ``state``; stop before a word whose events do not
    fit. Returns (events written, words consumed, outcome): the word at index ``consumed`` caused a non-OK one."""
    n = 0
    for j in range(len(words)):
        w = np.int64(words[j])
        kind = w >> TYPE_SHIFT
        if kind == EVT_ADDR_Y:
            state[S_Y] = w & ADDR_MASK
            if state[S_Y] >= height:
                return n, j, OUTSIDE
        elif kind == EVT_ADDR_X or kind == VECT_12 or kind == VECT_8:
            if state[S_HIGH] < 0:
                return n, j, NO_TIME_HIGH
            if state[S_Y] < 0:
                return n, j, NO_ADDR_Y
            if kind == EVT_ADDR_X:
                base, valid, bits, pol = w & ADDR_MASK, 1, 1, (w >> POLARITY_SHIFT) & 1
            else:
                if state[S_BASE_X] < 0:
                    return n, j, NO_BASE_X
                bits = VECT_12_BITS if kind == VECT_12 else VECT_8_BITS
                base, valid, pol = state[S_BASE_X], w & ((1 << bits) - 1), state[S_VECT_P]
            if n + bits > len(x):
                return n, j, FULL
            for k in range(bits):
                if (valid >> k) & 1:
                    if base + k >= width:
                        return n, j, OUTSIDE
                    x[n], y[n], p[n], t[n] = base + k, state[S_Y], pol, state[S_TIME]
                    n += 1
            if kind != EVT_ADDR_X:
                state[S_BASE_X] = base + bits
        elif kind == VECT_BASE_X:
            state[S_BASE_X], state[S_VECT_P] = w & ADDR_MASK, (w >> POLARITY_SHIFT) & 1
        elif kind == EVT_TIME_LOW:
            if state[S_HIGH] < 0:
                return n, j, NO_TIME_HIGH
            low = w & PAYLOAD_MASK
            if low < state[S_TIME] & PAYLOAD_MASK:
                return n, j, BACKWARDS
            state[S_TIME] = (state[S_HIGH] << TIME_HALF_BITS) | low
        elif kind == EVT_TIME_HIGH:
            raw = w & PAYLOAD_MASK
            if state[S_HIGH] < 0:
                state[S_HIGH] = raw
            else:
                step = (raw - state[S_HIGH_RAW]) % HIGH_RANGE
                if step >= HALF_HIGH_RANGE:
                    return n, j, BACKWARDS
                state[S_HIGH] += step
            state[S_HIGH_RAW] = raw
            state[S_TIME] = state[S_HIGH] << TIME_HALF_BITS
        elif kind != CONTINUED_4 and kind != EXT_TRIGGER and kind != OTHERS and kind != CONTINUED_12:
            return n, j, UNKNOWN_TYPE
    return n, len(words), OK


class Evt3Recording(Recording):
    """Reader of a Prophesee EVT 3.0 RAW file (see the module docstring). A block decodes up to
    ``max(max_events, 12)`` events (one VECT_12 word holds 12)."""

    format = "evt3"
    max_side = MAX_SIDE
    word_bytes = WORD_BYTES

    def _decode(self, max_events: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]:
        state = np.full(6, -1, np.int64)
        capacity = max(max_events, MAX_EVENTS_PER_WORD)
        position = 0     # data words consumed
        with open(self.path, "rb") as f:
            while position < self.num_words:
                words = self._words(f, position, capacity)
                x, y = np.empty(capacity, np.uint16), np.empty(capacity, np.uint16)
                p, t = np.empty(capacity, np.int8), np.empty(capacity, np.int64)
                n, consumed, outcome = _decode_words(words, state, self.height, self.width, x, y, p, t)
                if outcome not in (OK, FULL):
                    offset = self.data_offset + (position + consumed) * WORD_BYTES
                    kind = int(words[consumed]) >> TYPE_SHIFT
                    raise error_at(self.path, offset, f"{PROBLEMS[outcome]} (word 0x{int(words[consumed]):04x}, "
                                                      f"type 0x{kind:x}, sensor {self.height}x{self.width})")
                position += consumed
                yield x[:n], y[:n], p[:n], t[:n], 0


def write_evt3(path: PathLike, events: RawEvents) -> None:
    """Write ``events`` to an EVT 3.0 RAW file atomically (:func:`write_evt3_chunks` of one chunk)."""
    write_evt3_chunks(path, [events], (events.height, events.width))


def write_evt3_chunks(path: PathLike, chunks: Iterable[RawEvents], sensor_hw: tuple[int, int]) -> None:
    """Write the events of ``chunks`` (in order; ``t`` non-decreasing across them, µs) to an EVT 3.0 RAW file of a
    ``sensor_hw`` (height, width; pixels) sensor atomically, one chunk in memory at a time, with single-event words
    only: before each event its EVT_TIME_HIGH words (every value since the previous ``t >> 12``) and
    EVT_TIME_LOW (when ``t`` changes), EVT_ADDR_Y (when ``y`` changes), then EVT_ADDR_X with the polarity."""
    height, width = sensor_hw
    header = "".join(f"% {line.format(height=height, width=width)}\n" for line in HEADER_LINES).encode("latin-1")
    last_t, last_high = 0, None
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header)
        for chunk in chunks:
            ev = checked_events(chunk, MAX_SIDE)
            if (ev.height, ev.width) != (height, width):
                raise ValueError(f"a chunk is for a {ev.height}x{ev.width} sensor, the file for {height}x{width}")
            if len(ev.t) and ev.t[0] < last_t:
                raise ValueError("event timestamps must be non-decreasing across chunks")
            _evt3_words(ev, last_high).tofile(f)
            if len(ev.t):
                last_t, last_high = int(ev.t[-1]), int(ev.t[-1] >> TIME_HALF_BITS)


def _evt3_words(ev: RawEvents, written_high: int | None) -> np.ndarray:
    """Little-endian uint16 words of checked events (see :func:`write_evt3_chunks`); ``written_high`` is the
    unwrapped time high already in the file (None at its start)."""
    n_high, high_values = time_high_words(ev.t >> TIME_HALF_BITS, TIME_HALF_BITS, TIME_HIGH_STEP, written_high)
    first = np.arange(len(ev.t)) == 0
    new_time = first | (np.diff(ev.t, prepend=-1) != 0)
    new_y = first | (np.diff(ev.y, prepend=-1) != 0)
    ends = np.cumsum(n_high + new_time + new_y + 1)
    starts = ends - (n_high + new_time + new_y + 1)
    words = np.zeros(int(ends[-1]) if len(ends) else 0, np.dtype("<u2"))
    words[ends - 1] = (EVT_ADDR_X << TYPE_SHIFT) | (ev.p << POLARITY_SHIFT) | ev.x
    words[(ends - 2)[new_y]] = (EVT_ADDR_Y << TYPE_SHIFT) | ev.y[new_y]
    words[(starts + n_high)[new_time]] = (EVT_TIME_LOW << TYPE_SHIFT) | (ev.t[new_time] & PAYLOAD_MASK)
    high_slots = np.repeat(starts, n_high) + np.arange(len(high_values)) - np.repeat(np.cumsum(n_high) - n_high,
                                                                                      n_high)
    words[high_slots] = (EVT_TIME_HIGH << TYPE_SHIFT) | high_values
    return words
