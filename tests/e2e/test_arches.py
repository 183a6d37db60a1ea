"""Every row of the arch table beyond --arch all's, for real (issue 23): ppc64el (4 and 64 KiB pages), s390x (big
endian), armhf and i386 (32-bit userlands; i386's on the amd64 kernel) and loong64 (16 KiB pages, UEFI).

One `lab run` measures all four variants on each, at every page size its kernels have, and traces each cell once
(--explain): every count is asserted from the tables (pages = size // the cell's page size), every explain truth
check holds, and every cell's libc is the one it was built against. The heavy truth tests (suites, kernels, knobs,
QEMU builds, scratch devices, snapshots) stay on --arch all's rows (tests/e2e/conftest.py: CORE).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import arches, axes, config
from lab.explain import render
from lab.explain.account import Account
from lab.explain.checks import Check
from lab.guests.recipes import load_recipe
from lab.results.store import Cell, Sample, Store
from lab.text import parse_size
from tests.e2e.conftest import CORE
from tests.e2e.test_cli import lab

OTHERS = [a for a in arches.ARCHES if a not in CORE]
SIZE = 1 << 20
STAGES = ("entry", "malloc", "touch1", "touch2", "file_map", "file_read")


Everything = tuple[dict[str, object], str, list[tuple[Cell, list[Sample]]], dict[str, tuple[Account, list[Check]]]]


def _median(samples: list[Sample], stage: str, counter: str) -> int:
    values: list[int] = sorted(getattr(s, f"delta_{counter}") for s in samples if s.stage == stage)
    return values[len(values) // 2]


@pytest.fixture(scope="module")
def everything(cli_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Everything:
    results = tmp_path_factory.mktemp("arches")
    done = lab(cli_config, "--results", str(results), "run", "--arch", ",".join(a.name for a in OTHERS),
               "--axis", "pagesize=" + ",".join(axes.PAGESIZES), "--repeat", "3", "--explain", "--json", timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    with Store(results / "lab.sqlite", readonly=True) as s:
        cells = [(c, s.samples(i)) for i, c in s.cells(str(summary["run_id"]))]
    traced = {d["cell"]: render.from_dict(d) for d in render.load_dir(Path(str(summary["run_dir"])))}
    return summary, done.stderr, cells, traced


def test_every_row_measures_every_variant_at_every_page_size_its_kernels_have(cli_config: Path, everything: Everything) -> None:
    summary, stderr, cells, _ = everything
    recipe = load_recipe(config.load(cli_config).recipe)
    want = set()
    for a in OTHERS:
        suite = a.instead_of(recipe.suite)
        for pagesize in axes.PAGESIZES:
            if a.flavour(pagesize, suite) is None:
                assert f"{a.name} has no {pagesize} kernel" in stderr  # skipped with a warning, as suites are
            else:
                want |= {(a.name, pagesize, v) for v in ("glibc-dynamic", "glibc-static", "musl-dynamic", "musl-static")}
    got = {(c.arch, axes.values(c.axes)["pagesize"], c.variant) for c, _ in cells}
    assert got == want and summary["errors"] == 0, stderr[-2000:]
    assert {p for a, p, _ in got if a == "ppc64el"} == {"4k", "64k"} and {p for a, p, _ in got if a == "loong64"} == {"16k"}


def test_each_cell_is_its_rows_guest_and_its_own_libc(everything: Everything) -> None:
    _, _, cells, _ = everything
    for c, _ in cells:
        a, named = arches.get(c.arch), axes.values(c.axes)
        flavour = a.flavour(named["pagesize"], named["kernel"])
        assert flavour is not None and c.page_size == flavour.bytes, (c.arch, c.axes, c.page_size)
        assert c.word_bits == a.bits, (c.arch, c.word_bits)  # i386 and armhf: 32-bit probes; the rest 64-bit
        assert c.libc_version_build == c.libc_version_run, (c.arch, c.variant)
        assert named["suite"] in a.suites and c.kernel_source.startswith(f"{named['kernel']} linux-image-")
        assert c.thp in ("never", "none"), (c.arch, c.thp)  # none: s390x's kernel under TCG has no THP at all


def test_counts_follow_the_page_size_and_explain_adds_them_up(cli_config: Path, everything: Everything) -> None:
    _, _, cells, traced = everything
    file_bytes = parse_size(config.load(cli_config).run.file_bytes)
    assert len(traced) == len(cells)
    for c, samples in cells:
        a = arches.get(c.arch)
        pages = SIZE // c.page_size
        acc, checks = traced[f"{c.arch}:{c.variant}" + (f" {axes.shown(c.axes)}" if axes.shown(c.axes) else "")]
        failed = [f"{k.name}: {k.detail}" for k in checks if not k.ok]
        assert len(checks) >= 6 and not failed, (c.arch, c.variant, failed)
        assert len(acc.faults) + acc.unsampled + acc.pre_exec == acc.rusage_total, (c.arch, c.variant)
        # the first touch: every page of the buffer (±1: the allocator's header page), as often as the row says a
        # first memset faults a page under TCG (s390x: twice), plus the libc's memset code it faults in
        anon = sum(1 for f in acc.faults if f.stage == "touch1" and f.object in ("[anon]", "[heap]"))
        factor = a.tcg_touch_faults if c.accel == "tcg" else 1
        assert abs(anon - pages * factor) <= factor, (c.arch, c.variant, c.axes, anon, pages)
        regions = {f.region for f in acc.faults if f.stage == "touch1" and f.object in ("[anon]", "[heap]")}
        faulted = {f.page for f in acc.faults if f.stage in ("malloc", "touch1") and f.region in regions}
        assert len(faulted) in (pages, pages + 1), (c.arch, c.variant, len(faulted))  # the header page: malloc's
        touch1 = _median(samples, "touch1", "minflt")
        assert abs(touch1 - acc.stage_totals()["touch1"][0]) <= 1 and 0 <= touch1 - anon <= 3, (c.arch, c.variant, touch1, anon)
        assert _median(samples, "touch2", "minflt") <= 1
        # a cold random read: one major fault per page of the file, at the cell's page size
        assert _median(samples, "file_read", "majflt") == file_bytes // c.page_size == c.file_pages, (c.arch, c.axes)
        for stage in STAGES:  # the traced run counted what the untraced runs did (±1)
            assert abs(acc.stage_totals()[stage][0] - _median(samples, stage, "minflt")) <= 1, (c.arch, c.variant, stage)


def test_the_report_puts_page_sizes_side_by_side_and_per_page(everything: Everything) -> None:
    summary, _, cells, _ = everything
    md = (Path(str(summary["run_dir"])) / "report.md").read_text()
    start = md.split("## Start-up faults")[1].split("\n## ")[0]  # the arch comparison: a page column, 4 to 64 KiB
    for size in ("4K", "16K", "64K"):
        assert f" | {size} | " in start, size
    views = md.split("## Page sizes")[1].split("\n## ")[0]  # ppc64el's two flavours, nothing else changed
    assert "| ppc64el | glibc-dynamic |" in views and "4k: " in views and " · 64k: " in views
    # per page next to the raw counts: touch1 over the buffer's pages, file_read's majors over the file's
    for c, _ in cells:
        assert "/page)" in md and "## Faults per page" in md
        assert c.file_pages == parse_size(config.load(Path(str(summary["run_dir"])) / "lab.yaml").run.file_bytes) // c.page_size
