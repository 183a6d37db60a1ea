"""The SQLite store: migrations, atomic cells, interrupted writers, concurrent writers, run status."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from lab import axes
from lab.errors import InfraError, UserError
from lab.results.schema import MIGRATIONS, SCHEMA_VERSION
from lab.results.store import Cell, CellError, RunMeta, Sample, Store, new_run_id

REPO = Path(__file__).resolve().parents[2]


def meta(run_id: str, pid: int | None = None) -> RunMeta:
    return RunMeta(run_id, 1000.0, os.uname().nodename, pid or os.getpid(), "0.1.0", "abc", "cfg", "lab run", 3, "/tmp/r")


def cell(arch: str = "arm64", variant: str = "musl-static") -> Cell:
    return Cell(
        arch,
        variant,
        "musl",
        "static",
        1 << 20,
        "1.2.5",
        None,
        "zig 0.15.2",
        "-O2",
        "img",
        "pay",
        "6.12",
        4096,
        "never",
        "QEMU 7.2",
        "tcg",
        1,
        1,
    )


def samples(n: int = 3) -> list[Sample]:
    return [Sample(r, stage, 10 + r, 0, 10 + r, 0, 5) for r in range(n) for stage in ("entry", "touch1")]


def test_fresh_store_is_migrated_and_reopening_is_a_no_op(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        assert s.schema_version == SCHEMA_VERSION
        s.begin_run(meta("r1"))
    with Store(tmp_path / "s.db") as s:
        assert [r.id for r in s.runs()] == ["r1"]


def test_newer_or_corrupt_store_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "new.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(UserError, match="newer than this lab"):
        Store(tmp_path / "new.db")
    (tmp_path / "bad.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InfraError, match=r"bad.db: cannot open the results store: the store is damaged \(file is not a database\)"):
        Store(tmp_path / "bad.db")


def test_cell_and_samples_roundtrip_and_run_lifecycle(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        s.begin_run(meta("20261127-1"))
        s.add_cell("20261127-1", cell(), samples())
        s.add_error("20261127-1", CellError("riscv64", "glibc-static", 1 << 20, "boot", "no boot", "console", 2))
        s.finish_run("20261127-1", "failed")
        run = s.run("2026")
        assert run.status == "failed" and run.ended is not None
        [(cell_id, got)] = s.cells(run.id)
        assert got == cell()
        assert s.samples(cell_id) == sorted(samples(), key=lambda x: x.repeat)
        assert s.errors(run.id)[0].stage == "boot"
        with pytest.raises(UserError, match="no run matching 'zzz'"):
            s.run("zzz")


def test_a_failing_cell_write_leaves_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        s.begin_run(meta("r"))
        duplicated = [*samples(), samples()[0]]  # violates the samples primary key half-way
        with pytest.raises(InfraError, match="write failed: UNIQUE constraint failed"):  # one line, not a traceback (issue 10.8)
            s.add_cell("r", cell(), duplicated)
        assert s.cells("r") == []
        assert s.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0


def test_a_running_row_whose_process_is_gone_reads_as_incomplete_whatever_its_pid(tmp_path: Path) -> None:
    """Liveness is the run's lock, not its PID: in a PID namespace every run is PID 1 (issue 10.6)."""
    db = tmp_path / "s.db"
    child = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path; from lab.results.store import Store;"
        f"from tests.unit.test_store import meta; Store(Path({str(db)!r})).begin_run(meta('dead', pid=1)); print('begun', flush=True)"
    )
    subprocess.run([sys.executable, "-c", child], check=True, capture_output=True)  # exits without finishing: SIGKILL-like
    with Store(db) as s:
        s.begin_run(meta("alive", pid=1))
        assert {r.id: r.status for r in s.runs()} == {"dead": "incomplete", "alive": "running"}
        with Store(db, readonly=True) as reader:  # another reader sees the same
            assert {r.id: r.status for r in reader.runs()} == {"dead": "incomplete", "alive": "running"}
        s.finish_run("alive", "complete")
        assert [p.name for p in (tmp_path / "s.db.runs").iterdir()] == ["dead.lock"]  # a crashed run leaves only its lock file


def test_run_ids_started_in_the_same_second_differ() -> None:
    assert len({new_run_id() for _ in range(50)}) == 50


WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from lab.results.store import Store, Sample
    from tests.unit.test_store import cell, meta
    s = Store(Path({db!r}))
    run = {run!r}
    s.begin_run(meta(run))
    s.add_cell(run, cell("x86_64"), [Sample(0, "entry", 1, 0, 1, 0, 1)])
    many = [Sample(r, f"stage{{i}}", 1, 0, 1, 0, 1) for r in range(5000) for i in range(50)]
    print("ready", flush=True)
    s.add_cell(run, cell("arm64"), many)  # killed during this
    print("done", flush=True)
    """
)


def test_killing_a_writer_mid_transaction_loses_only_the_unfinished_cell(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Store(db) as s:
        s.begin_run(meta("earlier"))
        s.add_cell("earlier", cell(), samples())
        s.finish_run("earlier", "complete")
    code = WRITER.format(repo=str(REPO), db=str(db), run="victim")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Store(db) as s:
        assert s.run("earlier").status == "complete" and len(s.samples(s.cells("earlier")[0][0])) == 6
        victim = s.run("victim")
        assert victim.status == "incomplete"
        assert [c.arch for _, c in s.cells("victim")] == ["x86_64"]  # the arm64 cell is all or nothing
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_writers_at_once(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER.format(repo=str(REPO), db=str(db), run=f"w{i}")], stdout=subprocess.DEVNULL)
        for i in range(2)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    with Store(db) as s:
        assert sorted(r.id for r in s.runs()) == ["w0", "w1"]
        assert all(len(s.cells(f"w{i}")) == 2 for i in range(2))


def test_ctrl_c_inside_a_cell_write_rolls_it_back(tmp_path: Path) -> None:
    def interrupted() -> Iterator[Sample]:
        yield from samples()
        raise KeyboardInterrupt

    with Store(tmp_path / "s.db") as s:
        s.begin_run(meta("r"))
        with pytest.raises(KeyboardInterrupt):
            s.add_cell("r", cell(), interrupted())  # type: ignore[arg-type]
        assert s.cells("r") == [] and s.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0
        s.add_cell("r", cell(), samples())  # the store is usable afterwards
        assert len(s.cells("r")) == 1


def test_reading_never_waits_for_a_writer_and_works_in_a_read_only_directory(tmp_path: Path) -> None:
    """Regression (issue 10.11): lab runs list waited 30 s behind a writer, then blamed the disk."""
    db = tmp_path / "ro" / "s.db"
    with Store(db) as s:
        s.begin_run(meta("r1"))
        s.add_cell("r1", cell(), samples())
        s.db.execute("BEGIN IMMEDIATE")  # a writer holding the write lock
        started = time.monotonic()
        with Store(db, readonly=True) as reader:
            assert [r.id for r in reader.runs()] == ["r1"] and len(reader.cells("r1")) == 1
        assert time.monotonic() - started < 5
        s.db.execute("ROLLBACK")
        s.finish_run("r1", "complete")
    with read_only(db.parent):
        with Store(db, readonly=True) as reader:
            assert reader.run().status == "complete"
        with pytest.raises(InfraError, match="is read-only"):
            Store(db).begin_run(meta("r2"))


@contextmanager
def read_only(d: Path) -> Iterator[None]:
    """``d`` read-only for real: a read-only bind mount as root (who ignores permissions), chmod otherwise."""
    if os.geteuid() != 0:
        os.chmod(d, 0o555)
        try:
            yield
        finally:
            os.chmod(d, 0o755)
        return
    if subprocess.run(["mount", "--bind", "-o", "ro", str(d), str(d)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount read-only here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_a_missing_store_is_a_usage_error_for_readers(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no results store yet"):
        Store(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()


def test_a_writer_waiting_for_another_says_so_then_writes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Regression (issue 10.11): waiting behind a writer was silent, then blamed the disk."""
    import logging
    import threading

    db = tmp_path / "s.db"
    Store(db).close()
    locked = threading.Event()

    def hold() -> None:  # another writer, holding the write lock for two seconds
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(2)
        con.execute("COMMIT")
        con.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    with caplog.at_level(logging.INFO, logger="lab.results.store"), Store(db) as waiter:
        waiter.begin_run(meta("after-wait"))
        assert [r.id for r in waiter.runs()] == ["after-wait"]
    holder.join()
    assert any("waiting for another lab process to finish writing" in r.getMessage() for r in caplog.records)


def old_store(db: Path, version: int, host: str = "h") -> sqlite3.Connection:
    """A store at schema ``version`` (only its migrations applied) holding one complete run ``r`` from ``host``."""
    con = sqlite3.connect(db, isolation_level=None)
    for migration in MIGRATIONS[:version]:
        for statement in migration:
            con.execute(statement) if isinstance(statement, str) else statement(con)
    con.execute(f"PRAGMA user_version = {version}")
    con.execute(
        "INSERT INTO runs (id, started, ended, status, host, pid, lab_version, git_revision, config_digest, argv, repeat, run_dir) "
        "VALUES ('r', 1, 2, 'complete', ?, 1, '0.1', 'g', 'c', 'lab run', 3, '/r')",
        (host,),
    )
    return con


def test_a_v7_store_migrates_to_absolute_identities_keeping_every_cell_and_sample(tmp_path: Path) -> None:
    """Issue 22: v8 makes every cell's axes explicit from what the cell recorded; counts, cells and samples stay."""
    db = tmp_path / "old.db"
    con = old_store(db, 7)
    rows = [
        (1, replace(cell(), thp="always", qemu_origin="trixie-backports 1:11.1.3", scratch="ram"), "suite=forky"),
        (2, replace(cell("x86_64"), qemu_origin="host", scratch="disk", page_size=16384), "cache=warm"),
    ]
    for cell_id, c, ident in rows:
        values = {**asdict(replace(c, axes=ident))}
        names = [k for k in values if k not in ("kernel_source", "file_pages", "word_bits")]
        con.execute(f"INSERT INTO cells (id, run_id, {', '.join(names)}) VALUES (?, 'r', {', '.join('?' * len(names))})",
                    (cell_id, *(values[k] for k in names)))  # fmt: skip
        con.executemany(f"INSERT INTO samples VALUES ({cell_id}, ?, ?, ?, ?, ?, ?, ?)", [tuple(asdict(x).values()) for x in samples()])
    con.execute("INSERT INTO errors VALUES (1, 'r', 'riscv64', 'musl-static', 1, 'boot', 'm', 'e', 1, 'thp=always', 'h')")
    before = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("cells", "samples", "errors")}
    con.close()
    with Store(db) as s:
        after = {t: s.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("cells", "samples", "errors")}
        assert after == before == {"cells": 2, "samples": 2 * len(samples()), "errors": 1}
        got = dict(s.cells("r"))
        table = {a.name: a.default for a in axes.AXES}
        assert axes.values(got[1].axes) == {**table, "suite": "forky", "thp": "always", "qemu": "trixie-backports", "scratch": "ram"}
        assert axes.values(got[2].axes) == {**table, "cache": "warm", "pagesize": "16k", "qemu": "host", "scratch": "disk"}
        assert [x.minflt for x in s.samples(1)] == [x.minflt for x in samples()]
        assert axes.values(s.errors("r")[0].axes) == {**table, "thp": "always"}


def test_a_v2_store_migrates_to_axes_keeping_every_sample(tmp_path: Path) -> None:
    """Issue 11: cells gain axes in their identity; the cells table is rebuilt and samples keep their cells."""
    db = tmp_path / "old.db"
    con = old_store(db, 2)
    old = cell()
    con.execute(f"INSERT INTO cells VALUES (7, 'r', {', '.join('?' * 18)})", tuple(asdict(old).values())[:18])
    con.executemany("INSERT INTO samples VALUES (7, ?, ?, ?, ?, ?, ?, ?)", [tuple(asdict(x).values()) for x in samples()])
    con.close()
    with Store(db) as s:
        assert s.schema_version == SCHEMA_VERSION
        [(cell_id, migrated)] = s.cells("r")
        # v8: absolute, from what it recorded: THP never, 4 KiB pages, the host's QEMU (before v6), the disk (before v7)
        recorded = {"thp": "never", "pagesize": "4k", "qemu": "host", "scratch": "disk"}
        assert cell_id == 7 and migrated.axes == axes.explicit("", recorded) and len(s.samples(7)) == len(samples())
        again = axes.explicit("thp=always", recorded)
        s.add_cell("r", replace(old, axes=again), samples())  # same arch/variant/size, another axes: a new cell
        assert [c.axes for _, c in s.cells("r")] == [migrated.axes, again]
        assert s.db.execute("PRAGMA foreign_key_check").fetchall() == [] and s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
