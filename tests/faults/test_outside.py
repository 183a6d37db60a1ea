"""What an outside break-test found (issue 19), each through the real mechanism: a real dropbear, real restored
guests, a real SIGINT, a real OOM kill in a guest."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

import pytest

from lab import api, arches, config
from lab.errors import InfraError
from lab.guests import qemu_store
from lab.guests.boot import snapshot_key
from lab.guests.images import Image
from lab.guests.snapshots import SnapshotStore
from lab.measure import batch, engine
from lab.measure.plan import RunRequest
from lab.payloads.probe import parse as parse_probe
from lab.results.store import Cell, CellError, Store
from tests.e2e.conftest import CORE, boot, runner, start_lab
from tests.faults.test_faults import write_config

# lab's default QEMU (trixie-backports, 11.1) restores every arch of the table, riscv64 included
SNAPSHOT_ARCHES = [a.name for a in CORE]


def measured(cfg: config.Config, out: Path, req: RunRequest) -> tuple[str, list[Cell], list[CellError]]:
    run_cfg = replace(cfg, results_dir=out, run=replace(cfg.run, store=out / "lab.sqlite"))
    result = api.run(run_cfg, req, reports=False)
    with Store(run_cfg.run.store, readonly=True) as store:
        return result.summary.status, [c for _, c in store.cells(result.summary.run_id)], store.errors(result.summary.run_id)


# 1. Nothing depends on a command's length ---------------------------------------------------


def test_a_round_of_200_runs_goes_through_the_guests_dropbear(cfg: config.Config, images: dict[str, Image]) -> None:
    """Regression: the round's script went as one SSH command string, and dropbear refuses commands over 9000 bytes
    (20 probe runs failed the whole arch as "the SSH connection was lost")."""
    jobs = [batch.Job.shell(f"j{i}", f"echo {i}-{'x' * 200}") for i in range(200)]
    assert len(batch.job_file(jobs)) > 9000 * 5
    with boot(cfg, images["x86_64"], "tcg") as b:
        engine.install(b.guest, [], runner(cfg, "x86_64"))
        done, outcomes = engine.run_batch(b.guest, jobs, 30)
    assert done.stalled is None and done.exited == 0
    assert [(o.key, o.status, o.stdout) for o in outcomes] == [(f"j{i}", 0, f"{i}-{'x' * 200}") for i in range(200)]


def test_the_readmes_run_axes_example_runs(cfg: config.Config, images: dict[str, Image], tmp_path: Path) -> None:
    """`--size 1M,2M,3M --axis thp=never,always`: 24 probe runs in one round (it failed the whole arch)."""
    status, cells, errors = measured(cfg, tmp_path, RunRequest(arch="x86_64", size="1M,2M,3M", axis=("thp=never,always",), repeat=1))
    assert (status, errors) == ("complete", [])
    assert len(cells) == len(api.plan(cfg, RunRequest(arch="x86_64")).variants) * 3 * 2
    assert {c.thp for c in cells} == {"never", "always"}


# 2. Restored guests do not share their random numbers ---------------------------------------


@pytest.mark.parametrize("arch", SNAPSHOT_ARCHES)
def test_restored_guests_draw_numbers_of_their_own(cfg: config.Config, images: dict[str, Image], arch: str) -> None:
    """Regression: writing host bytes to /dev/urandom does not reseed the CRNG, and two guests restored from one
    snapshot printed the same uuid and the same /dev/urandom bytes."""
    with boot(cfg, images[arch], "tcg"):
        pass  # a snapshot exists now
    seen = []
    for _ in range(4):
        with boot(cfg, images[arch], "tcg") as b:
            assert b.info.boot == "restored"
            out = b.guest.run("cat /proc/sys/kernel/random/uuid; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'").stdout.split()
            seen.append(tuple(out))
    assert len({uuid for uuid, _ in seen}) == len(seen) and len({raw for _, raw in seen}) == len(seen), seen


# 3. Ctrl-C during a restore or the SSH wait -------------------------------------------------


def test_ctrl_c_while_a_guest_is_restored_ends_the_run_and_keeps_the_snapshot(
    cfg: config.Config, images: dict[str, Image], cli_config: Path, tmp_path: Path
) -> None:
    """Regression: SIGINT during a restore took ~31 s (the worker kept retrying SSH until timeouts.ssh) and then
    discarded a valid snapshot. With the waits set to ten minutes, only a cancellation that reaches them ends the
    run before the test's own bound."""
    image = images["x86_64"]
    with boot(cfg, image, "tcg"):
        pass
    store = SnapshotStore(cfg.cache_dir)
    assert store.find("x86_64", snapshot_key(cfg, image, qemu_store.ensure(cfg))) is not None
    slow = write_config(cli_config, tmp_path / "lab.yaml", timeouts__ssh=600, timeouts__restore=600, timeouts__boot=600)
    proc = start_lab(slow, "run", "--arch", "x86_64", "--size", "1M,2M,3M,4M", "--repeat", "2", until="x86_64: booting")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert store.find("x86_64", snapshot_key(cfg, image, qemu_store.ensure(cfg))) is not None  # a cancelled boot blames no snapshot


# 4. A THP mode lab cannot apply is never a silent default ----------------------------------


def test_the_configured_thp_mode_is_what_the_cells_ran_with(cfg: config.Config, images: dict[str, Image], tmp_path: Path) -> None:
    """Regression: at 256 MiB the kernel ignores transparent_hugepage=always; the cells recorded never."""
    always = replace(cfg, guest=replace(cfg.guest, transparent_hugepage="always"))
    status, cells, errors = measured(always, tmp_path, RunRequest(arch="x86_64", variant="musl-static", repeat=1))
    assert (status, errors) == ("complete", [])
    assert [c.thp for c in cells] == ["always"]


# 8. A SIGKILL is attributed: deadline or OOM killer ----------------------------------------


def test_a_probe_the_guests_oom_killer_kills_is_named_as_such(cfg: config.Config, images: dict[str, Image], tmp_path: Path) -> None:
    """Regression: a buffer larger than the guest's memory read "killed by the per-run deadline" or "exit status 3"."""
    too_big = cfg.guest.memory_mib * 2**20 * 4 // 5  # malloc gets it (overcommit); touching it all cannot fit
    status, cells, errors = measured(cfg, tmp_path, RunRequest(arch="x86_64", variant="musl-static", size=str(too_big), repeat=1))
    assert status == "failed" and cells == [] and len(errors) == 1
    message = errors[0].message
    assert "OOM killer killed" in message and "guest.memory_mib" in message and "deadline" not in message, message


def test_a_run_the_deadline_kills_says_so(cfg: config.Config, images: dict[str, Image]) -> None:
    hung = batch.Job.shell("h", "sleep 600")
    killed = batch.Job.shell("k", "kill -KILL $$")  # a SIGKILL that is not lab's deadline
    with boot(cfg, images["x86_64"], "tcg") as b:
        engine.install(b.guest, [], runner(cfg, "x86_64"))
        _, (h, k) = engine.run_batch(b.guest, [hung, killed], 2)
    assert (h.status, h.deadline, h.why()) == (137, True, "killed by the per-run deadline")
    assert (k.status, k.deadline, k.oom_kills) == (137, False, 0) and "not by lab's deadline" in k.why()


def test_probe_output_of_a_healthy_run_still_parses(cfg: config.Config, images: dict[str, Image]) -> None:
    """The batch's new end marker (status, deadline mark, OOM kills) leaves the probe's own output untouched."""
    arch = arches.get("x86_64")
    from lab.payloads.build import PayloadStore
    from lab.payloads.variants import variant

    p = PayloadStore(cfg).ensure(arch, variant("musl-static"))
    size = 4096  # bytes asked of the probe (a buffer size, not a page count)
    with boot(cfg, images["x86_64"], "tcg") as b:
        remotes = engine.install(b.guest, [p], runner(cfg, "x86_64"))
        _, [o] = engine.run_batch(b.guest, [batch.Job("p", engine.probe_argv(remotes["musl-static"], size, file=None))], 30)
    assert (o.status, o.deadline, o.oom_kills) == (0, False, 0)
    assert parse_probe(o.stdout).facts.buffer_size == size


# 10. A run that cannot make its directory leaves nothing behind ----------------------------


def test_a_run_whose_directory_cannot_be_made_leaves_no_row(cfg: config.Config, images: dict[str, Image], tmp_path: Path) -> None:
    """Regression: it left an `incomplete` 0-cell row in the store."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "runs").write_text("a file where the run directories go")
    store = tmp_path / "store" / "lab.sqlite"
    broken = replace(cfg, results_dir=results, run=replace(cfg.run, store=store))
    with pytest.raises(InfraError, match="cannot create"):
        api.run(broken, RunRequest(arch="x86_64", variant="musl-static", repeat=1), reports=False)
    with Store(store, readonly=True) as s:
        assert s.runs() == []
