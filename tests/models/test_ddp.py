"""DDP on two CPU processes (gloo) through the `leod` console script: the ranks train on different batches,
only rank 0 writes model.ckpt, and a preempted run resumes to the uninterrupted weights; BatchNorm statistics are
synchronised across the ranks (LEOD's SyncBN) and every rank sees the same val AP."""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from leod_core.data.loaders import build_train_loader
from leod_core.models.checkpoint import load_rvt_state_dict
from leod_core.models.detector import RVTConfig
from leod_core.models.lightning_module import OptimConfig
from leod_core.models.loss import LossConfig
from leod_core.models.train import (LAST_CHECKPOINT, MODEL_CHECKPOINT, TRAIN_STATE_DIR, ResumableDetectionModule,
                                    TaggedBatch, TrainerConfig, build_trainer)
from leod_core.models.distributed import CpuSyncBatchNorm, SyncBatchNormPlugin
from leod_core.models.train_job import frame_hw

STEPS = 4
LEOD = str(Path(sys.executable).with_name("leod"))   # Lightning starts rank 1 by rerunning this script
PROBE = Path(__file__).with_name("ddp_probe.py")


def ddp_command(dataset, out: Path, config: Path) -> list[str]:
    config.write_text("model:\n  size: tiny\n  overrides: {embed_dim: 16, dim_head: 16}\n"
                      "data: {sequence_length: 5, batch_size: 4, sampling: mixed, augment: true}\n"
                      "trainer: {log_every_n_steps: 1}\n")
    return [LEOD, "--no-progress", "train", "--data", str(dataset.root), "--split", str(dataset.split),
            "--out", str(out), "--config", str(config), "--steps", str(STEPS), "--accelerator", "cpu",
            "--devices", "2", "--checkpoint-every", "1000"]


def run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def uninterrupted(small_dataset, tmp_path_factory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("ddp")
    return base / "out", run(ddp_command(small_dataset, base / "out", base / "c.yaml"))


@pytest.mark.slow
def test_two_ranks_train_on_different_batches_and_rank_0_writes_the_model(uninterrupted):
    out, log = uninterrupted
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert log.count(f"wrote {out / MODEL_CHECKPOINT}") == 1 and (out / MODEL_CHECKPOINT).is_file()
    state = torch.load(out / TRAIN_STATE_DIR / LAST_CHECKPOINT, weights_only=True)
    assert state["global_step"] == STEPS
    per_rank = state["leod_rnn_states"]
    assert len(per_rank) == 2 and per_rank[0].keys() == per_rank[1].keys()
    # The ranks share the weights, so their recurrent states after the last batch differ only if their batches
    # (the last ones and those before, carried in the stream slots) did.
    pairs = [(a, b) for w in per_rank[0] for sa, sb in zip(per_rank[0][w], per_rank[1][w]) for a, b in zip(sa, sb)]
    assert pairs and not all(torch.allclose(a, b, atol=1e-3) for a, b in pairs)


@pytest.mark.slow
def test_preempted_ddp_run_resumes_to_the_uninterrupted_weights(uninterrupted, small_dataset, tmp_path):
    out = tmp_path / "out"
    cmd = ddp_command(small_dataset, out, tmp_path / "c.yaml")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if f"step 1/{STEPS}:" in line:
            proc.send_signal(signal.SIGTERM)   # rank 0 only: the ranks agree to stop at the same step
            break
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, log[-3000:]   # 75; SIGKILL if Lightning's observer saw rank 1 exit first
    state = torch.load(out / TRAIN_STATE_DIR / LAST_CHECKPOINT, weights_only=True)
    assert 1 <= state["global_step"] < STEPS and len(state["leod_rnn_states"]) == 2
    assert f"received SIGTERM at step {state['global_step']}: saved" in log
    assert not (out / MODEL_CHECKPOINT).exists()

    assert "resuming from" in run(cmd)
    a, b = load_rvt_state_dict(out / MODEL_CHECKPOINT), load_rvt_state_dict(uninterrupted[0] / MODEL_CHECKPOINT)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def probe_ranks(dataset, out: Path, sync: bool) -> list[dict]:
    run([sys.executable, str(PROBE), str(dataset.root), str(dataset.split), str(out), "sync" if sync else "nosync"])
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.slow
def test_batchnorm_statistics_agree_across_ranks_only_when_synchronised(small_dataset, tmp_path):
    """The ranks draw different batches: after a step their BatchNorm running statistics differ unless the layers
    are synchronised (the default with more than one process). Validation gives every rank the same val AP."""
    synced, unsynced = probe_ranks(small_dataset, tmp_path / "sync", True), probe_ranks(small_dataset,
                                                                                        tmp_path / "nosync", False)
    assert [r["synced"] for r in synced] == [True, True] and [r["synced"] for r in unsynced] == [False, False]
    assert len(synced[0]["bn"]) > 20   # the PAFPN and YOLOX head's BaseConv blocks
    for key in synced[0]["bn"]:
        torch.testing.assert_close(synced[0]["bn"][key], synced[1]["bn"][key], rtol=0, atol=0, msg=key)
    assert not all(torch.allclose(unsynced[0]["bn"][k], unsynced[1]["bn"][k]) for k in unsynced[0]["bn"])
    assert sorted(synced[0]["val_AP"]) == [1, 2] and synced[0]["val_AP"] == synced[1]["val_AP"]


def test_trainer_synchronises_batchnorm_with_more_than_one_process(tmp_path):
    def layer_sync(**trainer):
        cfg = TrainerConfig(accelerator="cpu", progress_bar=False, **trainer)
        return getattr(build_trainer(tmp_path, 4, cfg).strategy, "_layer_sync", None)

    synced = layer_sync(devices=2)
    assert isinstance(synced, SyncBatchNormPlugin) and synced.cpu
    assert layer_sync(devices=2, sync_batchnorm=False) is None and layer_sync(devices=1) is None


def test_cpu_sync_batchnorm_plugin_converts_and_reverts_batchnorm_layers():
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 8, 8)
    expected = plain(x)
    synced = SyncBatchNormPlugin(cpu=True).apply(torch.nn.Sequential(*plain))
    assert type(synced[1]) is CpuSyncBatchNorm and synced[1].weight is plain[1].weight
    torch.testing.assert_close(synced(x), expected)   # a single process: plain BatchNorm
    reverted = SyncBatchNormPlugin(cpu=True).revert(synced)
    assert type(reverted[1]) is torch.nn.BatchNorm2d and reverted[1].running_mean is plain[1].running_mean


def batchnorm_and_data(layer: type[torch.nn.BatchNorm2d]) -> tuple[torch.nn.BatchNorm2d, torch.Tensor, torch.Tensor]:
    """A BatchNorm layer with random affine parameters, an input [4, 3, 5, 5] and an output gradient (seeded)."""
    torch.manual_seed(0)
    bn = layer(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    return bn, torch.randn(4, 3, 5, 5) * 3 + 1, torch.randn(4, 3, 5, 5)


def cpu_sync_batchnorm_rank(rank: int, init_file: str, out: str) -> None:
    """Rank ``rank`` of 2 (gloo): CpuSyncBatchNorm forward and backward on its half of the batch."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    bn, x, grad = batchnorm_and_data(CpuSyncBatchNorm)
    part = x[2 * rank:2 * rank + 2].clone().requires_grad_()
    y = bn(part)
    (y * grad[2 * rank:2 * rank + 2]).sum().backward()
    torch.save({"y": y.detach(), "dx": part.grad, "dw": bn.weight.grad, "db": bn.bias.grad,
                "running": (bn.running_mean, bn.running_var)}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_cpu_sync_batchnorm_on_two_ranks_is_batchnorm_on_the_whole_batch(tmp_path):
    """Each of 2 gloo ranks holds half the batch: outputs, input gradients and running statistics equal plain
    BatchNorm's on the whole batch, and the ranks' parameter gradients sum to its (DDP then averages them)."""
    torch.multiprocessing.spawn(cpu_sync_batchnorm_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    bn, x, grad = batchnorm_and_data(torch.nn.BatchNorm2d)
    x.requires_grad_()
    y = bn(x)
    (y * grad).sum().backward()
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach())
    torch.testing.assert_close(torch.cat([r["dx"] for r in ranks]), x.grad)
    torch.testing.assert_close(ranks[0]["dw"] + ranks[1]["dw"], bn.weight.grad)
    torch.testing.assert_close(ranks[0]["db"] + ranks[1]["db"], bn.bias.grad)
    for r in ranks:
        torch.testing.assert_close(r["running"], (bn.running_mean, bn.running_var))


@pytest.mark.parametrize("sync_batchnorm", [False, True], ids=["batchnorm", "sync_batchnorm"])
def test_a_rank_without_labeled_frames_still_runs_backward(small_dataset, sync_batchnorm):
    """With synchronised BatchNorm the rank also runs the FPN and head on no frames (joining their collectives)."""
    torch.manual_seed(0)
    config = RVTConfig.tiny(2, frame_hw(small_dataset.root, False), embed_dim=16, dim_head=16)
    module = ResumableDetectionModule(config, LossConfig(), OptimConfig())
    if sync_batchnorm:
        module.mdl = SyncBatchNormPlugin(cpu=True).apply(module.mdl)
    module.trainer = SimpleNamespace(world_size=2)
    batch = next(iter(build_train_loader(small_dataset.root, small_dataset.split, "random", 2, 5, aug_config=None)))
    unlabeled = dataclasses.replace(batch, labels=[[None] * batch.batch_size for _ in batch.labels])
    loss = module.training_step(TaggedBatch(unlabeled, epoch=0, index=0), 0)
    loss.backward()
    assert loss.item() == 0
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())
