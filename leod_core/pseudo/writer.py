"""Writing, checking and linking the sequences of a pseudo-label dataset (LEOD ``EventSeqData.save``).

One pseudo sequence ``{root}/train/{seq}/`` in RVT layout (``docs/layout.md``)::

    event_representations_v2/stacked_histogram_dt=50_nbins=10/
        event_representations.h5              # SYMLINK to the source sequence's file (gen4: ..._ds2_nearest.h5)
        objframe_idx_2_repr_idx.npy           # int64 [F]: sorted repr indices that have >= 1 box
    labels_v2/labels.npz                      # ``labels`` (PSEUDO_BBOX_DTYPE) + ``objframe_idx_2_label_idx``

No ``timestamps_us.npy`` is written (LEOD does not; the training loader does not need it).

Decisions:

* **Atomic per sequence.** Everything is written into a temporary sibling directory ``.{seq}.tmp-*`` which is
  renamed to ``{seq}`` at the end; an exception removes it. A sequence directory therefore exists only when
  complete. A job killed by a signal may leave a hidden ``.{seq}.tmp-*`` directory: it never looks complete,
  is ignored by :mod:`leod_core.pseudo.shards` (which only reads sequences listed in a shard manifest) and may
  be deleted by hand.
* **Byte-deterministic files.** ``labels.npz`` is written with fixed zip timestamps (``np.savez`` stamps the
  current time into the archive), so the same labels always give the same bytes: a sharded run and a single
  run give byte-equal files, and a rerun can tell "identical" from "different" by comparing bytes.
* **Existing sequence.** :func:`write_pseudo_sequence` returns ``"unchanged"`` without touching the disk if the
  directory already holds exactly the content it would write (a rerun of a killed shard); if the content
  differs it raises :class:`FileExistsError` unless ``overwrite=True``, which swaps the new directory in
  atomically. A directory holding anything other than the three entries above is never replaced.
* **Empty sequences** (no box at all) are not written: the loaders reject an empty
  ``objframe_idx_2_repr_idx.npy``, and LEOD's loader skips such sequences anyway. The labeller records them
  in the shard manifest (``empty_sequences``); :func:`write_pseudo_sequence` raises ``ValueError`` for them.
* **Symlink style** (:func:`link_path`): *relative* through the nearest directory that holds both the link and
  the target (as the target path is named, so a symlinked data folder is traversed, not resolved), so the
  results tree can be moved or copied as a whole; *absolute* when the only common directory is ``/``. The
  link is checked to resolve to the target, with an absolute fallback.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
from pathlib import Path
from typing import Sequence

import numpy as np

from leod_core.data import formats
from leod_core.data.atomic import atomic_dir
from leod_core.data.formats import (IGNORE_CLASS_ID, PSEUDO_BBOX_DTYPE, FormatError, PathLike, SequenceLabels,
                                    SequencePaths, open_event_repr, read_labels, read_objframe_idx_2_repr_idx,
                                    same_fields)

log = logging.getLogger(__name__)

__all__ = ["EVAL_SPLITS", "GT_FIELDS", "event_file_relpath", "gt_to_pseudo_rows", "is_complete_sequence",
           "label_counts", "labels_npz_bytes", "link_eval_splits", "link_path", "npy_bytes",
           "pseudo_sequence_files", "verify_pseudo_sequence", "write_pseudo_sequence"]

EVAL_SPLITS = ("val", "test")
#: Fields of a GT row that a pseudo dataset must keep unchanged (``objectness`` must equal ``class_confidence``).
GT_FIELDS = ("t", "x", "y", "w", "h", "class_id", "class_confidence")
GT_TOLERANCE = 1e-6


# ------------------------------------------------------------------------------------------ paths/links
def event_file_relpath(downsampled_by_2: bool) -> Path:
    """Path of the event representation file inside a sequence directory."""
    return SequencePaths(Path()).ev_repr_file(downsampled_by_2)


def pseudo_sequence_files(downsampled_by_2: bool) -> tuple[Path, Path, Path]:
    """(event file, ``objframe_idx_2_repr_idx.npy``, ``labels.npz``) relative to a pseudo sequence directory."""
    rel = SequencePaths(Path())
    return rel.ev_repr_file(downsampled_by_2), rel.objframe_idx_2_repr_idx, rel.labels


def _entries(seq_dir: Path) -> set[Path]:
    """Every file, link and directory under ``seq_dir`` (links not followed), relative to it."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(seq_dir):
        base = Path(dirpath).relative_to(seq_dir)
        out.update(base / name for name in dirnames + filenames)
    return out


def _expected_entries(downsampled_by_2: bool) -> set[Path]:
    out = set()
    for path in pseudo_sequence_files(downsampled_by_2):
        out.add(path)
        out.update(p for p in path.parents if p != Path("."))
    return out


def detect_downsampled(seq_dir: Path) -> bool | None:
    """Which event file a pseudo sequence links (``None``: neither or both)."""
    found = [ds for ds in (False, True) if os.path.lexists(seq_dir / event_file_relpath(ds))]
    return found[0] if len(found) == 1 else None


def is_complete_sequence(seq_dir: PathLike) -> bool:
    """True if ``seq_dir`` holds a complete pseudo sequence: its event link, indices and labels exist."""
    seq_dir = Path(seq_dir)
    if not seq_dir.is_dir():
        return False
    ds = detect_downsampled(seq_dir)
    if ds is None:
        return False
    ev, o2r, labels = pseudo_sequence_files(ds)
    return (seq_dir / ev).is_symlink() and (seq_dir / o2r).is_file() and (seq_dir / labels).is_file()


def link_path(link: PathLike, target: PathLike) -> None:
    """Create symlink ``link`` -> ``target`` (the module docstring says when it is relative or absolute).

    ``link`` must not exist; its parent directory must.
    """
    link, target = Path(link), Path(target)
    target_abs = Path(os.path.abspath(target))
    link_dir_real = Path(os.path.realpath(link.parent))
    text = str(target_abs)
    for ancestor in target_abs.parents:
        if ancestor == Path(ancestor.anchor):
            break  # only '/' in common: absolute
        real = Path(os.path.realpath(ancestor))
        if link_dir_real == real or real in link_dir_real.parents:
            text = os.path.relpath(real, link_dir_real)
            text = str(Path(text) / target_abs.relative_to(ancestor))
            break
    os.symlink(text, link)
    if not (link.exists() and os.path.samefile(link, target)):
        link.unlink()
        os.symlink(os.path.realpath(target), link)


def samefile(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def link_eval_splits(pseudo_root: PathLike, source_root: PathLike) -> list[str]:
    """Make ``{pseudo_root}/val`` and ``/test`` symlinks to the source dataset's splits (as LEOD does).

    A link already pointing at the right directory is kept; a symlink pointing elsewhere is replaced
    atomically; a real file or directory there raises :class:`FileExistsError` (user data is never deleted).
    A split the source lacks is skipped with a warning. Returns the splits linked.
    """
    pseudo_root, source_root = Path(pseudo_root), Path(source_root)
    pseudo_root.mkdir(parents=True, exist_ok=True)
    linked = []
    for split in EVAL_SPLITS:
        target, link = source_root / split, pseudo_root / split
        if not target.is_dir():
            log.warning("source dataset %s has no %s split: %s not linked", source_root, split, link)
            continue
        if link.is_symlink() and samefile(link, target):
            linked.append(split)
            continue
        if os.path.lexists(link) and not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a symlink: refusing to replace it with a link to {target}")
        tmp = pseudo_root / f".{split}.tmp-{secrets.token_hex(4)}"
        link_path(tmp, target)
        os.replace(tmp, link)
        linked.append(split)
    return linked


# -------------------------------------------------------------------------------------- serialisation
def labels_npz_bytes(seq_labels: SequenceLabels) -> bytes:
    """``labels.npz`` bytes with the labels in the 40-byte :data:`PSEUDO_BBOX_DTYPE` (padding zeroed)."""
    labels = np.zeros(len(seq_labels.labels), dtype=PSEUDO_BBOX_DTYPE)
    for name in PSEUDO_BBOX_DTYPE.names:
        labels[name] = seq_labels.labels[name]
    return formats.labels_npz_bytes(SequenceLabels(labels, seq_labels.objframe_idx_2_label_idx))


def npy_bytes(array: np.ndarray) -> bytes:
    """``np.save`` output of ``array`` (deterministic)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def label_counts(labels: np.ndarray) -> dict[str, int]:
    """Row counts: ``boxes`` = ``gt_rows`` (t != 0) + ``pseudo_rows`` (t == 0, class != 1024) + ``ignore_rows``
    (t == 0, class 1024)."""
    t0 = labels["t"] == 0
    ignore = t0 & (labels["class_id"] == IGNORE_CLASS_ID)
    return {"boxes": int(len(labels)), "gt_rows": int(np.count_nonzero(~t0)),
            "pseudo_rows": int(np.count_nonzero(t0 & ~ignore)), "ignore_rows": int(np.count_nonzero(ignore))}


# ------------------------------------------------------------------------------------------- GT rows
def gt_to_pseudo_rows(gt_rows: np.ndarray) -> np.ndarray:
    """GT rows (Prophesee dtype, padded or packed) as :data:`PSEUDO_BBOX_DTYPE` rows, ``objectness = class_confidence``.

    GT keeps its timestamp, which must be > 0: a row with ``t == 0`` would read as a pseudo label.
    """
    names = gt_rows.dtype.names or ()
    missing = [k for k in GT_FIELDS if k not in names]
    if missing:
        raise ValueError(f"GT rows lack fields {missing} (dtype {gt_rows.dtype})")
    t = gt_rows["t"]
    if len(t) and (np.any(t <= 0) if np.issubdtype(t.dtype, np.signedinteger) else np.any(t == 0)):
        raise ValueError("GT rows must have t > 0 (t == 0 marks a pseudo label)")
    if len(t) and int(t.max()) > np.iinfo(np.int64).max:
        raise ValueError("GT timestamps exceed int64")
    out = np.zeros(len(gt_rows), dtype=PSEUDO_BBOX_DTYPE)
    for name in GT_FIELDS:
        out[name] = gt_rows[name]
    out["objectness"] = gt_rows["class_confidence"]
    return out


# ---------------------------------------------------------------------------------------------- write
def _check_sequence(where: Path, labels: SequenceLabels, o2r: np.ndarray, num_reprs: int) -> None:
    if not same_fields(labels.labels.dtype, PSEUDO_BBOX_DTYPE):
        raise FormatError(where, f"labels must have the pseudo-label dtype, got {labels.labels.dtype}")
    labels.validate(where)
    if o2r.ndim != 1 or not np.issubdtype(o2r.dtype, np.integer):
        raise FormatError(where, f"objframe_idx_2_repr_idx must be integer [F], got {o2r.dtype} {o2r.shape}")
    if len(o2r) != labels.num_frames:
        raise FormatError(where, f"{len(o2r)} representation indices for {labels.num_frames} label frames")
    if len(o2r) and (o2r[0] < 0 or np.any(np.diff(o2r) <= 0) or o2r[-1] >= num_reprs):
        raise FormatError(where, f"representation indices must be sorted, unique and in [0, {num_reprs})")
    counts = np.diff(np.append(labels.objframe_idx_2_label_idx, len(labels.labels)))
    if np.any(counts <= 0):
        raise FormatError(where, f"frame {int(np.argmax(counts <= 0))} has no box (a pseudo frame has >= 1 box)")
    for name in ("class_confidence", "objectness"):
        values = labels.labels[name]
        if not np.all((values >= 0) & (values <= 1)):
            raise FormatError(where, f"{name} must lie in [0, 1]")


def _same_content(seq_dir: Path, ev_target: Path, downsampled_by_2: bool, contents: dict[Path, bytes]) -> bool:
    ev_rel = event_file_relpath(downsampled_by_2)
    if _entries(seq_dir) != _expected_entries(downsampled_by_2):
        return False
    if not ((seq_dir / ev_rel).is_symlink() and samefile(seq_dir / ev_rel, ev_target)):
        return False
    return all((seq_dir / rel).is_file() and (seq_dir / rel).read_bytes() == data for rel, data in contents.items())


def write_pseudo_sequence(out_seq_dir: PathLike, source_seq_dir: PathLike, labels: SequenceLabels,
                          objframe_idx_2_repr_idx: np.ndarray, downsampled_by_2: bool, *,
                          overwrite: bool = False) -> str:
    """Write one pseudo sequence atomically (layout and decisions in the module docstring).

    Args:
        out_seq_dir: the sequence directory to create, e.g. ``{shard}/train/{seq}``.
        source_seq_dir: the preprocessed source sequence; its event file is linked, and its number of
            representations bounds ``objframe_idx_2_repr_idx``.
        labels: labels in :data:`PSEUDO_BBOX_DTYPE` (GT rows from :func:`gt_to_pseudo_rows`), one frame per
            entry of ``objframe_idx_2_repr_idx``, each with >= 1 box.
        objframe_idx_2_repr_idx: sorted unique representation index of each frame.
        downsampled_by_2: link ``event_representations_ds2_nearest.h5`` (gen4) instead of ``event_representations.h5``.
        overwrite: replace an existing sequence directory whose content differs.

    Returns ``"written"``, ``"replaced"`` or ``"unchanged"`` (identical content already there; nothing written).
    Raises ``ValueError`` for a sequence without any box, :class:`FormatError` for inconsistent input or a bad
    source file, :class:`FileExistsError` for differing existing content without ``overwrite``.
    """
    out_seq_dir, source_seq_dir = Path(out_seq_dir), Path(source_seq_dir)
    o2r = np.asarray(objframe_idx_2_repr_idx)
    if len(labels.labels) == 0 and len(o2r) == 0:
        raise ValueError(f"{out_seq_dir}: sequence has no box; record it as empty in the shard manifest "
                         "instead of writing it")
    ev_target = SequencePaths(source_seq_dir).ev_repr_file(downsampled_by_2)
    with open_event_repr(ev_target) as h5:
        num_reprs = int(h5["data"].shape[0])
    _check_sequence(out_seq_dir, labels, o2r, num_reprs)

    ev_rel, o2r_rel, labels_rel = pseudo_sequence_files(downsampled_by_2)
    contents = {o2r_rel: npy_bytes(o2r.astype(np.int64)), labels_rel: labels_npz_bytes(labels)}
    exists = os.path.lexists(out_seq_dir)
    if exists:
        if out_seq_dir.is_dir() and not out_seq_dir.is_symlink() and _same_content(out_seq_dir, ev_target,
                                                                                    downsampled_by_2, contents):
            log.debug("%s is already up to date", out_seq_dir)
            return "unchanged"
        if not overwrite:
            raise FileExistsError(f"{out_seq_dir} exists with different content; pass overwrite=True to replace it")
        if out_seq_dir.is_symlink() or not out_seq_dir.is_dir() or \
                not _entries(out_seq_dir) <= _expected_entries(False) | _expected_entries(True):
            raise FileExistsError(f"{out_seq_dir} is not a pseudo-label sequence directory: refusing to replace it")

    with atomic_dir(out_seq_dir) as tmp:
        for rel, data in contents.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        link_path(tmp / ev_rel, ev_target)
    return "replaced" if exists else "written"


# --------------------------------------------------------------------------------------------- verify
def verify_pseudo_sequence(out_seq_dir: PathLike, source_seq_dir: PathLike, kept_gt_objframes: Sequence[int], *,
                           num_classes: int | None = None) -> None:
    """LEOD's ``verify_data`` for one written pseudo sequence; raises :class:`FormatError` naming file and problem.

    Checks: the event file is a symlink resolving to the source's; frame indices sorted, unique and within the
    source's representations, each frame with >= 1 box; every kept GT frame (objframe index of the source,
    from the label split) present and holding exactly its GT rows unchanged (``t`` equal; ``x, y, w, h,
    class_id, class_confidence`` within 1e-6; ``objectness == class_confidence``); every other frame only
    pseudo rows (``t == 0``); class ids in ``[0, num_classes)`` or 1024 (class range unchecked when
    ``num_classes`` is None); ``objectness`` and ``class_confidence`` in [0, 1]; boxes finite with w, h >= 0.
    """
    out_seq_dir, source_seq_dir = Path(out_seq_dir), Path(source_seq_dir)
    if not out_seq_dir.is_dir():
        raise FormatError(out_seq_dir, "pseudo sequence directory is missing")
    ds = detect_downsampled(out_seq_dir)
    if ds is None:
        raise FormatError(out_seq_dir / event_file_relpath(False).parent,
                          "expected exactly one event representation link")
    out, src = SequencePaths(out_seq_dir), SequencePaths(source_seq_dir)
    link, target = out.ev_repr_file(ds), src.ev_repr_file(ds)
    if not link.is_symlink():
        raise FormatError(link, "event representation file must be a symlink to the source sequence's")
    if not samefile(link, target):
        raise FormatError(link, f"symlink does not resolve to {target}")
    with open_event_repr(target) as h5:
        num_reprs = int(h5["data"].shape[0])

    o2r = read_objframe_idx_2_repr_idx(out.objframe_idx_2_repr_idx, num_reprs)
    seq_labels = read_labels(out.labels)
    rows = seq_labels.labels
    if not same_fields(rows.dtype, PSEUDO_BBOX_DTYPE):
        raise FormatError(out.labels, f"labels must have the pseudo-label dtype, got {rows.dtype}")
    if seq_labels.num_frames != len(o2r):
        raise FormatError(out.labels, f"{seq_labels.num_frames} label frames, but "
                                      f"{out.objframe_idx_2_repr_idx.name} has {len(o2r)}")
    starts = seq_labels.objframe_idx_2_label_idx
    counts = np.diff(np.append(starts, len(rows)))
    if np.any(counts <= 0):
        raise FormatError(out.labels, f"frame at representation {int(o2r[np.argmax(counts <= 0)])} has no box")
    for name in ("objectness", "class_confidence"):
        values = rows[name]
        bad = ~((values >= 0) & (values <= 1))
        if np.any(bad):
            raise FormatError(out.labels, f"{name} {float(values[bad][0])} outside [0, 1]")
    cls = rows["class_id"].astype(np.int64)
    if num_classes is not None:
        bad = ~(((cls >= 0) & (cls < num_classes)) | (cls == IGNORE_CLASS_ID))
        if np.any(bad):
            raise FormatError(out.labels, f"class id {int(cls[bad][0])} outside [0, {num_classes}) and not the "
                                          f"ignore class {IGNORE_CLASS_ID}")

    src_o2r = read_objframe_idx_2_repr_idx(src.objframe_idx_2_repr_idx, num_reprs)
    src_labels = read_labels(src.labels)
    if src_labels.num_frames != len(src_o2r):
        raise FormatError(src.labels, f"{src_labels.num_frames} label frames, but the source's "
                                      f"objframe_idx_2_repr_idx has {len(src_o2r)}")
    kept = [int(k) for k in kept_gt_objframes]
    if any(k < 0 or k >= len(src_o2r) for k in kept):
        raise ValueError(f"{source_seq_dir}: kept GT frames must lie in [0, {len(src_o2r)}), got {kept}")
    repr_to_frame = {int(r): i for i, r in enumerate(o2r)}
    gt_frames = set()
    for k in kept:
        gt = src_labels.frame(k)
        repr_idx = int(src_o2r[k])
        if len(gt) == 0:
            continue
        if repr_idx not in repr_to_frame:
            raise FormatError(out.objframe_idx_2_repr_idx, f"kept GT frame {k} (representation {repr_idx}) is missing")
        i = repr_to_frame[repr_idx]
        gt_frames.add(i)
        got = seq_labels.frame(i)
        if len(got) != len(gt):
            raise FormatError(out.labels, f"kept GT frame {k} (representation {repr_idx}) has {len(got)} rows, "
                                          f"the source GT {len(gt)}")
        if not np.array_equal(got["t"].astype(np.int64), gt["t"].astype(np.int64)):
            raise FormatError(out.labels, f"GT of kept frame {k} (representation {repr_idx}) changed: field t")
        for name in GT_FIELDS[1:]:
            if not np.all(np.abs(got[name].astype(np.float64) - gt[name].astype(np.float64)) < GT_TOLERANCE):
                raise FormatError(out.labels, f"GT of kept frame {k} (representation {repr_idx}) changed: field {name}")
        if not np.all(np.abs(got["objectness"].astype(np.float64)
                             - gt["class_confidence"].astype(np.float64)) < GT_TOLERANCE):
            raise FormatError(out.labels, f"GT of kept frame {k} (representation {repr_idx}): objectness is not "
                                          "class_confidence")
    for i in range(len(o2r)):
        if i not in gt_frames and np.any(seq_labels.frame(i)["t"] != 0):
            raise FormatError(out.labels, f"frame at representation {int(o2r[i])} is not a kept GT frame but holds "
                                          "GT-like rows (t != 0); pseudo rows must have t == 0")
