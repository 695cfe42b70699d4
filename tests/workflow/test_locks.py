"""One run per working directory: the lock message a second run stops with."""
from __future__ import annotations

from leod_core.workflow.locks import LOCK_DIR, concurrent_run_message


def test_no_message_without_lock_files(tmp_path):
    assert concurrent_run_message(tmp_path) is None
    (tmp_path / LOCK_DIR).mkdir(parents=True)
    assert concurrent_run_message(tmp_path) is None


def test_lock_files_give_the_lock_message_with_the_way_out(tmp_path):
    (tmp_path / LOCK_DIR).mkdir(parents=True)
    (tmp_path / LOCK_DIR / "0.output.lock").write_text("results/tables/synth.md\n")
    message = concurrent_run_message(tmp_path)
    assert message.startswith("Directory cannot be locked: another snakemake run is using")
    assert str(tmp_path.resolve()) in message and "snakemake --unlock" in message and "--rerun-incomplete" in message
