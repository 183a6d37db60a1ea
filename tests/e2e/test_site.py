"""The history site on real guests (issue 24): a nightly that regresses on purpose, explained object by object
from both runs' traced accounts, in the site and in `lab compare --explain`; the pages in a real browser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab import api as lab_api
from lab import arches, config
from lab.payloads.build import PayloadStore
from lab.payloads.variants import VARIANTS
from lab.results import regressions, trends
from lab.results import site as site_mod
from lab.results.store import Store
from tests.e2e.browser import has_colour, overlapping_labels, screenshot
from tests.e2e.conftest import CORE
from tests.unit.synthetic_store import year

LAB = [sys.executable, "-m", "lab"]
NAME = "e2e-site"
EXTRA_PAGES = 16  # the probe touches this many more .bss pages before main (PROBE_TEST_EXTRA_PAGES)


def lab(cli_config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, "--config", str(cli_config), *argv], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def regressed(cli_config: Path, images: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[lab_api.NightlyResult, str]:
    """A traced baseline run, then a nightly whose probe touches EXTRA_PAGES more pages before main."""
    proc = lab(cli_config, "run", "--arch", "all", "--repeat", "3", "--explain", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    base = json.loads(proc.stdout)["run_id"]
    assert lab(cli_config, "baseline", "save", NAME, "--run", base).returncode == 0
    mp = pytest.MonkeyPatch()
    mp.setattr(
        "lab.measure.runner.PayloadStore", lambda c, **kw: PayloadStore(c, extra_defines=(f"PROBE_TEST_EXTRA_PAGES={EXTRA_PAGES}",), **kw)
    )
    try:
        result = lab_api.nightly(config.load(cli_config), lab_api.NightlyRequest(lab_api.RunRequest(arch="all", repeat=3), NAME))
    finally:
        mp.undo()
    return result, str(base)


def test_a_nightly_regression_is_explained_by_the_object_and_section_that_grew(
    regressed: tuple[lab_api.NightlyResult, str], cfg: config.Config
) -> None:
    result, base = regressed
    assert result.exit_code == 1 and result.run.summary.status == "complete" and result.site is not None
    assert result.site_problems == ()
    cells = {f.cell for f in result.comparison.findings if f.verdict == "regressed" and f.stage == "entry"}
    assert len(cells) == len(CORE) * len(VARIANTS)
    explained = {e.cell: e for e in result.explained if e.stage == "entry"}
    assert set(explained) == cells
    for name, e in explained.items():
        assert e.explained, (name, e.why_not)
        pages = EXTRA_PAGES * 4096 // arches.get(name.split("/")[0]).flavours[0].bytes  # pages = size // page size
        assert e.total - e.base_total == pages, (name, e.rows)  # the traced accounts differ by the pad's pages
        # worst first: the constructor touching the pad in the executable's .bss (its first page may share one with
        # .bss data libc touched anyway; the rest of the difference is the sections the pad moved)
        top = e.rows[0]
        assert (top.object, top.section, top.function) == ("exe", ".bss", "probe_test_heavier@exe"), (name, e.rows)
        assert pages - 1 <= top.delta <= pages, (name, e.rows)
    with Store(cfg.results_dir / "lab.sqlite", readonly=True) as s:
        [night] = [n for n in s.nightlies() if n.run_id == result.run.summary.run_id]
    assert (night.baseline, night.baseline_run, night.exit_code) == (NAME, base, 1)
    assert regressions.from_json(night.explained) == list(result.explained)
    site = result.site.out
    html = (site / "regressions" / f"{night.run_id}.html").read_text()
    assert html.count('<td>exe</td><td>.bss</td><td class="l">probe_test_heavier') == len(cells)
    index = (site / "index.html").read_text()
    assert f'href="regressions/{night.run_id}.html"' in index and f'href="runs/{base}.html"' in index


def test_lab_compare_explain_prints_the_same_diff(regressed: tuple[lab_api.NightlyResult, str], cli_config: Path) -> None:
    result, _ = regressed
    proc = lab(cli_config, "compare", result.run.summary.run_id, "--baseline", NAME, "--explain")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.count(" entry (minflt regressed)") == len(CORE) * len(VARIANTS)
    rows = [line.split() for line in proc.stdout.splitlines() if "probe_test_heavier" in line]
    assert len(rows) == len(CORE) * len(VARIANTS) and all(r[:3] == ["exe", ".bss", "probe_test_heavier@exe"] for r in rows)
    data = json.loads(lab(cli_config, "compare", result.run.summary.run_id, "--baseline", NAME, "--explain", "--format", "json").stdout)
    assert {e["cell"] for e in data["explained"]} >= {e.cell for e in result.explained}


def test_lab_site_again_changes_nothing(regressed: tuple[lab_api.NightlyResult, str], cli_config: Path) -> None:
    result, _ = regressed
    assert result.site is not None
    before = {p: p.stat().st_mtime_ns for p in result.site.out.rglob("*") if p.is_file()}
    proc = lab(cli_config, "site")
    assert proc.returncode == 0, proc.stderr
    assert " 0 rewritten, 0 removed" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in result.site.out.rglob("*") if p.is_file()} == before


MEDIAN, RED, MARKER = (0x4E, 0x79, 0xA7), (0xD6, 0x27, 0x28), (0x6A, 0x3D, 0x9A)  # the charts' line, regression dots, markers
WORSE = (0xB4, 0x23, 0x18)  # the pages' text colour for a regression and a growth


def _look(page: Path, work: Path, size: tuple[int, int] = (1200, 1600)) -> tuple[list[bytes], int]:
    width, height, rows = screenshot(page, work / f"{page.stem}.png", size)
    assert (width, height) == size
    return rows, len(rows[0]) // width


def test_the_site_renders_in_a_real_browser(regressed: tuple[lab_api.NightlyResult, str], cfg: config.Config, tmp_path: Path) -> None:
    result, _ = regressed
    assert result.site is not None
    site = result.site.out
    rows, bpp = _look(site / "index.html", tmp_path)
    assert has_colour(rows, WORSE, bpp) and has_colour(rows, MEDIAN, bpp), "index: the regressed night and the trends are drawn"
    with Store(cfg.results_dir / "lab.sqlite", readonly=True) as s:  # the nightly's cell (the store holds other axes' too)
        [c] = [c for _, c in s.cells(result.run.summary.run_id) if (c.arch, c.variant) == ("arm64", "glibc-dynamic")]
    cell_page = site / "cells" / f"{trends.slug(c.arch, c.variant, c.buffer_size, c.axes)}.html"
    rows, bpp = _look(cell_page, tmp_path)
    assert has_colour(rows, MEDIAN, bpp) and has_colour(rows, RED, bpp), "cell page: the medians and the regression are drawn"
    assert overlapping_labels(cell_page, tmp_path) == []
    rows, bpp = _look(site / "regressions" / f"{result.run.summary.run_id}.html", tmp_path)
    assert has_colour(rows, WORSE, bpp), "regression page: the growth is drawn"
    assert overlapping_labels(site / "index.html", tmp_path) == []


def test_a_years_trend_marks_every_environment_change_without_overlapping_labels(tmp_path: Path) -> None:
    """The synthetic year (its environment moves: kernels, libc, QEMU, toolchain, lab) in the same browser."""
    db = tmp_path / "s.db"
    year(db, 120, stride=3, regress=(85, 88))
    with Store(db, readonly=True) as s:
        built = site_mod.build(s, tmp_path / "site", "nightly")
    assert built.problems == ()
    [page] = (tmp_path / "site" / "cells").glob("arm64-glibc-dynamic-*.html")
    assert page.read_text().count('<g class="marker">') == 6 * 8  # kernel x3 (one with lab 0.2.0), libc, QEMU, toolchain; 8 charts
    rows, bpp = _look(page, tmp_path)
    assert has_colour(rows, MARKER, bpp) and has_colour(rows, RED, bpp) and has_colour(rows, MEDIAN, bpp)
    assert overlapping_labels(page, tmp_path) == []
