"""(slow) The shrunk embedded default from released weights: the WSOD experiment's ``round0`` points at a checkpoint
with the structure of LEOD's released ones, served from 127.0.0.1 with an MD5 prefix as RVT publishes. The plan
downloads and imports it instead of training round 0, and the loop runs to its tables."""
from __future__ import annotations

import hashlib
import sys

import pytest
import torch

from leod_core.models.checkpoint import load_model_checkpoint
from leod_core.models.detector import RVTConfig, build_detector
from runner import EXP, REPO, copy_config, edit_config, job_counts, shrink, snakemake

sys.path.insert(0, str(REPO / "tests/models"))
from released_fixtures import write_released_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow
WEIGHTS = "rvt-t-synthx0.1_ss.ckpt"


def embedded_default_model() -> RVTConfig:
    """The embedded default's round-0 model (workflow_config/config.yaml: RVT-T with embed_dim 16, 64x96 frames)."""
    return RVTConfig.for_size("tiny", 2, (64, 96), 1, embed_dim=16, dim_head=16)


def test_the_embedded_default_starts_from_released_weights(served_directory, tmp_path):
    url, root = served_directory
    torch.manual_seed(0)
    released = build_detector(embedded_default_model()).state_dict()
    write_released_checkpoint(root / WEIGHTS, released, dataset="synth", size="tiny")
    md5 = hashlib.md5((root / WEIGHTS).read_bytes()).hexdigest()

    workdir = copy_config(tmp_path / "run")
    shrink(workdir, threshold=0.0, max_rounds=1)
    edit_config(workdir, lambda config: config["experiments"][0].update(
        round0={"weights": f"{url}/{WEIGHTS}", "md5": md5[:6]}))

    plan = snakemake(workdir)
    assert plan.returncode == 0, plan.stderr[-3000:]
    counts = job_counts(plan.stdout)
    assert (counts["download_round0_weights"], counts["import_round0"], counts["train_round0"]) == (1, 1, 1)
    trained = [block for block in plan.stdout.split("\n\n") if "rule train_round0:" in block]
    assert len(trained) == 1 and "results/synth/full_1/round0/model.ckpt" in trained[0], trained

    run = snakemake(workdir, dry_run=False)
    assert run.returncode == 0, run.stderr[-4000:]
    model, config = load_model_checkpoint(workdir / f"{EXP}/round0/model.ckpt")
    assert config == embedded_default_model()
    assert all(torch.equal(model.state_dict()[key], value) for key, value in released.items())
    assert not (workdir / f"{EXP}/round0/train_state").exists()
    host = url.removeprefix("http://")
    assert (workdir / f"results/downloads/weights/{host}/{WEIGHTS}").read_bytes() == (root / WEIGHTS).read_bytes()
    import_log = (workdir / "logs/synth/wsod_0.1/round0/import.log").read_text()
    assert "optimizer_states" in import_log and "skipped" in import_log, import_log
    for path in (f"{EXP}/round0/eval/test_metrics.json", f"{EXP}/round1/model.ckpt",
                 f"{EXP}/round1/eval/test_metrics.json", "results/tables/synth.md"):
        assert (workdir / path).is_file(), path

    again = snakemake(workdir)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]
