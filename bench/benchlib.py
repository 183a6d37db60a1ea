"""What the benchmarks share: their options, a throwaway config over the lab's warm cache, and a timed `lab run`."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lab import config

REPO = Path(__file__).resolve().parents[1]


def options(doc: str | None) -> tuple[argparse.Namespace, config.Config]:
    """``--rounds`` (side-by-side repetitions, default 3) and ``--repeat`` (lab run's, default 5), and the lab's config."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5)
    return p.parse_args(), config.load(REPO / "lab.yaml")


def temp_config(cfg: config.Config, tmp: str) -> Path:
    """lab.yaml with results and store in ``tmp`` and the cache the lab's own (used warm, never modified)."""
    raw = yaml.safe_load((REPO / "lab.yaml").read_text())
    raw["recipe"] = str(REPO / "images" / "tiny.yaml")
    raw["paths"] = {"cache": str(cfg.cache_dir), "results": f"{tmp}/results"}
    raw["run"]["store"] = f"{tmp}/lab.sqlite"
    conf = Path(tmp) / "lab.yaml"
    conf.write_text(yaml.safe_dump(raw))
    return conf


def lab_run(conf: Path, *args: str, quiet: bool = False, env: dict[str, str] | None = None) -> tuple[float, str]:
    """`lab run --arch all ARGS` as a subprocess: wall seconds and its stderr (exits on failure)."""
    argv = [sys.executable, "-m", "lab", "--config", str(conf), *(["-q"] if quiet else []), "run", "--arch", "all", *args]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"lab run {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, proc.stderr
