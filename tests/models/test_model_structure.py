"""Model structure: parameter counts, RVT-S gen1 state-dict layout, configuration presets."""
from __future__ import annotations

import pytest

from leod_core.models.detector import RVTConfig, build_detector, count_parameters
from rvt_reference import parse_state_dict_file


@pytest.mark.parametrize("size,expected", [("tiny", 4.405e6), ("small", 9.870e6), ("base", 18.536e6)])
def test_parameter_counts_match_rvt(size: str, expected: float) -> None:
    n = count_parameters(build_detector(RVTConfig.for_size(size, num_classes=2)))
    assert abs(n - expected) / expected < 0.02, n


def test_rvt_s_exact_parameter_count() -> None:
    assert count_parameters(build_detector(RVTConfig.small(num_classes=2))) == 9_870_165


def test_rvt_s_gen1_state_dict_matches_reference_listing() -> None:
    rows = parse_state_dict_file()
    assert len(rows) == 376
    sd = build_detector(RVTConfig.small(num_classes=2, input_hw=(240, 304), partition_split_32=1)).state_dict()
    assert list(sd) == [k for k, _, _ in rows]  # same keys, same order
    for key, shape, dtype in rows:
        assert tuple(sd[key].shape) == shape, key
        assert sd[key].dtype == dtype, key
    # The first attention block of every stage has no norm1 (the downsampling output is normalised).
    assert "backbone.stages.0.att_blocks.0.att_window.norm1.weight" not in sd
    assert "backbone.stages.0.att_blocks.0.att_grid.norm1.weight" in sd


def test_config_presets_and_derived_sizes() -> None:
    gen1 = RVTConfig.small(num_classes=2, input_hw=(240, 304), partition_split_32=1)
    assert (gen1.embed_dim, gen1.dim_head, gen1.fpn_depth) == (48, 24, 0.33)
    assert gen1.padded_hw == (256, 320) and gen1.partition_size == (8, 10)
    gen4 = RVTConfig.base(num_classes=3, input_hw=(360, 640), partition_split_32=2)
    assert gen4.padded_hw == (384, 640) and gen4.partition_size == (6, 10)
    tiny = RVTConfig.for_size("t", num_classes=2)
    assert (tiny.size, tiny.embed_dim, tiny.dim_head, tiny.fpn_depth) == ("tiny", 32, 32, 0.33)
    assert RVTConfig.for_size("B").embed_dim == 64 and RVTConfig.for_size("b").fpn_depth == 0.67
    with pytest.raises(ValueError, match="unknown RVT size"):
        RVTConfig.for_size("huge")
    custom = RVTConfig.tiny(embed_dim=16, dim_head=16)
    assert custom.embed_dim == 16 and custom.size == "tiny"


def test_config_dict_round_trip() -> None:
    cfg = RVTConfig.tiny(num_classes=3, input_hw=(64, 96), partition_split_32=2)
    d = cfg.to_dict()
    assert all(isinstance(v, (str, int, float, list)) for v in d.values())
    assert RVTConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="bogus"):
        RVTConfig.from_dict({**d, "bogus": 1})
