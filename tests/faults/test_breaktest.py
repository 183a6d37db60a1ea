"""The outside break-test's cases (issue 10) that need real processes: each was a defect, each stays fixed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import config
from lab.results.store import Store
from tests.e2e.conftest import qemu_processes, start_lab
from tests.faults.test_faults import LAB, write_config

HOLD_LOCK = """
import os, signal, sys
from lab.cache import file_lock
from pathlib import Path
with file_lock(Path(sys.argv[1]), "test", 5):
    print("held", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # as a `lab images build` suspended with Ctrl-Z
"""


def test_a_suspended_lock_holder_is_named_and_given_up_on(cli_config: Path, cfg: config.Config, tmp_path: Path, images: object) -> None:
    """Issue 10.14: a held build lock hung lab run forever with no message."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cfg.cache_dir / "build.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        conf = write_config(cli_config, tmp_path / "lab.yaml", timeouts__lock=3)
        started = time.monotonic()
        proc = subprocess.run(
            [*LAB, "--config", str(conf), "run", "--arch", "riscv64", "--repeat", "1"], capture_output=True, text=True, timeout=120
        )
        assert time.monotonic() - started < 60
        assert proc.returncode == 1, proc.stderr  # the arch's cells error (stage image); the run says so
        assert f"waiting for the apt lock (held by pid {holder.pid})" in proc.stderr
        with Store(cfg.results_dir / "lab.sqlite", readonly=True) as s:
            run = s.run()
            [err, *_] = s.errors(run.id)
        assert err.stage == "image" and f"still held by pid {holder.pid} after 3s" in err.message
    finally:
        holder.kill()
        holder.wait()


def test_a_frozen_guest_is_caught_at_one_run_deadline_and_finished_runs_are_kept(
    cli_config: Path, cfg: config.Config, tmp_path: Path, images: object
) -> None:
    """Issue 10.7: a frozen guest was caught only after timeouts.command x jobs + 30 s, and finished rounds were thrown away."""
    conf = write_config(cli_config, tmp_path / "lab.yaml", timeouts__command=6)
    before = {pid for pid, _ in qemu_processes(cfg.cache_dir)}
    proc = start_lab(conf, "run", "--arch", "arm64", "--variant", "musl-static,glibc-static", "--repeat", "4", until="running 3/4")
    [qemu] = [pid for pid, _ in qemu_processes(cfg.cache_dir) if pid not in before]
    os.kill(qemu, signal.SIGSTOP)  # the guest freezes: no output, no SSH answers
    stopped = time.monotonic()
    assert proc.wait(timeout=120) == 1
    assert time.monotonic() - stopped < 6 + 10 + 15  # one run deadline plus the grace (plus shutdown), not 6 x 2 + 30 per round
    with Store(cfg.results_dir / "lab.sqlite", readonly=True) as s:
        run = s.run()
        errors = s.errors(run.id)
        kept = {c.variant: len({x.repeat for x in s.samples(cid)}) for cid, c in s.cells(run.id)}
    assert run.status == "failed" and {e.variant for e in errors} == {"musl-static", "glibc-static"}
    assert all("guest stopped answering" in e.message for e in errors)
    assert kept and all(n >= 2 for n in kept.values())  # two rounds had finished before the freeze: their samples stayed


def test_runs_in_pid_namespaces_get_distinct_ids_and_honest_liveness(cli_config: Path, cfg: config.Config, images: object) -> None:
    """Issue 10.6: in `unshare -p -f` two runs in the same second got the same id, and a SIGKILLed one stayed running."""
    base = ["unshare", "-p", "-f", "--mount-proc", *LAB, "--config", str(cli_config)]
    cell = ["run", "--arch", "riscv64", "--variant", "musl-static"]
    procs = [subprocess.Popen([*base, "-q", *cell, "--repeat", "1", "--json"], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    ids = [json.loads(o)["run_id"] for o in outs]
    assert ids[0] != ids[1]
    unshare = subprocess.Popen([*base, *cell, "--repeat", "50"], stderr=subprocess.PIPE, text=True)
    assert unshare.stderr is not None
    for line in unshare.stderr:
        if "running 2/50" in line:
            break
    [lab_pid] = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
    os.kill(int(lab_pid), signal.SIGKILL)  # PID 1 of its namespace, killed: no finally runs, its QEMU dies with it
    unshare.wait(timeout=60)
    with Store(cfg.results_dir / "lab.sqlite", readonly=True) as s:
        assert all(s.run(i).status == "complete" for i in ids)
        assert s.run().status == "incomplete"
