"""The workflow's ``recordings`` data source: a folder of the user's own event-camera recordings, arranged into
RVT's raw layout (``results/raw/{dataset}/{train,val,test}/``) for ``leod preprocess``.

A *recording* is an event file that the raw discovery recognises
(:func:`~leod_core.data.raw_discovery.sequences_with_events`: RVT's ``{seq}_td.dat.h5``, a Prophesee
``{seq}_td.dat``, an EVT 2.0 / 3.0 ``{seq}.raw`` or ``{seq}_td.raw``); it is *labeled* if ``{seq}_bbox.npy`` lies
beside it. Other files are ignored (and logged).

- A *flat* folder (recordings directly in it): every unlabeled recording goes to ``train`` (pseudo-labelled from
  round 1 on). The labeled ones, sorted by name, are split by :class:`Holdout`: ``floor(f n)`` of the ``n`` (at
  least one) for val and for test, picked evenly spaced (:func:`evenly_spaced`: first the held-out ones among all,
  then val's among those; the rest of the held-out ones are test), the others train. At least one labeled
  recording must remain in each of train, val and test.
- A folder with ``train/ val/ test/`` is taken as it is (the holdout is not used); val and test need ground
  truth, so an unlabeled recording there is an error.

The arrangement is made of symbolic links to the user's files (never copies; nothing of the user's is changed,
moved or deleted), one split directory at a time (filled hidden, then renamed in), and ``summary.json`` is written
last (atomically): per split, every recording with its format, whether it is labeled and the files it links.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from leod_core.data.atomic import atomic_dir, write_text_atomic
from leod_core.data.formats import SPLITS, raw_paths
from leod_core.data.preprocess import UNLABELED_SPLIT
from leod_core.data.raw_discovery import RECORDING_ENDINGS, find_events_file, sequences_with_events
from leod_core.data.recordings import FORMATS, detect_format
from leod_core.workflow.settings import RECORDINGS_SOURCE

log = logging.getLogger(__name__)

#: ``format: auto`` detects each file's format; any of :data:`~leod_core.data.recordings.FORMATS` is checked.
AUTO_FORMAT = "auto"
RECORDING_FORMATS = (AUTO_FORMAT, *FORMATS)
#: The arrangement's manifest, written last (the ``arrange_recordings`` rule's output).
SUMMARY_FILE = "summary.json"
FLAT_LAYOUT, SPLITS_LAYOUT = "flat", "splits"


@dataclass(frozen=True)
class Holdout:
    """Fractions of a flat folder's labeled recordings held out for validation and test (each in (0, 1), their sum
    below 1). The workflow schema's ``recordings.holdout`` defaults are these."""

    val: float = 0.2
    test: float = 0.2

    def __post_init__(self) -> None:
        for name in ("val", "test"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"holdout {name} must be a fraction in (0, 1), got {getattr(self, name)}")
        if self.val + self.test >= 1:
            raise ValueError(f"holdout val + test must be below 1 (train keeps the rest), got {self.val} + "
                             f"{self.test}")

    def counts(self, labeled: int) -> tuple[int, int]:
        """(val, test): how many of ``labeled`` recordings are held out, ``floor(f n)`` and at least one each."""
        return max(1, math.floor(self.val * labeled)), max(1, math.floor(self.test * labeled))

    def fits(self, labeled: int) -> bool:
        """Whether ``labeled`` recordings leave at least one in train after the holdout (true from :meth:`needed`
        on: with floors, train's share never shrinks back to none)."""
        return labeled - sum(self.counts(labeled)) >= 1

    def needed(self) -> int:
        """The fewest labeled recordings that leave at least one in each of train, val and test."""
        labeled = len(SPLITS)
        while not self.fits(labeled):
            labeled += 1
        return labeled


@dataclass(frozen=True)
class Recording:
    """One recording of the user's folder: its sequence name, event file, detected format and boxes file (None:
    unlabeled); paths are absolute."""

    sequence: str
    events: Path
    format: str
    boxes: Path | None

    @property
    def labeled(self) -> bool:
        return self.boxes is not None

    @property
    def files(self) -> list[Path]:
        """The user's files of this recording (what the arrangement links)."""
        return [self.events] + ([self.boxes] if self.boxes is not None else [])

    def record(self) -> dict[str, Any]:
        """This recording as a row of ``summary.json``."""
        return {"sequence": self.sequence, "format": self.format, "labeled": self.labeled,
                "events": str(self.events), "boxes": None if self.boxes is None else str(self.boxes)}


def evenly_spaced(count: int, picks: int) -> list[int]:
    """``picks`` of the indices ``0 .. count-1``, evenly spaced: the centres ``floor((j + 1/2) count / picks)`` of
    ``picks`` equal intervals (distinct, sorted; ``picks <= count``)."""
    if not 0 <= picks <= count:
        raise ValueError(f"cannot pick {picks} of {count}")
    return [(2 * j + 1) * count // (2 * picks) for j in range(picks)]


# -------------------------------------------------------------------------------------------- discovery
def accepted_names(gen4_style: bool) -> str:
    """The event file names the discovery accepts, for messages (``{seq}_td.dat.h5, {seq}_td.dat, ...``)."""
    h5_name = raw_paths("", "{seq}", gen4_style)[0].name
    return ", ".join([h5_name, *(f"{{seq}}{ending}" for ending in RECORDING_ENDINGS)])


def _boxes_suffix() -> str:
    return raw_paths("", "")[1].name


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if not path.name.startswith("."))


def find_recordings(folder: Path, gen4_style: bool, fmt: str = AUTO_FORMAT) -> list[Recording]:
    """The recordings directly in ``folder``, sorted by name, each with its detected format.

    ``ValueError`` (naming the files) for: no recording at all, a ``{seq}_bbox.npy`` without an event file, two
    event files for one sequence, and with ``fmt`` other than :data:`AUTO_FORMAT` a recording of another format.
    """
    if fmt not in RECORDING_FORMATS:
        raise ValueError(f"unknown recording format {fmt!r}, expected one of {RECORDING_FORMATS}")
    names = sorted(sequences_with_events(folder, gen4_style))
    suffix = _boxes_suffix()
    boxes = {path.name[: -len(suffix)]: path for path in folder.glob(f"*{suffix}") if path.is_file()}
    orphans = sorted(str(boxes[name]) for name in set(boxes) - set(names))
    if orphans:
        raise ValueError(f"{len(orphans)} box file(s) without an event file beside them (accepted: "
                         f"{accepted_names(gen4_style)}): {', '.join(orphans)}")
    if not names:
        raise ValueError(f"no event recordings in {folder} (accepted: {accepted_names(gen4_style)})")
    recordings = [_recording(folder, name, boxes.get(name), gen4_style) for name in names]
    _check_format(recordings, fmt)
    _log_ignored(folder, recordings)
    return recordings


def _recording(folder: Path, name: str, boxes: Path | None, gen4_style: bool) -> Recording:
    events = find_events_file(folder, name, gen4_style)   # two event files for one sequence: an error naming them
    return Recording(sequence=name, events=_absolute(events), format=detect_format(events),
                     boxes=None if boxes is None else _absolute(boxes))


def _absolute(path: Path) -> Path:
    """``path`` from the root, without resolving links (a link of the user's stays what the arrangement points at)."""
    return Path(os.path.abspath(path))


def _check_format(recordings: list[Recording], fmt: str) -> None:
    wrong = [f"{rec.events} ({rec.format})" for rec in recordings if fmt != AUTO_FORMAT and rec.format != fmt]
    if wrong:
        raise ValueError(f"recordings.format is {fmt}, but {len(wrong)} recording(s) are not: {', '.join(wrong)} "
                         f"(use format: {AUTO_FORMAT} to accept every format)")


def _log_ignored(folder: Path, recordings: list[Recording]) -> None:
    used = {path.name for rec in recordings for path in rec.files} | set(SPLITS)
    ignored = [path.name for path in _visible_entries(folder) if path.name not in used]
    if ignored:
        log.info("%s: ignoring %d entries that are not recordings: %s", folder, len(ignored), ", ".join(ignored))


# ----------------------------------------------------------------------------------------- arrangement
def folder_layout(source: Path) -> str:
    """:data:`SPLITS_LAYOUT` if ``source`` has any of ``train/ val/ test/`` (then it must have all three), else
    :data:`FLAT_LAYOUT`; ``ValueError`` for a missing folder or an incomplete set of split folders."""
    if not source.is_dir():
        raise ValueError(f"recordings folder {source} is missing (or not a folder)")
    present = [split for split in SPLITS if (source / split).is_dir()]
    if not present:
        return FLAT_LAYOUT
    missing = [split for split in SPLITS if split not in present]
    if missing:
        raise ValueError(f"recordings folder {source} has {', '.join(f'{s}/' for s in present)} but not "
                         f"{', '.join(f'{s}/' for s in missing)}: give all of train/ val/ test/, or put every "
                         f"recording directly in {source} (then the holdout picks val and test)")
    return SPLITS_LAYOUT


def split_flat(recordings: list[Recording], holdout: Holdout) -> dict[str, list[Recording]]:
    """A flat folder's recordings by split (see the module docstring); ``ValueError`` if too few are labeled."""
    labeled = [rec for rec in recordings if rec.labeled]
    if not holdout.fits(len(labeled)):
        raise ValueError(f"{len(labeled)} labeled recording(s) (with a _bbox.npy beside them) of "
                         f"{len(recordings)}: holding out val {holdout.val:g} and test {holdout.test:g} needs at "
                         f"least {holdout.needed()}, one or more in each of train, val and test")
    num_val, num_test = holdout.counts(len(labeled))
    held = evenly_spaced(len(labeled), num_val + num_test)
    val = {held[i] for i in evenly_spaced(len(held), num_val)}
    test = set(held) - val
    splits: dict[str, list[Recording]] = {split: [] for split in SPLITS}
    for i, rec in enumerate(labeled):
        splits["val" if i in val else "test" if i in test else UNLABELED_SPLIT].append(rec)
    splits[UNLABELED_SPLIT] += [rec for rec in recordings if not rec.labeled]
    splits[UNLABELED_SPLIT].sort(key=lambda rec: rec.sequence)
    return splits


def check_split_folders(splits: dict[str, list[Recording]], source: Path) -> None:
    """A split folder's recordings are usable: val and test fully labeled, train with at least one label."""
    for split, recordings in splits.items():
        unlabeled = [str(rec.events) for rec in recordings if not rec.labeled]
        if split != UNLABELED_SPLIT and unlabeled:
            raise ValueError(f"{source / split}: evaluation needs ground truth, but {len(unlabeled)} recording(s) "
                             f"have no _bbox.npy beside them: {', '.join(unlabeled)} (move them to "
                             f"{source / UNLABELED_SPLIT}/, where they are pseudo-labelled)")
    if not any(rec.labeled for rec in splits[UNLABELED_SPLIT]):
        raise ValueError(f"{source / UNLABELED_SPLIT}: no labeled recording (a _bbox.npy beside its events); "
                         f"round 0 trains on labels")


def _check_outside(source: Path, out_dir: Path) -> None:
    source, out_dir = source.resolve(), out_dir.resolve()
    if source == out_dir or out_dir in source.parents:
        raise ValueError(f"recordings folder {source} is inside the workflow's output {out_dir}: keep the "
                         f"recordings elsewhere")


def check_output_split(split_dir: Path) -> None:
    """``split_dir`` (of the output) may be replaced: it is missing, a link (another source's), or a directory of
    links (an earlier arrangement); a directory with anything but links is an error (it may hold the user's data)."""
    if split_dir.is_dir() and not split_dir.is_symlink():
        kept = [str(path) for path in split_dir.iterdir() if not path.is_symlink()]
        if kept:
            raise ValueError(f"{split_dir} holds files that are not links ({', '.join(kept[:5])}); move them "
                             f"away first")


def link_split(recordings: Iterable[Recording], split_dir: Path) -> None:
    """``split_dir`` as a directory of links, one per file of ``recordings``, to the user's file (absolute). A
    link in its place is removed (never its target); a directory of links is replaced whole."""
    if split_dir.is_symlink():
        split_dir.unlink()
    with atomic_dir(split_dir) as tmp:
        for rec in recordings:
            for path in rec.files:
                os.symlink(path, tmp / path.name)


def arrange_recordings(source: Path, out_dir: Path, fmt: str = AUTO_FORMAT, holdout: Holdout = Holdout(),
                       gen4_style: bool = False) -> dict[str, Any]:
    """Arrange the recordings folder ``source`` into RVT's raw layout under ``out_dir`` (see the module
    docstring) and write ``out_dir/summary.json`` last; return the summary.

    ``fmt``: one of :data:`RECORDING_FORMATS`; ``gen4_style``: RVT's h5 files are named ``{seq}_td.h5`` (the
    preprocessing preset's ``gen4_style_names``). Every problem is a ``ValueError`` naming the files.
    """
    source, out_dir = Path(source), Path(out_dir)
    layout = folder_layout(source)
    _check_outside(source, out_dir)
    if layout == FLAT_LAYOUT:
        splits = split_flat(find_recordings(source, gen4_style, fmt), holdout)
    else:
        log.info("%s already has train/ val/ test/: taken as it is (holdout val %g / test %g not used)", source,
                 holdout.val, holdout.test)
        _check_no_top_level_recordings(source, gen4_style)
        splits = {split: find_recordings(source / split, gen4_style, fmt) for split in SPLITS}
        check_split_folders(splits, source)
    for split in SPLITS:
        check_output_split(out_dir / split)
    for split, recordings in splits.items():
        link_split(recordings, out_dir / split)
    summary = _summary(source, layout, fmt, holdout, splits)
    write_text_atomic(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    for split, counts in summary["counts"].items():
        log.info("%s: %d labeled and %d unlabeled recording(s) linked into %s", split, counts["labeled"],
                 counts["unlabeled"], out_dir / split)
    return summary


def _check_no_top_level_recordings(source: Path, gen4_style: bool) -> None:
    stray = sorted(sequences_with_events(source, gen4_style))
    if stray:
        raise ValueError(f"{source} has train/ val/ test/ and recordings beside them ({', '.join(stray)}): move "
                         f"each into one of the split folders")


def _summary(source: Path, layout: str, fmt: str, holdout: Holdout,
             splits: dict[str, list[Recording]]) -> dict[str, Any]:
    counts = {split: {"labeled": sum(rec.labeled for rec in recs), "unlabeled": sum(not rec.labeled for rec in recs)}
              for split, recs in splits.items()}
    return {"kind": RECORDINGS_SOURCE, "source": str(_absolute(source)), "layout": layout, "format": fmt,
            "holdout": {"val": holdout.val, "test": holdout.test} if layout == FLAT_LAYOUT else None,
            "counts": counts, "splits": {split: [rec.record() for rec in recs] for split, recs in splits.items()}}
