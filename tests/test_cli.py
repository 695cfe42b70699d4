"""The `leod` console script and the README's commands."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_leod_help_lists_the_commands():
    out = subprocess.run(["leod", "--help"], capture_output=True, text=True, check=True).stdout
    listed = set(re.findall(r"^    (\w[\w-]*)\s", out, flags=re.MULTILINE))
    assert {"synth", "preprocess", "split"} <= listed


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    return [line for block in blocks[:2] for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_run_and_test_commands_and_ci_runs_the_test_command():
    run_cmd, test_cmd = readme_commands()
    assert run_cmd.endswith("snakemake --cores all")
    assert "pip install torch==2.13.0" in run_cmd and "pip install torch==2.13.0" in test_cmd
    assert test_cmd.endswith("python -m pytest")
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci_lines


def test_split_rejects_a_bad_ratio_naming_it(tmp_path, caplog):
    from leod_core.cli import main
    for bad, message in (("abc", "ratio 'abc' is not a number"), ("1.5", "ratio '1.5' is not in (0, 1]"),
                         ("0", "ratio '0' is not in (0, 1]")):
        assert main(["split", "--data", str(tmp_path), "--setting", "wsod", "--ratio", bad,
                     "--sequence-length", "5", "--out", str(tmp_path / "s.json")]) == 1
        assert message in caplog.text
