"""leod_core.config: dataclass overrides and the errors an old (renamed) setting gives; the workflow config's
`recordings` source against schema.yaml and check_config."""
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from snakemake_interface_common.exceptions import WorkflowError

from leod_core.config import RENAMED_SETTINGS, renamed_setting_errors, replace_fields
from leod_core.workflow.recordings import AUTO_FORMAT, RECORDING_FORMATS, Holdout
from leod_core.workflow.settings import (RECORDINGS_SOURCE, check_config, data_source, datasets_with_source,
                                         recordings_cli_args)


@dataclass(frozen=True)
class _Inner:
    downsampled_by_2: bool = False


@dataclass(frozen=True)
class _Outer:
    confidence_threshold: float = 0.1
    sizes: tuple = ()
    inner: _Inner = field(default_factory=_Inner)


def test_replace_fields_applies_nested_and_list_values():
    out = replace_fields(_Outer(), {"confidence_threshold": 0.5, "sizes": [1, 2], "inner": {"downsampled_by_2": True}},
                         "test")
    assert out == _Outer(0.5, (1, 2), _Inner(True))


@pytest.mark.parametrize("overrides, message", [
    ({"confidence": 0.5}, "test: the setting 'confidence' was renamed to 'confidence_threshold'"),
    ({"inner": {"downsample_by_2": True}}, "test.inner: the setting 'downsample_by_2' was renamed to 'downsampled_by_2'"),
    ({"bogus": 1}, "test: unknown setting 'bogus'"),
])
def test_an_old_or_unknown_setting_is_an_error_naming_it(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        replace_fields(_Outer(), overrides, "test")


def test_renamed_settings_are_found_anywhere_in_a_workflow_config():
    config = {"evaluate": {"confidence": 0.1, "nms": 0.5},
              "label_quality": {"min_track_len": 6},
              "variants": {"no-tracker": {"pseudo": {"tracker": {"min_track_len": 1}}}},
              "experiments": [{"train": {"data": {"downsample_by_2": True}}}]}
    assert renamed_setting_errors(config, "config") == [
        "config.evaluate.confidence: this setting was renamed to 'confidence_threshold'",
        "config.evaluate.nms: this setting was renamed to 'nms_threshold'",
        "config.label_quality.min_track_len: this setting was renamed to 'refilter_min_track_len'",
        "config.experiments[0].train.data.downsample_by_2: this setting was renamed to 'downsampled_by_2'",
    ]


def test_every_new_name_differs_from_its_old_one():
    assert all(old != new for (_, old), new in RENAMED_SETTINGS.items())


# ------------------------------------------------------------------------- the workflow's recordings source
WORKFLOW_CONFIG = Path(__file__).resolve().parents[1] / "workflow_config"


def workflow_config_with(dataset: dict) -> dict:
    """The embedded default with one more dataset, ``mycam``, validated (defaults filled in) as the Snakefile does."""
    config = yaml.safe_load((WORKFLOW_CONFIG / "config.yaml").read_text())
    config["datasets"]["mycam"] = dataset
    validate(config, str(WORKFLOW_CONFIG / "schema.yaml"))
    return config


def test_a_recordings_block_validates_with_the_documented_defaults():
    config = workflow_config_with({"camera": "synth", "sequence_length": 5, "recordings": {"path": "my_recordings"}})
    check_config(config)
    block = config["datasets"]["mycam"]
    assert block["recordings"] == {"path": "my_recordings", "format": AUTO_FORMAT,
                                   "holdout": dataclasses.asdict(Holdout())}
    assert data_source(block) == RECORDINGS_SOURCE and datasets_with_source(config, RECORDINGS_SOURCE) == ["mycam"]
    assert recordings_cli_args(block) == ("--format auto --holdout-test 0.2 --holdout-val 0.2 --source my_recordings "
                                          "--preset synth")


def test_the_schema_lists_every_recording_format():
    schema = yaml.safe_load((WORKFLOW_CONFIG / "schema.yaml").read_text())
    recordings = schema["$defs"]["dataset"]["properties"]["recordings"]["properties"]
    assert tuple(recordings["format"]["enum"]) == RECORDING_FORMATS


def test_recordings_with_another_source_are_rejected():
    config = workflow_config_with({"camera": "synth", "sequence_length": 5, "recordings": {"path": "a"},
                                   "raw": {"path": "b"}})
    with pytest.raises(ValueError, match=r"datasets\.mycam: a dataset needs exactly one of \('synth', 'raw', "
                                         r"'recordings', 'preprocessed'\)"):
        check_config(config)


@pytest.mark.parametrize("recordings, message", [
    ({"format": "auto"}, "'path' is a required property"),
    ({"path": "a", "format": "evt4"}, "'evt4' is not one of"),
    ({"path": "a", "holdout": {"val": 0}}, "0 is less than or equal to the minimum of 0"),
    ({"path": "a", "holdout": {"test": 1}}, "1 is greater than or equal to the maximum of 1"),
    ({"path": "a", "holdout": {"train": 0.5}}, "'train' was unexpected"),
])
def test_a_bad_recordings_block_is_a_schema_error(recordings, message):
    with pytest.raises(WorkflowError, match=message):
        workflow_config_with({"camera": "synth", "sequence_length": 5, "recordings": recordings})


def test_a_holdout_leaving_train_nothing_is_an_error_at_load():
    config = workflow_config_with({"camera": "synth", "sequence_length": 5,
                                   "recordings": {"path": "a", "holdout": {"val": 0.6, "test": 0.4}}})
    with pytest.raises(ValueError, match=r"datasets\.mycam: recordings: holdout val \+ test must be below 1"):
        check_config(config)
