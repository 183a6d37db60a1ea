"""Fault injection: what labs meet at night, each with real processes and real guests.

Every scenario asserts a clear error naming the stage, the documented exit code,
no QEMU left behind (also checked for the whole suite by the session fixture),
earlier results intact, and the run marked correctly in the store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import arches, cli, config
from lab.deadline import Deadline
from lab.errors import BootError, GuestError
from lab.guests import qemu
from lab.guests.boot import boot
from lab.guests.images import Image, ImageStore
from lab.guests.keys import client_key
from lab.guests.ssh import Guest
from lab.measure import engine as measure
from lab.payloads.build import Payload, PayloadStore
from lab.payloads.probe import parse as parse_probe
from lab.payloads.variants import Variant, variant
from lab.results.store import Store
from tests.e2e.conftest import interruptible, qemu_processes, start_lab

LAB = [sys.executable, "-m", "lab"]


def write_config(base: Path, out: Path, **changes: Any) -> Path:
    raw = yaml.safe_load(base.read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    out.write_text(yaml.safe_dump(raw))
    return out


def fake_payloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripts: dict[str, str]) -> None:
    """Replace the named variants' binaries by shell scripts (the others stay real)."""
    real = PayloadStore.ensure

    def ensure(self: PayloadStore, arch: arches.Arch, v: Variant) -> Payload:
        p = real(self, arch, v)
        if v.name not in scripts:
            return p
        d = tmp_path / f"fake-{v.name}"
        d.mkdir(exist_ok=True)
        (d / "fault-probe").write_text("#!/bin/sh\n" + scripts[v.name] + "\n")
        (d / "fault-probe").chmod(0o755)
        return replace(p, dir=d)

    monkeypatch.setattr(PayloadStore, "ensure", ensure)


def last_run(cfg: config.Config) -> tuple[str, str, list[Any], list[Any]]:
    with Store(cfg.results_dir / "lab.sqlite") as s:
        run = s.run()
        return run.id, run.status, s.cells(run.id), s.errors(run.id)


# 1. The guest never prints its ready marker -------------------------------------------------


def test_guest_that_never_gets_ready_hits_the_boot_deadline(cli_config: Path, tmp_path: Path, images: object) -> None:
    # No init and panic=0: the kernel panics and then sits there, printing nothing more.
    conf = write_config(
        cli_config, tmp_path / "lab.yaml", guest__kernel_args=["panic=0", "rdinit=/nonexistent"], timeouts__boot=8, accel="tcg"
    )
    started = time.monotonic()
    proc = subprocess.run(
        [*LAB, "--config", str(conf), "exec", "--arch", "arm64", "--", "true"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("lab: error: arm64: guest not ready after 8s (see the console log ")
    console = Path(lines[1].removeprefix("lab: log: "))
    assert "Kernel panic" in console.read_text(errors="replace")
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 60


# 2. The guest boots but SSH never answers ---------------------------------------------------


def test_ssh_that_never_answers_hits_the_ssh_deadline(cfg: config.Config, images: dict[str, Image]) -> None:
    image = images["riscv64"]
    with boot(cfg, image, "tcg") as b:
        b.guest.run("kill $(cat /run/dropbear.pid)")  # the daemon is gone; QEMU still forwards the port
        g = Guest("riscv64", b.info.port, client_key(cfg.cache_dir / "keys"), image.host_key, 10)
        started = time.monotonic()
        with pytest.raises(GuestError) as err:
            g.connect(Deadline(6))
        assert 5.5 < time.monotonic() - started < 20
        assert err.value.message.startswith("riscv64: no SSH session on [127.0.0.1]:") and "after 6s" in err.value.message
        assert "sshd does not answer" in err.value.remedy


# 3. QEMU killed mid-run ---------------------------------------------------------------------


def test_qemu_killed_mid_run_errors_that_arch_only(cli_config: Path, cfg: config.Config, images: dict[str, Image]) -> None:
    proc = start_lab(cli_config, "run", "--arch", "x86_64,arm64", "--repeat", "12", "--jobs", "2", until="arm64: running 2/12")
    assert proc.stderr is not None
    victims = [pid for pid, cmd in qemu_processes(cfg.cache_dir) if "qemu-system-aarch64" in cmd]
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 1, rest
    run_id, status, cells, errors = last_run(cfg)
    assert status == "failed"
    with Store(cfg.results_dir / "lab.sqlite", readonly=True) as s:
        measured = [c for c, _ in s.measured(run_id)]
        partial = {c.variant: len({x.repeat for x in s.samples(i)}) for i, c in cells if c.arch == "arm64"}
    assert {c.arch for c in measured} == {"x86_64"} and len(measured) == 4
    assert all(n < 12 for n in partial.values())  # arm64's finished runs stay as evidence, never as a measurement
    assert {(e.arch, e.stage) for e in errors} == {("arm64", "payload")} and len(errors) == 4
    assert "arm64" in errors[0].message and "SSH connection was lost" in errors[0].message


# 4 and 5. A probe that hangs, crashes, or prints garbage ----------------------------------


def test_hanging_crashing_and_garbled_probes_error_their_cells_only(
    cli_config: Path, cfg: config.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: object
) -> None:
    fake_payloads(
        tmp_path,
        monkeypatch,
        {
            "musl-dynamic": "exec sleep 1000",
            "glibc-static": "kill -SEGV $$",
            "glibc-dynamic": 'printf \'{"schema":"lab.fault-probe","schema_version":2,"mode":{"reexec":tr\'',
        },
    )
    conf = write_config(cli_config, tmp_path / "lab.yaml", timeouts__command=6)
    started = time.monotonic()
    assert cli.main(["--config", str(conf), "-q", "run", "--arch", "riscv64", "--repeat", "1"]) == 1
    assert time.monotonic() - started < 120  # the hang cost one per-run deadline, not the night
    run_id, status, cells, errors = last_run(cfg)
    assert status == "failed" and [c.variant for _, c in cells] == ["musl-static"]
    by = {e.variant: e for e in errors}
    assert by["musl-dynamic"].stage == "payload" and "killed by the per-run deadline" in by["musl-dynamic"].message
    assert by["glibc-static"].stage == "payload" and "exit status 139" in by["glibc-static"].message
    assert by["glibc-dynamic"].stage == "parse" and "truncated or garbled" in by["glibc-dynamic"].message
    with Store(cfg.results_dir / "lab.sqlite") as s:
        rows = s.db.execute("SELECT COUNT(*) FROM samples JOIN cells ON cells.id = samples.cell_id WHERE run_id = ?", (run_id,)).fetchone()[
            0
        ]
    assert rows == 7  # only the good cell's stages: no half-stored sample


# 6. Ctrl-C and SIGTERM at different phases --------------------------------------------------


def test_ctrl_c_during_an_image_build_leaves_no_partial_image(
    cfg: config.Config, cli_config: Path, images: dict[str, Image], tmp_path: Path
) -> None:
    """SIGINT while the image is half-built. Synchronised on the build reaching its mke2fs step (a stand-in that
    says so and then waits), never on a sleep: the interrupt always lands mid-build (it used to be sent after 1.5 s
    and either outcome was accepted, so the test could pass without testing the interrupt)."""
    victim = images["riscv64"].dir
    shutil.rmtree(victim)
    shim, reached = tmp_path / "bin", tmp_path / "mke2fs-started"
    shim.mkdir()
    (shim / "mke2fs").write_text(f"#!/bin/sh\n: > {reached}\nexec sleep 600\n")
    (shim / "mke2fs").chmod(0o755)
    argv = [*LAB, "--config", str(cli_config), "images", "build", "--arch", "riscv64"]
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}")
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible, env=env)
    try:
        while not reached.exists():  # the event: the build is inside its mke2fs step
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
        proc.wait()
    leftovers = [p.name for p in victim.parent.iterdir() if p.name.startswith(".") and p.is_dir()]  # temp build dirs (lock files may stay)
    assert leftovers == [] and not victim.exists()
    assert ImageStore(cfg).ensure(arches.get("riscv64")).dir == victim  # and the cache heals


def test_sigterm_mid_run_marks_the_run_incomplete(cli_config: Path, cfg: config.Config, images: object) -> None:
    proc = start_lab(cli_config, "run", "--arch", "arm64", "--repeat", "100", until="running 2/100")
    proc.terminate()
    assert proc.wait(timeout=60) == 130
    _, status, cells, errors = last_run(cfg)
    assert status == "incomplete" and cells == [] and errors == []


# 7. Two runs at once on one store and cache -------------------------------------------------


def test_two_runs_at_once_both_complete(cli_config: Path, cfg: config.Config, images: object) -> None:
    procs = [
        subprocess.Popen(
            [*LAB, "--config", str(cli_config), "-q", "run", "--arch", arch, "--repeat", "2", "--json"], stdout=subprocess.PIPE, text=True
        )
        for arch in ("arm64", "riscv64")
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    ids = [json.loads(o)["run_id"] for o in outs]
    assert ids[0] != ids[1]
    with Store(cfg.results_dir / "lab.sqlite") as s:
        assert all(s.run(i).status == "complete" and len(s.cells(i)) == 4 for i in ids)
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# 8. Disk full while writing results ---------------------------------------------------------


def test_full_disk_for_run_files_is_a_clear_error_and_the_store_survives(
    cli_config: Path, cfg: config.Config, tmp_path: Path, images: object
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for this test (needs root): {mounted.stderr.strip()}")
    try:
        (small / "filler").write_bytes(b"\0" * (240 * 1024))
        store = cfg.results_dir / "lab.sqlite"
        with Store(store) as s:
            runs_before = {r.id for r in s.runs()}
            cells_before = s.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        conf = write_config(cli_config, tmp_path / "lab.yaml", paths__results=str(small), run__store=str(store))
        proc = subprocess.run(
            [*LAB, "--config", str(conf), "run", "--arch", "arm64", "--repeat", "2"], capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 4, proc.stderr
        assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("lab: error: cannot write ")
        with Store(store) as s:
            assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert s.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == cells_before
            assert all(r.status == "incomplete" for r in s.runs() if r.id not in runs_before), [(r.id, r.status) for r in s.runs()][-3:]
            assert all(r.status != "running" for r in s.runs())
    finally:
        subprocess.run(["umount", str(small)], check=False)


# 10. The port is already taken ----------------------------------------------------------------


def test_a_taken_port_is_skipped_and_forwards_stay_on_loopback(
    cfg: config.Config, images: dict[str, Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    monkeypatch.setattr("lab.guests.boot.free_port", lambda: next(ports, None) or qemu.free_port())
    try:
        with boot(cfg, images["arm64"], "tcg") as b:
            assert b.info.port != taken
            netdev = [a for a in b.info.argv if a.startswith("user,")]
            assert netdev == [f"user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:{b.info.port}-:22"]
            assert b.guest.run("uname -m").stdout.strip() == "aarch64"
    finally:
        squatter.close()


# 13. Retry policy ---------------------------------------------------------------------------


def test_an_infrastructure_failure_retried_into_a_pass_is_a_pass_with_the_retry_recorded(
    cli_config: Path, cfg: config.Config, monkeypatch: pytest.MonkeyPatch, images: object
) -> None:
    real = boot
    failures = {"arm64": 1}
    lock = threading.Lock()

    def flaky(c: config.Config, image: Image, *args: Any, **kw: Any) -> Any:
        with lock:
            if failures.get(image.arch.name, 0) > 0:
                failures[image.arch.name] -= 1
                raise BootError(f"{image.arch.name}: injected boot failure", "none")
        return real(c, image, *args, **kw)

    monkeypatch.setattr("lab.measure.runner.boot", flaky)
    assert cli.main(["--config", str(cli_config), "-q", "run", "--arch", "arm64", "--repeat", "2"]) == 0
    _, status, cells, errors = last_run(cfg)
    assert status == "complete" and errors == [] and {c.attempts for _, c in cells} == {2}


# 14. Shell injection --------------------------------------------------------------------------


def test_names_and_paths_reach_the_guest_as_data(cfg: config.Config, images: dict[str, Image]) -> None:
    arch = arches.get("riscv64")
    real = PayloadStore(cfg).ensure(arch, variant("musl-static"))
    evil = replace(real, variant=Variant("x'; touch pwned; echo \"$(id)\" 'y z", "musl", "static", "clang-musl"))
    with boot(cfg, images["riscv64"], "tcg") as b:
        remotes = measure.install(b.guest, [evil], None)
        [remote] = remotes.values()
        result = parse_probe(b.guest.run(measure.probe_command(remote, 4096, file=None)).stdout)
        assert result.facts.variant == "musl-static"
        assert b.guest.run("ls ~/pwned /pwned /tmp/pwned").exited != 0
        assert b.guest.run(f"ls -l {measure.REMOTE_DIR}").stdout.count("pwned") == 1  # the file name, not a command
