"""Corrupt and truncated recordings: each raises FormatError naming the file and the byte offset of the fault."""
from __future__ import annotations

import numpy as np
import pytest

from leod_core.data.formats import FormatError
from leod_core.data.recordings import open_recording, read_recording
from leod_core.data.recordings import evt2, evt3

EVT2_HEADER = "% evt 2.0\n% geometry 48x32\n% end\n"
EVT3_HEADER = "% format EVT3;height=32;width=48\n% end\n"
DAT_HEADER = "% Version 2\n% Height 32\n% Width 48\n"


def _w2(kind, payload):
    return (kind << evt2.TYPE_SHIFT) | payload


def _cd2(kind, lsb, x, y):
    return _w2(kind, (lsb << evt2.T_LSB_SHIFT) | (x << evt2.X_SHIFT) | y)


def _w3(kind, payload):
    return (kind << evt3.TYPE_SHIFT) | payload


def _dat_record(t, x, y, p):
    return np.array([(t, x | (y << 14) | (p << 28))], [("t", "<u4"), ("d", "<u4")]).tobytes()


GOOD3 = [_w3(evt3.EVT_TIME_HIGH, 2), _w3(evt3.EVT_TIME_LOW, 7), _w3(evt3.EVT_ADDR_Y, 3)]

CASES = {
    # name: (file name, header, binary data, byte offset of the fault counted in the data (None: absolute 0))
    "empty file": ("empty.dat", "", b"", None),
    "truncated EVT2 word": ("trunc.raw", EVT2_HEADER,
                            np.array([_w2(evt2.EV_TIME_HIGH, 1), _cd2(1, 0, 1, 1)], "<u4").tobytes() + b"\x01\x02",
                            8),
    "truncated DAT record": ("trunc_td.dat", DAT_HEADER, bytes([0, 8]) + _dat_record(5, 1, 1, 1) + b"\x00" * 5, 10),
    "EVT2 event before any time high": ("nohigh.raw", EVT2_HEADER,
                                        np.array([_w2(evt2.OTHERS, 0), _cd2(0, 3, 1, 1)], "<u4").tobytes(), 4),
    "EVT2 time high goes back": ("back2.raw", EVT2_HEADER,
                                 np.array([_w2(evt2.EV_TIME_HIGH, 50), _cd2(0, 3, 1, 1),
                                           _w2(evt2.EV_TIME_HIGH, 49)], "<u4").tobytes(), 8),
    "EVT2 unknown word type": ("type2.raw", EVT2_HEADER,
                               np.array([_w2(evt2.EV_TIME_HIGH, 1), _w2(0x3, 0)], "<u4").tobytes(), 4),
    "EVT2 x outside the sensor": ("out2.raw", EVT2_HEADER,
                                  np.array([_w2(evt2.EV_TIME_HIGH, 1), _cd2(1, 0, 5, 5), _cd2(1, 0, 48, 5)],
                                           "<u4").tobytes(), 8),
    "EVT3 event before any time high": ("nohigh3.raw", EVT3_HEADER,
                                        np.array([_w3(evt3.EVT_ADDR_Y, 1), _w3(evt3.EVT_ADDR_X, 1)], "<u2").tobytes(),
                                        2),
    "EVT3 event before any y": ("noy.raw", EVT3_HEADER,
                                np.array([_w3(evt3.EVT_TIME_HIGH, 1), _w3(evt3.EVT_ADDR_X, 1)], "<u2").tobytes(), 2),
    "EVT3 vector before any base x": ("nobase.raw", EVT3_HEADER,
                                      np.array(GOOD3 + [_w3(evt3.VECT_12, 1)], "<u2").tobytes(), 6),
    "EVT3 time low goes back": ("back3.raw", EVT3_HEADER,
                                np.array(GOOD3 + [_w3(evt3.EVT_ADDR_X, 1), _w3(evt3.EVT_TIME_LOW, 6)],
                                         "<u2").tobytes(), 8),
    "EVT3 time high goes back": ("backhigh3.raw", EVT3_HEADER,
                                 np.array(GOOD3 + [_w3(evt3.EVT_TIME_HIGH, 1)], "<u2").tobytes(), 6),
    "EVT3 vector x outside the sensor": ("out3.raw", EVT3_HEADER,
                                         np.array(GOOD3 + [_w3(evt3.VECT_BASE_X, 40), _w3(evt3.VECT_12, 1 << 9)],
                                                  "<u2").tobytes(), 8),
    "EVT3 y outside the sensor": ("outy3.raw", EVT3_HEADER,
                                  np.array([_w3(evt3.EVT_TIME_HIGH, 1), _w3(evt3.EVT_ADDR_Y, 32)], "<u2").tobytes(),
                                  2),
    "EVT3 unknown word type": ("type3.raw", EVT3_HEADER,
                               np.array(GOOD3 + [_w3(0x1, 0)], "<u2").tobytes(), 6),
    "DAT unknown event type": ("type_td.dat", DAT_HEADER, bytes([0x0C, 8]) + _dat_record(5, 1, 1, 1), 0),
    "DAT wrong event size": ("size_td.dat", DAT_HEADER, bytes([0, 16]) + _dat_record(5, 1, 1, 1), 1),
    "DAT y outside the sensor": ("out_td.dat", DAT_HEADER,
                                 bytes([0, 8]) + _dat_record(5, 1, 1, 1) + _dat_record(6, 1, 32, 0), 10),
    "DAT no type/size bytes": ("short_td.dat", DAT_HEADER, b"\x00", 1),
}


@pytest.mark.parametrize("name", CASES)
def test_corrupt_recording_names_the_file_and_byte_offset(tmp_path, name):
    file_name, header, data, offset = CASES[name]
    path = tmp_path / file_name
    path.write_bytes(header.encode() + data)
    expected = 0 if offset is None else len(header.encode()) + offset
    with pytest.raises(FormatError) as err:
        read_recording(path)
    message = str(err.value)
    assert str(path) in message and f"at byte {expected}:" in message, message


@pytest.mark.parametrize("header, line, problem", [
    ("% evt 3.0\n% format EVT3;height=abc;width=48\n% end\n", 10, "must be a positive integer"),
    ("% evt 3.0\n% geometry 48by32\n% end\n", 10, "WIDTHxHEIGHT"),
    ("% evt 2.1\n% end\n", 0, "EVT version '2.1' is not supported"),
    ("% format EVT21;height=32;width=48\n% end\n", 0, "is not supported"),
    ("% evt 3.0\n% end\n", 0, "no sensor size"),
    ("% evt 3.0\n% geometry 4096x32\n% end\n", 0, "exceeds the format's 2048 pixels"),
])
def test_bad_headers_name_the_file_and_the_line(tmp_path, header, line, problem):
    path = tmp_path / "bad_header.raw"
    path.write_bytes(header.encode())
    with pytest.raises(FormatError, match=problem) as err:
        open_recording(path)
    assert str(path) in str(err.value) and f"at byte {line}:" in str(err.value)


def test_unterminated_header_line(tmp_path):
    path = tmp_path / "cut.raw"
    path.write_bytes(b"% evt 3.0\n% geometry 48x3")
    with pytest.raises(FormatError, match="not terminated") as err:
        open_recording(path)
    assert str(path) in str(err.value) and "at byte 10:" in str(err.value)


def test_a_header_size_serves_when_given_and_sensor_hw_otherwise(tmp_path):
    path = tmp_path / "nosize.raw"
    path.write_bytes(b"% evt 3.0\n% end\n" + np.array(GOOD3 + [_w3(evt3.EVT_ADDR_X, 4)], "<u2").tobytes())
    events = read_recording(path, sensor_hw=(32, 48))
    assert (events.height, events.width) == (32, 48) and events.t.tolist() == [2 * 4096 + 7]
