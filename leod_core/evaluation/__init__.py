"""Evaluation: the Prophesee-protocol COCO mAP (``detection``), result tables (``tables``) and plots (``plots``).

Submodules are imported on demand so that ``import leod_core.evaluation`` stays cheap (no COCO, pandas or
matplotlib import).
"""
