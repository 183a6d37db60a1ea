"""The results store's SQL schema, as versioned migrations (applied in order, each in one transaction)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from lab import axes


def explicit_cell_axes(ident: str, thp: str, page_size: int, qemu_origin: str, scratch: str) -> str:
    """An older cell's identity made absolute (lab.axes.explicit): the values it named, else what the cell recorded
    (its THP mode, page size, QEMU origin: none before v6 was the host's, scratch device), else the table's default."""
    recorded = {"thp": thp, "pagesize": axes.pagesize_of(page_size), "qemu": qemu_origin.split(" ")[0] or axes.QEMU_HOST}
    return axes.explicit(ident, recorded | ({"scratch": scratch} if scratch else {}))


def _explicit_axes(db: sqlite3.Connection) -> None:
    """v8: every cell's and error's identity made absolute (an error's from its named values and the table)."""
    for cell_id, *row in db.execute("SELECT id, axes, thp, page_size, qemu_origin, scratch FROM cells").fetchall():
        db.execute("UPDATE cells SET axes = ? WHERE id = ?", (explicit_cell_axes(*row), cell_id))
    for error_id, ident in db.execute("SELECT id, axes FROM errors").fetchall():
        db.execute("UPDATE errors SET axes = ? WHERE id = ?", (axes.explicit(ident, {}), error_id))


# Each migration is a list of statements (or functions of the connection), applied in one transaction with the
# version bump.
MIGRATIONS: tuple[tuple[str | Callable[[sqlite3.Connection], None], ...], ...] = (
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
    # v3: a cell's axes (lab.axes: suite, THP, page cache, read order, tunables) are part of its identity.
    # SQLite cannot change a UNIQUE constraint in place: the cells table is rebuilt (foreign keys are off
    # while migrating; samples keep pointing at the same cell ids).
    (
        """
        CREATE TABLE cells_v3 (
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
        axes TEXT NOT NULL DEFAULT '',
        UNIQUE (run_id, arch, variant, buffer_size, axes)
        )
        """,
        "INSERT INTO cells_v3 SELECT *, '' FROM cells",
        "DROP TABLE cells",
        "ALTER TABLE cells_v3 RENAME TO cells",
        "CREATE INDEX cells_run ON cells(run_id)",
        "ALTER TABLE errors ADD COLUMN axes TEXT NOT NULL DEFAULT ''",
    ),
    ("ALTER TABLE cells ADD COLUMN boot TEXT NOT NULL DEFAULT ''",),
    # v5: the host that measured a cell (fleets merge several hosts' cells into one run), and its CPU for KVM cells.
    (
        "ALTER TABLE cells ADD COLUMN host TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE cells ADD COLUMN host_cpu TEXT NOT NULL DEFAULT ''",
        "UPDATE cells SET host = (SELECT host FROM runs WHERE runs.id = cells.run_id)",
        # errors get the host too, and a stage for a fleet host that never delivered its cells (rebuilt: CHECK)
        """
        CREATE TABLE errors_v5 (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        arch TEXT NOT NULL,
        variant TEXT NOT NULL,
        buffer_size INTEGER NOT NULL,
        stage TEXT NOT NULL CHECK (stage IN ('image', 'build', 'boot', 'ssh', 'payload', 'parse', 'host')),
        message TEXT NOT NULL,
        evidence TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        axes TEXT NOT NULL DEFAULT '',
        host TEXT NOT NULL DEFAULT ''
        )
        """,
        "INSERT INTO errors_v5 SELECT e.*, (SELECT host FROM runs WHERE runs.id = e.run_id) FROM errors e",
        "DROP TABLE errors",
        "ALTER TABLE errors_v5 RENAME TO errors",
        "CREATE INDEX errors_run ON errors(run_id)",
        # a host's run imported into a fleet run: kept, but never "the latest run", history or retention on its own
        "ALTER TABLE runs ADD COLUMN part_of TEXT NOT NULL DEFAULT ''",
    ),
    # v6: where a cell's QEMU came from (the host's, or a suite's: lab.guests.qemu_store); qemu_version says which build.
    ("ALTER TABLE cells ADD COLUMN qemu_origin TEXT NOT NULL DEFAULT ''",),
    # v7: the block device under the test file (lab.axes.SCRATCHES); every cell before it was measured on the virtio disk
    ("ALTER TABLE cells ADD COLUMN scratch TEXT NOT NULL DEFAULT ''", "UPDATE cells SET scratch = 'disk'"),
    # v8: absolute identities (every axis's value: lab.axes.identity), where the kernel came from (a Debian
    # package's version or a user's file's digest) and how many pages of the test file the probe used
    (
        "ALTER TABLE cells ADD COLUMN kernel_source TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE cells ADD COLUMN file_pages INTEGER NOT NULL DEFAULT 0",
        _explicit_axes,
    ),
    # v9: the probe's word size (32-bit userlands: i386 on the amd64 kernel, armhf)
    ("ALTER TABLE cells ADD COLUMN word_bits INTEGER NOT NULL DEFAULT 0",),
    # v10: each nightly's verdict as it was judged (the baseline may be saved again later) and its regressions'
    # explanations (lab.results.regressions), which outlive the run directories retention deletes
    (
        """
        CREATE TABLE nightlies (
        run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
        created REAL NOT NULL,
        dir TEXT NOT NULL,
        baseline TEXT NOT NULL,
        baseline_run TEXT NOT NULL,
        exit_code INTEGER NOT NULL,
        comparison TEXT NOT NULL,
        explained TEXT NOT NULL
        )
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
ERROR_STAGES = ("image", "build", "boot", "ssh", "payload", "parse", "host")  # the errors table's CHECK (v5)
