"""RVT detector (recurrent MaxViT backbone + YOLOX PAFPN + YOLOX head) as plain PyTorch modules.

Submodules: ``backbone``, ``pafpn``, ``yolox_head``, ``postprocess``, ``detector``, ``boxes``; ``checkpoint`` (our
files) and ``released`` (RVT's / LEOD's released Lightning checkpoints); ``inference``; training: ``loss``,
``lightning_module``, ``train``, ``train_job``, ``validation``, ``distributed``.
Import from them directly (this file stays import-free so that ``leod_core.models`` is cheap to import).
"""
