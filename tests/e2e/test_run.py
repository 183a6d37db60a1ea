"""lab run for real: the whole matrix into the store, reports that equal the store, a broken variant, Ctrl-C, a browser."""

from __future__ import annotations

import csv
import html.parser
import io
import json
import os
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from lab import arches, cli, config
from lab.payloads.build import Payload, PayloadStore
from lab.results.store import Store
from tests.e2e.browser import colours, dom, screenshot
from tests.e2e.conftest import qemu_processes, start_lab

LAB = [sys.executable, "-m", "lab"]
REPEAT = 3
REPO = Path(__file__).resolve().parents[2]


def lab(cli_config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, "--config", str(cli_config), *argv], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def full_run(cli_config: Path, images: object) -> dict[str, object]:
    proc = lab(cli_config, "run", "--arch", "all", "--repeat", str(REPEAT), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary: dict[str, object] = json.loads(proc.stdout)
    return summary


def store_medians(db: Path, run_id: str) -> dict[str, float]:
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT arch, variant, buffer_size, delta_minflt FROM samples JOIN cells ON cells.id = samples.cell_id WHERE run_id = ? AND stage = 'entry'",
        (run_id,),
    ).fetchall()
    by: dict[str, list[int]] = {}
    for arch, variant, size, value in rows:
        by.setdefault(f"{arch}/{variant}/{size}", []).append(value)
    return {k: statistics.median(v) for k, v in by.items()}


class Cells(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("data-cell"):
            self.cells[str(a["data-cell"])] = a.get("data-entry")


def test_run_fills_the_store_with_12_cells_times_repeats(full_run: dict[str, object], cfg: config.Config) -> None:
    assert full_run["status"] == "complete" and full_run["cells"] == 12 and full_run["errors"] == 0
    with Store(Path(str(full_run["store"]))) as s:
        run = s.run(str(full_run["run_id"]))
        cells = s.cells(run.id)
        assert len(cells) == 12 and run.status == "complete" and run.repeat == REPEAT
        for cell_id, cell in cells:
            samples = s.samples(cell_id)
            assert sorted({x.repeat for x in samples}) == list(range(REPEAT))
            assert len(samples) == REPEAT * 7
            page = arches.get(cell.arch).flavours[0].bytes  # the default kernel flavour's (lab.arches)
            assert cell.accel in ("kvm", "tcg") and cell.page_size == page and cell.thp == "never"
            assert cell.kernel_release.startswith("6.") and cell.qemu_version.startswith("QEMU emulator")
    run_dir = Path(str(full_run["run_dir"]))
    raw = sorted((run_dir / "raw").rglob("*.json"))
    assert len(raw) == 12 * REPEAT
    assert (run_dir / "reproduce.sh").read_text().count("--repeat 3") == 1
    assert {p.name for p in (run_dir / "manifests").iterdir()} == {"x86_64.json", "arm64.json", "riscv64.json"}


def test_every_cell_is_one_libc_the_guests_own(full_run: dict[str, object]) -> None:
    """Issue 11 acceptance: libc_version_build == libc_version_run == the image manifest's libc package, in every cell."""
    from lab.measure.libc import image_versions

    run_dir = Path(str(full_run["run_dir"]))
    with Store(Path(str(full_run["store"])), readonly=True) as s:
        cells = [c for _, c in s.cells(str(full_run["run_id"]))]
    assert len(cells) == 12
    for c in cells:
        shipped = image_versions(json.loads((run_dir / "manifests" / f"{c.arch}.json").read_text()))[c.libc]
        assert (c.libc_version_build, c.libc_version_run) == (shipped, shipped), c


def test_reports_equal_the_store(full_run: dict[str, object], cli_config: Path) -> None:
    run_dir = Path(str(full_run["run_dir"]))
    medians = store_medians(Path(str(full_run["store"])), str(full_run["run_id"]))
    assert len(medians) == 12
    parser = Cells()
    parser.feed((run_dir / "report.html").read_text())
    assert {k: float(v or "nan") for k, v in parser.cells.items()} == medians
    md = (run_dir / "report.md").read_text()
    assert "| x86_64 |" in md and "| arm64 |" in md and "| riscv64 |" in md
    data = json.loads(lab(cli_config, "report", str(full_run["run_id"]), "--format", "json").stdout)
    got = {f"{c['cell']['arch']}/{c['cell']['variant']}/{c['cell']['buffer_size']}": c["minor"]["entry"]["median"] for c in data["cells"]}
    assert got == medians
    exported = list(csv.DictReader(io.StringIO(lab(cli_config, "export", str(full_run["run_id"]), "--format", "csv").stdout)))
    assert len(exported) == 12 * REPEAT * 7
    listing = lab(cli_config, "runs", "list").stdout
    assert str(full_run["run_id"]) in listing and "complete" in listing


def test_report_renders_in_a_real_browser(full_run: dict[str, object], tmp_path: Path) -> None:
    page = Path(str(full_run["run_dir"])) / "report.html"
    width, height, rows = screenshot(page, tmp_path / "report.png")
    assert (width, height) == (1200, 1600)
    assert len(colours(rows[::8], len(rows[0]) // width, step=8)) > 20, "the page rendered (nearly) blank"
    parser = Cells()
    parser.feed(dom(page, tmp_path))
    assert len(parser.cells) == 12 and all(v is not None for v in parser.cells.values())


def test_a_broken_variant_fails_alone(
    cli_config: Path, cfg: config.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: object
) -> None:
    real_ensure = PayloadStore.ensure
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "fault-probe").write_text("#!/bin/sh\necho 'this is not JSON'\n")
    (garbage / "fault-probe").chmod(0o755)

    def ensure(self: PayloadStore, arch: object, v: object) -> Payload:
        p = real_ensure(self, arch, v)  # type: ignore[arg-type]
        if p.arch.name == "arm64" and p.variant.name == "musl-dynamic":
            return replace(p, dir=garbage)
        return p

    monkeypatch.setattr(PayloadStore, "ensure", ensure)
    code = cli.main(["--config", str(cli_config), "-q", "run", "--arch", "arm64,riscv64", "--repeat", "2"])
    assert code == 1
    with Store(cfg.results_dir / "lab.sqlite") as s:
        run = s.run()
        assert run.status == "failed"
        assert len(s.cells(run.id)) == 7
        [err] = s.errors(run.id)
        assert (err.arch, err.variant, err.stage) == ("arm64", "musl-dynamic", "parse")
        assert "this is not JSON" in err.evidence


def test_ctrl_c_mid_run_leaves_no_qemu_and_an_incomplete_run(cli_config: Path, cfg: config.Config, images: object) -> None:
    proc = start_lab(cli_config, "run", "--arch", "all", "--repeat", "200", until="running 2/200")
    live = [pid for pid, _ in qemu_processes(cfg.cache_dir)]
    assert live, "no guest was running when the run was interrupted"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert not [pid for pid, _ in qemu_processes(cfg.cache_dir) if pid in live]
    with Store(cfg.results_dir / "lab.sqlite") as s:
        run = s.run()
        assert run.status == "incomplete" and run.argv.endswith("--repeat 200")
        assert yaml.safe_load((Path(run.run_dir) / "lab.yaml").read_text()) is not None


def test_reproduce_sh_reruns_the_same_cells_from_anywhere(cfg: config.Config, tmp_path: Path) -> None:
    """Regression (issue 10.3): reproduce.sh called a bare `lab`, dropped --accel and resolved paths against the run directory."""
    home = tmp_path / "home"
    home.mkdir()
    raw = yaml.safe_load((REPO / "lab.yaml").read_text())
    raw["recipe"] = os.path.relpath(REPO / "images" / "tiny.yaml", home)  # relative, as in the checked-in lab.yaml
    raw["paths"] = {"cache": str(cfg.cache_dir), "results": "results"}
    conf = home / "lab.yaml"
    conf.write_text(yaml.safe_dump(raw))
    first = lab(conf, "run", "--arch", "x86_64", "--variant", "musl-static,glibc-static", "--repeat", "1", "--accel", "tcg", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    old = json.loads(first.stdout)
    run_dir = Path(old["run_dir"])
    script = (run_dir / "reproduce.sh").read_text()
    assert f"exec {sys.executable} -m lab --config {run_dir / 'lab.yaml'} run " in script and "--accel tcg" in script
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([str(run_dir / "reproduce.sh"), "--json"], cwd=elsewhere, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    new = json.loads(proc.stdout)
    assert new["run_id"] != old["run_id"] and Path(new["run_dir"]).parent == run_dir.parent
    assert not (run_dir / "results").exists() and list(elsewhere.iterdir()) == []
    with Store(home / "results" / "lab.sqlite", readonly=True) as s:
        identity = [(c.arch, c.variant, c.buffer_size, c.libc, c.linkage, c.accel, c.payload_digest) for _, c in s.cells(old["run_id"])]
        assert identity and identity == [
            (c.arch, c.variant, c.buffer_size, c.libc, c.linkage, c.accel, c.payload_digest) for _, c in s.cells(new["run_id"])
        ]


def test_the_live_display_owns_the_terminal(cli_config: Path, tmp_path: Path) -> None:
    """Regression (issue 10.18): in tmux a 3-arch run left stale status lines ("booting 0.0s", "done" twice) as log lines
    interleaved with the redraw. One owner of the terminal: exactly one final status line per arch."""
    session = f"lab-e2e-{os.getpid()}"
    done = tmp_path / "done"
    command = shlex.join([*LAB, "--config", str(cli_config), "run", "--arch", "all", "--variant", "musl-static", "--repeat", "1"])
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", f"{command}; echo $? > {done}; sleep 600"], check=True
    )
    try:
        deadline = time.monotonic() + 600
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert done.exists() and done.read_text().strip() == "0"
        screen = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session, "-S", "-200"], capture_output=True, text=True, check=True
        ).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    status = [line.split() for line in screen.splitlines() if line.split()[:1] in (["x86_64"], ["arm64"], ["riscv64"])]
    assert [s[0] for s in status] == ["x86_64", "arm64", "riscv64"], screen
    assert all(s[1] == "done" for s in status), screen
    assert not any(line.startswith("lab: x86_64:") for line in screen.splitlines()), screen  # no plain progress lines on a terminal
    assert "run " in screen and ": complete, 3 cell(s)" in screen
