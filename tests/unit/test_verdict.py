"""The verdict rule on hand-built distributions, JUnit shape, baseline YAML round trip, retention."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from lab import axes
from lab.errors import UserError
from lab.results import baselines, compare, junit, nightly
from lab.results.store import RunMeta, Store
from lab.results.verdict import ENV_FIELDS, CellData, Finding, Tolerance, exit_code, stage_verdict
from lab.results.verdict import compare as run_compare

TOL = Tolerance(faults=2, percent=5)
ENV = {k: "x" for k in ENV_FIELDS}


@pytest.mark.parametrize(
    ("base", "cur", "verdict", "why"),
    [
        ([54, 54, 54], [54, 54, 54], "unchanged", "ranges overlap"),
        ([54, 55, 54], [55, 56, 55], "unchanged", "ranges overlap"),
        ([54, 54, 54], [55, 55, 55], "unchanged", "ranges are adjacent"),  # adjacent integers: not a change
        ([54, 54, 54], [56, 56, 56], "unchanged", "median moved 2 <= 2 faults"),  # a gap, but within the absolute tolerance
        ([100, 100, 100], [104, 104, 104], "unchanged", "median moved 4 <= 5% of 100"),  # beyond 2 faults, within 5%
        ([50, 50, 50], [53, 53, 53], "regressed", ""),  # 3 > 2 faults and 3 > 2.5 (5% of 50)
        ([54, 54, 54], [58, 58, 58], "regressed", ""),
        ([54, 54, 54], [70, 70, 71], "regressed", ""),
        ([54, 54, 54], [40, 41, 40], "improved", ""),
        ([0, 0, 0], [2, 2, 2], "unchanged", "median moved 2 <= 2 faults"),  # zero-count stage, at the absolute edge
        ([0, 0, 0], [3, 3, 3], "regressed", ""),  # zero baseline: percent of 0 never protects
        ([256, 256], [260, 260], "unchanged", "<= 5% of 256"),
    ],
)
def test_stage_verdict(base: list[int], cur: list[int], verdict: str, why: str) -> None:
    got, reason = stage_verdict(base, cur, TOL)
    assert got == verdict and why in reason


def cell(
    arch: str, entry: list[int], env: dict[str, object] | None = None, stages: dict[str, dict[str, list[int]]] | None = None
) -> CellData:
    st = stages or {
        "entry": {"minflt": entry, "majflt": [0] * len(entry)},
        "touch1": {"minflt": [256] * len(entry), "majflt": [0] * len(entry)},
    }
    return CellData(arch, "musl-static", 1 << 20, env or ENV, st)


def test_compare_covers_every_verdict_worst_first() -> None:
    base = [cell("a", [4, 4, 4]), cell("b", [6, 6, 6]), cell("c", [19, 19, 19]), cell("d", [40, 40]), cell("e", [5, 5])]
    cur = [
        cell("a", [4, 4, 5]),
        cell("b", [22, 22, 22]),
        cell("c", [19, 19, 19], env={**ENV, "kernel_release": "6.13"}),
        cell("f", [1, 1]),
        cell("e", [1, 1]),
    ]
    findings = run_compare(base, cur, errored={("d", "musl-static", 1 << 20, "")}, tolerance={}, default=TOL)
    verdicts = [(f.cell.split("/")[0], f.stage, f.counter, f.verdict) for f in findings if f.verdict != "unchanged"]
    assert verdicts == [
        ("b", "entry", "minflt", "regressed"),
        ("d", "*", "*", "missing"),
        ("c", "*", "*", "incomparable"),
        ("e", "entry", "minflt", "improved"),
        ("f", "*", "*", "new"),
    ]
    inc = next(f for f in findings if f.verdict == "incomparable")
    assert inc.detail == "kernel_release: 'x' -> '6.13'"
    assert next(f for f in findings if f.verdict == "missing").detail == "errored in this run"
    b = findings[0]
    assert b.describe() == "minflt median 6 -> 22 (+16); baseline range 6-6, current 22-22"
    assert exit_code(findings) == 1
    assert exit_code([f for f in findings if f.verdict != "regressed"]) == 2
    assert exit_code([f for f in findings if f.verdict not in ("regressed", "missing")]) == 0


def test_a_comparison_where_every_cell_is_incomparable_is_not_a_pass() -> None:
    """Regression (issue 10.2): a nightly after a kernel upgrade compared nothing and exited 0."""
    new_env: dict[str, object] = {**ENV, "kernel_release": "6.13", "qemu_version": "QEMU 9"}
    findings = run_compare([cell("a", [4, 4]), cell("b", [6, 6])], [cell("a", [4, 4], new_env), cell("b", [6, 6], new_env)], set(), {}, TOL)
    assert {f.verdict for f in findings} == {"incomparable"}
    assert exit_code(findings) == 2
    c = compare.Comparison("baseline n -> run r", "n", "r", findings)
    assert c.nothing_comparable == (
        "nothing comparable: environment changed (kernel_release: 'x' -> '6.13', qemu_version: 'x' -> 'QEMU 9'): save a new baseline"
    )
    assert c.nothing_comparable in compare.table(c) and '"nothing_comparable": "nothing comparable' in compare.to_json(c)
    one_comparable = run_compare([cell("a", [4, 4]), cell("b", [6, 6])], [cell("a", [4, 4]), cell("b", [6, 6], new_env)], set(), {}, TOL)
    assert exit_code(one_comparable) == 0 and compare.Comparison("l", "n", "r", one_comparable).nothing_comparable is None


def test_an_errored_cell_with_partial_samples_is_missing_not_compared() -> None:
    findings = run_compare([cell("a", [4, 4, 4])], [cell("a", [4])], {("a", "musl-static", 1 << 20, "")}, {}, TOL)
    assert [(f.verdict, f.detail) for f in findings] == [("missing", "errored in this run")]
    assert exit_code(findings) == 2


def test_per_stage_tolerance_is_used() -> None:
    base, cur = [cell("a", [10, 10])], [cell("a", [20, 20])]
    loose = {"entry": Tolerance(faults=50, percent=0)}
    assert all(f.verdict == "unchanged" for f in run_compare(base, cur, set(), loose, TOL))


def test_junit_has_one_testcase_per_cell_and_stage_and_names_failures() -> None:
    findings = run_compare([cell("a", [4, 4]), cell("m", [4])], [cell("a", [30, 30])], set(), {}, TOL)
    c = compare.Comparison("baseline nightly -> run r2", "nightly", "r2", findings)
    root = ET.fromstring(junit.to_junit(c))
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert {(t.get("classname"), t.get("name")) for t in cases} == {
        ("a.musl-static", "entry[1M]"),
        ("a.musl-static", "touch1[1M]"),
        ("m.musl-static", "cell[1M]"),
    }
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("errors") == "1"
    # Stable from night to night (issue 10.20): run ids live in properties, never in the suite name.
    assert suite.get("name") == "lab compare" and suite.get("time") is not None
    assert {p.get("name"): p.get("value") for p in suite.iter("property") if p.get("name") in ("baseline", "run")} == {
        "baseline": "nightly",
        "run": "r2",
    }
    entry = next(t for t in cases if t.get("name") == "entry[1M]")
    props = {p.get("name"): p.get("value") for p in entry.iter("property")}
    assert props["minflt.baseline_median"] == "4" and props["minflt.current_median"] == "30"
    assert all(t.get("time") == "0" for t in cases)
    failure = entry.find("failure")
    assert failure is not None and failure.get("type") == "regressed"
    assert "a/musl-static/1048576 entry regressed: minflt median 4 -> 30" in (failure.get("message") or "")
    assert next(t for t in cases if t.get("classname", "").startswith("m.")).find("error") is not None


TABLE = {a.name: a.default for a in axes.AXES}


def store_with_run(tmp_path: Path, run_id: str = "r1") -> Store:
    from tests.unit.test_store import cell as store_cell
    from tests.unit.test_store import samples

    s = Store(tmp_path / "s.db")
    s.begin_run(RunMeta(run_id, 1.0, "h", 1, "0.1.0", "g", "c", "lab run", 3, str(tmp_path / "runs" / run_id)))
    s.add_cell(run_id, replace(store_cell(), axes=axes.identity(TABLE)), samples())  # as a run stores it: absolute
    s.finish_run(run_id, "complete")
    return s


def test_baseline_yaml_round_trip(tmp_path: Path) -> None:
    with store_with_run(tmp_path) as s:
        run_id, n = baselines.save(s, "nightly", None)
        assert (run_id, n) == ("r1", 1)
        text = s.baseline_document("nightly")
        name, source, cells = baselines.parse(text, "x")
        assert (name, source) == ("nightly", "r1")
        assert cells[0].stages["entry"]["minflt"] == [10, 11, 12]
        assert set(cells[0].env) == set(ENV_FIELDS)
        (tmp_path / "b.yaml").write_text(text)
        with pytest.raises(UserError, match="already exists"):
            baselines.import_file(s, tmp_path / "b.yaml")
        s.delete_baseline("nightly")
        assert baselines.import_file(s, tmp_path / "b.yaml") == "nightly"
        assert s.baseline_document("nightly") == text


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda t: t.replace("schema_version: 3", "schema_version: 4"), "is not lab.baseline v1/2/3"),
        (lambda t: t.replace("minflt: [10, 11, 12]", "minflt: [10, x, 12]"), r"cells\[0\].stages.entry"),
        (lambda t: t.replace("  env:\n", "  env:\n    extra: 1\n"), r"cells\[0\].env: must hold exactly"),
        (lambda t: t + "  - [unclosed\n", "not valid YAML"),
        (lambda t: "!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_bad_baseline_files_are_refused_naming_the_field(tmp_path: Path, mutate: object, match: str) -> None:
    with store_with_run(tmp_path) as s:
        baselines.save(s, "b", "r1")
        text = mutate(s.baseline_document("b"))  # type: ignore[operator]
    with pytest.raises(UserError, match=match):
        baselines.parse(text, "f.yaml")


def test_retention_keeps_newest_and_baseline_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name in ("20260101-1", "20260102-1", "20260103-1", "20260104-1", "20260105-1"):
        (runs / name).mkdir(parents=True)
    with store_with_run(tmp_path, "20260101-1") as s:
        baselines.save(s, "keep", "20260101-1")
        deleted = nightly.prune_runs(s, runs, keep=2)
    assert sorted(p.name for p in deleted) == ["20260102-1", "20260103-1"]
    assert sorted(p.name for p in runs.iterdir()) == ["20260101-1", "20260104-1", "20260105-1"]


def test_retention_never_deletes_a_running_runs_directory(tmp_path: Path) -> None:
    """Regression (issue 10.5): keep_runs 1 pruned a run in progress, which still reported complete."""
    import socket

    runs = tmp_path / "runs"
    for name in ("20260101-1", "20260102-1", "20260103-1"):
        (runs / name).mkdir(parents=True)
    with store_with_run(tmp_path, "20260103-1") as s:
        s.begin_run(RunMeta("20260101-1", 2.0, socket.gethostname(), 1, "0.1.0", "g", "c", "lab run", 3, str(runs / "20260101-1")))
        deleted = nightly.prune_runs(s, runs, keep=1)
        assert [p.name for p in deleted] == ["20260102-1"]
        s.finish_run("20260101-1", "complete")
        assert [p.name for p in nightly.prune_runs(s, runs, keep=1)] == ["20260101-1"]


def test_two_nightlies_in_the_same_second_get_their_own_directories(tmp_path: Path) -> None:
    """Regression (issue 10.4): they shared one dated directory."""
    first = nightly.new_dir(tmp_path, "2026-11-27-021500")
    second = nightly.new_dir(tmp_path, "2026-11-27-021500")
    assert (first.name, second.name) == ("2026-11-27-021500", "2026-11-27-021500-2")


def test_findings_without_numbers_describe_themselves() -> None:
    assert Finding("a/v/1", "*", "*", "missing", detail="absent from this run").describe() == "absent from this run"


@pytest.mark.parametrize("name", ["", " ", "a b", "../x", "-x", "x" * 65, "naïve"])
def test_baseline_names_are_checked_on_save_and_import(tmp_path: Path, name: str) -> None:
    """Regression (issue 10.15): the name '' was accepted, and its export could not be imported."""
    with store_with_run(tmp_path) as s:
        with pytest.raises(UserError, match=r"baseline name .* is not valid"):
            baselines.save(s, name, None)
        baselines.save(s, "ok-1.2_x", None)
        text = s.baseline_document("ok-1.2_x").replace("name: ok-1.2_x", f"name: {name!r}")
    (tmp_path / "b.yaml").write_text(text)
    with Store(tmp_path / "t.db") as t, pytest.raises(UserError, match=r"name(/source_run: missing| .* is not valid)"):
        baselines.import_file(t, tmp_path / "b.yaml")


def test_baselines_keep_axes_and_read_v1_documents(tmp_path: Path) -> None:
    """Issue 11: a cell's axes are part of its identity in baselines; documents written before axes still load.
    Issue 22: v3 documents carry every value; v1 and v2 ones are made absolute from the environment they recorded."""
    with store_with_run(tmp_path) as s:
        baselines.save(s, "n", None)
        text = s.baseline_document("n")
    absolute = axes.identity(TABLE)
    assert "schema_version: 3" in text and f"axes: {absolute}" in text
    v2 = text.replace("schema_version: 3", "schema_version: 2").replace(f"  axes: {absolute}\n", "")
    v1 = v2.replace("schema_version: 2", "schema_version: 1")
    for old in (v1, v2):
        name, run, cells = baselines.parse(old, "old.yaml")
        assert (name, run) == ("n", "r1") and [c.axes for c in cells] == [absolute]
    with_axes = v2.replace("  buffer_size: 1048576\n", "  buffer_size: 1048576\n  axes: thp=always\n")
    with_axes = with_axes.replace("thp: never", "thp: always")
    [c] = baselines.parse(with_axes, "v2.yaml")[2]
    assert c.axes == axes.identity({**TABLE, "thp": "always"}) and c.name.endswith("/1048576/thp=always") and c.key[-1] == c.axes
    sixteen = v2.replace("page_size: 4096", "page_size: 16384")
    assert axes.values(baselines.parse(sixteen, "v2.yaml")[2][0].axes)["pagesize"] == "16k"  # recorded: 16 KiB pages
