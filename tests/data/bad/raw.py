"""Bad raw inputs (``{seq}_td.dat.h5`` events and ``{seq}_bbox.npy`` boxes), each run through ``leod preprocess``."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import numpy.lib.recfunctions as rfn

from leod_core.data.formats import FormatError, raw_paths

from .common import (SENSOR_HW, TRAIN_SEQ, BadCase, Call, Pristine, preprocess_call, replace_h5, resave_npy,
                     set_first, truncate)


def raw_copy(work: Path, pristine: Pristine) -> tuple[Path, Path, Path]:
    """(raw root, events file, boxes file) of a copy of the pristine raw dataset (the train sequence)."""
    raw = work / "raw"
    shutil.copytree(pristine.raw, raw)
    events, boxes = raw_paths(raw / "train", TRAIN_SEQ)
    return raw, events, boxes


def raw_case(damage: Callable[[Path, Path, Path], None]) -> Callable[[Path, Pristine], Call]:
    """``leod preprocess`` of a copy of the pristine raw dataset damaged by ``damage(raw root, events, boxes)``."""
    def build(work: Path, pristine: Pristine) -> Call:
        raw, events, boxes = raw_copy(work, pristine)
        damage(raw, events, boxes)
        return preprocess_call(work, raw)
    return build


# -------------------------------------------------------------------------------------------- raw events
def raw_events_case(damage: Callable[[Path], None]) -> Callable[[Path, Pristine], Call]:
    return raw_case(lambda raw, events, boxes: damage(events))


def rewrite_events(path: Path, **changes: np.ndarray | None) -> None:
    """Rewrite group ``events`` of a raw file with datasets replaced (an array) or removed (``None``)."""
    with h5py.File(path, "r") as h5:
        arrays = {key: h5["events"][key][()] for key in h5["events"]}
    arrays.update(changes)
    replace_h5(path, {f"events/{key}": value for key, value in arrays.items() if value is not None})


def events_field(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        return h5["events"][key][()]


def events_without_group(path: Path) -> None:
    replace_h5(path, {"x": np.zeros(3, np.uint16)})


def events_unequal_lengths(path: Path) -> None:
    rewrite_events(path, t=events_field(path, "t")[:-1])


def events_float_timestamps(path: Path) -> None:
    rewrite_events(path, t=events_field(path, "t").astype(np.float64))


def events_negative_first_timestamp(path: Path) -> None:
    t = events_field(path, "t").astype(np.int64)
    t[0] = -1
    rewrite_events(path, t=t)


def events_outside_sensor(path: Path) -> None:
    x = events_field(path, "x")
    x[len(x) // 2] = SENSOR_HW[1]
    rewrite_events(path, x=x)


def events_bad_polarity(path: Path) -> None:
    p = events_field(path, "p")
    p[0] = 2
    rewrite_events(path, p=p)


def events_non_scalar_height(path: Path) -> None:
    rewrite_events(path, height=np.array([SENSOR_HW[0], SENSOR_HW[0]]))


def remove_events(path: Path) -> None:
    path.unlink()


def remove_val_split(raw: Path, events: Path, boxes: Path) -> None:
    shutil.rmtree(raw / "val")


# --------------------------------------------------------------------------------------------- raw boxes
def raw_boxes_case(damage: Callable[[Path], None]) -> Callable[[Path, Pristine], Call]:
    return raw_case(lambda raw, events, boxes: damage(boxes))


def edit_boxes(edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """Damage a ``*_bbox.npy`` by ``edit`` (which gets the valid boxes), saved with ``np.save``."""
    return lambda path: resave_npy(path, edit)


def reverse_rows(rows: np.ndarray) -> np.ndarray:
    assert rows["t"][0] < rows["t"][-1], "the pristine boxes span more than one timestamp"
    return rows[::-1]


def boxes_as_plain_floats(rows: np.ndarray) -> np.ndarray:
    return np.stack([rows[k].astype(np.float64) for k in ("t", "x", "y", "w", "h")], axis=-1)


def boxes_as_column(rows: np.ndarray) -> np.ndarray:
    return rows[:, None]


def boxes_with_float_timestamps(rows: np.ndarray) -> np.ndarray:
    fields = [(name, np.float64 if name == "t" else rows.dtype[name]) for name in rows.dtype.names]
    out = np.zeros(rows.shape, dtype=fields)
    for name in rows.dtype.names:
        out[name] = rows[name]
    return out


def boxes_without_class_id(rows: np.ndarray) -> np.ndarray:
    names = [name for name in rows.dtype.names if name != "class_id"]
    return rfn.repack_fields(rows[names])


def pickle_boxes(path: Path) -> None:
    resave_npy(path, lambda boxes: np.array([boxes, "extra"], dtype=object), allow_pickle=True)


# -------------------------------------------------------------------------------------------------- cases
_EV, _BX = r"synth_train_000_td\.dat\.h5", r"synth_train_000_bbox\.npy"

RAW_CASES = [
    # raw events: leod preprocess
    BadCase("raw-events-truncated", "raw events", raw_events_case(truncate), FormatError,
            _EV + r": not a readable HDF5 file"),
    BadCase("raw-events-empty-file", "raw events", raw_events_case(lambda p: p.write_bytes(b"")), FormatError,
            _EV + r": not a readable HDF5 file"),
    BadCase("raw-events-no-events-group", "raw events", raw_events_case(events_without_group), FormatError,
            _EV + r": has no group 'events'"),
    BadCase("raw-events-missing-t", "raw events", raw_events_case(lambda p: rewrite_events(p, t=None)),
            FormatError, _EV + r": group 'events' lacks datasets \['t'\]"),
    BadCase("raw-events-unequal-lengths", "raw events", raw_events_case(events_unequal_lengths), FormatError,
            _EV + r": events x, y, p, t must be 1-D arrays of equal length"),
    BadCase("raw-events-float-timestamps", "raw events", raw_events_case(events_float_timestamps),
            FormatError, _EV + r": events x, y, p, t must be integers"),
    BadCase("raw-events-negative-timestamp", "raw events", raw_events_case(events_negative_first_timestamp),
            FormatError, _EV + r": first event timestamp is negative"),
    BadCase("raw-events-outside-sensor", "raw events", raw_events_case(events_outside_sensor), FormatError,
            _EV + r": events lie outside the 64x96 sensor"),
    BadCase("raw-events-polarity-2", "raw events", raw_events_case(events_bad_polarity), FormatError,
            _EV + r": polarity must be 0/1"),
    BadCase("raw-events-non-scalar-height", "raw events", raw_events_case(events_non_scalar_height),
            FormatError, _EV + r": events/height must be a positive integer scalar"),
    BadCase("raw-events-missing", "raw events", raw_events_case(remove_events), FormatError,
            _EV + r": raw events of synth_train_000_bbox\.npy are missing"),
    BadCase("raw-split-dir-missing", "raw events", raw_case(remove_val_split), FormatError,
            r"raw/val: raw split directory is missing"),
    # raw boxes: leod preprocess
    BadCase("raw-boxes-truncated", "raw boxes", raw_boxes_case(truncate), FormatError,
            _BX + r": not a readable \.npy file"),
    BadCase("raw-boxes-pickled-objects", "raw boxes", raw_boxes_case(pickle_boxes), FormatError,
            _BX + r": not a readable \.npy file \(Object arrays cannot be loaded when allow_pickle=False\)"),
    BadCase("raw-boxes-plain-float-array", "raw boxes", raw_boxes_case(edit_boxes(boxes_as_plain_floats)),
            FormatError, _BX + r": expected the Prophesee box dtype"),
    BadCase("raw-boxes-missing-class-id", "raw boxes", raw_boxes_case(edit_boxes(boxes_without_class_id)),
            FormatError, _BX + r": expected the Prophesee box dtype"),
    BadCase("raw-boxes-2d", "raw boxes", raw_boxes_case(edit_boxes(boxes_as_column)), FormatError,
            _BX + r": expected a 1-D box array"),
    BadCase("raw-boxes-float-timestamps", "raw boxes", raw_boxes_case(edit_boxes(boxes_with_float_timestamps)),
            FormatError, _BX + r": box field 't' has type float64, expected an integer type"),
    BadCase("raw-boxes-unsorted-timestamps", "raw boxes", raw_boxes_case(edit_boxes(reverse_rows)),
            FormatError, _BX + r": boxes are not sorted by timestamp"),
    BadCase("raw-boxes-nan", "raw boxes", raw_boxes_case(edit_boxes(set_first("x", np.nan))), FormatError,
            _BX + r": boxes contain NaN or infinite coordinates"),
    BadCase("raw-boxes-inf", "raw boxes", raw_boxes_case(edit_boxes(set_first("h", np.inf))), FormatError,
            _BX + r": boxes contain NaN or infinite coordinates"),
    BadCase("raw-boxes-negative-width", "raw boxes", raw_boxes_case(edit_boxes(set_first("w", -3.0))),
            FormatError, _BX + r": boxes have negative width or height"),
]
