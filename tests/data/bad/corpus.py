"""Bad inputs, each built from a valid one and then damaged in one way, and the call a user would make on it.

The valid inputs (:class:`~bad.common.Pristine`) come from the real writers: ``leod synth`` (the synthetic
camera) and ``leod preprocess`` for events, labels and representations, ``make_split`` for the split, the
checkpoint writer for the model, ``tarfile`` for the download archive. A case copies what it needs into its own
directory, damages it, and returns a :class:`~bad.common.Call` of the entry point a user hits: the ``leod``
command (parsed by the real parser), or the loader that ``leod train`` / ``evaluate`` / the Snakefile use. Small
cases are committed under ``files/``: split JSONs, workflow-config overlays and ``--config`` YAMLs.

Each :class:`~bad.common.BadCase` names the exact exception type and a regex of its message, which names the
file (or the config field) and the problem. The cases live in one module per category group (``raw``,
``preprocessed``, ``splits``, ``checkpoints``, ``configs``, ``downloads``); :data:`CASES` collects them.
"""
from __future__ import annotations

from .checkpoints import CHECKPOINT_CASES
from .common import BadCase
from .configs import CONFIG_CASES
from .downloads import DOWNLOAD_CASES
from .preprocessed import PREPROCESSED_CASES
from .raw import RAW_CASES
from .splits import SPLIT_CASES

CASES: list[BadCase] = [*RAW_CASES, *PREPROCESSED_CASES, *SPLIT_CASES, *CHECKPOINT_CASES, *CONFIG_CASES,
                        *DOWNLOAD_CASES]
