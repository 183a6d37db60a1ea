"""Boot and image-build figures for the foundation, measured side by side in one run.

Usage: .venv/bin/python bench/boot.py [--repeat 5] [--arch all] [--skip-build]

Prints, per arch: boot-to-SSH (median, min, max over --repeat boots), QEMU
start to ready marker, guest RAM in use, QEMU RSS, image sizes, and image
build time from a cold cache (fresh apt lists and .debs: downloads included)
and from a warm one (.debs cached, image rebuilt). Build timings use a
throwaway cache directory, never the lab's own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from lab import arches, config
from lab.guests.boot import boot
from lab.guests.images import ImageStore


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def boots(cfg: config.Config, store: ImageStore, arch: arches.Arch, repeat: int) -> dict[str, object]:
    image = store.ensure(arch)
    ssh, ready, ram, rss, accel = [], [], [], [], ""
    for _ in range(repeat):
        with boot(cfg, image) as b:
            ssh.append(b.info.ssh_seconds)
            ready.append(b.info.ready_seconds)
            accel = b.info.accel
            used = b.guest.run("awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print t - a}' /proc/meminfo").stdout
            ram.append(int(used.strip()))
            assert b.vm.pid is not None
            rss.append(rss_kib(b.vm.pid))
    sizes = {name: f["size"] for name, f in image.manifest["files"].items()}
    return {
        "arch": arch.name,
        "accel": accel,
        "boot_to_ssh_s": {"median": statistics.median(ssh), "min": min(ssh), "max": max(ssh), "n": len(ssh)},
        "ready_s_median": statistics.median(ready),
        "guest_ram_used_mib": statistics.median(ram) / 1024,
        "qemu_rss_mib": statistics.median(rss) / 1024,
        "image_bytes": sizes,
    }


def builds(cfg: config.Config, selected: list[arches.Arch]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="lab-bench-cache-") as tmp:
        cold_cfg = replace(cfg, cache_dir=Path(tmp))
        for arch in selected:
            store = ImageStore(cold_cfg)  # shares apt lists once fetched: 'cold' = no .debs, no image
            started = time.monotonic()
            image = store.ensure(arch)
            cold = time.monotonic() - started
            shutil.rmtree(image.dir)
            started = time.monotonic()
            store.ensure(arch)
            warm = time.monotonic() - started
            out[arch.name] = {"cold_s": cold, "warm_s": warm}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--arch", default="all")
    p.add_argument("--skip-build", action="store_true")
    args = p.parse_args()
    cfg = config.load(Path(__file__).resolve().parents[1] / "lab.yaml")
    selected = arches.select(args.arch)
    store = ImageStore(cfg)
    report: dict[str, object] = {"boots": [boots(cfg, store, a, args.repeat) for a in selected]}
    if not args.skip_build:
        report["builds"] = builds(cfg, selected)
    print(json.dumps(report, indent=2))
    print("\narch      accel  boot-to-ssh median (min-max)  ready   guest RAM  QEMU RSS  build cold/warm", file=sys.stderr)
    for row in report["boots"]:  # type: ignore[attr-defined]
        b = row["boot_to_ssh_s"]
        build = report.get("builds", {}).get(row["arch"], {})  # type: ignore[attr-defined]
        bw = f"{build['cold_s']:.1f}s/{build['warm_s']:.1f}s" if build else "-"
        print(
            f"{row['arch']:<9} {row['accel']:<6} {b['median']:.2f}s ({b['min']:.2f}-{b['max']:.2f}) n={b['n']}"
            f"    {row['ready_s_median']:.2f}s  {row['guest_ram_used_mib']:.0f} MiB     {row['qemu_rss_mib']:.0f} MiB   {bw}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
