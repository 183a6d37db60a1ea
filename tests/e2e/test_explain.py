"""lab explain for real: every fault of all 12 probe cells on 3 arches accounted for, checked against lab run's counts.

The truth checks of issue 12: the account adds up to rusage exactly, the
unsampled remainder (the kernel building the process) is small, never negative
and identical across repeats; touch1 lands in the buffer, file_read in the file;
the traced stage totals equal the counts lab run stores for the same cells (±1);
a program with a known number of .bss and .data pages shows exactly those.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lab import api, arches, config
from lab.explain import account, render
from lab.measure.plan import RunRequest
from lab.measure.tracing import build_tracer
from lab.payloads.build import PayloadStore, Program
from lab.payloads.variants import VARIANTS, variant
from lab.results.store import Store
from tests.e2e.conftest import CORE

REPO = Path(__file__).resolve().parents[2]
LAB = [sys.executable, "-m", "lab"]
CELLS = [f"{a.name}:{v.name}" for a in CORE for v in VARIANTS]
PROBE_CHECKS = {"adds up", "exec set-up bounded", "probe agrees", "untraced agrees", "touch1 in buffer", "file_read in file"}


@pytest.fixture(scope="module")
def explained(cfg: config.Config, images: object) -> dict[str, api.Explained]:
    out = api.explain(cfg, api.ExplainRequest(run=RunRequest(arch="all", repeat=3)))
    return {e.account.cell: e for e in out}


@pytest.fixture(scope="module")
def explained_run(cfg: config.Config, images: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[api.RunResult, config.Config]:
    """lab run --explain: the same cells counted into a store, each traced once more into the run directory."""
    out = tmp_path_factory.mktemp("explained-run")
    run_cfg = replace(cfg, results_dir=out, run=replace(cfg.run, store=out / "lab.sqlite"))
    result = api.run(run_cfg, RunRequest(arch="all", repeat=3, explain=True))
    assert result.summary.status == "complete"
    return result, run_cfg


def test_every_cell_on_every_arch_adds_up_and_agrees(explained: dict[str, api.Explained]) -> None:
    assert sorted(explained) == sorted(CELLS)
    for cell, e in explained.items():
        assert {c.name for c in e.checks} == PROBE_CHECKS, cell
        failed = [f"{c.name}: {c.detail}" for c in e.checks if not c.ok]
        assert not failed, f"{cell}: {failed}"
        acc = e.account
        assert len(acc.faults) + acc.unsampled + acc.pre_exec == acc.rusage_total
        assert 0 <= acc.unsampled <= 8, f"{cell}: {acc.unsampled} faults without a perf event"
        # the exec set-up is its own line of the first stage's table
        assert (account.EXEC_SETUP, "-", acc.unsampled, 0) in acc.rows("entry") or acc.unsampled == 0


def test_start_up_is_attributed_to_real_objects_sections_and_functions(explained: dict[str, api.Explained]) -> None:
    for a in CORE:
        dyn = explained[f"{a.name}:glibc-dynamic"].account
        objects = {o for o, _, _, _ in dyn.rows("entry")}
        assert {"exe", "ld.so", "libc.so", "[stack]"} <= objects, (a.name, objects)
        assert any(s == ".text" for o, s, _, _ in dyn.rows("entry") if o == "ld.so")
        # glibc's debug symbols name the loader's functions (libc6-dbg, matched by build ID)
        assert {o.label: o.symbols for o in dyn.objects}["ld.so"] == "debug file"
        assert any(f.startswith("_dl_") and f.endswith("@ld.so") for f, _ in dyn.functions("entry", top=50))
        assert any(note.startswith("LD_DEBUG=statistics") and "relocations" in note for note in dyn.notes)
        static = explained[f"{a.name}:musl-static"].account
        assert {o for o, _, _, _ in static.rows("entry")} <= {"exe", "[stack]", "[heap]", "[vdso]", "[vvar]", "[anon]", account.EXEC_SETUP}
        # the kernel faulting on the process's behalf is named as such (zeroing .bss's first page at exec)
        assert any(f.kernel and f.function.startswith("kernel:") for f in static.faults if f.stage == "entry")


def test_unsampled_remainder_is_identical_across_repeats(
    explained: dict[str, api.Explained], explained_run: tuple[api.RunResult, config.Config]
) -> None:
    again = {d["cell"]: render.from_dict(d)[0] for d in render.load_dir(explained_run[0].summary.run_dir)}
    assert sorted(again) == sorted(CELLS)
    for cell, acc in again.items():
        assert acc.unsampled == explained[cell].account.unsampled, cell
        assert acc.pre_exec == explained[cell].account.pre_exec, cell


def test_traced_stage_totals_equal_what_lab_run_stores_and_traces_stay_out_of_the_store(
    explained_run: tuple[api.RunResult, config.Config],
) -> None:
    result, run_cfg = explained_run
    traced = {d["cell"]: render.from_dict(d)[0] for d in render.load_dir(result.summary.run_dir)}
    with Store(run_cfg.run.store, readonly=True) as store:
        measured = list(store.measured(result.summary.run_id))
    assert len(measured) == 12
    for cell, stages in measured:
        totals = traced[f"{cell.arch}:{cell.variant}"].stage_totals()
        for stage, (minor, major) in stages.items():
            assert len(minor) == 3, "a traced run entered the samples"
            median = sorted(minor)[1]
            assert abs(totals[stage][0] - median) <= 1, (cell.arch, cell.variant, stage, totals[stage], minor)
            assert abs(totals[stage][1] - sorted(major)[1]) <= 1, (cell.arch, cell.variant, stage)
    html = (result.summary.run_dir / "report.html").read_text()
    assert "Where start-up faults come from (traced runs)" in html
    for a in CORE:
        assert f"{a.name}: musl vs glibc, dynamic ({a.name}:musl-dynamic minus {a.name}:glibc-dynamic, entry)" in html


def test_known_bss_and_data_pages_show_exactly_in_their_sections(cfg: config.Config, images: object, tmp_path: Path) -> None:
    store = PayloadStore(cfg, source_dir=REPO / "tests" / "payloads", program=Program("touch-sections", "touch_sections.c"), root=tmp_path)
    for a in CORE:
        prog = store.ensure(a, variant("glibc-static")).binary
        (acc,) = [e.account for e in api.explain(cfg, api.ExplainRequest(run=RunRequest(arch=a.name), put=prog))]
        mine = [(f.object, f.section) for f in acc.faults if f.function == "touch_pages@exe"]
        assert sorted(mine) == [("exe", ".bss")] * 5 + [("exe", ".data")] * 3, (a.name, mine)
        assert len(acc.faults) + acc.unsampled + acc.pre_exec == acc.rusage_total


def test_a_program_that_forks_has_its_childrens_faults_as_their_own_rows(cfg: config.Config, images: object, tmp_path: Path) -> None:
    """Regression (issue 19.5): a static program forking a child that touched 8 MiB showed `[exec set-up] 3093` and
    passed its check. The tracer follows children (and reaps orphans); each child is a row, exec set-up stays tiny."""
    store = PayloadStore(cfg, source_dir=REPO / "tests" / "payloads", program=Program("fork-touch", "fork_touch.c"), root=tmp_path)
    for a in CORE:
        prog = store.ensure(a, variant("glibc-static")).binary
        (e,) = api.explain(cfg, api.ExplainRequest(run=RunRequest(arch=a.name), put=prog))
        acc = e.account
        assert all(c.ok for c in e.checks), (a.name, e.checks)
        children = {sec: mi + ma for o, sec, mi, ma in acc.rows() if o == account.CHILDREN}
        assert len(children) == 3, (a.name, acc.rows())  # the waited child, the orphan, the one that execs busybox
        waited, orphan, _ = sorted(children.values(), reverse=True)
        assert acc.page_size, a.name  # pages = size // the guest's page size
        assert waited >= (8 << 20) // acc.page_size and orphan >= (1 << 20) // acc.page_size, (a.name, children)
        assert acc.unsampled <= (acc.exec_bound or 0), (a.name, acc.unsampled, acc.exec_bound)
        assert len(acc.faults) + acc.unsampled + acc.pre_exec == acc.rusage_total


def test_any_program_in_the_image(cfg: config.Config, images: object) -> None:
    out = api.explain(cfg, api.ExplainRequest(run=RunRequest(arch="all"), program=("/bin/busybox", "true")))
    assert [e.account.cell for e in out] == [f"{a.name}:busybox" for a in CORE]
    for e in out:
        acc = e.account
        assert acc.stages == (account.RUN_STAGE,)
        assert len(acc.faults) + acc.unsampled + acc.pre_exec == acc.rusage_total and acc.unsampled >= 0
        assert {"exe", "[stack]"} <= {o for o, _, _, _ in acc.rows()}


def test_diff_across_libcs_from_the_command_line(cli_config: Path) -> None:
    diff = ["--diff", "x86_64:glibc-dynamic", "x86_64:musl-dynamic", "--stage", "entry", "--repeat", "1", "--format", "json"]
    proc = subprocess.run([*LAB, "--config", str(cli_config), "-q", "explain", *diff], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    a, b = render.from_dict(data["a"])[0], render.from_dict(data["b"])[0]
    rows = data["diff"]
    assert sum(r["b"] - r["a"] for r in rows) == b.total("entry") - a.total("entry") < 0  # musl starts cheaper
    assert abs(rows[0]["b"] - rows[0]["a"]) == max(abs(r["b"] - r["a"]) for r in rows)  # worst first
    assert {r["object"] for r in rows if r["a"] and not r["b"]} >= {"libc.so"}  # musl's libc is its loader


def test_a_program_the_guest_does_not_have_is_a_usage_error(cli_config: Path) -> None:
    proc = subprocess.run([*LAB, "--config", str(cli_config), "-q", "explain", "--arch", "x86_64", "--", "no-such-program"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "lab: error: cannot run no-such-program in the guest: No such file or directory "
        "(name a program that exists in the image, or upload one with --put)"
    ]
    proc = subprocess.run([*LAB, "--config", str(cli_config), "-q", "explain", "--arch", "x86_64", "--", "/bin/nope"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 3 and "/bin/nope does not exist in the x86_64 image" in proc.stderr


def test_tracer_refused_by_the_kernel_says_why(cfg: config.Config) -> None:
    """The real refusal path: an unprivileged tracer on this host (perf_event_paranoid >= 2 forbids kernel samples)."""
    paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    if paranoid < 2:
        pytest.skip(f"kernel.perf_event_paranoid={paranoid} lets anyone trace: no refusal to provoke")
    tracer = build_tracer(cfg, arches.get("x86_64")).binary
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(tracer), "--", "/bin/true"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5 and proc.stdout == ""
    assert proc.stderr.startswith("fault-trace: perf_event_open refused: Permission denied (kernel.perf_event_paranoid=")
