"""Forward behaviour: padding, feature and prediction shapes, attention partitions, ConvLSTM, recurrence."""
from __future__ import annotations

import math

import pytest
import torch

from leod_core.models.backbone import (ConvLSTMCell, PartitionAttention, SelfAttention, partition_tokens,
                                       unpartition_tokens)
from leod_core.models.detector import RVTConfig, build_detector


def _num_anchors(h: int, w: int) -> int:
    return sum((h // s) * (w // s) for s in (8, 16, 32))


def test_pad_to_multiple_bottom_right_zeros() -> None:
    model = build_detector(RVTConfig.tiny(input_hw=(240, 304)))
    x = torch.rand(2, 20, 240, 304) + 1.0
    y = model.pad_to_multiple(x)
    assert y.shape == (2, 20, 256, 320)
    assert torch.equal(y[..., :240, :304], x)
    assert (y[..., 240:, :] == 0).all() and (y[..., :, 304:] == 0).all()
    assert model.pad_to_multiple(y) is y
    gen4 = build_detector(RVTConfig.tiny(input_hw=(360, 640), partition_split_32=2))
    assert gen4.pad_to_multiple(torch.zeros(1, 20, 360, 640)).shape[-2:] == (384, 640)


def test_gen1_forward_shapes_rvt_tiny() -> None:
    cfg = RVTConfig.tiny(num_classes=2, input_hw=(240, 304))
    model = build_detector(cfg).eval()
    with torch.no_grad():
        feats, states = model.forward_backbone(torch.rand(1, 20, 240, 304))
        out = model.forward_detect(feats)
    for k, (s, mult) in enumerate(zip((4, 8, 16, 32), (1, 2, 4, 8)), start=1):
        assert feats[k].shape == (1, 32 * mult, 256 // s, 320 // s)
        h, c = states[k - 1]
        assert h.shape == c.shape == feats[k].shape and torch.equal(h, feats[k])
    assert out.preds.shape == (1, _num_anchors(256, 320), 7) == (1, 1680, 7)
    assert out.level_hw == ((32, 40), (16, 20), (8, 10))


@pytest.mark.parametrize("size,num_classes", [("small", 3), ("base", 2)])
def test_small_input_shapes_other_sizes(size: str, num_classes: int) -> None:
    cfg = RVTConfig.for_size(size, num_classes=num_classes, input_hw=(64, 96))
    model = build_detector(cfg).eval()
    with torch.no_grad():
        out, states = model(torch.rand(2, 20, 64, 96))
    assert out.preds.shape == (2, _num_anchors(64, 96), 5 + num_classes)
    assert [s[0].shape[1] for s in states] == [cfg.embed_dim * m for m in (1, 2, 4, 8)]
    assert torch.isfinite(out.preds).all()


def _naive_attention(x: torch.Tensor, attn: SelfAttention, groups: torch.Tensor) -> torch.Tensor:
    """Per-token reference: each token attends over the tokens with the same group id.
    qkv channels are laid out per head as [q | k | v] (RVT's layout)."""
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    qkv = attn.qkv(tokens).view(b, h * w, attn.num_heads, 3, attn.dim_head)
    q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
    out = torch.zeros(b, h * w, attn.num_heads, attn.dim_head)
    g = groups.reshape(-1)
    for bi in range(b):
        for t in range(h * w):
            members = (g == g[t]).nonzero().flatten()
            logits = torch.einsum("hd,nhd->hn", q[bi, t], k[bi, members]) / math.sqrt(attn.dim_head)
            out[bi, t] = torch.einsum("hn,nhd->hd", logits.softmax(-1), v[bi, members])
    return attn.proj(out.reshape(b, h * w, c)).reshape(b, h, w, c)


@pytest.mark.parametrize("grid", [False, True])
def test_partition_attention_matches_naive_grouping(grid: bool) -> None:
    torch.manual_seed(0)
    h, w, size = 4, 6, (2, 3)
    block = PartitionAttention(dim=8, partition_size=size, grid=grid, dim_head=4, ls_init_value=1.0)
    x = torch.randn(2, h, w, 8)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    if grid:  # tokens spaced (H/s0, W/s1) apart share a partition
        groups = (rows % (h // size[0])) * 100 + cols % (w // size[1])
    else:  # contiguous s0 x s1 windows
        groups = (rows // size[0]) * 100 + cols // size[1]
    with torch.no_grad():
        expected = _naive_attention(block.norm1(x), block.self_attn, groups)
        got = block._attend(block.norm1(x))
        parts = partition_tokens(x, size, grid)
        assert parts.shape == (2 * 4, 6, 8)
        assert torch.equal(unpartition_tokens(parts, size, (h, w), grid), x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_conv_lstm_gate_order() -> None:
    cell = ConvLSTMCell(dim=2)
    with torch.no_grad():
        cell.conv1x1.weight.zero_()
        # channel blocks: forget, input, output (sigmoid), then cell input (tanh)
        cell.conv1x1.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]))
    x = torch.zeros(1, 2, 1, 1)
    c_prev = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)
    h, c = cell(x, (torch.zeros_like(x), c_prev))
    sig = torch.sigmoid
    f, i, o = sig(torch.tensor([0.1, 0.2])), sig(torch.tensor([0.3, 0.4])), sig(torch.tensor([0.5, 0.6]))
    g = torch.tanh(torch.tensor([0.7, 0.8]))
    c_exp = f * c_prev.flatten() + i * g
    torch.testing.assert_close(c.flatten(), c_exp)
    torch.testing.assert_close(h.flatten(), o * torch.tanh(c_exp))
    h0, c0 = cell(x)  # zero initial state
    torch.testing.assert_close(c0.flatten(), i * g)


def test_reset_mask_zeroes_exactly_the_masked_slots() -> None:
    torch.manual_seed(0)
    cfg = RVTConfig.tiny(num_classes=2, input_hw=(64, 96))
    model = build_detector(cfg).eval()
    warmup = torch.rand(1, 3, 20, 64, 96)
    seq = torch.rand(2, 3, 20, 64, 96)
    reset = torch.tensor([False, True, False])
    with torch.no_grad():
        _, states = model.forward_sequence(warmup)
        assert all(h.abs().sum() > 0 for h, _ in states)
        zeroed = model.reset_states(states, reset)
        for (h, c), (h0, c0) in zip(zeroed, states):
            assert (h[1] == 0).all() and (c[1] == 0).all()
            assert torch.equal(h[[0, 2]], h0[[0, 2]]) and torch.equal(c[[0, 2]], c0[[0, 2]])

        outs, final = model.forward_sequence(seq, states, reset)
        fresh, fresh_states = model.forward_sequence(seq[:, 1:2])  # slot 1 started from zero states
        carried, carried_states = model.forward_sequence(seq, states)  # no reset at all
    assert len(outs) == 2
    for t in range(2):
        torch.testing.assert_close(outs[t].preds[1:2], fresh[t].preds, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(outs[t].preds[[0, 2]], carried[t].preds[[0, 2]], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(outs[t].preds[1], carried[t].preds[1], atol=1e-5)
    for (h, c), (hf, cf) in zip(final, fresh_states):
        torch.testing.assert_close(h[1:2], hf, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c[1:2], cf, atol=1e-5, rtol=1e-5)


def test_forward_sequence_features_only() -> None:
    model = build_detector(RVTConfig.tiny(input_hw=(64, 96))).eval()
    with torch.no_grad():
        feats, states = model.forward_sequence(torch.rand(2, 1, 20, 60, 90), detect=False)
    assert len(feats) == 2 and feats[0][1].shape == (1, 32, 16, 24) and feats[1][4].shape == (1, 256, 2, 3)
    assert len(states) == 4
