"""DDP helpers: objects gathered from every rank, and BatchNorm synchronised across ranks on any device (LEOD
trains with SyncBN whenever more than one process runs).

PyTorch's :class:`torch.nn.SyncBatchNorm` computes its statistics with CUDA-only kernels, and DDP refuses it in a
CPU module, so a CPU DDP run (gloo) cannot use it. There :class:`CpuSyncBatchNorm` all-reduces the per-channel
sums itself (differentiably, so the backward pass is synchronised too); on GPUs PyTorch's layer runs, as
Lightning's ``sync_batchnorm`` sets it up. Both handle a rank whose input is empty: it still joins the collectives.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from torch import Tensor, nn


def gather_from_ranks(value: Any, world_size: int) -> list[Any]:
    """``value`` of every rank, in rank order (a collective under DDP: every rank must call it)."""
    if world_size == 1:
        return [value]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` synchronised across the ranks of a CPU DDP run (module docstring).

    In training mode under an initialised process group of more than one rank, an input ``[N, C, H, W]`` is
    normalised with the mean and (biased) variance over every rank's ``N x H x W`` values, and the running
    statistics are updated with the unbiased variance, as BatchNorm does. Otherwise it is plain BatchNorm.
    """

    def _syncs(self) -> bool:
        return self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def forward(self, x: Tensor) -> Tensor:
        if not self._syncs():
            return super().forward(x)
        self._check_input_dim(x)
        dims, shape, channels = [0, 2, 3], [1, -1, 1, 1], x.shape[1]
        local = torch.cat([x.sum(dims), x.new_full((1,), x.numel() / channels)])
        total = dist_nn.all_reduce(local)
        count = total[channels]
        mean = total[:channels] / count.clamp(min=1)
        centred = x - mean.view(shape)
        var = dist_nn.all_reduce((centred * centred).sum(dims)) / count.clamp(min=1)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and count.item() > 1:
            self._update_running_stats(mean.detach(), var.detach() * count / (count - 1))
        return y

    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var, alpha=factor)


def replace_batchnorm(module: nn.Module, select: Callable[[nn.Module], bool],
                      new: type[nn.modules.batchnorm._BatchNorm]) -> nn.Module:
    """``module`` with every BatchNorm layer for which ``select`` holds replaced by a ``new`` layer that shares
    its parameters and buffers."""
    out = module
    if select(module):
        out = new(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, replace_batchnorm(child, select, new))
    return out


def has_synced_batchnorm(module: nn.Module) -> bool:
    """True if ``module`` holds BatchNorm layers synchronised across ranks (either kind)."""
    return any(isinstance(m, (nn.SyncBatchNorm, CpuSyncBatchNorm)) for m in module.modules())


class SyncBatchNormPlugin(TorchSyncBatchNorm):
    """Lightning's ``sync_batchnorm`` plugin, with :class:`CpuSyncBatchNorm` layers when training on the CPU
    (``cpu``); reverting gives plain BatchNorm layers again, as Lightning's plugin does."""

    def __init__(self, cpu: bool):
        self.cpu = cpu

    def apply(self, model: nn.Module) -> nn.Module:
        if not self.cpu:
            return super().apply(model)
        return replace_batchnorm(model, lambda m: type(m) is nn.BatchNorm2d, CpuSyncBatchNorm)

    def revert(self, model: nn.Module) -> nn.Module:
        if not self.cpu:
            return super().revert(model)
        return replace_batchnorm(model, lambda m: isinstance(m, CpuSyncBatchNorm), nn.BatchNorm2d)
