"""All 12 probe variants in real guests of all three arches, asserting on the numbers they report."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lab import arches, config
from lab.guests.boot import boot
from lab.guests.images import Image
from lab.measure import engine as measure
from lab.payloads.build import Payload, PayloadStore
from lab.payloads.probe import ProbeResult
from lab.payloads.probe import parse as parse_probe
from lab.payloads.variants import VARIANTS
from tests.e2e.conftest import CORE, runner

SIZE = 1 << 20
ARCH_NAMES = [a.name for a in CORE]  # the other rows: tests/e2e/test_arches.py
HEAVY_LAUNCHER = 'sh -c \'x=$(seq 1 3000); exec "$0" "$@"\''  # a shell that faults a lot before exec


@dataclass
class ArchRuns:
    guest_page_size: int
    runs: dict[str, list[ProbeResult]]  # variant -> results in run order
    direct: dict[str, ProbeResult]  # musl-static via plain exec, per mode
    heavy: dict[str, ProbeResult]  # musl-static via a fault-heavy shell, per mode


_cache: dict[str, ArchRuns] = {}


@pytest.fixture(scope="session")
def payloads(cfg: config.Config) -> dict[str, list[Payload]]:
    store = PayloadStore(cfg)
    return {a.name: [store.ensure(a, v) for v in VARIANTS] for a in CORE}


@pytest.fixture
def arch_runs(request: pytest.FixtureRequest, cfg: config.Config, images: dict[str, Image], payloads: dict[str, list[Payload]]) -> ArchRuns:
    name = request.param
    if name not in _cache:
        with boot(cfg, images[name]) as b:
            g = b.guest
            page = int(g.run("awk '/KernelPageSize/ {print $2 * 1024; exit}' /proc/self/smaps").stdout)
            remotes = measure.install(g, payloads[name], runner(cfg, name))
            cells = measure.measure(g, remotes, (SIZE,), repeat=2, per_run_seconds=int(cfg.timeouts.scaled("command")))
            assert all(c.failure is None for c in cells.values()), {k: c.failure for k, c in cells.items()}
            by_variant = {name: c.results for (name, _, _), c in cells.items()}
            direct, heavy = {}, {}
            for mode, reexec in (("reexec", True), ("no-reexec", False)):
                cmd = measure.probe_command(remotes["musl-static"], SIZE, file=None, reexec=reexec)
                direct[mode] = parse_probe(g.run(cmd).stdout)
                heavy[mode] = parse_probe(g.run(f"{HEAVY_LAUNCHER} {cmd}").stdout)
        _cache[name] = ArchRuns(page, by_variant, direct, heavy)
    return _cache[name]


pytestmark = pytest.mark.parametrize("arch_runs", ARCH_NAMES, indirect=True)


def test_every_variant_reports_itself_truthfully(arch_runs: ArchRuns, request: pytest.FixtureRequest) -> None:
    arch = arches.get(request.node.callspec.params["arch_runs"])
    assert set(arch_runs.runs) == {v.name for v in VARIANTS}
    for v in VARIANTS:
        for r in arch_runs.runs[v.name]:
            f = r.facts
            assert (f.arch, f.libc, f.linkage, f.variant) == (arch.uname, v.libc, v.linkage, v.name)
            assert f.page_size == arch_runs.guest_page_size
            assert r.reexec is True and f.pie is False and f.buffer_size == SIZE
            assert (f.interpreter is None) == (v.linkage == "static")
            assert "[never]" in f.thp


def test_first_touch_faults_every_page_and_second_touch_none(arch_runs: ArchRuns) -> None:
    for variant, results in arch_runs.runs.items():
        for r in results:
            pages = SIZE // r.facts.page_size
            touch1 = r.stage("touch1").delta_minflt
            assert abs(touch1 - pages) <= pages * 0.01, f"{variant}: touch1 {touch1}, expected {pages} ±1%"
            assert r.stage("touch2").delta_minflt <= 1, variant
            assert r.stage("touch1").delta_majflt == 0


def test_static_musl_starts_cheaper_than_dynamic_glibc(arch_runs: ArchRuns) -> None:
    musl = max(r.stage("entry").minflt for r in arch_runs.runs["musl-static"])
    glibc = min(r.stage("entry").minflt for r in arch_runs.runs["glibc-dynamic"])
    assert 0 < musl < glibc


def test_random_file_reads_are_major_faults(arch_runs: ArchRuns) -> None:
    for variant, results in arch_runs.runs.items():
        for r in results:
            assert r.file is not None and r.file.pages == 16 * 2**20 // r.facts.page_size
            assert r.file.resident_before == 0, f"{variant}: the test file was not evicted"
            majors = r.stage("file_read").delta_majflt
            assert majors >= 0.9 * r.file.pages, f"{variant}: {majors} major faults for {r.file.pages} pages"


def test_repeated_runs_agree_on_entry(arch_runs: ArchRuns) -> None:
    for variant, results in arch_runs.runs.items():
        entries = [r.stage("entry").minflt for r in results]
        assert max(entries) - min(entries) <= 3, f"{variant}: entry counts {entries}"


def test_reexec_makes_entry_independent_of_the_launcher(arch_runs: ArchRuns) -> None:
    direct, heavy = arch_runs.direct, arch_runs.heavy
    assert abs(direct["reexec"].stage("entry").minflt - heavy["reexec"].stage("entry").minflt) <= 3
    # Without re-exec the launcher's pre-exec faults leak into the count.
    assert heavy["no-reexec"].stage("entry").minflt > direct["no-reexec"].stage("entry").minflt + 10
    assert heavy["no-reexec"].reexec is False
