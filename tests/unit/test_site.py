"""The history site (issue 24) on synthetic stores: pages, incremental rebuilds, trends, explained regressions, bad input."""

from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from lab import cli
from lab.errors import InfraError, UserError
from lab.explain import render
from lab.explain.account import Account, Fault
from lab.measure.plan import RunRequest
from lab.results import baselines, compare, regressions, site, trends
from lab.results.rows import Nightly
from lab.results.store import Store
from lab.results.verdict import Tolerance
from tests.unit.synthetic_store import VARIANTS, cell, counts, env, year
from tests.unit.test_store import old_store, read_only

NIGHTS, STRIDE = 40, 9
ARCHES = ("x86_64", "arm64", "riscv64")  # 40 nights whose environment moves as 360 would: 7 changes


def _year(d: Path) -> Path:
    year(d / "s.db", NIGHTS, stride=STRIDE, regress=(25, 27), run_dirs=d / "runs", keep_dirs=3)
    return d / "s.db"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _year(tmp_path_factory.mktemp("year"))


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Path:
    """A copy of the module's store (its run directories are shared: tests that write into them use own_store)."""
    shutil.copyfile(template, tmp_path / "s.db")
    return tmp_path / "s.db"


@pytest.fixture
def own_store(tmp_path: Path) -> Path:
    return _year(tmp_path)


def build(db: Path, out: Path) -> site.Built:
    with Store(db, readonly=True) as s:
        return site.build(s, out, "nightly")


def files(out: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}


def test_every_run_cell_and_regressed_night_has_a_page_and_a_second_build_changes_no_file(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    first = build(store, out)
    assert first.problems == ()
    pages = {p for p in first.written}
    assert {p for p in pages if p.startswith("runs/")} == {f"runs/{n:04d}-night.html" for n in range(NIGHTS)}
    assert len([p for p in pages if p.startswith("cells/")]) == 12
    assert {p for p in pages if p.startswith("regressions/")} == {"regressions/0025-night.html", "regressions/0026-night.html"}
    assert "index.html" in pages and first.pages == len(pages)
    before = files(out)
    again = build(store, out)
    assert again.written == () and again.removed == () and files(out) == before


def test_one_new_run_rewrites_its_page_its_cells_pages_and_the_index_only(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build(store, out)
    with Store(store) as s:
        started = s.runs()[-1].started + 86400
        meta = replace(s.runs()[-1], id="0040-night", started=started, ended=started + 900)
        s.insert_run(meta, [(cell("arm64", v, NIGHTS * STRIDE), counts(v[3], NIGHTS, 3, 0)) for v in VARIANTS], [])
    after = build(store, out)
    arm64 = {f"cells/{p.name}" for p in (out / "cells").glob("arm64-*.html")}
    assert set(after.written) == {"index.html", "runs/0040-night.html"} | arm64 and len(arm64) == 4


def test_a_cell_page_draws_every_stage_with_its_band_regressions_and_environment_markers(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build(store, out)
    [page] = (out / "cells").glob("arm64-glibc-dynamic-*.html")
    text = page.read_text()
    assert text.count('<svg class="trend"') == 7 + 1  # every stage, and file_read's major faults
    changes = [n for n in range(1, NIGHTS) if env(n * STRIDE) != env((n - 1) * STRIDE)]
    assert text.count('<g class="marker">') == 7 * len(changes) + len(changes) and len(changes) >= 5
    assert "kernel 6.12.39+deb13-amd64" in text and "QEMU 11.2.0" in text and "lab 0.2.0" in text
    assert f'href="../regressions/0025-night.html#{page.stem}-entry"' in text and text.count('class="regression"') == 2
    assert 'class="band"' in text
    other = next((out / "cells").glob("x86_64-glibc-dynamic-*.html")).read_text()
    assert 'class="regression"' not in other


def test_the_index_lists_runs_with_their_verdicts_and_the_nights_that_regressed(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build(store, out)
    index = (out / "index.html").read_text()
    assert index.count('<a href="runs/') == NIGHTS
    assert re.search(r'<a class="regressed" href="regressions/0025-night.html">1 regressed, \d+ unchanged</a>', index)
    assert "(directory pruned)" in index and index.count("(directory pruned)") == NIGHTS - 3


def test_a_pruned_run_directory_says_so_and_links_nothing(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build(store, out)
    old = (out / "runs" / "0001-night.html").read_text()
    assert 'class="pruned err"' in old and "/nonexistent/" not in re.findall(r'href="([^"]*)"', old).__str__()
    assert 'class="pruned' not in (out / "runs" / f"{NIGHTS - 1:04d}-night.html").read_text()


def _account(extra: int) -> Account:
    faults = [Fault(False, "entry", "ld.so", ".text", "_dl_start", False, "r", i) for i in range(20)]
    faults += [Fault(False, "entry", "exe", ".bss", "probe_test_heavier", False, "r", 100 + i) for i in range(extra)]
    return Account("arm64:glibc-dynamic", ("fault-probe",), tuple(faults), 3, 1, 24 + extra, ("entry", "exit"), ())


def _write_account(store: Path, run_id: str, extra: int) -> Path:
    with Store(store, readonly=True) as s:
        run_dir = Path(s.run(run_id).run_dir)
        c = next(c for _, c in s.cells(run_id) if (c.arch, c.variant) == ("arm64", "glibc-dynamic"))
    data = render.to_dict(_account(extra), (), {"arch": "arm64", "variant": "glibc-dynamic", "buffer_size": c.buffer_size})
    return render.write(run_dir, "arm64", render.stem(c.variant, c.buffer_size, c.axes), data)


def test_a_regression_is_explained_object_section_and_function_from_both_runs_accounts(own_store: Path, tmp_path: Path) -> None:
    store = own_store
    with Store(store) as s:
        last = s.runs()[-1]
        started = last.started + 86400
        meta = replace(last, id="0040-night", started=started, ended=started + 900, run_dir=str(tmp_path / "runs" / "0040-night"))
        Path(meta.run_dir).mkdir()
        s.insert_run(meta, [(cell("arm64", v, (NIGHTS - 1) * STRIDE), counts(v[3], NIGHTS, 3, 16 if v[0] == "glibc-dynamic" else 0)) for v in VARIANTS], [])  # fmt: skip
        s.delete_baseline("nightly")
        baselines.save(s, "nightly", last.id)
    _write_account(store, last.id, 0)
    _write_account(store, "0040-night", 16)
    with Store(store) as s:
        result = compare.against_baseline(s, "nightly", "0040-night", (Tolerance(2, 5), {}))
        assert result.exit_code == 1
        [e] = regressions.explain(s, result, last.id)
        s.add_nightly(Nightly("0040-night", started + 901, "/n", "nightly", last.id, 1, compare.to_json(result), regressions.to_json([e])))
    assert e.explained and (e.base_total, e.total) == (23, 39)
    assert [(r.object, r.section, r.function, r.delta) for r in e.rows] == [("exe", ".bss", "probe_test_heavier", 16)]
    out = tmp_path / "site"
    build(store, out)
    page = (out / "regressions" / "0040-night.html").read_text()
    assert '<td>exe</td><td>.bss</td><td class="l">probe_test_heavier</td><td>0</td><td>16</td>' in page
    assert "probe_test_heavier" in regressions.text([e]) and "+16" in regressions.text([e])


def test_a_regression_without_accounts_says_why(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build(store, out)
    page = (out / "regressions" / "0025-night.html").read_text()
    assert "Not explained:" in page and "was pruned" in page


@pytest.mark.parametrize("seed", range(20))
def test_marker_labels_never_overlap_and_stay_inside_the_chart(seed: int) -> None:
    rng = random.Random(seed)
    width = 900
    items = sorted((rng.uniform(56, 888), "kernel 6.12." + "9" * rng.randint(1, 30)) for _ in range(rng.randint(1, 25)))
    placed = trends.place_labels(items, width)
    for i, (row, _, _, left, right) in enumerate(placed):
        assert left >= 0 and right <= width, (left, right)
        for row2, _, _, left2, right2 in placed[:i]:
            assert row != row2 or right + 8 <= left2 or left >= right2 + 8


def test_bad_output_directories_are_one_line_errors(store: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        build(store, afile)
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro), pytest.raises(InfraError, match="cannot write the site here"):
        build(store, ro)
    with pytest.raises(InfraError, match="cannot create the site directory"):
        build(store, afile / "below")


def test_a_damaged_account_is_one_problem_and_the_rest_is_built(own_store: Path, tmp_path: Path) -> None:
    store = own_store
    path = _write_account(store, f"{NIGHTS - 1:04d}-night", 0)
    path.write_text("{not json")
    out = tmp_path / "site"
    first = build(store, out)
    [problem] = first.problems
    assert problem.startswith(f"{path}: traced account does not parse (")
    assert (out / "index.html").is_file() and len(list((out / "runs").iterdir())) == NIGHTS
    assert problem in (out / "runs" / f"{NIGHTS - 1:04d}-night.html").read_text()
    assert build(store, out).problems == (problem,)  # the page is not rebuilt, but its problem is still said


def test_lab_site_exit_codes(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "lab.yaml"
    conf.write_text(f"run:\n  store: {store}\nnightly:\n  dir: {tmp_path / 'nightly'}\n")
    assert cli.main(["--config", str(conf), "site"]) == 0
    assert (tmp_path / "site" / "index.html").is_file()  # nightly.site's default: next to the nightly directories
    (tmp_path / "afile").write_text("")
    assert cli.main(["--config", str(conf), "site", "--out", str(tmp_path / "afile")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a directory" in err and "Traceback" not in err


def test_a_store_of_older_schemas_and_lab_versions_builds(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con: sqlite3.Connection = old_store(db, 4)
    con.execute(
        "INSERT INTO cells (id, run_id, arch, variant, libc, linkage, buffer_size, libc_version_build, libc_version_run, toolchain, "
        "flags, image_key, payload_digest, kernel_release, page_size, thp, qemu_version, accel, probe_schema, attempts) "
        "VALUES (1, 'r', 'arm64', 'musl-static', 'musl', 'static', 1048576, '1.2.3', '1.2.3', 'zig', '-O2', 'i', 'p', '6.1', 4096, "
        "'never', 'QEMU emulator version 7.2.0', 'tcg', 1, 1)"
    )
    con.executemany("INSERT INTO samples VALUES (1, ?, ?, 10, 0, 10, 0, 5)", [(r, s) for r in range(3) for s in ("entry", "touch1")])
    con.close()
    year(db, 3, regress=(9, 9))  # newer runs from lab 0.1.0 in the migrated store
    out = tmp_path / "site"
    built = build(db, out)
    assert built.problems == () and (out / "runs" / "r.html").is_file()
    pages = [p.read_text() for p in (out / "cells").glob("arm64-musl-static-*.html")]
    [old] = [p for p in pages if "qemu=host" in p]  # v4 had no QEMU origin: the host's (store v8's migration)
    assert "1 run(s)" in old and "thp=never" in old
    assert len(pages) == 2 and any("3 run(s)" in p for p in pages)


def test_a_nightly_verdict_that_does_not_parse_is_a_problem_not_a_crash(store: Path, tmp_path: Path) -> None:
    with Store(store) as s:
        s.db.execute("UPDATE nightlies SET comparison = '{' WHERE run_id = '0011-night'")
    built = build(store, tmp_path / "site")
    assert built.problems == ("nightly 0011-night: its stored verdict does not parse (JSONDecodeError): its pages show no verdict",)
    manifest = json.loads((tmp_path / "site" / site.MANIFEST).read_text())
    assert "runs/0011-night.html" in manifest["pages"]


def _nightly_config(tmp_path: Path, store: Path, site_dir: Path) -> Path:
    conf = tmp_path / "lab.yaml"
    conf.write_text(f"run:\n  store: {store}\nnightly:\n  dir: {tmp_path / 'nightly'}\n  site: {site_dir}\n  explain: true\n")
    return conf


def _fake_run(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bump: int) -> list[RunRequest]:
    """lab nightly with its run faked (a night's cells inserted into the store): what it asked the run for."""
    from lab.api import results as api_results
    from lab.api.runs import RunResult
    from lab.measure.groups import Summary

    asked: list[RunRequest] = []

    def run(cfg: object, req: RunRequest, *args: object, **kw: object) -> RunResult:
        asked.append(req)
        with Store(store) as s:
            last = s.runs()[-1]
            meta = replace(
                last, id="0099-night", started=last.started + 86400, ended=last.started + 87300, run_dir=str(tmp_path / "runs" / "0099")
            )
            Path(meta.run_dir).mkdir(parents=True)
            night = (NIGHTS - 1) * STRIDE
            s.insert_run(
                meta,
                [
                    (cell(a, v, night), counts(v[3], NIGHTS, 3, bump if (a, v[0]) == ("arm64", "glibc-dynamic") else 0))
                    for a in ARCHES
                    for v in VARIANTS
                ],
                [],
            )
        return RunResult(Summary(meta.id, Path(meta.run_dir), "complete", 12, 0, 1.0), store, ())

    monkeypatch.setattr(api_results, "run", run)
    return asked


def test_a_nightly_traces_by_default_records_its_verdict_and_updates_the_site(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    asked = _fake_run(store, tmp_path, monkeypatch, 9)
    conf = _nightly_config(tmp_path, store, tmp_path / "site")
    with Store(store, readonly=True) as s:
        doc = yaml.safe_load(s.baseline_document("nightly"))
    doc["name"] = "other"  # a nightly against another baseline than nightly.baseline, 5 faults heavier at start-up
    for c in doc["cells"]:
        c["stages"]["entry"]["minflt"] = [v + 5 for v in c["stages"]["entry"]["minflt"]]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(doc))
    with Store(store) as s:
        baselines.import_file(s, tmp_path / "other.yaml")
    assert cli.main(["--config", str(conf), "-q", "nightly", "--arch", "arm64", "--baseline", "other"]) == 1
    assert [r.explain for r in asked] == [True]  # nightly.explain
    with Store(store, readonly=True) as s:
        night = s.nightlies()[-1]
    assert (night.run_id, night.exit_code, night.baseline) == ("0099-night", 1, "other")
    [e] = regressions.from_json(night.explained)
    assert e.cell == "arm64/glibc-dynamic/1048576" and "ran without --explain" in e.why_not
    assert (tmp_path / "site" / "regressions" / "0099-night.html").is_file()
    assert capsys.readouterr().err == ""
    # Regression: the nightly drew un-judged runs' bands from its --baseline, lab site from nightly.baseline, so
    # the next lab site rewrote every cell page.
    assert cli.main(["--config", str(conf), "site"]) == 0
    assert " 0 rewritten, 0 removed" in capsys.readouterr().out


def test_a_nightly_whose_site_cannot_be_built_keeps_its_results_and_says_so(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    asked = _fake_run(store, tmp_path, monkeypatch, 0)
    (tmp_path / "afile").write_text("")
    conf = _nightly_config(tmp_path, store, tmp_path / "afile")
    assert cli.main(["--config", str(conf), "-q", "nightly", "--arch", "arm64", "--no-explain"]) == 4
    assert [r.explain for r in asked] == [False]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lab: site: ") and "is a file, not a directory" in err
    with Store(store, readonly=True) as s:
        assert s.nightlies()[-1].run_id == "0099-night"
    [dated] = (tmp_path / "nightly").iterdir()
    assert {p.name for p in dated.iterdir()} >= {"report.html", "junit.xml", "compare.json"}
