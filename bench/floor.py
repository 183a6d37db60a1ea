"""Where a round's time goes, per arch: the floor of a probe run in a TCG guest, measured side by side in one run.

Usage: .venv/bin/python bench/floor.py [--runs 20] [--arch all]

Boots each arch (restored from its snapshot, as lab run does), on the RAM disk and on the virtio disk, uploads
the payloads and lab-runner, and times batches of ``--runs`` identical runs in one SSH round trip each, from the
host. A row's per-run cost is (batch - empty batch) / runs; the empty batch (no job) is the round's own cost:
the job file's SFTP upload, the SSH exec and the runner's start. Rows:

  true            /bin/true under lab-runner: fork, exec, framing (the TCG time of an empty run)
  true, old sh    /bin/true under the shell scaffolding lab used before lab-runner (setsid sh, a watchdog sh +
                  sleep, kill, two cat): the old path, side by side
  probe bare      musl-static, 4 KiB buffer, no re-exec, no file stages
  musl 4K no re-exec + file   the same plus the 1 MiB file cold, random (the file stages alone, near enough)
  musl no file    musl-static as lab run runs it, without the file stages
  musl            musl-static exactly as lab run runs it (1 MiB buffer, re-exec, 1 MiB file cold, random)
  glibc no file   glibc-dynamic as lab run runs it, without the file stages
  glibc           glibc-dynamic exactly as lab run runs it
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace

from lab import arches, config
from lab.guests import qemu_store
from lab.guests.boot import boot
from lab.guests.images import ImageStore
from lab.measure import batch, engine
from lab.payloads.build import RUNNER, PayloadStore, guest_tool, reseed_helper
from lab.payloads.variants import VARIANTS
from lab.text import parse_size

SIZE = 1 << 20


def old_shell(key: str, command: str, seconds: int = 30) -> batch.Job:
    """One run as the shell batch script before lab-runner ran it (lab.measure.batch at issue 20), around ``command``."""
    w = f"/tmp/lab-old/{key}"
    script = (
        f"mkdir -p /tmp/lab-old; setsid sh -c {shlex.quote(command)} >{w}.out 2>{w}.err </dev/null & p=$!; "
        f'setsid sh -c "sleep {seconds}; : >{w}.d; kill -KILL -$p" >/dev/null 2>&1 </dev/null & w=$!; '
        f"wait $p; rc=$?; kill -KILL -$w 2>/dev/null; cat {w}.out; cat {w}.err"
    )
    return batch.Job.shell(key, script)


def timed(guest: object, jobs: list[batch.Job]) -> float:
    started = time.monotonic()
    done, outcomes = engine.run_batch(guest, jobs, 30)  # type: ignore[arg-type]
    took = time.monotonic() - started
    bad = [o for o in outcomes if o.status != 0]
    if done.stalled or bad:
        sys.exit(f"floor: a run failed: {done.stalled or bad[0].why()}: {bad[0].stderr[-300:] if bad else ''}")
    return took


def rows(remotes: dict[str, str], file_bytes: int, runs: int) -> dict[str, list[batch.Job]]:
    """Each row's batch: ``runs`` identical runs (keys differ: the runner refuses a key twice)."""
    m, g = remotes["musl-static"], remotes["glibc-dynamic"]
    cold = {"cache": "cold", "order": "random"}
    makers: dict[str, Callable[[str], batch.Job]] = {
        "true": lambda k: batch.Job(k, ("/bin/true",)),
        "true, old sh": lambda k: old_shell(k, "exec /bin/true"),
        "probe bare": lambda k: batch.Job(k, engine.probe_argv(m, 4096, file=None, reexec=False)),
        "musl 4K no re-exec + file": lambda k: batch.Job(k, engine.probe_argv(m, 4096, reexec=False, file_bytes=file_bytes)),
        "musl no file": lambda k: batch.Job(k, engine.probe_argv(m, SIZE, file=None)),
        "musl": lambda k: engine.point_job(k, m, SIZE, file_bytes, cold, False),
        "glibc no file": lambda k: batch.Job(k, engine.probe_argv(g, SIZE, file=None)),
        "glibc": lambda k: engine.point_job(k, g, SIZE, file_bytes, cold, False),
    }
    return {name: [make(f"r{i}") for i in range(runs)] for name, make in makers.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--arch", default="all")
    p.add_argument("--qemu", default=None, help="qemu.from for this bench (default lab.yaml's), e.g. host")
    args = p.parse_args()
    base = config.load("lab.yaml")
    if args.qemu:
        base = replace(base, qemu=replace(base.qemu, origin=args.qemu, version=""))
    file_bytes = parse_size(base.run.file_bytes)
    emulator = qemu_store.ensure(base)
    table: dict[tuple[str, str], dict[str, float]] = {}
    for arch in arches.select(args.arch):
        for scratch in ("ram", "disk"):
            cfg = replace(base, guest=replace(base.guest, scratch=scratch))
            image = ImageStore(cfg).ensure(arch)
            store = PayloadStore(cfg)
            payloads = [store.ensure(arch, v) for v in VARIANTS if v.name in ("musl-static", "glibc-dynamic")]
            with boot(cfg, image, reseed=reseed_helper(cfg, arch), emulator=emulator) as b:
                remotes = engine.install(b.guest, payloads, guest_tool(cfg, arch, RUNNER))
                empty = statistics.median(timed(b.guest, []) for _ in range(5))
                t = time.monotonic()
                b.guest.run("true")
                ssh = time.monotonic() - t
                out = {"round (empty batch)": empty * 1000, "one SSH exec": ssh * 1000}
                for name, jobs in rows(remotes, file_bytes, args.runs).items():
                    if scratch == "disk" and name not in ("musl", "glibc"):
                        continue
                    took = statistics.median(timed(b.guest, jobs) for _ in range(3))
                    out[name] = (took - empty) / args.runs * 1000
                table[(arch.name, scratch)] = out
                print(f"{arch.name}/{scratch}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in out.items()), file=sys.stderr, flush=True)
    names = list(next(iter(table.values())).keys())
    cols = sorted(table)
    print("| ms per run (round: per round) | " + " | ".join(f"{a} {s}" for a, s in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{table[c][n]:.1f}" if n in table[c] else "" for c in cols) + " |")


if __name__ == "__main__":
    main()
