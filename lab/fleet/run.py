"""A fleet run: plan arches onto hosts, run ``lab run`` on each through Ansible, merge their runs into one.

1. The inventory (:mod:`lab.fleet.inventory`) says which hosts may run which arch; :func:`assign` gives each
   requested arch to one host. The run options are validated here first, against this lab's tables.
2. ``ansible/fleet-run.yml`` runs ``lab run --arch <its arches> <options>`` on every planned host at once, exports
   each host's run as a bundle and fetches it into ``<results>/fleet/<id>/bundles/``.
3. Every bundle that arrived is imported (:mod:`lab.results.bundle`): each host's run is in this store as it was
   on the host. Then one merged run (this command's) gets every host's cells and errors, each naming its host;
   a host that was unreachable or whose run failed contributes a ``host`` error for each cell it owed.
4. The merged run's reports are written like a local run's; compare, baselines and nightly treat it as one.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lab import arches
from lab import axes as axes_mod
from lab.config import Config
from lab.errors import LabError, UserError
from lab.files import sha256_text
from lab.fleet import ansible, inventory, package
from lab.fleet.ansible import HostOutcome
from lab.guests import emulator, qemu_store
from lab.measure import rundir
from lab.measure.plan import Plan, RunRequest, make_plan
from lab.measure.runner import Summary
from lab.results import bundle, report
from lab.results.store import Cell, CellError, RunMeta, Sample, Store, new_run_id
from lab.text import size_text
from lab.version import __version__

log = logging.getLogger(__name__)


def run_args(plan: Plan, req: RunRequest) -> list[str]:
    """What each host's ``lab run`` measures, resolved here (a host's own lab.yaml may hold other defaults): the
    variants, sizes, repeat and every axis's values; the accelerator and jobs only when asked (they are the host's).
    Its arches come from the assignment; its paths stay the host's own."""
    args = ["--variant", ",".join(v.name for v in plan.variants), "--repeat", str(plan.repeat)]
    args += ["--size", ",".join(size_text(s) for s in plan.sizes)]
    for axis in axes_mod.AXES:
        values = plan.values(axis.name)
        if axis.name == "qemu" and values == (dict(plan.defaults)["qemu"],):
            continue  # the host's provisioned QEMU (the controller's, or the inventory's qemu_from): checked on merge
        if axis.name == "kernel" and values == ("",):
            continue  # each suite's own kernel (the recipe's kernel.from: suite): the hosts' recipe is the controller's
        if axis.name == "tunables":  # one value per --axis (a tunables string may hold ',')
            for v in values:
                args += ["--axis", f"tunables={v}"]
        else:
            args += ["--axis", f"{axis.name}={','.join(values)}"]
    for flag, value in (("--jobs", req.jobs), ("--accel", req.accel)):
        if value is not None:
            args += [flag, str(value)]
    return args + (["--explain"] if req.explain else []) + (["--cold-boot"] if req.cold_boot else [])


@dataclass(frozen=True)
class Provisioned:
    wheel: Path
    hosts: dict[str, HostOutcome]

    @property
    def ok(self) -> bool:
        return all(o.good for o in self.hosts.values())


def provision(cfg: Config, inv: Path, limit: tuple[str, ...] = ()) -> Provisioned:
    """``lab fleet provision``: build the controller's wheel (and its dependencies'), run the provisioning playbook."""
    known = {h.name for h in inventory.load(inv)}  # a bad inventory is a usage error before anything is built
    if unknown := sorted(set(limit) - known):
        raise UserError(f"--limit {','.join(unknown)}: not in {inv}'s lab_hosts", f"hosts there: {', '.join(sorted(known))}")
    work = cfg.results_dir / "fleet" / "provision"
    wheel = package.wheel(cfg.cache_dir / "fleet" / "dist")
    house = package.wheelhouse(cfg, wheel)
    e = qemu_store.ensure(cfg)  # every host runs the controller's QEMU: the same suite and package version
    qemu = {"lab_qemu_from": e.origin, "lab_qemu_version": e.package_version}
    outcomes = ansible.play("provision.yml", inv, {"lab_wheel": str(wheel), "lab_wheelhouse": str(house), **qemu}, work, limit)
    return Provisioned(wheel, outcomes)


def _owed(plan: Plan, arches_: tuple[str, ...]) -> list[tuple[str, str, int, str]]:
    """(arch, variant, size, axes) of every cell a host owed for ``arches_``."""
    return [
        (g.arch.name, v.name, size, plan.identity(g, point))
        for g in plan.groups()
        if g.arch.name in arches_
        for point in plan.run_points()
        for v in plan.variants
        for size in plan.sizes
    ]


def _foreign_qemu(cfg: Config, plan: Plan, cells: list[Cell]) -> str:
    """Why a host's cells cannot join the merged run: a QEMU other than the controller's (unless qemu is an axis of
    the run, when every cell says which QEMU it ran in its identity); "" when they can."""
    if len(plan.values("qemu")) > 1:
        return ""
    mine = qemu_store.ensure(cfg)
    for c in cells:
        want = emulator.version(mine, arches.get(c.arch))
        if c.qemu_version != want:
            return (
                f"host {c.host} ran {c.arch} under {c.qemu_version} ({c.qemu_origin or 'origin unknown'}), not the controller's "
                f"{want} ({mine.describe()}): its cells are not merged"
            )
    return ""


def fleet_run(cfg: Config, req: RunRequest, inv: Path, argv: list[str]) -> tuple[Summary, Path]:
    """``lab fleet run``: the matrix over the inventory's hosts, merged into one run of this store. Returns the
    merged run's summary and the store."""
    started, t0 = time.time(), time.monotonic()
    plan = make_plan(cfg, req)  # usage errors (variants, sizes, axes) before any host is touched
    if plan.kernel_file is not None:
        raise UserError("lab fleet run cannot ship --kernel FILE to its hosts", "run lab run --kernel FILE on the host itself")
    hosts = inventory.load(inv)
    assignment = inventory.assign(hosts, [a.name for a in plan.arches], inv)
    for host, arches_ in assignment.items():
        log.info("%s runs %s", host, ", ".join(arches_))
    run_id = new_run_id()
    work = cfg.results_dir / "fleet" / run_id
    bundles = work / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    extra = {"lab_fleet_plan": assignment, "lab_fleet_args": run_args(plan, req), "lab_fleet_dest": str(bundles), "lab_fleet_id": run_id}
    outcomes = ansible.play("fleet-run.yml", inv, extra, work, tuple(assignment))
    run_dir = cfg.results_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    cells: list[tuple[Cell, list[Sample]]] = []
    errors: list[CellError] = []
    with Store(cfg.run.store) as store:
        for host, arches_ in assignment.items():
            got = bundles / f"{host}.labrun.tar.gz"
            outcome = outcomes.get(host)
            try:
                if not got.exists():
                    state = "unreachable" if outcome and outcome.unreachable else "failed"
                    raise UserError(
                        f"host {host} {state}: {outcome.why if outcome and outcome.why else 'its run never delivered a bundle'}"
                    )
                imported = bundle.import_(store, got, cfg.results_dir, part_of=run_id)
            except LabError as exc:  # no bundle, or one that does not import: that host's cells are owed, the rest stand
                log.warning("%s", exc.message)
                errors += [
                    CellError(a, v, size, "host", exc.message, f"ansible output: {work}", 1, axes, host)
                    for a, v, size, axes in _owed(plan, arches_)
                ]
                continue
            theirs = store.cells(imported.run_id)
            foreign = _foreign_qemu(cfg, plan, [c for _, c in theirs])
            if foreign:
                log.warning("%s", foreign)
                errors += [
                    CellError(a, v, size, "host", foreign, f"bundle: {got}", 1, axes, host) for a, v, size, axes in _owed(plan, arches_)
                ]
                continue
            traced = Path(store.run(imported.run_id).run_dir) / "explain"  # lab run --explain's accounts, per arch
            if traced.is_dir():
                shutil.copytree(traced, run_dir / "explain", dirs_exist_ok=True)
            for cell_id, cell in theirs:
                cells.append((replace(cell, host=cell.host or host), store.samples(cell_id)))
            errors += [replace(e, host=e.host or host) for e in store.errors(imported.run_id)]
        status = "failed" if errors or not cells else "complete"
        meta = RunMeta(
            id=run_id,
            started=started,
            host=socket.gethostname(),
            pid=os.getpid(),
            lab_version=__version__,
            git_revision=rundir.git_revision(),
            config_digest=sha256_text(cfg.path.read_text()) if cfg.path.exists() else "",
            argv=shlex.join(argv),
            repeat=plan.repeat,
            run_dir=str(run_dir),
            status=status,
            ended=time.time(),
        )
        store.insert_run(meta, cells, errors)
    return Summary(run_id, run_dir, status, len(cells), len(errors), time.monotonic() - t0), cfg.run.store


def write_reports(cfg: Config, summary: Summary) -> list[Path]:
    with Store(cfg.run.store) as store:
        return report.write_run_reports(store, summary.run_id, summary.run_dir)
