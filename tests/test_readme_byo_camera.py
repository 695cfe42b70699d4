"""The README's "Bring your own event camera" walkthrough: its config is the example file it links, and (slow) its
commands, run as written from a copy of the repository's workflow, give the test mAP table, with round 1 trained
on the pseudo labels of the unlabeled recordings and every evaluation on labeled recordings only."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Bring your own event camera"
EXAMPLE_CONFIG = "workflow_config/examples/my_camera.yaml"
#: What `snakemake` run from the repository root reads (the package itself is installed).
WORKFLOW_FILES = ("Snakefile", "rules", "workflow_config", "envs")
DATASET = "mycam"
EXPERIMENT = f"results/{DATASET}/full_1"
#: The walkthrough takes about 3 minutes on 2 quiet cores; a loaded CI machine may need several times that.
WALKTHROUGH_TIMEOUT_S = 1800


def readme_section() -> str:
    """The README's section, from its heading to the next level-2 heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def code_blocks(language: str) -> list[str]:
    """The section's fenced code blocks in ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", readme_section(), re.MULTILINE | re.DOTALL)


def copy_workflow(workdir: Path) -> Path:
    """A working directory like the repository root: the Snakefile, the rules, the configs, the environments."""
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, workdir / name)
        else:
            shutil.copy2(source, workdir / name)
    return workdir


def test_the_readme_shows_the_example_config_it_runs():
    (config,) = code_blocks("yaml")
    assert yaml.safe_load(config) == yaml.safe_load((REPO / EXAMPLE_CONFIG).read_text())
    assert f"--configfile {EXAMPLE_CONFIG}" in "".join(code_blocks("bash"))


def labeled_by_split(workdir: Path) -> dict[str, dict[str, bool]]:
    """Per split: sequence -> labeled, from the arrangement's summary."""
    summary = json.loads((workdir / f"results/raw/{DATASET}/summary.json").read_text())
    return {split: {rec["sequence"]: rec["labeled"] for rec in recs} for split, recs in summary["splits"].items()}


@pytest.mark.slow
@pytest.mark.timeout(WALKTHROUGH_TIMEOUT_S)
def test_the_walkthrough_runs_as_written(tmp_path):
    workdir = copy_workflow(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    outputs = []
    for block in code_blocks("bash"):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=workdir, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        outputs.append(result.stdout)

    # the table: both rounds of the experiment, printed by the walkthrough's last command
    table = (workdir / f"results/tables/{DATASET}.md").read_text()
    assert table in "".join(outputs)
    (row,) = list(csv.DictReader((workdir / f"results/tables/{DATASET}.csv").open()))
    assert row["setting"] == "full" and row["round 0 (baseline)"] != "" and row["round 1"] != ""

    # the folder: half of the 8 train recordings without boxes, all in train
    splits = labeled_by_split(workdir)
    unlabeled = sorted(seq for seq, labeled in splits["train"].items() if not labeled)
    assert unlabeled == ["synth_train_001", "synth_train_003", "synth_train_005", "synth_train_007"]
    assert all(splits["val"].values()) and all(splits["test"].values()) and len(splits["test"]) == 2

    # round 1 trained on their pseudo labels: no label of theirs in the split, pseudo labels in the dataset
    split = json.loads((workdir / EXPERIMENT / "split.json").read_text())["labeled_frames"]
    assert all(split[seq] == [] for seq in unlabeled)
    pseudo = json.loads((workdir / EXPERIMENT / "round1/pseudo/dataset/pseudo_summary.json").read_text())
    written = {seq: pseudo["per_sequence"][seq] for seq in unlabeled if seq not in pseudo["empty_sequences"]}
    assert set(written) | set(pseudo["empty_sequences"]) >= set(unlabeled)
    assert all(counts["gt_rows"] == 0 for counts in written.values())
    assert sum(counts["pseudo_rows"] for counts in written.values()) > 0
    train_log = (workdir / f"logs/{DATASET}/full_1/round1/train.log").read_text()
    assert "soft assignment" in train_log and f"{EXPERIMENT}/round1/pseudo/dataset" in train_log
    assert (workdir / EXPERIMENT / "round1/model.ckpt").is_file()

    # leod predict on an unlabeled recording: Prophesee boxes on its representation grid, and a video
    from leod_core.data.formats import PROPHESEE_BBOX_DTYPE
    from leod_core.data.preprocess import PRESETS
    from leod_core.data.recording_reprs import RecordingRepresentations

    boxes = np.load(workdir / "my_detections.npy", allow_pickle=False)
    grid = RecordingRepresentations(workdir / "my_recordings/synth_train_001_td.raw", PRESETS["synth"]).timestamps_us
    assert boxes.dtype == PROPHESEE_BBOX_DTYPE and np.isin(boxes["t"], grid).all()
    assert (workdir / "my_detections.mp4").stat().st_size > 0

    # evaluation: the test split is exactly the labeled test recordings
    tested = sorted(path.name for path in (workdir / f"results/data/{DATASET}/test").iterdir())
    assert tested == sorted(splits["test"])
    for round_ in (0, 1):
        metrics = json.loads((workdir / EXPERIMENT / f"round{round_}/eval/test_metrics.json").read_text())
        assert metrics["split"] == "test" and metrics["num_sequences"] == len(tested) and metrics["num_gt_boxes"] > 0
