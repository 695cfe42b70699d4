"""Unit tests of leod_core.workflow.round0: which experiments import released round-0 weights, and the wildcard
constraint that sends each round-0 model to exactly one of import_round0 / train_round0."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from leod_core.workflow.paths import WILDCARD_PATTERNS
from leod_core.workflow.round0 import (WEIGHTS_DIR, Round0Weights, downloaded_weights, released_round0,
                                       round0_dataset_constraint)

REPO = Path(__file__).resolve().parents[2]
URL = "https://download.ifi.uzh.ch/rpg/RVT/checkpoints/gen1/rvt-s.ckpt"


def config_with(*entries: dict, split_offsets: list[int] | None = None) -> dict:
    config = yaml.safe_load((REPO / "workflow_config/config.yaml").read_text())
    config["experiments"] = list(entries)
    config["split_offsets"] = split_offsets or [0]
    return config


def test_released_weights_are_keyed_by_the_round_0_directory_they_replace() -> None:
    config = config_with(
        {"dataset": "synth", "setting": "full", "ratio": 1, "round0": {"weights": URL, "md5": "840F2B"}},
        {"dataset": "synth", "setting": "wsod", "ratio": 0.1, "split_offsets": [1],
         "round0": {"weights": "pretrained/rvt-s-gen1x0.1_ss.ckpt"}},
        {"dataset": "synth", "setting": "wsod", "ratio": 0.1, "variant": "no-tta", "split_offsets": [1]},
        {"dataset": "synth", "setting": "ssod", "ratio": 0.5, "variant": "rvt-b",
         "round0": {"weights": "rvt-b.ckpt", "crc32": "0x5ACAB6F3"}})
    released = released_round0(config)
    assert set(released) == {("synth", "full_1"), ("synth", "wsod_0.1-s1"), ("synth", "ssod_0.5+rvt-b")}
    full = released[("synth", "full_1")]
    name = "download.ifi.uzh.ch/rpg/RVT/checkpoints/gen1/rvt-s.ckpt"
    assert full.is_url and full.local_path == f"{WEIGHTS_DIR}/{name}" and full.checksum_args() == "--md5 840f2b"
    local = released[("synth", "wsod_0.1-s1")]
    assert not local.is_url and local.local_path == "pretrained/rvt-s-gen1x0.1_ss.ckpt" and local.checksum_args() == ""
    assert released[("synth", "ssod_0.5+rvt-b")].checksum_args() == "--crc32 5acab6f3"
    assert downloaded_weights(released) == {name: full}


@pytest.mark.parametrize("entry, split_offsets, message", [
    ({"round0": {"weights": URL}}, None, "give its md5"),
    ({"round0": {"weights": URL, "md5": "840f2b", "crc32": "5acab6f3"}}, None, "one checksum"),
    ({"round0": {"weights": URL, "md5": "840f2"}}, None, "6 to 32 hex digits"),
    ({"round0": {"weights": "w.ckpt"}}, [0, 1, 2], r"runs split offsets \[0, 1, 2\]"),
])
def test_released_weights_that_cannot_be_right_are_refused(entry, split_offsets, message) -> None:
    config = config_with({"dataset": "synth", "setting": "wsod", "ratio": 0.1, **entry}, split_offsets=split_offsets)
    with pytest.raises(ValueError, match=message):
        released_round0(config)


def test_contradicting_weights_and_clashing_downloads_are_refused() -> None:
    wsod = {"dataset": "synth", "setting": "wsod", "ratio": 0.1}
    # no-tta shares the base's round 0, so its weights would be a second answer for wsod_0.1/round0.
    with pytest.raises(ValueError, match="two different weights"):
        released_round0(config_with({**wsod, "round0": {"weights": "a.ckpt"}},
                                    {**wsod, "variant": "no-tta", "round0": {"weights": "b.ckpt"}}))
    with pytest.raises(ValueError, match="would both download to"):
        released_round0(config_with({**wsod, "round0": {"weights": URL, "md5": "840f2b"}},
                                    {**wsod, "ratio": 0.5, "round0": {"weights": URL + "?mirror=2",
                                                                      "md5": "840f2b"}}))


def round0_regex(constraint: str) -> re.Pattern:
    """The regex Snakemake builds for results/{dataset}/{setting}_{ratio}{offset}{variant}/round{round}/model.ckpt."""
    w = WILDCARD_PATTERNS
    return re.compile(rf"results/(?P<dataset>{constraint})/(?P<setting>{w['setting']})_(?P<ratio>{w['ratio']})"
                      rf"(?P<offset>{w['offset']})(?P<variant>{w['variant']})/round(?P<round>0)/model\.ckpt$")


def test_every_round_0_model_goes_to_exactly_one_rule() -> None:
    released = {("gen1", "wsod_0.01"): Round0Weights("a.ckpt", None),
                ("gen4", "ssod_0.02-s1+rvt-b"): Round0Weights("b.ckpt", None)}
    imported = round0_regex(round0_dataset_constraint(released, imported=True))
    trained = round0_regex(round0_dataset_constraint(released, imported=False))
    for name, is_imported in [("gen1/wsod_0.01", True), ("gen4/ssod_0.02-s1+rvt-b", True),
                              ("gen1/wsod_0.01-s1", False), ("gen1/wsod_0.01+rvt-b", False),
                              ("gen4/wsod_0.01", False), ("gen4/ssod_0.02-s1", False), ("gen1/wsod_0.1", False)]:
        path = f"results/{name}/round0/model.ckpt"
        assert bool(imported.match(path)) == is_imported and bool(trained.match(path)) != is_imported, path
    none_imported = round0_regex(round0_dataset_constraint({}, imported=True))
    all_trained = round0_regex(round0_dataset_constraint({}, imported=False))
    assert not none_imported.match("results/gen1/wsod_0.01/round0/model.ckpt")
    assert all_trained.match("results/gen1/wsod_0.01/round0/model.ckpt")


def test_the_released_weights_examples_in_paper_yaml_are_valid() -> None:
    """Every ``# round0: {...}`` line of paper.yaml is an experiment entry the schema and the workflow accept."""
    from snakemake.utils import validate

    text = (REPO / "workflow_config/paper.yaml").read_text()
    examples = [yaml.safe_load(line.removeprefix("# round0: ")) for line in text.splitlines()
                if line.startswith("# round0: ")]
    assert len(examples) >= 5 and all("round0" in entry for entry in examples)
    base = yaml.safe_load((REPO / "workflow_config/config.yaml").read_text())
    config = {**base, **yaml.safe_load(text), "experiments": examples}
    validate(config, str(REPO / "workflow_config/schema.yaml"))
    released = released_round0(config)
    assert ("gen1", "wsod_0.01") in released and ("gen4", "full_1+rvt-b") in released
    assert {w.checksum.hex for w in downloaded_weights(released).values()} >= {"840f2b", "a94207"}
