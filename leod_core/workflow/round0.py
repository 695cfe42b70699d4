"""Round 0 from released weights: an experiment's ``round0: {weights: PATH_OR_URL, md5 | crc32: ...}`` replaces
baseline training by an import (``leod import-checkpoint``) of RVT's or LEOD's released checkpoint.

The experiments that import their round 0 are known when the workflow is parsed, so the choice between the rules
``import_round0`` and ``train_round0`` is a wildcard constraint (:func:`round0_dataset_constraint`): both produce
``results/{dataset}/{experiment}/round0/model.ckpt`` and exactly one matches each experiment.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

from leod_core.data.checksum import Checksum
from leod_core.workflow.paths import WILDCARD_PATTERNS, ExperimentName, format_ratio
from leod_core.workflow.settings import ablation_entries, round0_variant
from leod_core.workflow.targets import split_offsets

#: Where downloaded weights go (kept across runs, like the dataset archives): ``{WEIGHTS_DIR}/{host}/{URL path}``.
WEIGHTS_DIR = "results/downloads/weights"
#: URL schemes downloaded; anything else is a local path (relative to the working directory).
URL_SCHEMES = ("http", "https", "ftp")
_CHECKSUM_KEYS = ("md5", "crc32")


@dataclass(frozen=True)
class Round0Weights:
    """Released weights that an experiment's round 0 imports.

    Attributes:
        source: a URL (:data:`URL_SCHEMES`) or a local path.
        checksum: the expected checksum (required for a URL; checked on download and again before import).
    """

    source: str
    checksum: Checksum | None

    @property
    def is_url(self) -> bool:
        return urlparse(self.source).scheme in URL_SCHEMES

    @property
    def download_name(self) -> str:
        """A URL's host and path (``download.ifi.uzh.ch/rpg/RVT/checkpoints/gen1/rvt-s.ckpt``): where under
        :data:`WEIGHTS_DIR` it is downloaded, unique per file (RVT's gen1 and 1mpx checkpoints share their names)."""
        url = urlparse(self.source)
        parts = [part for part in PurePosixPath(url.path).parts if part not in ("/", ".", "..")]
        return "/".join([url.netloc, *parts])

    @property
    def local_path(self) -> str:
        """The file the import reads: the download's destination for a URL, else the path itself."""
        return f"{WEIGHTS_DIR}/{self.download_name}" if self.is_url else self.source

    def checksum_args(self) -> str:
        """``--md5 <hex>`` / ``--crc32 <hex>``, or ``""`` without a checksum."""
        return f"--{self.checksum.algorithm} {self.checksum.hex}" if self.checksum else ""


def _parse_block(block: dict[str, Any], where: str) -> Round0Weights:
    given = [key for key in _CHECKSUM_KEYS if key in block]
    if len(given) > 1:
        raise ValueError(f"{where}: round0 takes one checksum, md5 or crc32, not both")
    try:
        checksum = Checksum.parse(given[0], block[given[0]]) if given else None
    except ValueError as err:
        raise ValueError(f"{where}: round0.{given[0]}: {err}") from None
    weights = Round0Weights(str(block["weights"]), checksum)
    if weights.is_url and checksum is None:
        raise ValueError(f"{where}: round0.weights is a URL: give its md5 (a prefix of >= 6 hex digits, as RVT "
                         f"publishes) or crc32, so a damaged download is caught")
    return weights


def released_round0(config: dict[str, Any]) -> dict[tuple[str, str], Round0Weights]:
    """``(dataset, round-0 experiment directory name) -> weights`` for every experiment entry (``experiments`` and
    ``ablation.experiments``) with a ``round0`` block. ``ValueError`` naming the entry when a block runs more than
    one label split (one set of weights is one split's model), gives a URL without a checksum, or contradicts
    another entry's weights for the same round 0, or when two URLs would download to the same file name."""
    found: dict[tuple[str, str], Round0Weights] = {}
    for key, entries in (("experiments", config["experiments"]), ("ablation.experiments", ablation_entries(config))):
        for i, entry in enumerate(entries):
            if "round0" not in entry:
                continue
            where = f"{key}[{i}] ({entry['dataset']} {entry['setting']} {entry['ratio']})"
            weights = _parse_block(entry["round0"], where)
            offsets = split_offsets(config, entry)
            if len(offsets) != 1:
                raise ValueError(f"{where}: round0.weights is one model, trained on one label split, but the entry "
                                 f"runs split offsets {offsets}: give it split_offsets: [k] with the weights' split")
            ratio = format_ratio(entry["ratio"])
            shared = round0_variant(config, entry["dataset"], entry["setting"], ratio, entry.get("variant", ""))
            name = str(ExperimentName(entry["setting"], ratio, offsets[0], shared))
            if found.get((entry["dataset"], name), weights) != weights:
                raise ValueError(f"{where}: round 0 of {entry['dataset']}/{name} is given two different weights")
            found[(entry["dataset"], name)] = weights
    _check_download_names(found.values())
    return found


def _check_download_names(weights: Any) -> None:
    by_name: dict[str, str] = {}
    for w in weights:
        if w.is_url and by_name.setdefault(w.download_name, w.source) != w.source:
            raise ValueError(f"round0.weights {by_name[w.download_name]} and {w.source} would both download to "
                             f"{WEIGHTS_DIR}/{w.download_name}")


def downloaded_weights(released: dict[tuple[str, str], Round0Weights]) -> dict[str, Round0Weights]:
    """``download name -> weights`` of the released weights given by URL (what ``download_round0_weights``
    fetches to ``{WEIGHTS_DIR}/{download name}``)."""
    return {w.download_name: w for w in released.values() if w.is_url}


def round0_dataset_constraint(released: dict[tuple[str, str], Round0Weights], imported: bool) -> str:
    """The ``{dataset}`` wildcard constraint that sends ``results/{dataset}/{experiment}/round0/model.ckpt`` to the
    import rule (``imported=True``) or to the training rule (``False``).

    A lookahead at the start of ``{dataset}`` sees the rest of the path, ``<dataset>/<experiment>/round0/...``, so
    the constraint selects whole (dataset, experiment) pairs; without released weights nothing is imported.
    """
    pairs = "|".join(re.escape(f"{dataset}/{name}/") for dataset, name in sorted(released))
    dataset = WILDCARD_PATTERNS["dataset"]
    if not pairs:
        return f"(?!){dataset}" if imported else dataset
    return f"(?={'(?:' + pairs + ')'}){dataset}" if imported else f"(?!{'(?:' + pairs + ')'}){dataset}"
