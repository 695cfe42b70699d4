"""leod_core.data.label_tensors: the per-class score filter shared by pseudo-labelling and label quality."""
import pytest
import torch

from leod_core.data.label_tensors import passes_class_thresholds


def test_per_class_thresholds_are_strict_and_per_class_and_drop_unknown_classes():
    cid = torch.tensor([0, 0, 1, 1, 1024, -1, 2])
    obj = torch.tensor([0.61, 0.6, 0.31, 0.9, 0.9, 0.9, 0.9])
    cls = torch.tensor([0.9, 0.9, 0.31, 0.3, 0.9, 0.9, 0.9])
    keep = passes_class_thresholds(cid, obj, cls, (0.6, 0.3), (0.6, 0.3))
    assert keep.tolist() == [True, False, True, False, False, False, False]


def test_thresholds_need_one_value_per_class_each():
    one = torch.zeros(1)
    with pytest.raises(ValueError):
        passes_class_thresholds(one, one, one, (0.6,), (0.6, 0.3))
