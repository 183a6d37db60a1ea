"""Run bundles (issue 14): export and import round-trip, idempotence, refusals that write nothing; store v5 hosts."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from lab import axes
from lab.errors import UserError
from lab.results import bundle
from lab.results.schema import SCHEMA_VERSION
from lab.results.store import CellError, RunMeta, Store
from tests.unit.test_store import cell, meta, old_store, samples


def finished_run(store: Store, run_dir: Path, run_id: str = "20261128-000000-aaaaaa") -> RunMeta:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.md").write_text("# lab run\n")
    (run_dir / "explain" / "x86_64").mkdir(parents=True)
    (run_dir / "explain" / "x86_64" / "glibc-dynamic.json").write_text("{}")
    m = replace(meta(run_id), run_dir=str(run_dir))
    store.begin_run(m)
    store.add_cell(run_id, replace(cell(), host="hostA"), samples())
    store.add_cell(run_id, replace(cell(variant="glibc-dynamic"), host="hostA", accel="kvm", host_cpu="AMD EPYC"), samples(5))
    store.add_error(run_id, CellError("riscv64", "musl-static", 1 << 20, "boot", "no", "console tail", 2, "", "hostA"))
    store.finish_run(run_id, "failed", ended=2000.0)
    return store.run(run_id)


def snapshot(store: Store, run_id: str) -> dict[str, object]:
    rows = bundle._rows(*bundle._load(store, run_id))
    rows["run"] = {k: v for k, v in rows["run"].items() if k != "run_dir"}
    return rows


def test_a_bundle_moves_a_whole_run_to_another_store_and_importing_twice_changes_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "a" / "lab.sqlite") as a:
        run = finished_run(a, tmp_path / "a" / "runs" / "r1")
        path = bundle.export(a, run.id, tmp_path / "out" / "r1.labrun.tar.gz")
        original = snapshot(a, run.id)
    with Store(tmp_path / "b" / "lab.sqlite") as b:
        first = bundle.import_(b, path, tmp_path / "b")
        assert first == bundle.Imported(run.id, "failed", 2, 1, new=True)
        assert snapshot(b, run.id) == original  # cells, samples (in order), errors, environment incl. host and CPU
        moved = Path(b.run(run.id).run_dir)
        assert moved == tmp_path / "b" / "runs" / run.id
        assert (moved / "report.md").read_text() == "# lab run\n" and (moved / "explain" / "x86_64" / "glibc-dynamic.json").exists()
        again = bundle.import_(b, path, tmp_path / "b")
        assert again.new is False and len(b.runs()) == 1 and len(b.cells(run.id)) == 2 and len(b.errors(run.id)) == 1


def rewrite(path: Path, change: dict[str, object] | None = None, member: tuple[str, bytes] | None = None, resum: bool = False) -> None:
    """Rewrite a bundle: ``change`` merges into its manifest; ``member`` replaces one member's bytes (its checksum
    kept, or with ``resum`` recomputed: a hand-edited bundle that checks out)."""
    with tarfile.open(path) as tar:
        members = {i.name: tar.extractfile(i).read() for i in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members["manifest.json"]) | (change or {})
    members["manifest.json"] = json.dumps(manifest).encode()
    if member:
        members[member[0]] = member[1]
        if resum:
            manifest["files"][member[0]] = hashlib.sha256(member[1]).hexdigest()
            members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({"change": {"schema": 3}}, "bundle schema 3, this lab reads schema 1/2"),
        ({"member": ("rundir/report.md", b"edited\n")}, "checksum mismatch in rundir/report.md"),
        ({"change": {"format": "zip"}}, "format is not lab-run-bundle"),
        ({"truncate": True}, "unreadable archive"),
    ],
)
def test_a_bad_bundle_is_refused_in_one_line_and_writes_nothing(tmp_path: Path, damage: dict[str, object], message: str) -> None:
    with Store(tmp_path / "a" / "lab.sqlite") as a:
        path = bundle.export(a, finished_run(a, tmp_path / "a" / "runs" / "r1").id, tmp_path / "r1.labrun.tar.gz")
    if damage.get("truncate"):
        path.write_bytes(path.read_bytes()[:200])
    else:
        rewrite(path, damage.get("change"), damage.get("member"))  # type: ignore[arg-type]
    with Store(tmp_path / "b" / "lab.sqlite") as b, pytest.raises(UserError) as err:
        bundle.import_(b, path, tmp_path / "b")
    assert message in err.value.message and str(path) in err.value.message and err.value.remedy
    with Store(tmp_path / "b" / "lab.sqlite") as b:
        assert b.runs() == []
    assert not (tmp_path / "b" / "runs").exists()


def edited_run(path: Path, edit: str) -> bytes:
    with tarfile.open(path) as tar:
        rows = json.loads(tar.extractfile("run.json").read())  # type: ignore[union-attr]
    if edit == "traversal":
        rows["run"]["id"] = "../../etc"
    elif edit == "types":
        rows["cells"][0]["cell"]["buffer_size"] = "lots"
    elif edit == "shape":
        rows["cells"] = {"not": "a list"}
    elif edit == "status":
        rows["run"]["status"] = "done"
    elif edit == "stage":
        rows["errors"][0]["stage"] = "zzz"
    else:
        rows["errors"][0]["attempts"] = True
    return json.dumps(rows).encode()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("traversal", "run id '../../etc'"),
        ("types", "cell.buffer_size: 'lots' is not int"),
        ("shape", "run.json cells is not a list"),
        ("status", "run status 'done' is not one of complete, failed, incomplete"),  # was: exit 4 "two writers?"
        ("stage", "error.stage 'zzz' is not one of"),
        ("bool", "error.attempts: True is not int"),
    ],
)
def test_a_hand_edited_bundle_that_checks_out_is_still_validated_field_by_field(tmp_path: Path, edit: str, message: str) -> None:
    """A bundle's checksums only prove it arrived intact: its run id names a directory (no path traversal) and its
    rows go into SQLite, which would store text in an integer column."""
    with Store(tmp_path / "a" / "lab.sqlite") as a:
        path = bundle.export(a, finished_run(a, tmp_path / "a" / "runs" / "r1").id, tmp_path / "r1.labrun.tar.gz")
    rewrite(path, member=("run.json", edited_run(path, edit)), resum=True)
    with Store(tmp_path / "b" / "lab.sqlite") as b, pytest.raises(UserError) as err:
        bundle.import_(b, path, tmp_path / "b")
    assert message in err.value.message, err.value.message
    with Store(tmp_path / "b" / "lab.sqlite") as b:
        assert b.runs() == []
    assert not (tmp_path / "etc").exists() and not (tmp_path / "b" / "runs").exists()


def test_the_same_run_id_with_other_content_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "a" / "lab.sqlite") as a:
        path = bundle.export(a, finished_run(a, tmp_path / "a" / "runs" / "r1").id, tmp_path / "r1.labrun.tar.gz")
    with Store(tmp_path / "b" / "lab.sqlite") as b:
        finished_run(b, tmp_path / "b" / "elsewhere")
        b.add_cell("20261128-000000-aaaaaa", cell(variant="musl-dynamic"), samples())  # the same id, measured differently
        with pytest.raises(UserError, match=r"already in .* with different content"):
            bundle.import_(b, path, tmp_path / "b")


def test_a_running_run_is_not_exported(tmp_path: Path) -> None:
    with Store(tmp_path / "lab.sqlite") as s:
        s.begin_run(meta("r-live"))
        with pytest.raises(UserError, match="still running"):
            bundle.export(s, "r-live", tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_a_v4_store_migrates_giving_cells_and_errors_their_runs_host(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = old_store(db, 4, host="oldhost")
    old = cell()
    con.execute(f"INSERT INTO cells VALUES (7, 'r', {', '.join('?' * 20)})", tuple(asdict(old).values())[:20])
    con.execute("INSERT INTO errors VALUES (1, 'r', 'x86_64', 'musl-static', 1, 'boot', 'm', 'e', 1, '')")
    con.close()
    with Store(db) as s:
        assert s.schema_version == SCHEMA_VERSION
        [(_, migrated)] = s.cells("r")
        assert migrated.host == "oldhost" and migrated.host_cpu == ""
        assert [e.host for e in s.errors("r")] == ["oldhost"]
        s.add_error("r", CellError("arm64", "glibc-static", 1, "host", "host b unreachable", "", 1, "", "b"))  # the fleet's stage


def test_an_integer_start_time_and_a_cell_without_host_import_twice_unchanged(tmp_path: Path) -> None:
    """Regression (review): the second import compared the stored run (floats, filled defaults) with the bundle's raw
    JSON (an int ``started``, no ``host``) and refused its own run as "different content"."""
    with Store(tmp_path / "a" / "lab.sqlite") as a:
        path = bundle.export(a, finished_run(a, tmp_path / "a" / "runs" / "r1").id, tmp_path / "r1.labrun.tar.gz")
    with tarfile.open(path) as tar:
        rows = json.loads(tar.extractfile("run.json").read())  # type: ignore[union-attr]
    rows["run"]["started"] = 1000
    del rows["cells"][0]["cell"]["host"]
    rewrite(path, member=("run.json", json.dumps(rows).encode()), resum=True)
    with Store(tmp_path / "b" / "lab.sqlite") as b:
        assert bundle.import_(b, path, tmp_path / "b").new
        assert not bundle.import_(b, path, tmp_path / "b").new


def test_members_that_cannot_all_be_files_are_a_bad_bundle_not_a_disk_error(tmp_path: Path) -> None:
    with Store(tmp_path / "a" / "lab.sqlite") as a:
        path = bundle.export(a, finished_run(a, tmp_path / "a" / "runs" / "r1").id, tmp_path / "r1.labrun.tar.gz")
    rewrite(path, member=("rundir/report.md/inner", b"x"), resum=True)  # report.md is a file and a directory
    with Store(tmp_path / "b" / "lab.sqlite") as b, pytest.raises(UserError, match="cannot be unpacked"):
        bundle.import_(b, path, tmp_path / "b")
    with Store(tmp_path / "b" / "lab.sqlite") as b:
        assert b.runs() == []


def test_export_to_a_directory_is_a_usage_error_and_leaves_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "a" / "lab.sqlite") as a:
        run = finished_run(a, tmp_path / "a" / "runs" / "r1")
        with pytest.raises(UserError, match="is a directory"):
            bundle.export(a, run.id, tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_fleet_runs_host_runs_are_never_the_latest_run(tmp_path: Path) -> None:
    """Regression (review): imported host runs started after their fleet run, so `lab report`/`compare` without a
    run id picked one host's partial run."""
    with Store(tmp_path / "a" / "lab.sqlite") as a:
        path = bundle.export(a, finished_run(a, tmp_path / "a" / "runs" / "r1").id, tmp_path / "r1.labrun.tar.gz")
    with Store(tmp_path / "b" / "lab.sqlite") as b:
        own = replace(meta("20261127-000000-bbbbbb"), started=10.0, status="complete")
        b.insert_run(own, [], [])
        bundle.import_(b, path, tmp_path / "b", part_of=own.id)
        assert b.run().id == own.id and b.run("20261128").part_of == own.id


def test_a_schema_1_bundle_imports_with_its_identities_made_absolute(tmp_path: Path) -> None:
    """Issue 22: a bundle exported before absolute identities (store v8) names only non-default values; import
    makes them explicit from what each cell recorded, as the store's migration does."""
    with Store(tmp_path / "a" / "lab.sqlite") as a:
        path = bundle.export(a, finished_run(a, tmp_path / "a" / "runs" / "r1").id, tmp_path / "r1.labrun.tar.gz")
    with tarfile.open(path) as tar:
        rows = json.loads(tar.extractfile("run.json").read())  # type: ignore[union-attr]
    rows["cells"][0]["cell"] |= {"axes": "cache=warm", "thp": "always"}
    rows["errors"][0]["axes"] = ""
    rewrite(path, {"schema": 1}, ("run.json", json.dumps(rows).encode()), resum=True)
    with Store(tmp_path / "b" / "lab.sqlite") as b:
        run_id = bundle.import_(b, path, tmp_path / "b").run_id
        table = {x.name: x.default for x in axes.AXES}
        got = [axes.values(c.axes) for _, c in b.cells(run_id)]
        assert got[0] == {**table, "cache": "warm", "thp": "always", "qemu": axes.QEMU_HOST}
        assert [axes.values(e.axes) for e in b.errors(run_id)] == [table]
