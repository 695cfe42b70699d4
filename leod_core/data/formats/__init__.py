"""Readers and writers for RVT's dataset layout (raw and preprocessed), byte-compatible with RVT/LEOD.

Preprocessed sequence directory (``{root}/{split}/{seq}/``)::

    event_representations_v2/stacked_histogram_dt=50_nbins=10/
        event_representations.h5            # dataset ``data``: uint8 [T, 20, H, W], one frame per chunk,
                                            # Blosc zstd (HDF5 filter 32001); gen4: ..._ds2_nearest.h5
        objframe_idx_2_repr_idx.npy         # int64 [F]: representation index of each labeled frame
        timestamps_us.npy                   # int64 [T]: end time (µs) of each representation
    labels_v2/labels.npz                    # ``labels`` (structured) + ``objframe_idx_2_label_idx`` int64 [F]
    labels_v2/timestamps_us.npy             # int64 [F]: time (µs) of each labeled frame

Raw sequence (input of preprocessing): ``{split}/{seq}_td.dat.h5`` (group ``events``: ``x``, ``y``, ``p``,
``t`` in µs, optional ``height``/``width``) beside ``{split}/{seq}_bbox.npy`` (Prophesee box dtype). Camera recordings
(Prophesee DAT, EVT 2.0 / 3.0 RAW) may stand in for the h5 file: :mod:`leod_core.data.raw_discovery`.

Every reader validates what it opens and raises :class:`FormatError` naming the file and the problem.
Every writer writes to a temporary name and renames.
"""
from __future__ import annotations

from leod_core.data.formats.common import (BLOSC_FILTER_ID, BOX_FIELDS, BOX_FRAME_TOLERANCE_PX, DATASET_CLASSES,
                                           EV_REPR_CHANNELS, EV_REPR_NAME, IGNORE_CLASS_ID, LABEL_DTYPES,
                                           PROPHESEE_BBOX_DTYPE, PSEUDO_BBOX_DTYPE, RAW_BOX_INTEGER_FIELDS, SPLITS,
                                           FormatError, PathLike, SequencePaths, load_npy, raw_paths,
                                           read_objframe_idx_2_repr_idx, read_timestamps_us, same_fields, write_npy,
                                           zero_padded_copy)
from leod_core.data.formats.event_repr import EventReprWriter, blosc_zstd, open_event_repr, read_event_repr
from leod_core.data.formats.labels import (SequenceLabels, check_boxes, check_frame_timestamps, labels_npz_bytes,
                                           npz_bytes, read_labels, write_labels)
from leod_core.data.formats.raw import (EventBlock, RawEvents, RawH5Reader, raise_to_running_max, read_raw_boxes,
                                        read_raw_events, write_raw_boxes, write_raw_events)

__all__ = ['BLOSC_FILTER_ID', 'BOX_FIELDS', 'BOX_FRAME_TOLERANCE_PX', 'DATASET_CLASSES', 'EV_REPR_CHANNELS',
           'EV_REPR_NAME', 'IGNORE_CLASS_ID', 'LABEL_DTYPES', 'PROPHESEE_BBOX_DTYPE', 'PSEUDO_BBOX_DTYPE',
           'RAW_BOX_INTEGER_FIELDS', 'SPLITS', 'FormatError', 'PathLike', 'SequencePaths', 'load_npy', 'raw_paths',
           'read_objframe_idx_2_repr_idx', 'read_timestamps_us', 'same_fields', 'write_npy', 'zero_padded_copy',
           'SequenceLabels', 'check_boxes', 'check_frame_timestamps', 'labels_npz_bytes', 'npz_bytes', 'read_labels',
           'write_labels', 'EventReprWriter', 'blosc_zstd', 'open_event_repr', 'read_event_repr', 'RawEvents',
           'EventBlock', 'RawH5Reader', 'raise_to_running_max', 'read_raw_boxes', 'read_raw_events', 'write_raw_boxes',
           'write_raw_events']
