"""leod_core.config: dataclass overrides and the errors an old (renamed) setting gives."""
from dataclasses import dataclass, field

import pytest

from leod_core.config import RENAMED_SETTINGS, renamed_setting_errors, replace_fields


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
    config = {"evaluate": {"confidence": 0.1},
              "label_quality": {"min_track_len": 6},
              "variants": {"no-tracker": {"pseudo": {"tracker": {"min_track_len": 1}}}},
              "experiments": [{"train": {"data": {"downsample_by_2": True}}}]}
    assert renamed_setting_errors(config, "config") == [
        "config.evaluate.confidence: this setting was renamed to 'confidence_threshold'",
        "config.label_quality.min_track_len: this setting was renamed to 'refilter_min_track_len'",
        "config.experiments[0].train.data.downsample_by_2: this setting was renamed to 'downsampled_by_2'",
    ]


def test_every_new_name_differs_from_its_old_one():
    assert all(old != new for (_, old), new in RENAMED_SETTINGS.items())
