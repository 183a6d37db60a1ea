"""Snapshot restore against cold boots, measured side by side in one run (issue 13).

Usage: .venv/bin/python bench/snapshots.py [--rounds 3] [--repeat 5]

1. per arch, boot-to-SSH of a cold boot and of a restore (median of --rounds each), with QEMU's RSS and
   the guest's memory in use;
2. warm `lab run --arch all --repeat R`, restored guests against `--cold-boot`, alternating, --rounds times;
3. the marginal cost of work: `--repeat 1` vs `--repeat R+1` (per extra repeat) and `--size 1M` vs `--size 1M,8M`
   (per extra buffer size), on restored guests, so `--repeat 50 --size 1M,64M` can be predicted.
Results and stores go to a temp directory; the lab's cache (images, payloads, snapshots) is used warm.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchlib import lab_run as run_timed
from benchlib import options, temp_config

from lab import arches, config
from lab.guests.boot import boot
from lab.guests.images import ImageStore


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def boot_figures(cfg: config.Config, rounds: int) -> None:
    store = ImageStore(cfg)
    print(f"{'arch':<8} {'cold to SSH':>12} {'restored':>9} {'ratio':>6} {'QEMU RSS':>9} {'guest used':>11}")
    for arch in arches.ARCHES:
        image = store.ensure(arch)
        with boot(cfg, image, "tcg"):
            pass  # make sure a snapshot exists
        times: dict[bool, list[float]] = {True: [], False: []}
        rss, used = [], []
        for _ in range(rounds):
            for snapshots in (False, True):
                with boot(cfg, image, "tcg", snapshots=snapshots) as b:
                    assert (b.info.boot == "restored") == snapshots, b.info.boot
                    times[snapshots].append(b.info.ssh_seconds)
                    if snapshots and b.vm.pid:
                        rss.append(rss_mib(b.vm.pid))
                        out = b.guest.run("awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print t - a}' /proc/meminfo").stdout
                        used.append(int(out.strip()) / 1024)
        c, r = statistics.median(times[False]), statistics.median(times[True])
        print(f"{arch.name:<8} {c:>11.2f}s {r:>8.2f}s {c / r:>6.1f} {statistics.median(rss):>7.0f}MiB {statistics.median(used):>9.0f}MiB")


def main() -> int:
    args, cfg = options(__doc__)
    boot_figures(cfg, args.rounds)
    with tempfile.TemporaryDirectory(prefix="lab-bench-snap-") as tmp:
        conf = temp_config(cfg, tmp)
        out, r = f"{tmp}/runs", str(args.repeat)

        def lab_run(*run_args: str) -> float:
            return run_timed(conf, "--out", out, *run_args, quiet=True)[0]

        lab_run("--repeat", "1")  # warm
        cold, restored = [], []
        for _ in range(args.rounds):
            cold.append(lab_run("--repeat", r, "--cold-boot"))
            restored.append(lab_run("--repeat", r))
        c, s = statistics.median(cold), statistics.median(restored)
        print(f"\nwarm lab run --arch all --repeat {r}, median of {args.rounds} alternating rounds")
        print(f"  cold boots      {c:6.1f}s  (range {min(cold):.1f}-{max(cold):.1f})")
        print(f"  restored        {s:6.1f}s  (range {min(restored):.1f}-{max(restored):.1f})   ratio {c / s:.2f}")
        one = statistics.median(lab_run("--repeat", "1") for _ in range(args.rounds))
        more = statistics.median(lab_run("--repeat", str(args.repeat + 1)) for _ in range(args.rounds))
        sizes = statistics.median(lab_run("--repeat", "1", "--size", "1M,8M") for _ in range(args.rounds))
        print("\nmarginal cost (restored guests, 3 arches x 4 variants)")
        print(f"  --repeat 1: {one:.1f}s; each extra repeat: {(more - one) / args.repeat:.2f}s")
        print(f"  each extra buffer size (8M, --repeat 1): {sizes - one:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
