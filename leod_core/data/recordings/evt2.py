"""Prophesee EVT 2.0 RAW (``.raw``; header ``% evt 2.0`` or ``% format EVT2;height=H;width=W``, then ``% end``).

Data: 32-bit little-endian words, the word type in bits 28-31::

    CD_OFF 0x0 / CD_ON 0x1   bits 22-27 timestamp LSB (6 bits), bits 11-21 x, bits 0-10 y (pixels)
    EV_TIME_HIGH 0x8         bits 0-27 timestamp MSB: t = (time_high << 6) | t_lsb  (µs, 34 bits)
    EXT_TRIGGER 0xA, OTHERS 0xE, CONTINUED 0xF   skipped (no CD events)

Polarity is the CD word type (0 off, 1 on). A CD word before any EV_TIME_HIGH raises; EV_TIME_HIGH follows the
wrap rule of :func:`~leod_core.data.recordings.common.unwrap_time_high` (28 bits); per-event timestamps that step
back inside one time-high period are raised to the running maximum and logged.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from leod_core.data.formats import PathLike, RawEvents, raise_to_running_max
from leod_core.data.recordings.common import (Recording, checked_events, error_at, first_outside, time_high_words,
                                              unwrap_time_high, write_recording_bytes)

WORD_BYTES = 4
TYPE_SHIFT = 28
CD_OFF = 0x0              # CD event, polarity 0
CD_ON = 0x1               # CD event, polarity 1
EV_TIME_HIGH = 0x8        # timestamp MSBs
EXT_TRIGGER = 0xA         # external trigger (skipped)
OTHERS = 0xE              # extensions (skipped)
CONTINUED = 0xF           # extra data of the previous word (skipped)
KNOWN_TYPES = (CD_OFF, CD_ON, EV_TIME_HIGH, EXT_TRIGGER, OTHERS, CONTINUED)
T_LSB_BITS = 6
T_LSB_SHIFT = 22
T_LSB_MASK = (1 << T_LSB_BITS) - 1
X_SHIFT = 11
ADDR_MASK = 0x7FF         # 11-bit x and y
MAX_SIDE = ADDR_MASK + 1
TIME_HIGH_BITS = 28
TIME_HIGH_MASK = (1 << TIME_HIGH_BITS) - 1
#: Largest step between EV_TIME_HIGH words the writer makes: just below half the wrap range.
MAX_TIME_HIGH_STEP = (1 << (TIME_HIGH_BITS - 1)) - 1
HEADER_LINES = ("evt 2.0", "format EVT2;height={height};width={width}", "geometry {width}x{height}", "end")


class Evt2Recording(Recording):
    """Reader of a Prophesee EVT 2.0 RAW file (see the module docstring)."""

    format = "evt2"
    max_side = MAX_SIDE
    word_bytes = WORD_BYTES

    def _decode(self, max_events: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]:
        previous, carry_max = None, 0      # (raw, unwrapped) last EV_TIME_HIGH; running maximum of t
        with open(self.path, "rb") as f:
            for start in range(0, self.num_words, max_events):
                words = self._words(f, start, max_events).astype(np.int64)
                kinds = words >> TYPE_SHIFT
                offset = self.data_offset + start * WORD_BYTES     # byte of words[0]
                unknown = np.flatnonzero(~np.isin(kinds, KNOWN_TYPES))
                if len(unknown):
                    i = int(unknown[0])
                    raise error_at(self.path, offset + i * WORD_BYTES, f"unknown EVT2 word type 0x{kinds[i]:x}")
                is_high = kinds == EV_TIME_HIGH
                high_at = np.flatnonzero(is_high)
                highs, back = unwrap_time_high(words[high_at] & TIME_HIGH_MASK, TIME_HIGH_BITS, previous)
                if back >= 0:
                    raise error_at(self.path, offset + int(high_at[back]) * WORD_BYTES,
                                   "EV_TIME_HIGH goes back in time (beyond the 28-bit wrap rule)")
                cd_at = np.flatnonzero(kinds <= CD_ON)
                # index, among this block's EV_TIME_HIGH words, of the last one before each CD word (-1: earlier)
                last_high = np.searchsorted(high_at, cd_at) - 1
                if len(cd_at) and last_high[0] < 0 and previous is None:
                    raise error_at(self.path, offset + int(cd_at[0]) * WORD_BYTES,
                                   "CD event before any EV_TIME_HIGH word")
                carried = previous[1] if previous is not None else 0
                high_of_cd = np.where(last_high >= 0, highs[np.maximum(last_high, 0)] if len(highs) else 0, carried)
                cd = words[cd_at]
                x, y = (cd >> X_SHIFT) & ADDR_MASK, cd & ADDR_MASK
                bad = first_outside(x, y, self.height, self.width)
                if bad >= 0:
                    raise error_at(self.path, offset + int(cd_at[bad]) * WORD_BYTES,
                                   f"event (x={x[bad]}, y={y[bad]}) lies outside the {self.height}x{self.width} "
                                   f"sensor")
                raw_t = (high_of_cd << T_LSB_BITS) | ((cd >> T_LSB_SHIFT) & T_LSB_MASK)
                t, carry_max, raised = raise_to_running_max(raw_t, carry_max)
                if len(high_at):
                    previous = (int(words[high_at[-1]] & TIME_HIGH_MASK), int(highs[-1]))
                yield x.astype(np.uint16), y.astype(np.uint16), kinds[cd_at].astype(np.int8), t, raised


def write_evt2(path: PathLike, events: RawEvents) -> None:
    """Write ``events`` to an EVT 2.0 RAW file atomically: an EV_TIME_HIGH word whenever ``t >> 6`` changes
    (across a gap, in steps of at most :data:`MAX_TIME_HIGH_STEP`), then one CD_OFF/CD_ON word per event."""
    ev = checked_events(events, MAX_SIDE)
    counts, high_values = time_high_words(ev.t >> T_LSB_BITS, TIME_HIGH_BITS, MAX_TIME_HIGH_STEP)
    ends = np.cumsum(counts + 1)                       # each event: its EV_TIME_HIGH words, then its CD word
    words = np.zeros(int(ends[-1]) if len(ends) else 0, np.uint32)
    cd_words = (ev.p << TYPE_SHIFT) | ((ev.t & T_LSB_MASK) << T_LSB_SHIFT) | (ev.x << X_SHIFT) | ev.y
    words[ends - 1] = cd_words
    is_high = np.ones(len(words), bool)
    is_high[ends - 1] = False
    words[is_high] = (EV_TIME_HIGH << TYPE_SHIFT) | high_values
    write_recording_bytes(path, [line.format(height=ev.height, width=ev.width) for line in HEADER_LINES], b"",
                          words)
