"""Lab's own QEMU (issue 20): the counts do not depend on the emulator, riscv64 restores under a QEMU with the timer
fix, the entry is content-addressed and healed, and bad qemu settings are one-line errors that store nothing."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from lab import arches, axes, config
from lab.errors import ImageError
from lab.guests import emulator, qemu_store
from lab.guests.images import Image
from lab.payloads.probe import SCHEMA_VERSION
from lab.results.store import Sample, Store
from tests.e2e.conftest import CORE, boot
from tests.e2e.test_cli import lab
from tests.faults.test_faults import write_config

EXACT_BUT_ENTRY = ("overhead", "malloc", "touch1", "touch2", "file_map", "file_read")


def test_every_count_is_the_same_under_the_hosts_qemu_and_labs(cli_config: Path, tmp_path: Path) -> None:
    """The e2e proof: every arch x variant, host QEMU vs lab's default one; entry within its run-to-run range,
    every other stage exact, and the pages of the touch stages computed from the cell's own sizes."""
    results = tmp_path / "results"
    done = lab(cli_config, "--results", str(results), "run", "--arch", "all", "--axis", "qemu=host,trixie-backports",
               "--repeat", "3", "--json", timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with Store(results / "lab.sqlite", readonly=True) as store:
        cells = {(c.arch, c.variant, axes.shown(c.axes)): (c, store.samples(i)) for i, c in store.cells(store.run(None).id)}
    mine = qemu_store.ensure(config.load(cli_config))
    assert len(cells) == 2 * len(CORE) * 4
    for (arch, variant, axes_), (cell, samples) in cells.items():
        a = arches.get(arch)
        if axes_ == "qemu=host":
            assert cell.qemu_origin == "host" and cell.qemu_version == emulator.version(emulator.HOST, a)
            continue
        assert axes_ == "" and cell.qemu_origin == mine.describe() and cell.qemu_version == emulator.version(mine, a)
        _, theirs = cells[(arch, variant, "qemu=host")]

        def by(rows: list[Sample], stage: str) -> list[tuple[int, int]]:
            return sorted((s.delta_minflt, s.delta_majflt) for s in rows if s.stage == stage)

        lo, hi = min(by(theirs, "entry")), max(by(theirs, "entry"))
        assert all(lo[0] <= m <= hi[0] and j == 0 for m, j in by(samples, "entry")), (arch, variant)
        for stage in EXACT_BUT_ENTRY:
            assert by(samples, stage) == by(theirs, stage), (arch, variant, stage)
        pages = cell.buffer_size // cell.page_size
        assert all(pages - 1 <= m <= pages + 1 for m, _ in by(samples, "touch1")), (arch, variant)
        assert cell.probe_schema == SCHEMA_VERSION
    compared = lab(cli_config, "--results", str(results), "compare", "--across", "qemu", "--format", "json")
    assert compared.returncode == 0, compared.stdout[-2000:]
    doc = json.loads(compared.stdout)
    assert doc["agree"] is True and len({(r["arch"], r["variant"]) for r in doc["rows"]}) == len(CORE) * 4
    report = next((results / "runs").iterdir()) / "report.md"
    assert report.read_text().count("| host | agree |") == len(CORE) * 4


def test_riscv64_restores_under_labs_qemu_and_its_timers_fire(cfg: config.Config, images: dict[str, Image]) -> None:
    """Regression (issue 20): riscv64 booted cold every time (QEMU 7.2 lost restored guests' timers). Lab's default
    QEMU (11.1, with the 10.2 timer-migration fix) restores it, and a restored guest's sleep returns."""
    image = images["riscv64"]
    assert emulator.snapshots_work(qemu_store.ensure(cfg), image.arch)
    with boot(cfg, image, "tcg"):
        pass  # a snapshot exists now
    for _ in range(3):
        with boot(cfg, image, "tcg") as b:
            assert b.info.boot == "restored" and b.info.qemu_origin.startswith("trixie-backports ")
            assert b.guest.run("sleep 0.3 && echo woke", timeout=15).stdout.strip() == "woke"


def test_an_edited_entry_is_rebuilt_and_a_qemu_without_the_machine_is_refused(cfg: config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    e = qemu_store.ensure(cfg)
    entry = qemu_store.entry_of(e)
    assert entry is not None and qemu_store._verify(entry) is None
    binary = Path(e.binary(arches.get("x86_64")))
    st = binary.stat()
    os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # an edit that kept the size
    assert qemu_store._verify(entry) == "usr/bin/qemu-system-x86_64 was changed (size or mtime)"
    monkeypatch.setattr(qemu_store, "_memo", {})
    healed = qemu_store.ensure(cfg)  # rebuilt from the pooled .debs
    assert healed == e and qemu_store._verify(entry) is None
    row = replace(arches.get("x86_64"), machine="no-such-machine")
    monkeypatch.setattr(qemu_store, "ARCHES", (row,))
    with pytest.raises(ImageError, match="qemu-system-x86_64 has no machine 'no-such-machine'"):
        qemu_store._prove(e)


def test_bad_qemu_settings_are_one_line_errors_that_store_nothing(cli_config: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    for changes, words in (
        ({"qemu__from": "trixie-backports", "qemu__version": "1:0.1+nope"}, "qemu.version: '1:0.1+nope' is not in trixie-backports"),
        ({"qemu__from": "sid"}, "qemu.from: 'sid' is not valid"),
    ):
        bad = write_config(cli_config, tmp_path / "bad.yaml", **changes)
        done = lab(bad, "--results", str(results), "run", "--arch", "x86_64", "--repeat", "1")
        assert done.returncode == 3, done.stderr
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("lab: error")]
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in done.stderr, done.stderr
        runs = results / "runs"
        assert not runs.exists() or not any(runs.iterdir())
        if (results / "lab.sqlite").exists():
            with Store(results / "lab.sqlite", readonly=True) as store:
                assert store.runs() == []
