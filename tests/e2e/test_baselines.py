"""Baselines and verdicts on real guests: unchanged, a real start-up regression, an unbootable arch."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lab import api as lab_api
from lab import config
from lab.guests import boot as boot_mod
from lab.guests.images import Image
from lab.payloads.build import PayloadStore
from lab.results.junit import to_junit
from lab.results.store import Store

LAB = [sys.executable, "-m", "lab"]
NAME = "e2e-nightly"


def lab(cli_config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, "--config", str(cli_config), *argv], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def baseline_run(cli_config: Path, images: object) -> str:
    proc = lab(cli_config, "run", "--arch", "all", "--repeat", "3", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = json.loads(proc.stdout)["run_id"]
    saved = lab(cli_config, "baseline", "save", NAME, "--run", run_id)
    assert saved.returncode == 0 and "12 cell(s)" in saved.stdout, saved.stderr
    return str(run_id)


def junit_cases(path: Path) -> dict[str, ET.Element]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return {f"{c.get('classname')}:{c.get('name')}": c for c in suite.findall("testcase")}


def test_nightly_against_its_own_baseline_is_green(baseline_run: str, cli_config: Path, cfg: config.Config) -> None:
    proc = lab(cli_config, "-q", "nightly", "--baseline", NAME, "--arch", "all", "--repeat", "3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    [out_dir] = sorted((cfg.results_dir / "nightly").iterdir())[-1:]
    assert {p.name for p in out_dir.iterdir()} >= {"report.html", "report.md", "junit.xml", "compare.json", "run"}
    cases = junit_cases(out_dir / "junit.xml")
    assert len(cases) == 12 * 7 and not any(c.find("failure") is not None or c.find("error") is not None for c in cases.values())
    assert "Comparison: baseline e2e-nightly" in (out_dir / "report.html").read_text()
    export = lab(cli_config, "baseline", "export", NAME).stdout
    assert export.startswith("schema: lab.baseline\n") and f"source_run: {baseline_run}" in export


def test_a_heavier_startup_is_a_regression(
    baseline_run: str, cli_config: Path, cfg: config.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same cells (same toolchain, flags and environment), but the probe touches 16 more pages before main,
    # as a libc that got heavier at start-up would.
    monkeypatch.setattr(
        "lab.measure.runner.PayloadStore", lambda c, **kw: PayloadStore(c, extra_defines=("PROBE_TEST_EXTRA_PAGES=16",), **kw)
    )
    conf = config.load(cli_config)
    ran = lab_api.run(conf, lab_api.RunRequest(arch="all", repeat=3), reports=False)
    assert ran.summary.status == "complete"
    comparison = lab_api.compare(conf, lab_api.CompareRequest((ran.summary.run_id,), baseline=NAME))
    assert comparison.exit_code == 1
    junit = tmp_path / "junit.xml"
    junit.write_text(to_junit(comparison))
    cases = junit_cases(junit)
    failed = {k for k, c in cases.items() if c.find("failure") is not None}
    assert failed == {
        f"{arch}.{v}:entry[1M]"
        for arch in ("x86_64", "arm64", "riscv64")
        for v in ("glibc-dynamic", "glibc-static", "musl-dynamic", "musl-static")
    }
    failure = cases["arm64.musl-static:entry[1M]"].find("failure")
    assert failure is not None and "arm64/musl-static/1048576 entry regressed: minflt median" in (failure.get("message") or "")


def test_an_unbootable_arch_is_missing_not_passing(
    baseline_run: str, cli_config: Path, cfg: config.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "no-kernel"
    broken.mkdir()
    real_boot = boot_mod.boot

    def boot(c: config.Config, image: Image, *args: Any, **kw: Any) -> Any:
        if image.arch.name == "riscv64":
            for name in ("initrd.cpio", "scratch.ext4"):
                (broken / name).symlink_to(image.dir / name) if not (broken / name).exists() else None
            image = replace(image, dir=broken)  # no kernel file: QEMU exits at once
        return real_boot(c, image, *args, **kw)

    monkeypatch.setattr("lab.measure.runner.boot", boot)
    ran = lab_api.run(config.load(cli_config), lab_api.RunRequest(arch="all", repeat=3), reports=False)
    assert ran.summary.status == "failed"
    run_id = ran.summary.run_id
    with Store(cfg.results_dir / "lab.sqlite") as s:
        errors = s.errors(run_id)
    assert {(e.arch, e.stage, e.attempts) for e in errors} == {("riscv64", "boot", 2)} and len(errors) == 4
    proc = lab(cli_config, "compare", run_id, "--baseline", NAME)
    assert proc.returncode == 2, proc.stdout
    missing = [line for line in proc.stdout.splitlines() if line.startswith("MISSING")]
    assert len(missing) == 4 and all("riscv64/" in line and "errored in this run" in line for line in missing)
    assert "REGRESSED" not in proc.stdout


def test_nightly_out_prunes_its_own_runs_directory_only(baseline_run: str, cli_config: Path, cfg: config.Config, tmp_path: Path) -> None:
    """``lab nightly --out DIR`` keeps nightly.keep_runs run directories in DIR/runs; the default runs directory is not touched."""
    conf = config.load(cli_config)
    conf = replace(conf, nightly=replace(conf.nightly, keep_runs=1, dir=tmp_path / "nightly"))
    out = tmp_path / "out"
    old = out / "runs" / "00000000-000000-old"
    old.mkdir(parents=True)
    default_runs = sorted(p.name for p in (conf.results_dir / "runs").iterdir())
    req = lab_api.NightlyRequest(lab_api.RunRequest(arch="x86_64", variant="musl-static", repeat=1, out=out), baseline=NAME)
    result = lab_api.nightly(conf, req)
    assert result.pruned == (old,) and not old.exists()
    assert result.run.summary.run_dir.parent == out / "runs" and result.run.summary.run_dir.is_dir()
    assert sorted(p.name for p in (conf.results_dir / "runs").iterdir()) == default_runs
    assert (result.out_dir / "run").resolve() == result.run.summary.run_dir
    assert result.exit_code == 2  # the baseline's other 11 cells are missing from this one-cell run
