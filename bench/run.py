"""`lab run` wall time against its parts, measured side by side in one run.

Usage: .venv/bin/python bench/run.py [--repeat 5] [--skip-cold]

1. bare: per arch, one boot to SSH and the probe variants run --repeat times over SSH one by one
   (what lab run has to do at the least), summed over the arches;
2. `lab run --arch all --jobs 1` (sequential) and `lab run --arch all` (default jobs) as subprocesses;
3. cold: `lab run --arch all` with an empty cache directory, broken down by phase from its progress log.
Ratios: sequential wall / bare sum (target <= 1.15), parallel wall / sequential wall (< 1).
Results and stores go to a temp directory; the lab's own cache is used warm and never modified.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tempfile
import time

from benchlib import REPO, lab_run, temp_config

from lab import arches, config
from lab.guests.boot import boot
from lab.guests.images import ImageStore
from lab.measure import engine as measure
from lab.payloads.build import PayloadStore
from lab.payloads.variants import VARIANTS
from lab.text import parse_size


def bare(cfg: config.Config, repeat: int, file_bytes: int) -> dict[str, float]:
    out = {}
    images, payloads = ImageStore(cfg), PayloadStore(cfg)
    for arch in arches.ARCHES:
        image, built = images.ensure(arch), [payloads.ensure(arch, v) for v in VARIANTS]
        started = time.monotonic()
        with boot(cfg, image) as b:
            up = time.monotonic() - started
            remotes = measure.install(b.guest, built, None)
            t = time.monotonic()
            for _ in range(repeat):
                for remote in remotes.values():
                    b.guest.run(
                        shlex.join(measure.probe_argv(remote, 1 << 20, file_bytes=file_bytes))
                    )  # one SSH call per run: the bare cost
            runs = time.monotonic() - t
        out[arch.name] = up + runs
        print(f"bare {arch.name}: boot-to-ssh {up:.2f}s + {repeat * len(VARIANTS)} probe runs {runs:.2f}s", file=sys.stderr)
    return out


def phases(log: str) -> dict[str, float]:
    """Seconds spent in each phase, from the plain progress lines 'lab: ARCH: STATE (T s)'."""
    line = re.compile(r"^lab: (\w+): (.+?) \(([\d.]+)s\)$", re.M)
    events = [(m[1], re.sub(r" \d+/\d+$| \(retry\)$", "", m[2]), float(m[3])) for m in line.finditer(log)]
    spent: dict[str, float] = {}
    last: dict[str, tuple[str, float]] = {}
    for arch, state, t in events:
        if arch in last:
            prev, since = last[arch]
            spent[prev] = spent.get(prev, 0.0) + t - since
        last[arch] = (state, t)
    return spent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--skip-cold", action="store_true")
    args = p.parse_args()
    cfg = config.load(REPO / "lab.yaml")
    with tempfile.TemporaryDirectory(prefix="lab-bench-run-") as tmp:
        conf = temp_config(cfg, tmp)
        lab_run(conf, "--repeat", "1")  # warm every cache first
        parts = bare(cfg, args.repeat, parse_size(cfg.run.file_bytes))
        seq, _ = lab_run(conf, "--repeat", str(args.repeat), "--jobs", "1")
        par, _ = lab_run(conf, "--repeat", str(args.repeat))
        total = sum(parts.values())
        print(f"\nwarm, --repeat {args.repeat}, 3 arches x {len(VARIANTS)} variants")
        print(f"  bare sum (boots + probe runs)      {total:6.1f}s")
        print(f"  lab run --jobs 1 (sequential)      {seq:6.1f}s   ratio to bare {seq / total:.2f}")
        print(f"  lab run (jobs from cores/memory)   {par:6.1f}s   ratio to sequential {par / seq:.2f}")
        if not args.skip_cold:
            import os

            env = dict(os.environ, LAB_CACHE=f"{tmp}/cold-cache")
            cold, log = lab_run(conf, "--repeat", str(args.repeat), env=env)
            print(f"\ncold (empty cache), --repeat {args.repeat}: {cold:.1f}s wall; phase seconds summed over arches:")
            for phase, seconds in phases(log).items():
                print(f"  {phase:<10} {seconds:6.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
