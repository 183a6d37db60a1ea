"""A run directory's own files: the config it ran with (paths made absolute), the resolved config, reproduce.sh.

``reproduce.sh`` starts a new run of the same cells (arches, variants, sizes,
repeat, accelerator, jobs) with the same Python and lab, from any directory:
the copied ``lab.yaml`` names the recipe, cache, results and store by absolute
path, so nothing resolves against the old run directory.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from lab.config import Config
from lab.files import write_atomic
from lab.measure.plan import Plan
from lab.version import __version__

REPO = Path(__file__).resolve().parents[2]


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty.strip() else "")


def portable_config(cfg: Config) -> dict[str, Any]:
    """The config file's settings with every path absolute, as resolved for this run. Pure apart from reading the file."""
    raw = yaml.safe_load(cfg.path.read_text()) or {}
    raw["recipe"] = str(cfg.recipe)
    raw["paths"] = {**(raw.get("paths") or {}), "cache": str(cfg.cache_dir), "results": str(cfg.results_dir)}
    raw["run"] = {**(raw.get("run") or {}), "store": str(cfg.run.store)}
    raw["nightly"] = {**(raw.get("nightly") or {}), "dir": str(cfg.nightly.dir)}
    return dict(raw)


def reproduce_argv(run_dir: Path, plan: Plan) -> list[str]:
    """The command that runs the same cells again. Pure."""
    argv = [sys.executable, "-m", "lab", "--config", str(run_dir / "lab.yaml"), "run"]
    argv += ["--arch", ",".join(a.name for a in plan.arches), "--variant", ",".join(v.name for v in plan.variants)]
    argv += ["--size", ",".join(str(s) for s in plan.sizes), "--repeat", str(plan.repeat), "--jobs", str(plan.jobs)]
    for name, values in plan.axes:
        specs = [f"{name}={v}" for v in values] if name == "tunables" else [f"{name}={','.join(values)}"]
        argv += [x for spec in specs for x in ("--axis", spec)]
    return argv + (["--accel", plan.accel] if plan.accel else [])


def write(run_dir: Path, run_id: str, cfg: Config, plan: Plan, revision: str) -> None:
    """The run directory's files; ``revision`` is :func:`git_revision`, computed once per run by the caller."""
    header = f"# lab {__version__} at {revision}: the config run {run_id} ran with, every path absolute\n"
    write_atomic(run_dir / "lab.yaml", header + yaml.safe_dump(portable_config(cfg), sort_keys=False))
    resolved = {"config_file": str(cfg.path), **asdict(cfg), "plan": asdict(plan)}
    write_atomic(run_dir / "resolved-config.json", json.dumps(resolved, indent=2, default=str) + "\n")
    script = f"#!/bin/sh\n# lab {__version__} at {revision}: the cells of run {run_id}, as a new run\n"
    write_atomic(run_dir / "reproduce.sh", script + "exec " + shlex.join(reproduce_argv(run_dir, plan)) + ' "$@"\n', 0o755)


def raw_stem(variant: str, size: int, axes: str, repeat: int) -> str:
    """The file name (without suffix) of one run's raw output under ``raw/<arch>/``."""
    return f"{variant}-{size}" + (f"-{axes}" if axes else "") + f"-r{repeat}"
