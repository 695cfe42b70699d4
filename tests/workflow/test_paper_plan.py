"""paper.yaml planned on a fake preprocessed tree of its two datasets (``fake_tree.py``: the real layout and index
files, tiny payloads, 60 training sequences per dataset): the plan holds exactly one pseudo-label job per shard of
every self-training round of every experiment, and the expected training and evaluation jobs.

Pseudo-label jobs appear only once the ``shard_list`` checkpoints have run (their number is the shard list's), so
the test first builds every round's shard list for real (link_preprocessed, split, shard_list: cheap CPU rules),
then dry-runs the default target. The expected counts are computed here from paper.yaml (merged over
config.yaml) and the tree's sequence counts, independently of the workflow's own helpers.
``benchmarks/bench_paper_plan.py`` runs the same at the real sequence counts, and through the gates."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fake_tree import GEN1, GEN4, write_fake_tree, write_overlay
from runner import REPO, copy_config, job_counts, snakemake

pytestmark = pytest.mark.slow

NUM_TRAIN = 60      # >= 60: SSOD at 1 % keeps one sequence, and split offsets 1 and 2 exist
PAPER = REPO / "workflow_config/paper.yaml"


def merged_config() -> dict:
    """paper.yaml over config.yaml as Snakemake merges them (mappings recursively, lists replaced)."""
    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out
    return merge(yaml.safe_load((REPO / "workflow_config/config.yaml").read_text()),
                 yaml.safe_load(PAPER.read_text()))


def ratio_text(ratio) -> str:
    return f"{float(ratio):g}" if float(ratio) != 1 else "1"


def planned_experiments(config: dict) -> dict[tuple[str, str], dict]:
    """(dataset, directory name) -> {"rounds": set of rounds, "own_round0": bool} over ``experiments`` and
    ``ablation.experiments`` (each ablation variant beside its base experiment, which the main list holds)."""
    owns_round0 = {name: bool({"train", "sequence_length"} & set(overlay or {}))
                   for name, overlay in config.get("variants", {}).items()}
    found: dict[tuple[str, str], dict] = {}

    def add(entry: dict) -> None:
        full = entry["setting"] == "full"
        offsets = entry.get("split_offsets", [0] if full else config.get("split_offsets", [0]))
        rounds = int(entry.get("max_rounds", config["self_training"]["max_rounds"]))
        variant = entry.get("variant", "")
        for offset in offsets:
            name = (f"{entry['setting']}_{ratio_text(entry['ratio'])}{f'-s{offset}' if offset else ''}"
                    f"{f'+{variant}' if variant else ''}")
            exp = found.setdefault((entry["dataset"], name), {"rounds": set(), "own_round0": True})
            exp["rounds"] |= set(range(rounds + 1))
            exp["own_round0"] = not variant or owns_round0[variant]
            if variant:   # its base experiment (no variant), as many rounds
                add({key: value for key, value in entry.items() if key != "variant"})

    for entry in config["experiments"]:
        add(entry)
    for entry in config.get("ablation", {}).get("experiments", []):
        add(entry)
    return found


def expected_counts(config: dict, num_train: dict[str, int]) -> dict[str, int]:
    """Jobs of the dry run once the shard lists exist and before any gate has run."""
    exps = planned_experiments(config)
    from_round = config["self_training"]["gate"]["from_round"]
    shards = config["self_training"]["num_shards"]
    self_rounds = [(key, r) for key, exp in exps.items() for r in sorted(exp["rounds"]) if r >= 1]
    undecided = [(key, r) for key, r in self_rounds if r < from_round]   # trained without waiting for a gate
    round0 = [key for key, exp in exps.items() if exp["own_round0"]]
    return {
        "pseudo_label": sum(min(shards, num_train[dataset]) for (dataset, _), _ in self_rounds),
        "merge_pseudo": len(self_rounds), "gate": len(self_rounds),
        "split": len(round0), "train_round0": len(round0), "train_self": len(undecided),
        "evaluate": len(round0) + len(undecided),
    }


def shard_list_targets(config: dict) -> list[str]:
    return [f"results/{dataset}/{name}/round{r}/pseudo/shard_list.json"
            for (dataset, name), exp in sorted(planned_experiments(config).items())
            for r in sorted(exp["rounds"]) if r >= 1]


def test_the_paper_plan_holds_one_pseudo_label_job_per_shard(tmp_path: Path):
    config = merged_config()
    shapes = {"gen1": GEN1, "gen4": GEN4}
    assert sorted({entry["dataset"] for entry in config["experiments"]}) == sorted(shapes)
    trees = {}
    for name, shape in shapes.items():
        trees[name] = tmp_path / "data" / name
        write_fake_tree(trees[name], shape.with_counts({"train": NUM_TRAIN, "val": 1, "test": 1}, (8.0, 10.0)))
    workdir = copy_config(tmp_path / "work")
    overlay = write_overlay(tmp_path / "overlay.yaml", trees)
    configs = ("--configfile", str(PAPER), str(overlay))

    expected = expected_counts(config, {name: NUM_TRAIN for name in shapes})

    before = snakemake(workdir, *configs)     # shards are unknown until the shard lists exist
    assert before.returncode == 0, before.stderr
    counts = job_counts(before.stdout)
    assert "pseudo_label" not in counts
    assert counts["split"] == expected["split"] and counts["shard_list"] == expected["gate"]
    assert counts["sequence_index"] == len(shapes)    # read once per dataset, not per split or shard list

    targets = shard_list_targets(config)
    built = snakemake(workdir, *targets, *configs, dry_run=False)   # --configfile takes the words after it
    assert built.returncode == 0, built.stderr[-4000:]
    assert all((workdir / target).is_file() for target in targets)

    result = snakemake(workdir, *configs)
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert {rule: counts.get(rule, 0) for rule in expected} == {**expected, "split": 0}
    assert counts.get("shard_list", 0) == 0
