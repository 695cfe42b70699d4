"""YOLOX head: prior bias init, anchor order and box decoding (the HeadOutput contract)."""
from __future__ import annotations

import math

import torch

from leod_core.models.yolox_head import PRIOR_BIAS, YOLOXHead, make_grid


def _head_and_features(num_classes: int = 3, hw: tuple[int, int] = (32, 64)):
    torch.manual_seed(0)
    head = YOLOXHead(num_classes=num_classes, in_channels=(64, 128, 256), strides=(8, 16, 32)).eval()
    feats = [torch.randn(2, c, hw[0] // s, hw[1] // s) for c, s in zip((64, 128, 256), (8, 16, 32))]
    return head, feats


def test_hidden_width_and_prior_bias() -> None:
    head, _ = _head_and_features()
    assert head.hidden_dim == 64  # int(256 * 256 / 1024)
    assert math.isclose(PRIOR_BIAS, -math.log(99.0))
    for conv in list(head.cls_preds) + list(head.obj_preds):
        assert torch.allclose(conv.bias, torch.full_like(conv.bias, -math.log((1 - 0.01) / 0.01)))
    assert YOLOXHead(2, (96, 192, 384)).hidden_dim == 96  # RVT-S


def test_zero_regression_decodes_to_cell_corner_with_stride_size() -> None:
    head, feats = _head_and_features()
    with torch.no_grad():
        for conv in list(head.reg_preds) + list(head.obj_preds):
            conv.weight.zero_()
        for conv in head.reg_preds:
            conv.bias.zero_()
        out = head(feats)
    assert out.level_hw == ((4, 8), (2, 4), (1, 2))
    assert out.preds.shape == (2, 32 + 8 + 2, 8)
    assert out.grid_xy.shape == (42, 2) and out.strides.shape == (42,)
    offset = 0
    for (h, w), s in zip(out.level_hw, (8, 16, 32)):
        for i in range(h):
            for j in range(w):
                a = offset + i * w + j  # level by level, row-major
                assert out.grid_xy[a].tolist() == [j, i] and out.strides[a].item() == s
                assert out.preds[:, a, 0:2].tolist() == [[j * s, i * s]] * 2  # centre = grid * stride
                assert out.preds[:, a, 2:4].tolist() == [[s, s]] * 2  # w = h = exp(0) * stride
        offset += h * w
    # objectness is a logit: with zero weights it equals the prior bias
    torch.testing.assert_close(out.obj_logits, torch.full((2, 42), PRIOR_BIAS))


def test_preds_follow_raw_maps() -> None:
    head, feats = _head_and_features(num_classes=2)
    with torch.no_grad():
        raw = head.raw_outputs(feats)
        out = head(feats)
    offset = 0
    for (h, w), s, r in zip(out.level_hw, (8, 16, 32), raw):
        for i in range(h):
            for j in range(w):
                a = offset + i * w + j
                p = out.preds[:, a]
                torch.testing.assert_close(p[:, 0], (r[:, 0, i, j] + j) * s)
                torch.testing.assert_close(p[:, 1], (r[:, 1, i, j] + i) * s)
                torch.testing.assert_close(p[:, 2:4], torch.exp(r[:, 2:4, i, j]) * s)
                torch.testing.assert_close(p[:, 4:], r[:, 4:, i, j])  # obj + class logits, untouched
        offset += h * w
    assert out.cls_logits.shape == (2, 42, 2) and out.boxes_cxcywh.shape == (2, 42, 4)


def test_make_grid_order() -> None:
    grid, strides = make_grid([(2, 3)], [8])
    assert grid.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]
    assert strides.tolist() == [8.0] * 6
