"""Lab's own QEMU against the host's, measured side by side in one run (issue 20).

Usage: .venv/bin/python bench/qemu.py [--rounds 3] [--repeat 5]

Warm `lab run --arch all --repeat R` with lab's default QEMU (qemu.from: trixie-backports: every arch restored,
riscv64 included) against the same command with qemu.from: host (the host's QEMU: riscv64 boots cold where it is
older than 10.2), alternating, --rounds times; then the size of the QEMU cache entry.
Results and stores go to a temp directory; the lab's cache is used warm (one warm-up run each first).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import yaml
from benchlib import lab_run, options, temp_config

from lab.guests import qemu_store


def with_origin(conf: Path, origin: str) -> Path:
    raw = yaml.safe_load(conf.read_text())
    raw["qemu"] = {"from": origin}
    out = conf.with_name(f"lab-{origin}.yaml")
    out.write_text(yaml.safe_dump(raw))
    return out


def main() -> None:
    args, cfg = options(__doc__)
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as tmp:
        base = temp_config(cfg, tmp)
        confs = {origin: with_origin(base, origin) for origin in ("trixie-backports", "host")}
        walls: dict[str, list[float]] = {o: [] for o in confs}
        boots: dict[str, str] = {}
        for conf in confs.values():
            lab_run(conf, "--repeat", str(args.repeat))  # warm-up: snapshots saved where they work
        for _ in range(args.rounds):
            for origin, conf in confs.items():
                wall, log = lab_run(conf, "--repeat", str(args.repeat))
                walls[origin].append(wall)
                found = re.findall(r"lab: (\w+) up via tcg \((restored|cold[^)]*\)?)\)", log)
                boots[origin] = ", ".join(f"{arch} {how}" for arch, how in sorted(set(found)))
        own, host = (statistics.median(walls[o]) for o in confs)
        for origin in confs:
            print(f"warm lab run --arch all --repeat {args.repeat}, qemu.from {origin}: median {statistics.median(walls[origin]):.2f}s "
                  f"of {', '.join(f'{w:.2f}' for w in walls[origin])}; boots: {boots[origin]}")  # fmt: skip
        print(f"ratio own / host: {own / host:.2f}")
        entry = qemu_store.entry_of(qemu_store.ensure(cfg))
        du = subprocess.run(["du", "-sh", str(entry)], capture_output=True, text=True, check=False).stdout.split()[:1]
        print(f"QEMU cache entry: {entry} ({du[0] if du else '?'})")


if __name__ == "__main__":
    main()
