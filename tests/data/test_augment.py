"""Tests of LEOD's training augmentation: probabilities, box transforms, and frames/boxes agreement.

Boxes use LEOD's pixel-centre convention: a box covers the pixels whose centre lies in ``[x, x+w] x [y, y+h]``.
"""
from __future__ import annotations

import pytest
import torch

from leod_core.data import label_tensors as lt
from leod_core.data.augment import (NO_LABEL_WARNING, STREAM_LABEL_EFFICIENT, AugmentConfig, AugmentState,
                                    SamplerAugmentConfig, apply_augmentation, sample_augment_state,
                                    sample_zoom_in_window)

H, W = 30, 40
RANDOM = SamplerAugmentConfig()


def box(x, y, w, h, cls=0, t=5000.0):
    return torch.tensor([[t, x, y, w, h, cls, 1.0, 1.0]], dtype=torch.float32)


GEN1_HW = (240, 304)


def paint(boxes: torch.Tensor, hw: tuple[int, int] = (H, W), steps: int = 2, channels: int = 3) -> torch.Tensor:
    """Frames ``[steps, channels, *hw]`` that are nonzero exactly on the pixels covered by ``boxes``."""
    ev = torch.zeros((steps, channels, *hw), dtype=torch.float32)
    for x, y, w, h in boxes[:, lt.X:lt.H + 1].tolist():
        ev[:, :, int(y):int(y + h) + 1, int(x):int(x + w) + 1] = 1.0
    return ev


def nonzero_extent(ev: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(ev.abs().sum(dim=(0, 1)), as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def zoom_tolerance(size: int, factor: float) -> float:
    """Half a pixel of nearest resampling, plus LEOD's frame/box scale mismatch: the frame is resized by
    ``size / int(size / f)`` but the boxes by ``f``, which shifts a coordinate by up to that difference times
    the window size."""
    return 1.0 + (size / int(size / factor) - factor) * size / factor


# ---------------------------------------------------------------------------------------------- config
def test_defaults_are_leods():
    cfg = AugmentConfig()
    assert (cfg.random.prob_hflip, cfg.random.prob_tflip, cfg.random.prob_rotate, cfg.random.prob_zoom) == (0.5, 0.5, 0, 0.8)
    assert (cfg.random.zoom_in_weight, cfg.random.zoom_out_weight) == (8, 2)
    assert (cfg.random.zoom_in_min, cfg.random.zoom_in_max, cfg.random.zoom_out_min, cfg.random.zoom_out_max) == \
        (1, 1.5, 1, 1.2)
    assert cfg.stream == STREAM_LABEL_EFFICIENT
    assert (cfg.stream.prob_zoom, cfg.stream.zoom_in_weight, cfg.stream.zoom_out_max) == (0.5, 0, 1.2)
    assert AugmentConfig.base().random.prob_tflip == 0 and AugmentConfig.base().stream.prob_tflip == 0
    with pytest.raises(ValueError, match="rotation"):
        SamplerAugmentConfig(prob_rotate=0.1)
    with pytest.raises(ValueError):
        SamplerAugmentConfig(prob_hflip=1.5)


@pytest.mark.parametrize("cfg, expected", [
    (RANDOM, {"h_flip": 0.5, "t_flip": 0.5, "zoom_in": 0.8 * 0.8, "zoom_out": 0.8 * 0.2}),
    (STREAM_LABEL_EFFICIENT, {"h_flip": 0.5, "t_flip": 0.5, "zoom_in": 0.0, "zoom_out": 0.5}),
])
def test_sampled_probabilities(cfg, expected):
    gen = torch.Generator().manual_seed(0)
    states = [sample_augment_state(cfg, (H, W), gen) for _ in range(3000)]
    for key, p in expected.items():
        freq = sum(getattr(s, key) for s in states) / len(states)
        assert abs(freq - p) < 0.035, (key, freq, p)
    for s in states:
        assert not (s.zoom_in and s.zoom_out)
        if s.zoom_out:
            assert 1 <= s.zoom_out_factor <= cfg.zoom_out_max
            assert 0 <= s.zoom_out_x0 <= W - int(W / s.zoom_out_factor)
            assert 0 <= s.zoom_out_y0 <= H - int(H / s.zoom_out_factor)


# ------------------------------------------------------------------------------------------ box ops
def test_flip_scale_and_clamp_formulas():
    b = box(3.0, 4.0, 10.0, 6.0)
    torch.testing.assert_close(lt.flip_lr(b, W)[0, lt.X], torch.tensor(W - 1 - 3.0 - 10.0))
    scaled, hw = lt.scale(box(30.0, 4.0, 9.0, 6.0), 0.5, (H, W))
    assert hw == (H / 2, W / 2)
    torch.testing.assert_close(scaled[0, lt.X:lt.H + 1], torch.tensor([15.0, 2.0, 4.0, 3.0]))  # x1 19.5 -> 19
    assert len(lt.clamp_to_frame(box(45.0, 2.0, 5.0, 5.0), (H, W))) == 0  # entirely outside: dropped
    assert len(lt.zoom_in(box(1.0, 1.0, 3.0, 3.0), 20, 10, 1.5, (H, W))) == 0  # outside the window: dropped


# ----------------------------------------------------------------------------------- frames vs boxes
def test_hflip_frames_and_boxes_agree_pixel_exactly():
    b = torch.cat([box(3.0, 4.0, 10.0, 6.0), box(30.0, 20.0, 9.0, 9.0, cls=1)])
    ev = paint(b)
    state = AugmentState(h_flip=True)
    out, labels, skipped, _ = apply_augmentation(ev, [None, b], [b[:1], None], state, RANDOM, None)
    torch.testing.assert_close(out, paint(labels[1]))
    assert labels[0] is None and skipped[1] is None
    torch.testing.assert_close(skipped[0], labels[1][:1])
    assert torch.equal(out, ev.flip(-1))


@pytest.mark.parametrize("seed", range(10))
def test_zoom_in_keeps_boxes_on_their_pixels(seed):
    gen = torch.Generator().manual_seed(seed)
    b = box(60.0 + 7 * seed, 50.0, 40.0, 30.0)
    ev = paint(b, GEN1_HW, channels=1)
    out, labels, _, state = apply_augmentation(ev, [None, b], [None, None], AugmentState(zoom_in=True), RANDOM, gen)
    assert state.zoom_in and 1 <= state.zoom_in_factor <= 1.5
    assert labels[1] is not None and len(labels[1]) == 1
    x, y, w, h = labels[1][0, lt.X:lt.H + 1].tolist()
    x0, y0, x1, y1 = nonzero_extent(out)
    tx, ty = zoom_tolerance(GEN1_HW[1], state.zoom_in_factor), zoom_tolerance(GEN1_HW[0], state.zoom_in_factor)
    assert tx < 2.5 and ty < 2.5  # at gen1 size LEOD's frame/box mismatch stays below ~1.5 px
    # the painted pixels and the transformed box coincide up to the resampling tolerance
    assert abs(x0 - x) <= tx and abs(x1 - (x + w)) <= tx and abs(y0 - y) <= ty and abs(y1 - (y + h)) <= ty


@pytest.mark.parametrize("seed", range(8))
def test_zoom_out_keeps_boxes_on_their_pixels(seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = SamplerAugmentConfig(prob_hflip=0.0, prob_tflip=0.0, prob_zoom=1.0, zoom_in_weight=0.0, zoom_out_weight=1.0,
                               zoom_out_min=1.05, zoom_out_max=1.2)
    state = sample_augment_state(cfg, GEN1_HW, gen)
    assert state.zoom_out
    b = box(5.0 + 30 * seed, 70.0, 50.0, 40.0)
    out, labels, _, _ = apply_augmentation(paint(b, GEN1_HW, channels=1), [b, None], [None, None], state, cfg, gen)
    x, y, w, h = labels[0][0, lt.X:lt.H + 1].tolist()
    x0, y0, x1, y1 = nonzero_extent(out)
    tx, ty = zoom_tolerance(GEN1_HW[1], state.zoom_out_factor), zoom_tolerance(GEN1_HW[0], state.zoom_out_factor)
    assert abs(x0 - x) <= tx and abs(x1 - (x + w)) <= tx and abs(y0 - y) <= ty and abs(y1 - (y + h)) <= ty
    assert x0 >= state.zoom_out_x0 and y0 >= state.zoom_out_y0


def test_zoom_in_window_contains_the_box():
    gen = torch.Generator().manual_seed(0)
    b = box(20.0, 12.0, 8.0, 6.0)
    for _ in range(50):
        x0, y0 = sample_zoom_in_window(b, (H, W), int(H / 1.4), int(W / 1.4), gen)
        assert x0 <= 20 and x0 + int(W / 1.4) >= 28 - 1 and y0 <= 12 and y0 + int(H / 1.4) >= 18 - 1


def test_zoom_in_never_picks_the_last_box_of_several():
    """LEOD quirk: ``th.randint(0, n - 1)`` never draws the last box."""
    gen = torch.Generator().manual_seed(0)
    boxes = torch.cat([box(0.0, 0.0, 5.0, 5.0), box(33.0, 22.0, 6.0, 6.0)])
    for _ in range(30):
        x0, y0 = sample_zoom_in_window(boxes, (H, W), int(H / 1.5), int(W / 1.5), gen)
        assert x0 <= 0 + 1 and y0 <= 1


def test_zoom_in_without_labels_is_skipped():
    ev = torch.rand((2, 3, H, W))
    with pytest.warns(UserWarning, match=NO_LABEL_WARNING):
        out, labels, _, state = apply_augmentation(ev, [None, None], [None, None], AugmentState(zoom_in=True),
                                                   RANDOM, torch.Generator().manual_seed(3))
    assert not state.zoom_in and torch.equal(out, ev) and labels == [None, None]


def test_uint8_frames_are_augmented_like_float():
    gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    b = box(8.0, 6.0, 12.0, 9.0)
    ev = (torch.rand((2, 3, H, W)) * 10).to(torch.uint8)
    state = AugmentState(h_flip=True, zoom_in=True)
    out_u8, lab_a, _, _ = apply_augmentation(ev, [b, None], [None, None], state, RANDOM, gen_a)
    out_f, lab_b, _, _ = apply_augmentation(ev.float(), [b, None], [None, None], state, RANDOM, gen_b)
    assert out_u8.dtype == torch.uint8 and torch.equal(out_u8.float(), out_f)
    torch.testing.assert_close(lab_a[0], lab_b[0])
