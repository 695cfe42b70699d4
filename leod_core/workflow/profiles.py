"""``leod profile install``: put one of the repository's Snakemake profiles (``profiles/<name>/``) where
``snakemake --profile <name>`` finds it.

Snakemake 9 resolves a bare profile name (``snakemake.cli.get_profile_dir``) as a directory of that name in
the current directory, then in the user's config directory (``$XDG_CONFIG_HOME/snakemake``, by default
``~/.config/snakemake``), then in the site's (``/etc/xdg/snakemake``); it never looks in ``profiles/``. So
``--profile slurm`` works once ``profiles/slurm`` is copied to the user's config directory, which this module
does: with the partition (and account) names filled in where the profile marks them ``<- EDIT``, written to a
hidden sibling first and renamed into place, and never over an existing profile unless forced (the old one is
then kept as a ``.bak-<time>`` sibling, never deleted).
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from platformdirs import AppDirs

from leod_core.data.atomic import make_tmp_dir

#: The repository's profiles (an editable install: ``pip install -e .``).
PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
PROFILE_FILE = "config.yaml"
#: Snakemake's own application directories (``snakemake.common.get_appdirs``).
SNAKEMAKE_APPDIRS = ("snakemake", "snakemake")
#: What a SLURM partition or account name may contain here (no spaces, commas, colons or quotes).
SLURM_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
#: The ``<- EDIT`` lines of profiles/slurm/config.yaml: the partitions are YAML anchors that every rule's
#: ``slurm_partition`` refers to; the account is a commented-out default resource.
CPU_PARTITION_LINE = re.compile(r"^(\s*slurm_partition: &cpu_partition )\S+", re.MULTILINE)
GPU_PARTITION_LINE = re.compile(r"^(\s*slurm_partition: &gpu_partition )\S+", re.MULTILINE)
ACCOUNT_LINE = re.compile(r"^(\s*)# (slurm_account: )\S+", re.MULTILINE)


@dataclass(frozen=True)
class SlurmSettings:
    """The site-specific names of profiles/slurm; ``None`` keeps the profile's own."""

    cpu_partition: str | None = None
    gpu_partition: str | None = None
    account: str | None = None


@dataclass(frozen=True)
class InstalledProfile:
    name: str
    path: Path
    backup: Path | None                 # the profile that was there before (--force), moved aside
    partitions: dict[str, list[str]]    # partition -> the rules submitted there
    account: str | None

    def report(self) -> str:
        """What was installed where, and the command to run."""
        lines = [f"Installed Snakemake profile '{self.name}' in {self.path}"]
        if self.backup:
            lines.append(f"The profile that was there is kept as {self.backup}")
        lines += [f"  partition {name}: {', '.join(rules)}" for name, rules in self.partitions.items()]
        if self.account:
            lines.append(f"  account: {self.account}")
        lines += ["Edit it there for your site; then run, from the repository:",
                  f"  snakemake --profile {self.name} [--configfile workflow_config/paper.yaml]"]
        return "\n".join(lines)


def available_profiles(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(config.parent.name for config in profiles_dir.glob(f"*/{PROFILE_FILE}"))


def profile_source(name: str, profiles_dir: Path = PROFILES_DIR) -> Path:
    """The repository's profile directory ``name``; a ``ValueError`` naming the known ones otherwise."""
    source = profiles_dir / name
    if "/" in name or name in ("", ".", "..") or not (source / PROFILE_FILE).is_file():
        known = ", ".join(available_profiles(profiles_dir)) or f"none: {profiles_dir} is missing"
        raise ValueError(f"no profile {name!r} in {profiles_dir} (known: {known})")
    return source


def user_profiles_dir() -> Path:
    """Where Snakemake looks for a profile name after the current directory: ``$XDG_CONFIG_HOME/snakemake``
    (an absolute ``XDG_CONFIG_HOME``; otherwise ``~/.config/snakemake``)."""
    return Path(AppDirs(*SNAKEMAKE_APPDIRS).user_config_dir)


def check_slurm_name(option: str, value: str) -> str:
    if not SLURM_NAME.fullmatch(value):
        raise ValueError(f"{option} {value!r}: a SLURM name of letters, digits and _ . + - (no spaces)")
    return value


def _replace_once(pattern: re.Pattern[str], replacement: str, text: str, option: str) -> str:
    """``text`` with ``pattern``'s one match replaced (``replacement`` may use its groups: ``\\g<1>``)."""
    new, count = pattern.subn(replacement, text)
    if count != 1:
        raise ValueError(f"{option}: the profile has {count} '<- EDIT' lines for it, not one (it is an option of "
                         f"profiles/slurm); edit an installed copy by hand")
    return new


def fill_in(text: str, settings: SlurmSettings) -> str:
    """profiles/slurm/config.yaml's text with the given names in its ``<- EDIT`` lines (comments kept)."""
    for pattern, value, option in ((CPU_PARTITION_LINE, settings.cpu_partition, "--cpu-partition"),
                                   (GPU_PARTITION_LINE, settings.gpu_partition, "--gpu-partition")):
        if value is not None:
            quoted = json.dumps(check_slurm_name(option, value))
            text = _replace_once(pattern, r"\g<1>" + quoted, text, option)
    if settings.account is not None:
        quoted = json.dumps(check_slurm_name("--account", settings.account))
        text = _replace_once(ACCOUNT_LINE, r"\g<1>\g<2>" + quoted, text, "--account")
    return text


def partitions(config: dict) -> dict[str, list[str]]:
    """Which rules a parsed SLURM profile submits to which partition (the default partition: "every other rule")."""
    default = (config.get("default-resources") or {}).get("slurm_partition")
    found: dict[str, list[str]] = {str(default): ["every other rule"]} if default is not None else {}
    for rule, resources in (config.get("set-resources") or {}).items():
        partition = str(resources.get("slurm_partition", default))
        if partition != str(default):
            found.setdefault(partition, []).append(rule)
    return found


def account(config: dict) -> str | None:
    value = (config.get("default-resources") or {}).get("slurm_account")
    return None if value is None else str(value)


def _check_filled(config: dict, settings: SlurmSettings) -> None:
    """The filled-in profile parses and submits where it was asked to."""
    values = {*partitions(config), account(config)}
    for value in (settings.cpu_partition, settings.gpu_partition, settings.account):
        if value is not None and value not in values:
            raise ValueError(f"the filled-in profile does not use {value!r}: edit the installed copy by hand")


def _stage(source: Path, dest: Path, settings: SlurmSettings) -> tuple[Path, dict]:
    """A hidden sibling of ``dest`` holding ``source``'s files, the config filled in."""
    staged = make_tmp_dir(dest, "new")
    try:
        shutil.copytree(source, staged, dirs_exist_ok=True)
        config_file = staged / PROFILE_FILE
        text = fill_in(config_file.read_text(), settings)
        config = yaml.safe_load(text)
        _check_filled(config, settings)
        config_file.write_text(f"# Installed by `leod profile install {dest.name}` from {source}\n{text}")
    except BaseException:
        shutil.rmtree(staged)
        raise
    return staged, config


def _refuse_existing(dest: Path) -> None:
    if os.path.lexists(dest):
        raise FileExistsError(f"{dest} exists: pass --force to replace it (the old one is then kept as "
                              f"{dest.name}.bak-<time> beside it)")


def _backup_path(dest: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = (f"{dest.name}.bak-{stamp}" + (f"-{i}" if i else "") for i in itertools.count())
    return next(dest.with_name(name) for name in names if not os.path.lexists(dest.with_name(name)))


def _swap(staged: Path, dest: Path, force: bool) -> Path | None:
    """Rename ``staged`` to ``dest``. An existing ``dest`` is an error without ``force``; with it, it is renamed
    aside first (and back if the swap fails) and its new path returned."""
    backup = None
    if not force:
        _refuse_existing(dest)
    elif os.path.lexists(dest):
        backup = _backup_path(dest)
        os.rename(dest, backup)
    try:
        os.rename(staged, dest)
    except BaseException:
        if backup is not None:
            os.rename(backup, dest)
        raise
    return backup


def install_profile(name: str, settings: SlurmSettings = SlurmSettings(), force: bool = False,
                    profiles_dir: Path = PROFILES_DIR, target_dir: Path | None = None) -> InstalledProfile:
    """Copy the repository's profile ``name`` into ``target_dir`` (default: :func:`user_profiles_dir`) with
    ``settings`` filled in. Nothing is written when it fails; an existing profile is replaced only with
    ``force`` and is then kept as a backup."""
    source = profile_source(name, profiles_dir)
    dest = (target_dir or user_profiles_dir()) / name
    if not force:
        _refuse_existing(dest)                  # before anything is written
    staged, config = _stage(source, dest, settings)
    try:
        backup = _swap(staged, dest, force)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return InstalledProfile(name, dest, backup, partitions(config), account(config))
