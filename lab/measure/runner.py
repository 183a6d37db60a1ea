"""``lab run``: the whole matrix, end to end, into the store and a run directory.

Lifecycle of a run: user errors are found first (:meth:`Runner.preflight`);
then a ``running`` row and a run directory are created, and each QEMU origin
of the run is fetched in the background (lab.guests.qemu_store); images,
sysroots and payloads are built two groups at a time (builds share the cache
through its locks), and each group (an arch's image of one suite under one QEMU) boots
**once** as soon as its builds are done and runs all its variants × sizes ×
run-axes points ``repeat`` times, interleaved, guests in parallel up to
``jobs``. A user error found after the row exists, with nothing stored (a
``qemu.version`` the suite lacks), removes the row and the run directory.
Each cell (arch × variant × size × axes) is written with all its samples in
one transaction, or recorded as an error with its stage and evidence (with the
runs that finished before, as evidence); one failing cell never stops the others.
Boot and SSH failures are retried once; a measurement is never retried. The run
ends ``complete``, ``failed`` (some cell errored) or ``incomplete``
(interrupted: QEMU is shut down, nothing half-written remains).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import replace
from typing import TypeVar

from lab import axes, deadline
from lab.config import Config
from lab.deadline import Cancelled
from lab.errors import BootError, GuestError, InfraError, LabError, UserError
from lab.explain import render
from lab.files import sha256_text, write_atomic
from lab.guests import accel as accel_mod
from lab.guests import qemu_store
from lab.guests.boot import Booted, boot, scratch_problem
from lab.guests.emulator import HOST, Emulator
from lab.guests.images import ImageStore
from lab.guests.keys import client_key
from lab.guests.qemu import shutdown_all
from lab.measure import engine, libc, rundir, tracing
from lab.measure.groups import ArchOutcome, Group, Prepared, Summary, groups, make_cell
from lab.measure.plan import Plan
from lab.payloads.build import RUNNER, PayloadStore, guest_tool, reseed_helper
from lab.results.store import CellError, RunMeta, Sample, Store, new_run_id
from lab.version import __version__

__all__ = ["Runner", "Summary"]
T = TypeVar("T")
PREPARERS = 2  # groups whose images and payloads build at once

log = logging.getLogger(__name__)


def background(fn: Callable[..., T], *args: object) -> Future[T]:
    """``fn(*args)`` in a daemon thread (an interrupted lab does not wait for it to exit)."""
    future: Future[T] = Future()

    def work() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits for it
                future.set_exception(exc)

    threading.Thread(target=work, name="lab-background", daemon=True).start()
    return future


def waited(future: Future[T]) -> T:
    """The future's result; a cancelled run (lab.deadline) stops the wait within a poll."""
    while True:
        try:
            return future.result(timeout=0.1)
        except FuturesTimeout:
            deadline.check()


class Runner:
    """Runs one :class:`Plan`; see the module docstring for the lifecycle."""

    def __init__(self, cfg: Config, plan: Plan, store: Store, progress: Callable[[str, str], None], argv: list[str]) -> None:
        self.cfg, self.plan, self.store, self.progress, self.argv = cfg, plan, store, progress, argv
        self.run_id = new_run_id()
        self.run_dir = cfg.results_dir / "runs" / self.run_id
        self.cancel = threading.Event()
        self.emulators: dict[str, Future[Emulator]] = {}

    # -- preparation -------------------------------------------------------------------------

    def preflight(self) -> None:
        """User and config errors (recipe, keys, toolchains) surface here, before a run row or a boot exists."""
        ImageStore(self.cfg)  # loads and validates the recipe
        client_key(self.cfg.cache_dir / "keys")
        payloads = PayloadStore(self.cfg)
        for arch in self.plan.arches:
            for v in self.plan.variants:
                payloads.toolchain_version(arch, v)
        # The host's QEMU (qemu.from: host, or the qemu axis's host): what it lacks for a guest of the run.
        # (Lab's own QEMU proves every arch's binary and firmware before its entry is kept: lab.guests.qemu_store.)
        for g in self.plan.groups():
            lacks = HOST.missing(g.arch) if g.qemu == axes.QEMU_HOST else None
            if lacks:
                raise InfraError(f"qemu host: {lacks[0]}", lacks[1])

    def _prepare(self, g: Group, outcome: ArchOutcome) -> Prepared | None:
        """Image and payloads for a group (arch, suite); if either cannot be made, every cell of it becomes an error.

        Failing to write the run directory is not a cell's problem: it aborts the run.
        """
        try:
            self.progress(g.label, "building image")
            image = ImageStore(self.cfg).ensure(g.spec)
            if problem := scratch_problem(g.config(self.cfg), image):
                raise problem
        except UserError:
            raise  # not a cell's problem: the run stops with the user's error
        except LabError as exc:
            self._fail_group(g, outcome, "image", exc, 1)
            return None
        try:
            self.progress(g.label, "building payloads")
            store = PayloadStore(self.cfg, suite=g.suite)
            store.sysroot(g.arch)  # once, before the variants build side by side (compilers are separate processes)
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="lab-build") as pool:
                built = list(pool.map(lambda v: store.ensure(g.arch, v), self.plan.variants))
            payloads = {v.name: p for v, p in zip(self.plan.variants, built, strict=True)}
            tracer = tracing.build_tracer(self.cfg, g.arch, g.suite) if self.plan.explain else None
            reseed = reseed_helper(self.cfg, g.arch, g.suite)
            runner = guest_tool(self.cfg, g.arch, RUNNER, g.suite)
        except UserError:
            raise
        except LabError as exc:
            self._fail_group(g, outcome, "build", exc, 1)
            return None
        write_atomic(self.run_dir / "manifests" / f"{g.slug}.json", json.dumps(image.manifest, indent=2) + "\n")
        for name, p in payloads.items():
            write_atomic(self.run_dir / "payloads" / f"{g.slug}-{name}.json", json.dumps(p.info, indent=2) + "\n")
        files = None
        if tracer is not None:
            uploads = {f"{engine.REMOTE_DIR}/{name}": p.binary for name, p in payloads.items()}
            files = tracing.guest_files(self.cfg, image, g.suite, uploads)
        self.progress(g.label, "waiting for a guest slot")
        return Prepared(image, payloads, reseed, runner, tracer, files)

    def _fail_group(self, g: Group, outcome: ArchOutcome, stage: str, exc: LabError, attempts: int) -> None:
        evidence = "\n".join(x for x in (exc.details, *(f"log: {p}" for p in exc.logs)) if x)
        for point in self.plan.run_points():
            for v in self.plan.variants:
                for size in self.plan.sizes:
                    axes = self.plan.identity(g.spec, point)
                    outcome.errors.append(CellError(g.arch.name, v.name, size, stage, str(exc), evidence, attempts, axes, self.cfg.host))
        self.progress(g.label, f"failed ({stage})")

    # -- measuring ---------------------------------------------------------------------------

    def _measure(self, g: Group, prep: Prepared, outcome: ArchOutcome) -> None:
        try:
            emulator = waited(self.emulators[g.qemu])
        except (UserError, Cancelled):
            raise  # the run's problem, not a cell's (a qemu.from the suite cannot serve)
        except LabError as exc:
            self._fail_group(g, outcome, "boot", exc, 1)
            return
        tb = self.cfg.run.tcg_tb_size_mib if self.plan.jobs > 1 else None
        for attempt in (1, 2):
            stage = "boot"
            try:
                self.progress(g.label, "booting" if attempt == 1 else "booting (retry)")
                logs = self.run_dir / "logs" / g.slug
                uploads = engine.files(list(prep.payloads.values()), prep.runner)  # with the guest's setup: one round trip
                with boot(
                    g.config(self.cfg), prep.image, self.plan.accel, logs, tb, not self.plan.cold_boot, prep.reseed, emulator, uploads
                ) as b:
                    stage = "payload"
                    self._run_cells(g, prep, b, outcome, attempt)
                return
            except (BootError, GuestError) as exc:
                if self.cancel.is_set():
                    raise
                if stage == "boot" and isinstance(exc, GuestError):
                    stage = "ssh"
                if stage == "payload" or attempt == 2:
                    self._fail_group(g, outcome, stage, exc, attempt)
                    return
                log.warning("%s: %s failed (%s); retrying once", g.label, stage, exc.message)

    def _run_cells(self, g: Group, prep: Prepared, b: Booted, outcome: ArchOutcome, attempts: int) -> None:
        image, payloads = prep.image, prep.payloads
        remotes = engine.remotes(list(payloads.values()))  # uploaded by boot
        musl = libc.guest_musl_version(b.guest) if any(v.libc == "musl" for v in self.plan.variants) else None
        raw_dir = self.run_dir / "raw" / g.arch.name
        points = self.plan.run_points()
        identity = [self.plan.identity(g.spec, point) for point in points]

        def keep_raw(raw: engine.RawRun) -> None:
            stem = rundir.raw_stem(raw.variant, raw.size, identity[raw.point], raw.repeat)
            write_atomic(raw_dir / f"{stem}.json", raw.outcome.stdout + "\n")
            if raw.outcome.stderr:
                write_atomic(raw_dir / f"{stem}.stderr", raw.outcome.stderr + "\n")

        cells = engine.measure(
            b.guest,
            remotes,
            self.plan.sizes,
            self.plan.repeat,
            max(5, int(self.cfg.timeouts.scaled("command"))),
            self.plan.file_bytes,
            on_round=lambda r: self.progress(g.label, f"running {r + 1}/{self.plan.repeat}"),
            on_raw=keep_raw,
            points=points,
            set_thp=self.plan.values("thp") != (dict(self.plan.defaults)["thp"],),
            guest_shape=(0 if g.spec.kernel_file else g.spec.flavour.bytes, g.arch.bits),  # a user's kernel: its own
        )
        if prep.tracer is not None and prep.files is not None:
            self._trace(g, prep, b, remotes, cells, identity)
        variants = {v.name: v for v in self.plan.variants}
        failed = 0
        for (name, size, pi), runs in cells.items():
            if runs.results:  # a failed cell's finished runs are kept too (evidence; reports and verdicts skip errored cells)
                cell = make_cell(g.arch, variants[name], size, image, payloads[name], b, runs.results, attempts, musl)
                samples = [
                    Sample(i, s.name, s.minflt, s.majflt, s.delta_minflt, s.delta_majflt, s.ns)
                    for i, one in enumerate(runs.results)
                    for s in one.stages
                ]
                outcome.cells.append(
                    (replace(cell, axes=identity[pi], host=self.cfg.host, host_cpu=accel_mod.host_cpu(cell.accel)), samples)
                )
            if runs.failure is not None:
                f = runs.failure
                kept = f"\n{len(runs.results)} of {self.plan.repeat} runs finished before this and are kept" if runs.results else ""
                err = CellError(g.arch.name, name, size, f.stage, f.message, f.evidence + kept, attempts, identity[pi], self.cfg.host)
                outcome.errors.append(err)
                failed += 1
        self.progress(g.label, "done" if not failed else f"done ({failed} cell(s) failed)")

    def _trace(
        self,
        g: Group,
        prep: Prepared,
        b: Booted,
        remotes: dict[str, str],
        cells: dict[engine.CellKey, engine.CellRuns],
        identity: list[str],
    ) -> None:
        """One traced run per cell, after its counted runs; accounts go to the run directory, never the store."""
        assert prep.tracer is not None and prep.files is not None
        self.progress(g.label, "tracing")
        tracing.install_tracer(b.guest, prep.tracer)
        live = {name: remote for name, remote in remotes.items() if any(k[0] == name and c.failure is None for k, c in cells.items())}

        def name(key: engine.CellKey) -> str:
            return (
                f"{g.arch.name}:{key[0]}"
                + (f" {key[1]}B" if len(self.plan.sizes) > 1 else "")
                + (f" {shown}" if (shown := axes.shown(identity[key[2]])) else "")  # as reports show a cell
            )

        traced = tracing.trace_cells(
            b.guest,
            prep.files,
            live,
            self.plan.sizes,
            self.plan.file_bytes,
            self.plan.run_points(),
            max(5, int(self.cfg.timeouts.scaled("command"))),
            self.plan.values("thp") != (dict(self.plan.defaults)["thp"],),
            {k: c.results for k, c in cells.items()},
            name,
            g.arch.name,
        )
        for t in traced:
            variant_name, size, pi = t.key
            stored = t.data if t.data is not None else {"error": t.error}
            render.write(self.run_dir, g.slug, render.stem(variant_name, size, identity[pi]), stored)
            if t.error:
                log.warning("traced run: %s", t.error)

    def _emulators(self) -> None:
        """Lab's own QEMU for every origin of the run, fetched and unpacked in the background while images and
        payloads build (the first run's download); a group waits for its own just before it boots."""
        for origin in self.plan.values("qemu"):
            self.emulators[origin] = background(qemu_store.ensure, self.cfg, origin)

    def _arch(self, g: Group, outcome: ArchOutcome, prepared: Prepared | None) -> ArchOutcome:
        if prepared and not self.cancel.is_set():
            self._measure(g, prepared, outcome)
        return outcome

    def _commit(self, outcome: ArchOutcome) -> None:
        for cell, samples in outcome.cells:
            self.store.add_cell(self.run_id, cell, samples)
        for err in outcome.errors:
            self.store.add_error(self.run_id, err)

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> Summary:
        started = time.monotonic()
        deadline.reset()  # a new run in this process starts uncancelled
        self.preflight()
        for note in self.plan.skipped():
            log.warning("%s", note)
        meta = RunMeta(
            id=self.run_id,
            started=time.time(),
            host=socket.gethostname(),
            pid=os.getpid(),
            lab_version=__version__,
            git_revision=rundir.git_revision(),
            config_digest=sha256_text(self.cfg.path.read_text()),
            argv=shlex.join(self.argv),
            repeat=self.plan.repeat,
            run_dir=str(self.run_dir),
        )
        self.store.begin_run(meta)  # the row (and its liveness lock) exists before the directory: pruning never sees an orphan
        try:
            self.run_dir.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            self.store.abandon_run(self.run_id)  # a run that never started leaves no row
            raise InfraError(f"cannot create {self.run_dir}: {exc.strerror}", "check paths.results (free space, permissions)") from None
        status = "incomplete"
        outcomes: list[ArchOutcome] = []
        try:
            rundir.write(self.run_dir, self.run_id, self.cfg, self.plan, meta.git_revision)
            self._emulators()
            # Two groups build at once (downloads and compilers overlap; builds share caches through their locks), and
            # each group's guest starts as soon as its own builds are done: a pipeline, the first arch measures while
            # the next ones build. The store is written from this thread only.
            with (
                ThreadPoolExecutor(max_workers=PREPARERS, thread_name_prefix="lab-prepare") as preparing,
                ThreadPoolExecutor(max_workers=self.plan.jobs, thread_name_prefix="lab-arch") as pool,
            ):
                prepared: dict[Future[Prepared | None], tuple[Group, ArchOutcome]] = {}
                try:
                    for g in groups(self.plan):
                        outcome = ArchOutcome(g.label)
                        prepared[preparing.submit(self._prepare, g, outcome)] = (g, outcome)
                    futures = []
                    for done in as_completed(prepared):
                        g, outcome = prepared[done]
                        futures.append(pool.submit(self._arch, g, outcome, done.result()))
                    for future in as_completed(futures):
                        outcomes.append(future.result())
                        self._commit(outcomes[-1])
                except BaseException:
                    # Ctrl-C lands in this thread: wake every worker's wait (lab.deadline), stop every guest so the
                    # workers fail fast, then wait for them. Nothing a cancelled worker saw is blamed on a snapshot.
                    self.cancel.set()
                    deadline.cancel()
                    for f in prepared:
                        f.cancel()
                    shutdown_all()
                    raise
            measured = any(o.cells for o in outcomes)
            status = "complete" if measured and not any(o.errors for o in outcomes) else "failed"  # zero cells is never complete
        except UserError:
            if not any(o.cells or o.errors for o in outcomes):  # bad input found late (qemu.version): nothing is stored
                status = "abandoned"
                self.store.abandon_run(self.run_id)
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        finally:
            if status != "abandoned":
                self.store.finish_run(self.run_id, status)
        return Summary(
            self.run_id,
            self.run_dir,
            status,
            sum(len(o.cells) for o in outcomes),
            sum(len(o.errors) for o in outcomes),
            time.monotonic() - started,
        )
