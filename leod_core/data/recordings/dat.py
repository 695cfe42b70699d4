"""Prophesee DAT (``*_td.dat``, the original Gen1 and 1Mpx releases).

Layout: ``%`` header lines (``% Version 2``, ``% Height 240``, ``% Width 304``, optionally ``% end``), then two
bytes: event type (0x00 = CD/TD events) and event size (8), then 8-byte little-endian records::

    uint32 t       timestamp (µs), wraps at 2**32
    uint32 data    bits 0-13 x, bits 14-27 y (pixels, sensor resolution), bit 28 polarity (0/1)

A file without any header line has no type/size bytes (the oldest files; CD events of 8 bytes).
Timestamps: a drop of more than 2**31 µs is a wrap of the 32-bit counter; smaller drops are raised to the running
maximum and logged, as RVT does for its converted files.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from leod_core.data.formats import PathLike, RawEvents, raise_to_running_max
from leod_core.data.recordings.common import Recording, checked_events, error_at, first_outside, write_recording_bytes

CD_EVENT_TYPE = 0x00      # event-type byte of CD (TD) events
CD_EVENT_SIZE = 8         # bytes per CD record
RECORD_BYTES = 8
X_MASK = 0x3FFF           # data bits 0-13
Y_MASK = 0xFFFC000        # data bits 14-27
Y_SHIFT = 14
P_MASK = 0x10000000       # data bit 28
P_SHIFT = 28
MAX_SIDE = X_MASK + 1     # 14-bit addresses
T_BITS = 32
T_MASK = (1 << T_BITS) - 1
HALF_T_RANGE = 1 << (T_BITS - 1)
PREAMBLE_BYTES = 2        # event type, event size


class DatRecording(Recording):
    """Reader of a Prophesee DAT file (see the module docstring)."""

    format = "dat"
    max_side = MAX_SIDE
    word_bytes = RECORD_BYTES

    def _data_start(self) -> int:
        start = self.header.data_offset
        if not self.header.entries:   # the oldest files: no header, no type/size bytes
            return start
        with open(self.path, "rb") as f:
            f.seek(start)
            preamble = f.read(PREAMBLE_BYTES)
        if len(preamble) < PREAMBLE_BYTES:
            raise error_at(self.path, start + len(preamble), "file ends before the event type and size bytes")
        if preamble[0] != CD_EVENT_TYPE:
            raise error_at(self.path, start, f"unknown DAT event type 0x{preamble[0]:02x}, expected CD events "
                                             f"(0x{CD_EVENT_TYPE:02x})")
        if preamble[1] != CD_EVENT_SIZE:
            raise error_at(self.path, start + 1, f"DAT event size {preamble[1]}, expected {CD_EVENT_SIZE}")
        return start + PREAMBLE_BYTES

    def _decode(self, max_events: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]:
        carry_raw, loops, carry_max = None, 0, 0
        with open(self.path, "rb") as f:
            for start in range(0, self.num_words, max_events):
                records = self._words(f, start, max_events)
                raw_t = (records & T_MASK).astype(np.int64)
                data = (records >> T_BITS).astype(np.int64)
                x, y = data & X_MASK, (data & Y_MASK) >> Y_SHIFT
                bad = first_outside(x, y, self.height, self.width)
                if bad >= 0:
                    raise error_at(self.path, self.data_offset + (start + bad) * RECORD_BYTES,
                                   f"event (x={x[bad]}, y={y[bad]}) lies outside the {self.height}x{self.width} "
                                   f"sensor")
                steps = np.diff(raw_t, prepend=raw_t[0] if carry_raw is None else carry_raw)
                wraps = loops + np.cumsum(steps < -HALF_T_RANGE)
                t, carry_max, raised = raise_to_running_max(raw_t + (wraps << T_BITS), carry_max)
                carry_raw, loops = int(raw_t[-1]), int(wraps[-1])
                yield (x.astype(np.uint16), y.astype(np.uint16), ((data & P_MASK) >> P_SHIFT).astype(np.int8), t,
                       raised)


def write_dat(path: PathLike, events: RawEvents) -> None:
    """Write ``events`` to a DAT file atomically (header: version, height, width, ``% end``).

    Timestamps are stored modulo 2**32 µs; consecutive events may not be 2**31 µs or more apart.
    """
    ev = checked_events(events, MAX_SIDE)
    if len(ev.t) and np.any(np.diff(ev.t) >= HALF_T_RANGE):
        raise ValueError(f"DAT cannot store a gap of {HALF_T_RANGE} µs or more between events")
    records = (ev.t & T_MASK).astype(np.uint64) | (
        (ev.x | (ev.y << Y_SHIFT) | (ev.p << P_SHIFT)).astype(np.uint64) << np.uint64(T_BITS))
    lines = ["Data file containing CD events", "Version 2", f"Height {ev.height}", f"Width {ev.width}", "end"]
    write_recording_bytes(path, lines, bytes([CD_EVENT_TYPE, CD_EVENT_SIZE]), records)
