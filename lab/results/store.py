"""The results store: an embedded SQLite database with versioned migrations.

Guarantees: a cell and all its samples are written in one transaction (a
crash never leaves half a cell); a run is inserted as ``running`` and ends as
``complete``, ``failed`` (some cell errored) or ``incomplete`` (interrupted);
a run whose process died without finishing is reported as ``incomplete``.
WAL mode and a busy timeout let two ``lab run`` share one store.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lab.errors import InfraError, UserError

# Each migration is a list of statements, applied in one transaction with the version bump.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        started REAL NOT NULL,
        ended REAL,
        status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed', 'incomplete')),
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        lab_version TEXT NOT NULL,
        git_revision TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        argv TEXT NOT NULL,
        repeat INTEGER NOT NULL,
        run_dir TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE cells (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        arch TEXT NOT NULL,
        variant TEXT NOT NULL,
        libc TEXT NOT NULL,
        linkage TEXT NOT NULL,
        buffer_size INTEGER NOT NULL,
        libc_version_build TEXT NOT NULL,
        libc_version_run TEXT,
        toolchain TEXT NOT NULL,
        flags TEXT NOT NULL,
        image_key TEXT NOT NULL,
        payload_digest TEXT NOT NULL,
        kernel_release TEXT NOT NULL,
        page_size INTEGER NOT NULL,
        thp TEXT NOT NULL,
        qemu_version TEXT NOT NULL,
        accel TEXT NOT NULL,
        probe_schema INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        UNIQUE (run_id, arch, variant, buffer_size)
        )
        """,
        """
        CREATE TABLE samples (
        cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
        repeat INTEGER NOT NULL,
        stage TEXT NOT NULL,
        minflt INTEGER NOT NULL,
        majflt INTEGER NOT NULL,
        delta_minflt INTEGER NOT NULL,
        delta_majflt INTEGER NOT NULL,
        ns INTEGER NOT NULL,
        PRIMARY KEY (cell_id, repeat, stage)
        )
        """,
        """
        CREATE TABLE errors (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        arch TEXT NOT NULL,
        variant TEXT NOT NULL,
        buffer_size INTEGER NOT NULL,
        stage TEXT NOT NULL CHECK (stage IN ('image', 'build', 'boot', 'ssh', 'payload', 'parse')),
        message TEXT NOT NULL,
        evidence TEXT NOT NULL,
        attempts INTEGER NOT NULL
        )
        """,
        """
        CREATE INDEX cells_run ON cells(run_id)
        """,
        """
        CREATE INDEX errors_run ON errors(run_id)
        """,
    ),
    (
        """
        CREATE TABLE baselines (
        name TEXT PRIMARY KEY,
        created REAL NOT NULL,
        source_run TEXT NOT NULL,
        document TEXT NOT NULL
        )
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class RunMeta:
    id: str
    started: float
    host: str
    pid: int
    lab_version: str
    git_revision: str
    config_digest: str
    argv: str
    repeat: int
    run_dir: str
    status: str = "running"
    ended: float | None = None


@dataclass(frozen=True)
class Cell:
    arch: str
    variant: str
    libc: str
    linkage: str
    buffer_size: int
    libc_version_build: str
    libc_version_run: str | None
    toolchain: str
    flags: str
    image_key: str
    payload_digest: str
    kernel_release: str
    page_size: int
    thp: str
    qemu_version: str
    accel: str
    probe_schema: int
    attempts: int


@dataclass(frozen=True)
class Sample:
    repeat: int
    stage: str
    minflt: int
    majflt: int
    delta_minflt: int
    delta_majflt: int
    ns: int


@dataclass(frozen=True)
class CellError:
    arch: str
    variant: str
    buffer_size: int
    stage: str
    message: str
    evidence: str
    attempts: int


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() % 100000:05d}"


def _alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell; trust the row
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """One SQLite results database. Open it, use it, :meth:`close` it (or ``with``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path}: not a usable lab results store ({exc})", "move it aside; lab creates a new store") from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise InfraError(f"{self.path}: write failed: {exc}", "check free disk space and permissions of the results dir") from None

    def _migrate(self) -> None:
        with self._tx() as db:  # the version is read inside the write lock: two openers never both migrate
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UserError(f"{self.path}: store schema v{version} is newer than this lab (v{SCHEMA_VERSION})", "upgrade lab")
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def begin_run(self, meta: RunMeta) -> None:
        row = asdict(meta)
        with self._tx() as db:
            db.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def add_cell(self, run_id: str, cell: Cell, samples: list[Sample]) -> None:
        """The cell and all its samples, atomically."""
        row = asdict(cell)
        with self._tx() as db:
            cur = db.execute(
                f"INSERT INTO cells (run_id, {', '.join(row)}) VALUES (?, {', '.join('?' * len(row))})", (run_id, *row.values())
            )
            db.executemany(
                "INSERT INTO samples (cell_id, repeat, stage, minflt, majflt, delta_minflt, delta_majflt, ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(cur.lastrowid, *asdict(s).values()) for s in samples],
            )

    def add_error(self, run_id: str, err: CellError) -> None:
        row = asdict(err)
        with self._tx() as db:
            db.execute(f"INSERT INTO errors (run_id, {', '.join(row)}) VALUES (?, {', '.join('?' * len(row))})", (run_id, *row.values()))

    def finish_run(self, run_id: str, status: str, ended: float | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status = ?, ended = ? WHERE id = ?", (status, ended or time.time(), run_id))

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
            known = ", ".join(n for n, _, _ in self.baselines()) or "none yet"
            raise UserError(f"no baseline named {name!r} in {self.path}", f"known: {known}; create one with lab baseline save {name}")
        return str(row[0])

    def delete_baseline(self, name: str) -> None:
        self.baseline_document(name)
        with self._tx() as db:
            db.execute("DELETE FROM baselines WHERE name = ?", (name,))

    def history(
        self, arch: str, variant: str, stage: str, buffer_size: int | None = None, last: int = 20
    ) -> list[tuple[str, float, int, list[int], list[int]]]:
        """(run id, started, buffer size, minflt deltas, majflt deltas) per run that measured the cell, oldest first."""
        q = (
            "SELECT runs.id, runs.started, cells.buffer_size, samples.delta_minflt, samples.delta_majflt FROM samples "
            "JOIN cells ON cells.id = samples.cell_id JOIN runs ON runs.id = cells.run_id "
            "WHERE cells.arch = ? AND cells.variant = ? AND samples.stage = ? AND (? IS NULL OR cells.buffer_size = ?) "
            "ORDER BY runs.started, runs.id, samples.repeat"
        )
        by: dict[tuple[str, int], tuple[str, float, int, list[int], list[int]]] = {}
        for run_id, started, size, minflt, majflt in self.db.execute(q, (arch, variant, stage, buffer_size, buffer_size)):
            row = by.setdefault((run_id, size), (run_id, started, size, [], []))
            row[3].append(minflt)
            row[4].append(majflt)
        return list(by.values())[-last:]

    def _meta(self, row: sqlite3.Row | tuple[Any, ...]) -> RunMeta:
        meta = RunMeta(**dict(zip([f.name for f in fields(RunMeta)], row, strict=True)))
        if meta.status == "running" and not _alive(meta.host, meta.pid):
            return RunMeta(**{**asdict(meta), "status": "incomplete"})
        return meta

    _RUN_COLUMNS = ", ".join(f.name for f in fields(RunMeta))

    def runs(self) -> list[RunMeta]:
        return [self._meta(r) for r in self.db.execute(f"SELECT {self._RUN_COLUMNS} FROM runs ORDER BY started, id")]

    def run(self, ref: str | None = None) -> RunMeta:
        """A run by id or unique id prefix; None means the latest run."""
        if ref is None:
            rows = self.db.execute(f"SELECT {self._RUN_COLUMNS} FROM runs ORDER BY started DESC, id DESC LIMIT 1").fetchall()
            if not rows:
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

    def samples(self, cell_id: int) -> list[Sample]:
        names = [f.name for f in fields(Sample)]
        q = f"SELECT {', '.join(names)} FROM samples WHERE cell_id = ? ORDER BY repeat, rowid"
        return [Sample(**dict(zip(names, r, strict=True))) for r in self.db.execute(q, (cell_id,))]

    def errors(self, run_id: str) -> list[CellError]:
        names = [f.name for f in fields(CellError)]
        q = f"SELECT {', '.join(names)} FROM errors WHERE run_id = ? ORDER BY id"
        return [CellError(**dict(zip(names, r, strict=True))) for r in self.db.execute(q, (run_id,))]
