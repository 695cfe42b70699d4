"""`leod profile install`: the repository's profiles/slurm copied where `snakemake --profile slurm` finds it
(Snakemake's own lookup is asked), partitions filled in, an existing profile never overwritten silently."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from snakemake.cli import get_profile_dir
from snakemake.common import get_appdirs
from snakemake.profiles import ProfileConfigFileParser

from leod_core.cli import build_parser, main
from leod_core.workflow import profiles

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "profiles/slurm/config.yaml"
GPU_RULES = ("train_round0", "train_self", "pseudo_label", "evaluate", "video")
SITE = ["--cpu-partition", "batch", "--gpu-partition", "a100", "--account", "proj-7"]


@pytest.fixture
def config_home(tmp_path, monkeypatch) -> Path:
    """An empty XDG_CONFIG_HOME; the working directory is the repository (as for a user's run)."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.chdir(REPO)
    return home


def install(*args: str) -> int:
    return main(["profile", "install", *args])


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_snakemake_finds_the_bare_name_only_once_installed(config_home, capsys):
    assert get_profile_dir("slurm") is None                      # profiles/ is not on Snakemake's search path
    assert install("slurm", *SITE) == 0
    installed = config_home / "snakemake/slurm/config.yaml"
    assert get_profile_dir("slurm") == (installed.parent, installed)
    out = capsys.readouterr().out
    assert str(installed.parent) in out and "snakemake --profile slurm" in out
    assert "partition batch" in out and "partition a100: " + ", ".join(GPU_RULES) in out


def test_the_names_are_filled_in_and_everything_else_is_the_repository_profile(config_home):
    assert install("slurm", *SITE) == 0
    text = (config_home / "snakemake/slurm/config.yaml").read_text()
    installed, source = yaml.safe_load(text), yaml.safe_load(SOURCE.read_text())
    assert installed["default-resources"].pop("slurm_partition") == "batch"
    assert installed["default-resources"].pop("slurm_account") == "proj-7"
    for rule in GPU_RULES:
        assert installed["set-resources"][rule].pop("slurm_partition") == "a100"
        source["set-resources"][rule].pop("slurm_partition")
    source["default-resources"].pop("slurm_partition")
    assert installed == source
    assert text.count("<- EDIT") == SOURCE.read_text().count("<- EDIT")      # the comments stay
    assert text.startswith("# Installed by `leod profile install slurm` from ")


def test_snakemake_parses_the_installed_profile_into_sbatch_resources(config_home):
    assert install("slurm", *SITE) == 0
    with (config_home / "snakemake/slurm/config.yaml").open() as stream:
        parsed = ProfileConfigFileParser().parse(stream)
    assert "slurm_partition=batch" in parsed["default-resources"]
    assert "slurm_account=proj-7" in parsed["default-resources"]
    assert {f"{rule}:slurm_partition=a100" for rule in GPU_RULES} <= set(parsed["set-resources"])
    assert parsed["executor"] == "slurm"


def test_without_names_the_profile_is_copied_as_it_is(config_home):
    assert install("slurm") == 0
    installed = (config_home / "snakemake/slurm/config.yaml").read_text()
    assert installed.split("\n", 1)[1] == SOURCE.read_text()


def test_an_existing_profile_is_kept_unless_forced_and_then_backed_up(config_home, caplog):
    target = config_home / "snakemake/slurm"
    target.mkdir(parents=True)
    (target / "config.yaml").write_text("executor: slurm\njobs: 3\n")
    (target / "notes.txt").write_text("mine")
    before = tree(target)

    assert install("slurm", *SITE) == 1
    assert "exists: pass --force" in caplog.text
    assert tree(target) == before and sorted(os.listdir(target.parent)) == ["slurm"]

    assert install("slurm", *SITE, "--force") == 0
    (backup,) = target.parent.glob("slurm.bak-*")
    assert tree(backup) == before
    assert yaml.safe_load((target / "config.yaml").read_text())["jobs"] == 50


def test_a_failed_swap_puts_the_old_profile_back(config_home, monkeypatch):
    target = config_home / "snakemake/slurm"
    assert install("slurm") == 0
    before = tree(target)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".slurm.new-"):
            raise OSError("disk gone")
        real_rename(src, dst)

    monkeypatch.setattr(profiles.os, "rename", rename)
    with pytest.raises(OSError, match="disk gone"):
        profiles.install_profile("slurm", profiles.SlurmSettings("batch"), force=True)
    assert tree(target) == before and sorted(os.listdir(target.parent)) == ["slurm"]


@pytest.mark.parametrize("args, message", [
    (["slurm", "--cpu-partition", "my cpu"], "--cpu-partition 'my cpu': a SLURM name"),
    (["slurm", "--gpu-partition", "a,b"], "--gpu-partition 'a,b': a SLURM name"),
    (["slurm", "--account", '"x"'], "--account '\"x\"': a SLURM name"),
    (["nope"], "no profile 'nope' in "),
    (["../slurm"], "no profile '../slurm' in "),
    (["local", "--gpu-partition", "gpu"], "--gpu-partition: the profile has 0 '<- EDIT' lines"),
])
def test_bad_requests_are_refused_and_write_nothing(config_home, caplog, args, message):
    assert install(*args) == 1
    assert message in caplog.text
    assert not (config_home / "snakemake").exists() or not os.listdir(config_home / "snakemake")


def test_the_profile_directory_is_snakemakes_own(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in (str(tmp_path / "xdg"), None, "relative/xdg"):
        if value is None:
            monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_CONFIG_HOME", value)
        assert profiles.user_profiles_dir() == Path(get_appdirs().user_config_dir)
    assert profiles.user_profiles_dir() == tmp_path / "home/.config/snakemake"     # a relative one is ignored


def test_the_documented_install_commands_parse():
    commands = re.findall(r"^\s*(leod profile install .*)$", (REPO / "docs/slurm.md").read_text(), re.MULTILINE)
    assert commands
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.func.__name__ == "cmd_profile_install" and args.name == "slurm"
