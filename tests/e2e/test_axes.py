"""Issue 11 on real guests: suites as an axis (each cell one libc, libc versions side by side, one kernel) and knobs."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lab import arches, axes, config
from lab.measure.libc import image_versions
from lab.results.store import Store
from lab.text import parse_size
from tests.e2e.conftest import CORE

LAB = [sys.executable, "-m", "lab"]


def lab(cli_config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, "--config", str(cli_config), *argv], capture_output=True, text=True, timeout=1200)


def medians(store: Path, run_id: str) -> dict[tuple[str, str, str], dict[str, tuple[float, float]]]:
    """(arch, variant, axes) -> stage -> (median minor, median major)."""
    out: dict[tuple[str, str, str], dict[str, tuple[float, float]]] = {}
    with Store(store, readonly=True) as s:
        for cell, stages in s.measured(run_id):
            out[(cell.arch, cell.variant, axes.shown(cell.axes))] = {
                k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in stages.items()
            }
    return out


@pytest.fixture(scope="module")
def suites_run(cli_config: Path, images: object) -> tuple[dict[str, object], str]:
    proc = lab(cli_config, "run", "--arch", "all", "--variant", "glibc-dynamic,musl-static", "--repeat", "2",
               "--axis", "suite=bookworm,trixie,forky", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def test_every_suite_cell_is_one_libc_and_the_kernel_is_held(suites_run: tuple[dict[str, object], str]) -> None:
    summary, stderr = suites_run
    assert "Debian bookworm does not ship riscv64: its cells are skipped" in stderr
    assert summary["status"] == "complete" and summary["cells"] == 2 * (3 + 3 + 2)
    run_dir = Path(str(summary["run_dir"]))
    with Store(Path(str(summary["store"])), readonly=True) as s:
        cells = [c for _, c in s.cells(str(summary["run_id"]))]
    kernels: dict[str, set[str]] = {}
    glibc: dict[str, str] = {}
    for c in cells:
        suite = axes.shown(c.axes).removeprefix("suite=") or "trixie"
        shipped = image_versions(json.loads((run_dir / "manifests" / f"{c.arch}-{suite}.json").read_text()))[c.libc]
        assert (c.libc_version_build, c.libc_version_run) == (shipped, shipped), c
        kernels.setdefault(c.arch, set()).add(c.kernel_release)
        if c.libc == "glibc":
            glibc[suite] = c.libc_version_build
    assert all(len(k) == 1 for k in kernels.values()), kernels  # a difference between suites is a userland difference
    assert [tuple(map(int, glibc[s].split("."))) for s in ("bookworm", "trixie", "forky")] == sorted(
        tuple(map(int, v.split("."))) for v in glibc.values()
    ) and len(set(glibc.values())) == 3


def test_the_report_lines_up_libc_versions_and_baselines_key_by_suite(cli_config: Path, suites_run: tuple[dict[str, object], str]) -> None:
    summary, _ = suites_run
    md = (Path(str(summary["run_dir"])) / "report.md").read_text()
    assert "## libc versions" in md and "→" in md
    run_id = str(summary["run_id"])
    proc = lab(cli_config, "compare", run_id, run_id, "--format", "json")
    assert proc.returncode == 0, proc.stdout[-2000:]
    cells = {f["cell"] for f in json.loads(proc.stdout)["findings"]}
    assert len(cells) == 16 and any(c.endswith("/suite=forky") for c in cells) and any("/" not in c.split("/", 3)[-1] for c in cells)


def test_thp_and_page_cache_axes_move_the_numbers_they_should(cli_config: Path, images: object) -> None:
    proc = lab(cli_config, "run", "--arch", "all", "--variant", "glibc-static", "--size", "8M", "--repeat", "1",
               "--axis", "thp=never,always", "--axis", "cache=cold,warm", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    m = medians(Path(summary["store"]), summary["run_id"])
    assert len(m) == 3 * 4
    for arch in (a.name for a in CORE):
        page = arches.get(arch).flavours[0].bytes  # the default kernel flavour's page size (lab.arches)
        pages, file_pages = (8 << 20) // page, parse_size(config.load(cli_config).run.file_bytes) // page
        never, always = m[(arch, "glibc-static", "")], m[(arch, "glibc-static", "thp=always")]
        assert abs(never["touch1"][0] - pages) <= pages * 0.01, (arch, never["touch1"])
        assert always["touch1"][0] < pages / 2, (arch, always["touch1"])  # huge pages: far fewer faults
        cold, warm = m[(arch, "glibc-static", "")], m[(arch, "glibc-static", "cache=warm")]
        assert cold["file_read"][1] >= 0.9 * file_pages and warm["file_read"][1] <= 2, (arch, cold["file_read"], warm["file_read"])


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        ("suite=sid", "axis suite: 'sid' is not valid (values: bookworm, trixie, forky)"),
        ("thp=sometimes", "axis thp: 'sometimes' is not valid (values: never, madvise, always)"),
        ("colour=red", "unknown axis 'colour'"),
        ("thp", "--axis 'thp' is not valid"),
    ],
)
def test_bad_axes_are_usage_errors(cli_config: Path, axis: str, message: str) -> None:
    proc = lab(cli_config, "run", "--axis", axis)
    assert proc.returncode == 3 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
