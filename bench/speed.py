"""Issue 21's targets, side by side in one run: this tree against an older revision of lab (the old path).

Usage: .venv/bin/python bench/speed.py [--rounds 3] [--against 13069e5] [--cold]

The old revision is checked out into a temporary git worktree and run with the same Python and the same warm
cache (each revision keeps its own image, payload and snapshot entries there; nothing is modified). Each round
runs both, alternating, so drift hits both alike. Prints medians (min-max) of wall and CPU seconds (lab and its
QEMUs: the children's rusage) for:

- warm ``lab run --arch all --repeat 5`` (the matrix);
- the cost model of this tree: wall per extra repeat (--repeat 10 vs 5), per extra size (--size 1M,2M vs 1M) and
  per extra arch (x86_64, then x86_64,arm64, then all, at --repeat 5);
- with --cold, a first run of this tree on an empty cache (downloads included).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lab import config

REPO = Path(__file__).resolve().parents[1]


def conf_for(root: Path, cfg: config.Config, tmp: Path, name: str) -> Path:
    """``root``'s lab.yaml with results and store under ``tmp`` and the lab's own (warm) cache."""
    raw = yaml.safe_load((root / "lab.yaml").read_text())
    raw["recipe"] = str(root / "images" / "tiny.yaml")
    raw["paths"] = {"cache": str(cfg.cache_dir), "results": str(tmp / name / "results")}
    raw["run"]["store"] = str(tmp / name / "lab.sqlite")
    out = tmp / f"{name}.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


def run(root: Path, conf: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """``lab run ARGS`` of the tree at ``root``: (wall, CPU seconds of it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "--config", str(conf), "-q", "run", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root), **(env or {})},
        cwd=root,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{root}: lab run {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):5.1f} s ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--against", default="13069e5", help="the old revision (default: lab before issue 21)")
    p.add_argument("--cold", action="store_true")
    args = p.parse_args()
    cfg = config.load(REPO / "lab.yaml")
    with tempfile.TemporaryDirectory(prefix="lab-bench-speed-") as tmp_text:
        tmp = Path(tmp_text)
        old = tmp / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.against], check=True, capture_output=True)
        try:
            trees = {"new": (REPO, conf_for(REPO, cfg, tmp, "new")), "old": (old, conf_for(old, cfg, tmp, "old"))}
            matrix = ("--arch", "all", "--repeat", "5")
            for root, conf in trees.values():
                run(root, conf, *matrix)  # warm both trees' cache entries and snapshots first
            walls: dict[str, list[float]] = {"new": [], "old": []}
            cpus: dict[str, list[float]] = {"new": [], "old": []}
            for _ in range(args.rounds):
                for name, (root, conf) in trees.items():
                    wall, cpu = run(root, conf, *matrix)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
            print(f"warm lab run --arch all --repeat 5, {args.rounds} rounds side by side")
            for name in trees:
                print(
                    f"  {name:<4} ({args.against if name == 'old' else 'this tree'}): wall {spread(walls[name])}, CPU {spread(cpus[name])}"
                )
            ratio = statistics.median(walls["new"]) / statistics.median(walls["old"])
            print(f"  ratio new/old (median wall): {ratio:.2f}")
            root, conf = trees["new"]
            model = {
                "x86_64 --repeat 5": ("--arch", "x86_64", "--repeat", "5"),
                "x86_64 --repeat 10": ("--arch", "x86_64", "--repeat", "10"),
                "x86_64 --size 1M,2M": ("--arch", "x86_64", "--repeat", "5", "--size", "1M,2M"),
                "x86_64,arm64": ("--arch", "x86_64,arm64", "--repeat", "5"),
                "all": matrix,
            }
            got = {k: statistics.median(run(root, conf, *a)[0] for _ in range(args.rounds)) for k, a in model.items()}
            base = got["x86_64 --repeat 5"]
            print("cost model (this tree, medians):")
            print(f"  one arch (x86_64), --repeat 5:   {base:.1f} s")
            print(f"  per extra repeat (x86_64):       {(got['x86_64 --repeat 10'] - base) / 5:.2f} s")
            print(f"  per extra size (x86_64, 1M->2M): {got['x86_64 --size 1M,2M'] - base:.2f} s")
            print(f"  per extra arch: +arm64 {got['x86_64,arm64'] - base:.2f} s, +riscv64 {got['all'] - got['x86_64,arm64']:.2f} s")
            if args.cold:
                wall, cpu = run(root, conf, "--arch", "all", env={"LAB_CACHE": str(tmp / "cold-cache")})
                print(f"first run on an empty cache (this tree): wall {wall:.1f} s, CPU {cpu:.1f} s")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture_output=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
