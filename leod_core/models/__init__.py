"""RVT detector (recurrent MaxViT backbone + YOLOX PAFPN + YOLOX head) as plain PyTorch modules.

Submodules: ``backbone``, ``pafpn``, ``yolox_head``, ``postprocess``, ``detector``, ``checkpoint``.
Import from them directly (this file stays import-free so that ``leod_core.models`` is cheap to import).
"""
