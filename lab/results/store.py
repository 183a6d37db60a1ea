"""The results store: an embedded SQLite database with versioned migrations (:mod:`lab.results.schema`).

Guarantees: a cell and all its samples are written in one transaction (a crash never leaves half a
cell); a run is inserted as ``running`` and ends as ``complete``, ``failed`` (some cell errored) or
``incomplete`` (interrupted). Liveness does not depend on PIDs (which PID namespaces reuse): a running
run holds an exclusive lock on ``<store>.runs/<id>.lock`` until it finishes, and a ``running`` row whose
lock nobody holds is reported as ``incomplete``. WAL mode and a busy timeout let two ``lab run`` share
one store; reading commands open it read-only and never wait for a writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from lab.deadline import Deadline
from lab.errors import InfraError, UserError
from lab.results.rows import Cell as Cell
from lab.results.rows import CellError as CellError
from lab.results.rows import Nightly as Nightly
from lab.results.rows import RunMeta as RunMeta
from lab.results.rows import Sample as Sample
from lab.results.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)
WRITE_WAIT_MS = 600_000  # how long a writer waits for another lab process's transaction (as long as a cache lock waits)


def _insert(db: sqlite3.Connection, table: str, run_id: str | None, row_of: Any, samples: Sequence[Sample] = ()) -> None:
    """One row of ``table`` (with its run id unless it is the run), and a cell's samples."""
    row = ({"run_id": run_id} if run_id is not None else {}) | asdict(row_of)
    cur = db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
    db.executemany(
        "INSERT INTO samples (cell_id, repeat, stage, minflt, majflt, delta_minflt, delta_majflt, ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(cur.lastrowid, *asdict(s).values()) for s in samples],
    )


def new_run_id() -> str:
    """Time-ordered and collision-free without PIDs: two runs in the same second (or PID namespace) differ."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _db_error(path: Path, exc: sqlite3.Error, doing: str) -> InfraError:
    """A one-line message for what SQLite said, with the remedy that fits it."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return InfraError(
            f"{path}: {doing}: another lab process held the store's write lock for {WRITE_WAIT_MS // 1000}s", "let it finish, then retry"
        )
    if "readonly" in text or "read-only" in text or not os.access(path.parent, os.W_OK):
        return InfraError(
            f"{path}: {doing}: the results directory {path.parent} is read-only", "make it writable or set run.store elsewhere"
        )
    if "disk is full" in text or "disk I/O" in text:
        return InfraError(f"{path}: {doing}: {text}", "free disk space in the results directory")
    if isinstance(exc, sqlite3.IntegrityError):
        return InfraError(f"{path}: {doing}: {text}", "a row like it exists already (two writers?); retry the command")
    if "malformed" in text or "not a database" in text or isinstance(exc, sqlite3.DatabaseError):
        return InfraError(f"{path}: {doing}: the store is damaged ({text})", "move it aside (lab creates a new one) or restore a copy")
    return InfraError(f"{path}: {doing}: {text}", "check the results directory")


class Store:
    """One SQLite results database (use ``with``); ``readonly``: no migration, no write lock, works on a read-only directory."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path, self.readonly = path, readonly
        self._run_locks: dict[str, int] = {}
        if readonly and not path.exists():
            raise UserError(f"{path}: no results store yet", "run lab run first, or point run.store at an existing store")
        if not readonly:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InfraError(f"cannot create {path.parent}: {exc.strerror}", "check run.store / paths.results in lab.yaml") from None
        try:
            self.db = self._open_readonly() if readonly else sqlite3.connect(path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise _db_error(path, exc, "cannot open the results store") from None
        try:
            if not readonly:
                self.db.execute("PRAGMA busy_timeout=1000")  # then _begin says it is waiting, and waits on
                self._patiently("PRAGMA journal_mode=WAL")  # blocks while another opener changes it or checkpoints
                self._migrate()  # foreign keys off: a migration may rebuild a referenced table
                self.db.execute("PRAGMA foreign_keys=ON")
            version = self.schema_version
        except (sqlite3.Error, InfraError) as exc:
            self.db.close()  # nothing of ours stays open (a read-only mount can then be unmounted)
            if isinstance(exc, InfraError):
                raise
            raise _db_error(path, exc, "cannot open the results store") from None
        except BaseException:
            self.db.close()
            raise
        if readonly and version != SCHEMA_VERSION:
            self.db.close()
            raise UserError(
                f"{path}: store schema v{version}, this lab reads v{SCHEMA_VERSION}", "run lab run once (it migrates), or upgrade lab"
            )

    def _open_readonly(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            # A WAL store in a read-only directory cannot create its -shm file; nobody can write there either.
            db.close()
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for run_id in list(self._run_locks):
            self._release(run_id)
        self.db.close()

    def _patiently(self, sql: str) -> None:
        """Run ``sql``; when another lab process holds the lock it needs, say so, then retry for up to
        WRITE_WAIT_MS. Each attempt blocks at most the 1 s busy timeout, so Ctrl-C and SIGTERM are handled
        between attempts (a single long busy timeout would hold them off for minutes)."""
        deadline = Deadline(WRITE_WAIT_MS / 1000)
        said = False
        while True:
            try:
                self.db.execute(sql)
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or deadline.expired:
                    raise
            if not said:
                log.info("waiting for another lab process to finish writing %s", self.path)
                said = True

    def _begin(self) -> None:
        """Take the write lock, waiting as :meth:`_patiently` does.

        Long: another run's cell can be a large transaction, and a loaded host writes it slowly (a 30 s limit
        failed the second of two writers committing 250,000 samples each next to other work)."""
        self._patiently("BEGIN IMMEDIATE")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._begin()
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _db_error(self.path, exc, "write failed") from None

    def _migrate(self) -> None:
        with self._tx() as db:  # the version is read inside the write lock: two openers never both migrate
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UserError(f"{self.path}: store schema v{version} is newer than this lab (v{SCHEMA_VERSION})", "upgrade lab")
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    if isinstance(statement, str):
                        db.execute(statement)
                    else:
                        statement(db)
                db.execute(f"PRAGMA user_version = {number + 1}")

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _lock_path(self, run_id: str) -> Path:
        return self.path.with_name(self.path.name + ".runs") / f"{run_id}.lock"

    def begin_run(self, meta: RunMeta) -> None:
        """Insert the run as ``running`` and hold its liveness lock until :meth:`finish_run` (or this process dies)."""
        lock = self._lock_path(meta.id)
        try:
            lock.parent.mkdir(exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise InfraError(f"cannot lock {lock}: {exc.strerror}", "check the results directory (free space, permissions)") from None
        self._run_locks[meta.id] = fd
        with self._tx() as db:
            _insert(db, "runs", None, meta)

    def _release(self, run_id: str) -> None:
        fd = self._run_locks.pop(run_id, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                self._lock_path(run_id).unlink()
            os.close(fd)

    def alive(self, meta: RunMeta) -> bool:
        """Whether a ``running`` run's process still holds its lock (another host's runs cannot be checked: trusted)."""
        if meta.host != socket.gethostname():
            return True
        try:
            fd = os.open(self._lock_path(meta.id), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError as exc:
            return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
        finally:
            os.close(fd)

    def add_cell(self, run_id: str, cell: Cell, samples: list[Sample]) -> None:  # atomically, with all its samples
        with self._tx() as db:
            _insert(db, "cells", run_id, cell, samples)

    def add_error(self, run_id: str, err: CellError) -> None:
        with self._tx() as db:
            _insert(db, "errors", run_id, err)

    def insert_run(self, meta: RunMeta, cells: list[tuple[Cell, list[Sample]]], errors: list[CellError]) -> None:
        """A finished run measured elsewhere (lab import): run, cells, samples and errors in one transaction."""
        with self._tx() as db:
            _insert(db, "runs", None, meta)
            for cell, samples in cells:
                _insert(db, "cells", meta.id, cell, samples)
            for err in errors:
                _insert(db, "errors", meta.id, err)

    def abandon_run(self, run_id: str) -> None:
        """Remove a run that never got going (its directory could not be made): no row is left behind."""
        try:
            with self._tx() as db:
                db.execute("DELETE FROM runs WHERE id = ? AND NOT EXISTS (SELECT 1 FROM cells WHERE run_id = ?)", (run_id, run_id))
        finally:
            self._release(run_id)

    def finish_run(self, run_id: str, status: str, ended: float | None = None) -> None:
        try:
            with self._tx() as db:
                db.execute("UPDATE runs SET status = ?, ended = ? WHERE id = ?", (status, ended or time.time(), run_id))
        finally:
            self._release(run_id)

    def save_baseline(self, name: str, source_run: str, document: str, replace: bool = False) -> None:
        with self._tx() as db:
            exists = db.execute("SELECT 1 FROM baselines WHERE name = ?", (name,)).fetchone()
            if exists and not replace:
                raise UserError(
                    f"baseline {name!r} already exists in {self.path}", "pick another name, or delete it first (lab baseline delete)"
                )
            db.execute("INSERT OR REPLACE INTO baselines VALUES (?, ?, ?, ?)", (name, time.time(), source_run, document))

    def baselines(self) -> list[tuple[str, float, str]]:
        return [(r[0], r[1], r[2]) for r in self.db.execute("SELECT name, created, source_run FROM baselines ORDER BY name")]

    def baseline_document(self, name: str) -> str:
        row = self.db.execute("SELECT document FROM baselines WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = f"known: {', '.join(n for n, _, _ in self.baselines()) or 'none yet'}; create one with lab baseline save {name}"
            raise UserError(f"no baseline named {name!r} in {self.path}", known)
        return str(row[0])

    def delete_baseline(self, name: str) -> None:
        self.baseline_document(name)
        with self._tx() as db:
            db.execute("DELETE FROM baselines WHERE name = ?", (name,))

    def add_nightly(self, nightly: Nightly) -> None:
        """A nightly's verdict (once per run: a run is judged by the nightly that made it)."""
        with self._tx() as db:
            _insert(db, "nightlies", None, nightly)

    def nightlies(self) -> list[Nightly]:
        names = [f.name for f in fields(Nightly)]
        q = f"SELECT {', '.join(names)} FROM nightlies ORDER BY created, run_id"
        return [Nightly(**dict(zip(names, r, strict=True))) for r in self.db.execute(q)]

    def history(
        self, arch: str, variant: str, stage: str, buffer_size: int | None = None, last: int = 20, axes: str = ""
    ) -> list[tuple[str, float, int, list[int], list[int]]]:
        """(run id, started, buffer size, minflt deltas, majflt deltas) per run that measured the cell, oldest first."""
        q = (
            "SELECT runs.id, runs.started, cells.buffer_size, samples.delta_minflt, samples.delta_majflt FROM samples "
            "JOIN cells ON cells.id = samples.cell_id JOIN runs ON runs.id = cells.run_id "
            "WHERE cells.arch = ? AND cells.variant = ? AND samples.stage = ? AND (? IS NULL OR cells.buffer_size = ?) AND cells.axes = ? "
            "AND runs.part_of = '' "
            "AND NOT EXISTS (SELECT 1 FROM errors e WHERE e.run_id = cells.run_id AND e.arch = cells.arch "
            "AND e.variant = cells.variant AND e.buffer_size = cells.buffer_size AND e.axes = cells.axes) "
            "ORDER BY runs.started, runs.id, samples.repeat"
        )
        by: dict[tuple[str, int], tuple[str, float, int, list[int], list[int]]] = {}
        for run_id, started, size, minflt, majflt in self.db.execute(q, (arch, variant, stage, buffer_size, buffer_size, axes)):
            row = by.setdefault((run_id, size), (run_id, started, size, [], []))
            row[3].append(minflt)
            row[4].append(majflt)
        return list(by.values())[-last:]

    def _meta(self, row: sqlite3.Row | tuple[Any, ...]) -> RunMeta:
        meta = RunMeta(**dict(zip([f.name for f in fields(RunMeta)], row, strict=True)))
        if meta.status == "running" and not self.alive(meta):
            return RunMeta(**{**asdict(meta), "status": "incomplete"})
        return meta

    _RUN_COLUMNS = ", ".join(f.name for f in fields(RunMeta))

    def runs(self) -> list[RunMeta]:
        return [self._meta(r) for r in self.db.execute(f"SELECT {self._RUN_COLUMNS} FROM runs ORDER BY started, id")]

    def run(self, ref: str | None = None) -> RunMeta:
        """A run by id or unique id prefix; None means the latest run (of its own: not a fleet run's host run)."""
        if ref is None:
            latest = f"SELECT {self._RUN_COLUMNS} FROM runs WHERE part_of = '' ORDER BY started DESC, id DESC LIMIT 1"
            if not (rows := self.db.execute(latest).fetchall()):
                raise UserError(f"{self.path}: no runs yet", "run lab run first")
            return self._meta(rows[0])
        rows = self.db.execute(
            f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id LIKE ? ORDER BY id", (ref.replace("%", "") + "%",)
        ).fetchall()
        if len(rows) != 1:
            what = "no run" if not rows else f"{len(rows)} runs"
            raise UserError(f"{what} matching {ref!r} in {self.path}", "see lab runs list")
        return self._meta(rows[0])

    def cells(self, run_id: str) -> list[tuple[int, Cell]]:
        names = [f.name for f in fields(Cell)]
        q = f"SELECT id, {', '.join(names)} FROM cells WHERE run_id = ? ORDER BY id"
        return [(r[0], Cell(**dict(zip(names, r[1:], strict=True)))) for r in self.db.execute(q, (run_id,))]

    def measured(self, run_id: str) -> list[tuple[Cell, dict[str, tuple[list[int], list[int]]]]]:
        """The run's cells that did not error, each with stage -> (minor deltas, major deltas) over its repeats
        (a cell that errored part-way keeps its finished samples in the store, but is not a measurement)."""
        errored = {(e.arch, e.variant, e.buffer_size, e.axes) for e in self.errors(run_id)}
        out = []
        for cell_id, cell in self.cells(run_id):
            if (cell.arch, cell.variant, cell.buffer_size, cell.axes) in errored:
                continue
            stages: dict[str, tuple[list[int], list[int]]] = {}
            for s in self.samples(cell_id):
                minor, major = stages.setdefault(s.stage, ([], []))
                minor.append(s.delta_minflt)
                major.append(s.delta_majflt)
            out.append((cell, stages))
        return out

    def everything(self) -> tuple[list[tuple[int, str, Cell]], dict[int, list[tuple[str, int, int]]], dict[str, list[CellError]]]:
        """Every cell (id, run, cell), every cell's (stage, minor delta, major delta) in repeat order, every run's
        errors: the whole store in three queries (the history site reads a year of nightlies at once)."""
        names = [f.name for f in fields(Cell)]
        cells = [
            (r[0], r[1], Cell(**dict(zip(names, r[2:], strict=True))))
            for r in self.db.execute(f"SELECT id, run_id, {', '.join(names)} FROM cells ORDER BY id")
        ]
        samples: dict[int, list[tuple[str, int, int]]] = {}
        for cell_id, stage, minor, major in self.db.execute(
            "SELECT cell_id, stage, delta_minflt, delta_majflt FROM samples ORDER BY cell_id, repeat, rowid"
        ):
            samples.setdefault(cell_id, []).append((stage, minor, major))
        err_names = [f.name for f in fields(CellError)]
        errors: dict[str, list[CellError]] = {}
        for r in self.db.execute(f"SELECT run_id, {', '.join(err_names)} FROM errors ORDER BY id"):
            errors.setdefault(r[0], []).append(CellError(**dict(zip(err_names, r[1:], strict=True))))
        return cells, samples, errors

    def samples(self, cell_id: int) -> list[Sample]:
        names = [f.name for f in fields(Sample)]
        q = f"SELECT {', '.join(names)} FROM samples WHERE cell_id = ? ORDER BY repeat, rowid"
        return [Sample(**dict(zip(names, r, strict=True))) for r in self.db.execute(q, (cell_id,))]

    def errors(self, run_id: str) -> list[CellError]:
        names = [f.name for f in fields(CellError)]
        q = f"SELECT {', '.join(names)} FROM errors WHERE run_id = ? ORDER BY id"
        return [CellError(**dict(zip(names, r, strict=True))) for r in self.db.execute(q, (run_id,))]
