"""Report rendering against golden files, statistics, and report numbers equal to the store's."""

from __future__ import annotations

import html.parser
import json
import os
import statistics
from pathlib import Path

import pytest

from lab import arches, axes
from lab.results import report
from lab.results.store import Cell, CellError, RunMeta, Sample, Store

GOLDEN = Path(__file__).with_name("golden")
ENTRY = {
    ("x86_64", "glibc-dynamic"): [54, 54, 55],
    ("x86_64", "glibc-static"): [24, 24, 24],
    ("x86_64", "musl-dynamic"): [24, 25, 24],
    ("x86_64", "musl-static"): [4, 4, 4],
    ("arm64", "glibc-dynamic"): [42, 41, 42],
    ("arm64", "musl-static"): [6, 6, 7],
}


PAGE = arches.get("x86_64").flavours[0].bytes
PAGES = (1 << 20) // PAGE  # a 1 MiB buffer's (and the 1 MiB test file's) pages


def make_store(path: Path) -> Store:
    s = Store(path)
    s.begin_run(RunMeta("20261127-120000-00001", 1.8e9, "labhost", 1, "0.1.0", "0123456789abcdef", "cfg", "lab run --arch all", 3, "/r"))
    for (arch, variant), entries in ENTRY.items():
        libc, linkage = variant.split("-")
        cell = Cell(arch, variant, libc, linkage, 1 << 20, "2.36" if libc == "glibc" else "1.2.5", "2.41" if libc == "glibc" else None,
                    "gcc 12.2.0" if libc == "glibc" else "zig 0.15.2", "-O2 <flags>", "img", "pay", "6.12.117", PAGE, "never", "QEMU 7.2.22", "tcg", 1, 1,
                    axes=axes.identity({a.name: a.default for a in axes.AXES}), file_pages=PAGES)  # fmt: skip
        rows = []
        for r, entry in enumerate(entries):
            cum = 0
            for stage, minor, major in (("entry", entry, 0), ("overhead", 1, 0), ("malloc", 3, 0), ("touch1", PAGES if libc == "glibc" else PAGES - 1, 0),
                                        ("touch2", 0, 0), ("file_map", 1, 0), ("file_read", 0, PAGES)):  # fmt: skip
                cum += minor
                rows.append(Sample(r, stage, cum, major, minor, major, 1000))
        s.add_cell("20261127-120000-00001", cell, rows)
    s.add_error(
        "20261127-120000-00001",
        CellError(
            "riscv64", "glibc-dynamic", 1 << 20, "boot", "riscv64: QEMU exited <&> early", "console tail: <script>alert(1)</script>", 2
        ),
    )
    s.finish_run("20261127-120000-00001", "failed", ended=1.8e9 + 42)
    return s


@pytest.fixture
def rep(tmp_path: Path) -> report.Report:
    with make_store(tmp_path / "s.db") as s:
        return report.build(s)


@pytest.mark.parametrize("fmt", report.FORMATS)
def test_render_matches_golden(rep: report.Report, fmt: str) -> None:
    got = report.render(rep, fmt)
    golden = GOLDEN / f"report.{fmt}"
    if os.environ.get("LAB_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), f"{golden} differs; inspect, then regenerate with LAB_UPDATE_GOLDEN=1"


def test_stat() -> None:
    assert report.Stat.of([3, 1, 2, 10]) == report.Stat(2.5, 1, 10, 4)
    assert report.Stat.of([0]) == report.Stat(0.0, 0, 0, 1)
    assert report.Stat.of([42, 41, 42]).spread == 1


def test_report_numbers_equal_store_numbers(tmp_path: Path) -> None:
    with make_store(tmp_path / "s.db") as s:
        data = json.loads(report.render(report.build(s), "json"))
        db = s.db
        for c in data["cells"]:
            cell = c["cell"]
            for stage, stat in c["minor"].items():
                values = [v for (v,) in db.execute(
                    "SELECT delta_minflt FROM samples JOIN cells ON cells.id = samples.cell_id WHERE arch=? AND variant=? AND stage=?",
                    (cell["arch"], cell["variant"], stage))]  # fmt: skip
                assert stat == {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


class Cells(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str | None] = {}
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.scripts += tag == "script"
        if a.get("data-cell"):
            self.cells[str(a["data-cell"])] = a.get("data-entry")


def test_html_holds_every_cell_and_escapes_evidence(rep: report.Report) -> None:
    page = report.render(rep, "html")
    p = Cells()
    p.feed(page)
    assert p.cells["x86_64/glibc-dynamic/1048576"] == "54"
    assert p.cells["arm64/musl-static/1048576"] == "6"
    assert p.cells["riscv64/glibc-dynamic/1048576"] is None  # the error cell
    assert p.scripts == 0 and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "QEMU exited &lt;&amp;&gt; early" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


def test_diffs_pair_libcs_and_linkages(rep: report.Report) -> None:
    d = {(x.arch, x.what, x.stage): x for x in rep.diffs()}
    e = d[("x86_64", "musl vs glibc, dynamic", "entry")]
    assert (e.a, e.b, e.a_median, e.b_median, e.delta) == ("glibc-dynamic", "musl-dynamic", 54, 24, -30)
    assert d[("x86_64", "static vs dynamic, musl", "entry")].delta == -20
    assert d[("x86_64", "musl vs glibc, static", "touch1")].delta == -1
    assert not any(arch == "arm64" for arch, _, _ in d)  # arm64 has no complete pair in this run


def test_the_libc_version_view_lines_up_suites_by_version(tmp_path: Path) -> None:
    """Issue 11: the same cell at two suites' libcs, side by side with the delta; other cells stay out of the view."""
    from dataclasses import replace

    with make_store(tmp_path / "s.db") as s:
        [(base_id, base)] = [(i, c) for i, c in s.cells("20261127-120000-00001") if (c.arch, c.variant) == ("x86_64", "glibc-dynamic")]
        newer = replace(base, axes="suite=forky", libc_version_build="2.43", libc_version_run="2.43")
        moved = [replace(x, minflt=x.minflt + 3, delta_minflt=x.delta_minflt + 3) if x.stage == "entry" else x for x in s.samples(base_id)]
        s.add_cell("20261127-120000-00001", newer, moved)
        rep = report.build(s)
    [row] = rep.libc_versions()
    assert (row.arch, row.variant, row.axes) == ("x86_64", "glibc-dynamic", "") and row.entry == {"2.41": 54.0, "2.43": 57.0}
    assert row.deltas == [("2.41", "2.43", 3.0)]
    assert "x86_64 [suite=forky]" in rep.arches and "2.41→2.43 +3" in report.render(rep, "md")
    assert "2.41: 54 · 2.43: 57" in report.render(rep, "html")
