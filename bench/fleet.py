"""A fleet run against the same matrix on one host, side by side in one run (issue 14).

Usage: .venv/bin/python bench/fleet.py [--rounds 3] [--repeat 5]

Two lab hosts on this machine (an sshd each on 127.0.0.2 and 127.0.0.3, as in tests/e2e/test_fleet.py; their
caches hard links of the lab's warm cache) are provisioned once (timed, then timed again: the no-op), then
`lab fleet run --repeat R` (x86_64 + riscv64 on one host, arm64 on the other) and `lab run --arch all --repeat R`
alternate --rounds times. Both "hosts" share this machine's cores, so the fleet cannot be faster here: the
figure is the fleet's overhead (wheel build, Ansible, bundles, import, merge) over a local run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, options, temp_config
from benchlib import lab_run as local_run

sys.path.insert(0, str(REPO))
from tests.e2e.fleet_hosts import LoopbackHost, free_port, inventory
from tests.e2e.test_fleet import seed_cache


def timed(conf: Path, *args: str) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lab", "--config", str(conf), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"lab {' '.join(args)} failed ({proc.returncode}): {proc.stdout[-1000:]} {proc.stderr[-1000:]}")
    return time.monotonic() - started


def main() -> int:
    args, cfg = options(__doc__)
    with tempfile.TemporaryDirectory(prefix="lab-bench-fleet-") as tmp:
        d = Path(tmp)
        conf = temp_config(cfg, tmp)
        key = d / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        hosts = [LoopbackHost(n, a, free_port(a), d / n) for n, a in (("hosta", "127.0.0.2"), ("hostb", "127.0.0.3"))]
        try:
            for h in hosts:
                seed_cache(cfg.cache_dir, h.root / "cache")
                h.start(key.with_suffix(".pub"))
            inv = inventory(
                d / "inventory.yml",
                hosts,
                key,
                d / "known_hosts",
                {"kvm_x86_64": ["hosta"], "tcg": ["hostb"]},
                {
                    "hosta": {"lab_arches": ["x86_64", "riscv64"], "lab_accel": "tcg"},
                    "hostb": {"lab_arches": ["arm64", "riscv64"], "lab_accel": "tcg"},
                },
            )
            first = timed(conf, "fleet", "provision", "-i", str(inv))
            again = timed(conf, "fleet", "provision", "-i", str(inv))
            print(f"provision 2 hosts: first {first:.1f}s, again (no changes) {again:.1f}s")
            fleet, local = [], []
            for _ in range(args.rounds):
                fleet.append(timed(conf, "fleet", "run", "-i", str(inv), "--repeat", str(args.repeat)))
                local.append(local_run(conf, "--repeat", str(args.repeat), quiet=True)[0])
            f, lo = statistics.median(fleet), statistics.median(local)
            print(f"{'matrix --repeat ' + str(args.repeat):<24} {'median':>8} {'range':>14}")
            print(f"{'fleet run (2 hosts)':<24} {f:>7.1f}s {min(fleet):>6.1f}-{max(fleet):.1f}s")
            print(f"{'lab run (one host)':<24} {lo:>7.1f}s {min(local):>6.1f}-{max(local):.1f}s")
            print(f"ratio fleet / one host: {f / lo:.2f}")
        finally:
            for h in hosts:
                h.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
