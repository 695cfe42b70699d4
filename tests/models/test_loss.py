"""Tests of leod_core.models.loss: YOLOX loss, LEOD's centre-prior SimOTA and soft anchor assignment.

Anchor field used throughout: a 4×4 level at stride 8 (anchors 0..15, index y·4 + x, cell centres 4, 12, 20, 28)
and a 2×2 level at stride 16 (anchors 16..19, index 16 + y·2 + x, cell centres 8, 24): A = 20, image 32×32.
Expected values are computed in the tests from plain formulas (math, float64), not with the module's code.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from leod_core.models.boxes import elementwise_iou_cxcywh, pairwise_iou_cxcywh
from leod_core.models.loss import (
    LossConfig, YoloXLoss, apply_ignore_thresholds, center_prior, expand_class_thresholds, simota_assign,
)

C = 2  # gen1: car, ped
A = 20
GT_BOX = (16.0, 16.0, 16.0, 16.0)  # covers [8, 24]^2
FAR = (100.0, 100.0, 4.0, 4.0)  # IoU 0 with everything here
#: centre prior (±1.5·stride, strict) of a box centred at (16, 16): level 0 cells x, y in {1, 2}; all of level 1.
PRIOR_16 = {5, 6, 9, 10, 16, 17, 18, 19}


def anchor_field():
    grids, strides = [], []
    for h, w, s in [(4, 4, 8), (2, 2, 16)]:
        yv, xv = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grids.append(torch.stack([xv, yv], -1).reshape(-1, 2))
        strides.append(torch.full((h * w,), float(s)))
    return torch.cat(grids).float(), torch.cat(strides)


GRID, STRIDES = anchor_field()
CENTERS = (GRID + 0.5) * STRIDES[:, None]


def make_preds(boxes: dict, obj=None, cls=None) -> torch.Tensor:
    """One image: ``boxes`` maps anchor -> (cx, cy, w, h), other anchors predict FAR."""
    p = torch.zeros(A, 5 + C)
    p[:, :4] = torch.tensor(FAR)
    for a, box in boxes.items():
        p[a, :4] = torch.tensor(box)
    if obj is not None:
        p[:, 4] = obj
    if cls is not None:
        p[:, 5:] = cls
    return p


def box(cls_id, cx, cy, w, h, obj=1.0, cls=1.0):
    return [float(cls_id), cx, cy, w, h, obj, cls]


def bce(x: float, t: float) -> float:
    """BCE with logits, written out."""
    p = 1.0 / (1.0 + math.exp(-x))
    out = 0.0
    if t > 0:
        out -= t * math.log(p)
    if t < 1:
        out -= (1 - t) * math.log(1 - p)
    return out


def assign(preds, valid_rows, ignore_rows=(), config=LossConfig()):
    v = torch.tensor(valid_rows, dtype=torch.float32).reshape(-1, 7)
    i = torch.tensor(ignore_rows, dtype=torch.float32).reshape(-1, 7)
    return simota_assign(preds[:, :4], preds[:, 4], preds[:, 5:], CENTERS, STRIDES,
                         v[:, 1:5], v[:, 0].long(), i[:, 1:5], config)


def idx(mask: torch.Tensor) -> set:
    return set(mask.nonzero().flatten().tolist())


def run(preds_list, targets_list, config=LossConfig(), num_classes=C):
    preds = torch.stack(preds_list) if isinstance(preds_list, list) else preds_list
    targets = [torch.tensor(t, dtype=torch.float32).reshape(-1, 7) for t in targets_list]
    return YoloXLoss(num_classes, config)(preds, GRID, STRIDES, targets)


RNG = torch.Generator().manual_seed(0)
OBJ = (torch.rand(A, generator=RNG) - 0.5)  # small random logits: assignment is decided by the IoU cost
CLS = (torch.rand(A, C, generator=RNG) - 0.5) * 0.5
#: anchors 5, 10 exact (IoU 1), 6 IoU 0.5, 9 IoU 0.25: top-10 IoU sum 2.75 -> k = 2
ONE_BOX_PREDS = {5: GT_BOX, 10: GT_BOX, 6: (16.0, 16.0, 16.0, 8.0), 9: (16.0, 16.0, 8.0, 8.0)}


# --------------------------------------------------------------------------------------------- box utilities
def test_box_ious():
    a = torch.tensor([GT_BOX])
    b = torch.tensor([GT_BOX, (16.0, 16.0, 16.0, 8.0), (16.0, 16.0, 8.0, 8.0), FAR, (24.0, 16.0, 16.0, 16.0)])
    expected = [1.0, 0.5, 0.25, 0.0, 128.0 / 384.0]
    assert pairwise_iou_cxcywh(a, b)[0].tolist() == pytest.approx(expected)
    assert elementwise_iou_cxcywh(b, a.expand(5, 4)).tolist() == pytest.approx(expected)


# ------------------------------------------------------------------------------------------- assignment
def test_centre_prior_is_strict_and_centre_only():
    prior = center_prior(torch.tensor([GT_BOX]), CENTERS, STRIDES, 1.5)[0]
    assert idx(prior) == PRIOR_16  # anchor 4 (centre x 4 = 16 - 12) sits exactly on the border: excluded
    # centre-only: a tiny box still gets the whole ±1.5-stride neighbourhood (no "inside the box" condition)
    tiny = center_prior(torch.tensor([[16.0, 16.0, 1.0, 1.0]]), CENTERS, STRIDES, 1.5)[0]
    assert idx(tiny) == PRIOR_16


def test_one_box_candidates_dynamic_k_and_matches():
    a = assign(make_preds(ONE_BOX_PREDS, OBJ, CLS), [box(1, *GT_BOX)])
    assert idx(a.candidate_mask) == PRIOR_16
    assert a.dynamic_ks.tolist() == [2]  # int(1 + 1 + 0.5 + 0.25)
    assert idx(a.fg_mask) == {5, 10}
    assert a.matched_gt_inds.tolist() == [0, 0]
    assert a.matched_classes.tolist() == [1, 1]
    assert a.matched_ious.tolist() == pytest.approx([1.0, 1.0])
    assert not a.ignore_mask.any()


def test_dynamic_k_uses_at_most_top10_ious():
    # a box centred on a level-0 cell centre: 3x3 level-0 cells + 4 level-1 cells = 13 candidates, all exact
    gt = (12.0, 12.0, 16.0, 16.0)
    prior = {0, 1, 2, 4, 5, 6, 8, 9, 10, 16, 17, 18, 19}
    a = assign(make_preds({i: gt for i in prior}), [box(0, *gt)])
    assert idx(a.candidate_mask) == prior
    assert a.dynamic_ks.tolist() == [10]
    assert a.num_fg == 10 and idx(a.fg_mask) <= prior


def test_box_centred_outside_the_anchor_field_gets_no_anchor():
    # LEOD's topk raises here ("selected index k out of range"); this port leaves the box unmatched
    a = assign(make_preds({}, OBJ, CLS), [box(0, 200.0, 200.0, 16.0, 16.0)])
    assert a.num_fg == 0 and not a.candidate_mask.any()
    out = run([make_preds({}, OBJ, CLS)], [[box(0, 200.0, 200.0, 16.0, 16.0)]])
    assert out["num_fg"] == 1.0 and out["num_gt"] == 1.0 and torch.isfinite(out["loss"])


def test_anchor_claimed_by_two_boxes_goes_to_the_cheaper_one():
    cls = torch.zeros(A, C)
    cls[5] = torch.tensor([-3.0, 3.0])  # anchor 5 looks like class 1
    preds = make_preds({5: GT_BOX}, torch.zeros(A), cls)
    a = assign(preds, [box(0, *GT_BOX), box(1, *GT_BOX)])  # same box, two classes: both k = 1, both want anchor 5
    assert a.dynamic_ks.tolist() == [1, 1]
    assert idx(a.fg_mask) == {5}
    assert a.matched_gt_inds.tolist() == [1] and a.matched_classes.tolist() == [1]  # box 0 is not re-matched


# ------------------------------------------------------------------------------------------- loss values
def test_one_box_exact_preds_loss_values():
    out = run([make_preds(ONE_BOX_PREDS, OBJ, CLS)], [[box(1, *GT_BOX)]])
    fg = {5, 10}
    assert out["num_fg"] == 2.0 and out["num_gt"] == 1.0 and out["num_fg_per_gt"] == 2.0
    assert out["iou_loss"].item() == pytest.approx(0.0, abs=1e-6)
    exp_obj = sum(bce(OBJ[a].item(), 1.0 if a in fg else 0.0) for a in range(A)) / 2
    exp_cls = sum(bce(CLS[a, 0].item(), 0.0) + bce(CLS[a, 1].item(), 1.0) for a in fg) / 2  # target one_hot * IoU(=1)
    assert out["obj_loss"].item() == pytest.approx(exp_obj, rel=1e-5)
    assert out["cls_loss"].item() == pytest.approx(exp_cls, rel=1e-5)
    assert out["loss"].item() == pytest.approx(5.0 * 0.0 + exp_obj + exp_cls, rel=1e-5)


def test_cls_target_is_the_iou_of_the_matched_prediction():
    # anchor 5 IoU 0.5, anchor 10 IoU 0.25: sum 0.75 -> k = 1 -> anchor 5 (cheaper IoU cost)
    preds = make_preds({5: (16.0, 16.0, 16.0, 8.0), 10: (16.0, 16.0, 8.0, 8.0)}, torch.zeros(A), torch.zeros(A, C))
    out = run([preds], [[box(0, *GT_BOX)]])
    assert out["num_fg"] == 1.0
    assert out["iou_loss"].item() == pytest.approx(1 - 0.5 ** 2)
    assert out["cls_loss"].item() == pytest.approx(bce(0.0, 0.5) + bce(0.0, 0.0))
    exp_obj = bce(0.0, 1.0) + 19 * bce(0.0, 0.0)
    assert out["obj_loss"].item() == pytest.approx(exp_obj)
    assert out["loss"].item() == pytest.approx(5 * 0.75 + exp_obj + bce(0.0, 0.5) + bce(0.0, 0.0), rel=1e-6)


def test_ignore_only_image_excludes_its_anchors_from_objectness():
    preds = make_preds({5: GT_BOX}, OBJ, CLS)
    ign = box(1024, *GT_BOX, obj=0.2, cls=0.2)
    a = assign(preds, [], [ign])
    assert idx(a.ignore_mask) == PRIOR_16 and a.num_fg == 0
    out = run([preds], [[ign]])
    assert out["num_fg"] == 1.0 and out["num_gt"] == 0.0
    assert out["iou_loss"].item() == 0.0 and out["cls_loss"].item() == 0.0
    exp_obj = sum(bce(OBJ[a].item(), 0.0) for a in range(A) if a not in PRIOR_16)
    assert out["obj_loss"].item() == pytest.approx(exp_obj, rel=1e-5)


def test_empty_image_is_all_background():
    out = run([make_preds({}, OBJ, CLS)], [[]])
    assert out["num_fg"] == 1.0 and out["num_fg_per_gt"] == 1.0
    assert out["iou_loss"].item() == 0.0 and out["cls_loss"].item() == 0.0
    exp_obj = sum(bce(OBJ[a].item(), 0.0) for a in range(A))
    assert out["obj_loss"].item() == pytest.approx(exp_obj, rel=1e-5)
    assert out["loss"].item() == pytest.approx(exp_obj, rel=1e-5)


def test_valid_and_ignore_boxes_overlap():
    # ignore box at (24, 24): prior = level-0 cells x, y in {2, 3} + all of level 1; only {11, 14, 15} are outside
    # the valid box's prior; anchor 10 and level 1 are under both and stay normal anchors.
    preds = make_preds(ONE_BOX_PREDS, OBJ, CLS)
    valid, ign = box(0, *GT_BOX), box(1024, 24.0, 24.0, 8.0, 8.0, obj=0.5, cls=0.5)
    a = assign(preds, [valid], [ign])
    assert idx(a.fg_mask) == {5, 10}
    assert idx(a.ignore_mask) == {11, 14, 15}
    assert idx(a.candidate_mask) == PRIOR_16
    out = run([preds], [[valid, ign]])
    fg, ignored = {5, 10}, {11, 14, 15}
    exp_obj = sum(bce(OBJ[i].item(), 1.0 if i in fg else 0.0) for i in range(A) if i not in ignored) / 2
    assert out["obj_loss"].item() == pytest.approx(exp_obj, rel=1e-5)
    assert out["num_fg"] == 2.0 and out["iou_loss"].item() == pytest.approx(0.0, abs=1e-6)
    # the ignore box changes nothing else than the objectness of its own anchors
    hard = run([preds], [[valid]])
    assert out["cls_loss"].item() == pytest.approx(hard["cls_loss"].item())


def test_batch_pools_num_fg_over_images():
    preds = [make_preds(ONE_BOX_PREDS, OBJ, CLS), make_preds({5: GT_BOX}, OBJ, CLS), make_preds({}, OBJ, CLS)]
    targets = [[box(1, *GT_BOX)], [box(1024, *GT_BOX)], []]
    out = run(preds, targets)
    singles = [run([p], [t]) for p, t in zip(preds, targets)]
    assert out["num_fg"] == 2.0 and out["num_gt"] == 1.0
    exp_obj = sum(s["obj_loss"].item() * s["num_fg"] for s in singles) / 2
    assert out["obj_loss"].item() == pytest.approx(exp_obj, rel=1e-5)
    assert out["cls_loss"].item() == pytest.approx(singles[0]["cls_loss"].item(), rel=1e-5)


# ------------------------------------------------------------------------------------------- soft mode
SOFT = LossConfig(ignore_bbox_thresh=(0.7, 0.35))


def test_soft_threshold_turns_low_score_pseudo_box_into_ignore():
    preds = make_preds(ONE_BOX_PREDS, OBJ, CLS)
    low_car = box(0, *GT_BOX, obj=0.9, cls=0.6)  # cls_conf 0.6 < 0.7
    soft = run([preds], [[low_car]], SOFT)
    hard = run([preds], [[low_car]], LossConfig())
    explicit = run([preds], [[box(1024, *GT_BOX, obj=0.9, cls=0.6)]], SOFT)
    assert hard["num_fg"] == 2.0 and hard["num_gt"] == 1.0
    assert soft["num_gt"] == 0.0 and soft["cls_loss"].item() == 0.0
    for k in ("loss", "obj_loss", "iou_loss", "cls_loss"):
        assert soft[k].item() == pytest.approx(explicit[k].item())


def test_apply_ignore_thresholds_rules():
    t = torch.tensor([
        box(0, *GT_BOX, obj=0.9, cls=0.6),   # car, cls < 0.7 -> ignore
        box(0, *GT_BOX, obj=0.69, cls=0.9),  # car, obj < 0.7 -> ignore
        box(0, *GT_BOX, obj=0.7, cls=0.7),   # car at the threshold: kept (strict <)
        box(1, *GT_BOX, obj=0.4, cls=0.5),   # ped above 0.35: kept
        box(1, *GT_BOX, obj=0.3, cls=0.9),   # ped below: ignore
        box(0, *GT_BOX, obj=1.0, cls=1.0),   # GT row: kept
        box(1024, *GT_BOX, obj=0.9, cls=0.9),  # already ignore (tracker / inpainting)
    ])
    before = t.clone()
    out = apply_ignore_thresholds(t, (0.7, 0.35), 1024)
    assert out[:, 0].tolist() == [1024, 1024, 0, 1, 1024, 0, 1024]
    assert torch.equal(out[:, 1:], t[:, 1:]) and torch.equal(t, before)  # input not modified
    assert apply_ignore_thresholds(t, None) is t


def test_gt_rows_are_never_ignored():
    gt = torch.tensor([box(0, *GT_BOX), box(1, *GT_BOX), box(2, *GT_BOX)])  # confidences 1.0
    assert torch.equal(apply_ignore_thresholds(gt, (1.0, 1.0, 1.0)), gt)
    preds = make_preds(ONE_BOX_PREDS, OBJ, CLS)
    soft = run([preds], [[box(0, *GT_BOX)]], SOFT)
    hard = run([preds], [[box(0, *GT_BOX)]], LossConfig())
    assert soft["num_fg"] == hard["num_fg"] == 2.0
    assert soft["loss"].item() == pytest.approx(hard["loss"].item())


def test_gen4_threshold_expansion():
    assert expand_class_thresholds([0.7, 0.35], 3) == (0.35, 0.35, 0.7)  # gen4: ped, cyc, car
    assert expand_class_thresholds([0.7, 0.55], 3) == (0.55, 0.55, 0.7)  # rnndet-soft-gen4-wsod
    assert expand_class_thresholds([0.7, 0.35], 2) == (0.7, 0.35)  # gen1: car, ped
    assert expand_class_thresholds((0.1, 0.2, 0.3), 3) == (0.1, 0.2, 0.3)
    assert expand_class_thresholds(None, 3) is None and expand_class_thresholds([], 2) is None
    assert expand_class_thresholds(0.5, 3) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError):
        expand_class_thresholds([0.1, 0.2, 0.3], 2)
    with pytest.raises(ValueError, match="expand_class_thresholds"):
        YoloXLoss(3, LossConfig(ignore_bbox_thresh=(0.7, 0.35)))
    YoloXLoss(3, LossConfig(ignore_bbox_thresh=expand_class_thresholds((0.7, 0.35), 3)))


def test_bad_inputs_raise():
    loss = YoloXLoss(C)
    preds = make_preds({}, OBJ, CLS)[None]
    with pytest.raises(ValueError, match="class ids"):
        loss(preds, GRID, STRIDES, [torch.tensor([box(2, *GT_BOX)])])
    with pytest.raises(ValueError, match="Tensor\\[N, 7\\]"):
        loss(preds, GRID, STRIDES, [torch.zeros(1, 5)])
    with pytest.raises(ValueError, match="batch"):
        loss(preds, GRID, STRIDES, [])


# ------------------------------------------------------------------------------------------- other knobs
def test_ignore_bg_k_drops_the_highest_background_objectness_only_without_ignore_boxes():
    cfg = LossConfig(ignore_bg_k=0.5)
    out = run([make_preds({}, OBJ, CLS)], [[]], cfg)
    lowest10 = OBJ.argsort()[:10].tolist()
    assert out["obj_loss"].item() == pytest.approx(sum(bce(OBJ[a].item(), 0.0) for a in lowest10), rel=1e-5)
    # a batch with an ignore box anywhere uses LEOD's ignore path, where ignore_bg_k is not applied
    both = run([make_preds({}, OBJ, CLS), make_preds({}, OBJ, CLS)], [[], [box(1024, *GT_BOX)]], cfg)
    exp = sum(bce(OBJ[a].item(), 0.0) for a in range(A)) + sum(
        bce(OBJ[a].item(), 0.0) for a in range(A) if a not in PRIOR_16)
    assert both["obj_loss"].item() == pytest.approx(exp, rel=1e-5)


def test_obj_focal_loss():
    out = run([make_preds({}, OBJ, CLS)], [[]], LossConfig(obj_focal_loss=True))
    exp = 0.0
    for a in range(A):
        p = 1 / (1 + math.exp(-OBJ[a].item()))
        exp += (1 - 0.25) * bce(OBJ[a].item(), 0.0) * p ** 2
    assert out["obj_loss"].item() == pytest.approx(exp, rel=1e-5)


def test_bbox_loss_weighting_by_objectness():
    preds = make_preds({5: (16.0, 16.0, 16.0, 8.0), 10: (16.0, 16.0, 8.0, 8.0)}, torch.zeros(A), torch.zeros(A, C))
    targets = [[box(0, *GT_BOX, obj=0.8)], [box(0, *GT_BOX, obj=0.4)]]
    out = run([preds, preds], targets, LossConfig(bbox_loss_weighting="obj"))
    w = [0.8 / 0.6, 0.4 / 0.6]
    assert out["iou_loss"].item() == pytest.approx(sum(wi * 0.75 for wi in w) / 2, rel=1e-6)
    assert out["cls_loss"].item() == pytest.approx(sum(w) * (bce(0.0, 0.5) + bce(0.0, 0.0)) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        LossConfig(bbox_loss_weighting="w**2")


# ------------------------------------------------------------------------------------------- autograd / amp
def test_gradients_flow_and_ignored_anchors_get_none():
    base = make_preds({5: (15.0, 17.0, 14.0, 18.0), 10: (17.0, 15.0, 12.0, 15.0), 6: (16.0, 16.0, 16.0, 8.0)},
                      OBJ, CLS)
    preds = base[None].clone().requires_grad_(True)
    targets = [torch.tensor([box(0, *GT_BOX), box(1024, 24.0, 24.0, 8.0, 8.0)])]
    out = YoloXLoss(C)(preds, GRID, STRIDES, targets)
    out["loss"].backward()
    g = preds.grad[0]
    assert torch.isfinite(g).all()
    fg = idx(assign(base, [box(0, *GT_BOX)], [box(1024, 24.0, 24.0, 8.0, 8.0)]).fg_mask)
    assert fg and all(g[a, :4].abs().sum() > 0 for a in fg)  # IoU loss reaches the matched boxes
    assert all(g[a, 4] == 0 for a in (11, 14, 15))  # ignore region: no objectness gradient
    assert all(g[a, 4] != 0 for a in range(A) if a not in (11, 14, 15))
    assert g[:, 5:][[a for a in range(A) if a not in fg]].abs().sum() == 0  # cls loss on foreground only


def test_bf16_autocast_matches_fp32():
    torch.manual_seed(0)
    head = nn.Linear(8, 5 + C)
    feats = torch.randn(2, A, 8)
    targets = [torch.tensor([box(0, 14.0, 15.0, 14.0, 12.0), box(1024, 26.0, 26.0, 8.0, 8.0)]),
               torch.tensor([box(1, 18.0, 17.0, 10.0, 20.0, obj=0.5, cls=0.5)])]
    loss_fn = YoloXLoss(C, SOFT)

    def forward():
        out = head(feats)
        xy = (out[..., :2] + GRID) * STRIDES[:, None]
        wh = torch.exp(out[..., 2:4]) * STRIDES[:, None]
        return loss_fn(torch.cat([xy, wh, out[..., 4:]], -1), GRID, STRIDES, targets)

    ref = forward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head(feats).dtype == torch.bfloat16  # the preds really reach the loss in bf16
        amp = forward()
    assert amp["loss"].dtype == torch.float32 and torch.isfinite(amp["loss"])
    assert amp["num_fg"] == ref["num_fg"]
    # bf16 keeps 8 mantissa bits (relative rounding 2^-9 per value); the loss agrees to within 1 %
    assert amp["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-2)
    for k in ("iou_loss", "obj_loss", "cls_loss"):
        assert amp[k].item() == pytest.approx(ref[k].item(), rel=1e-2)
    amp["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
