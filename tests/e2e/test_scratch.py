"""The scratch file system on a RAM disk (issue 21): every count equals the virtio disk's, a snapshot holds the RAM
disk as the guest left it, and settings the scratch cannot serve are one-line errors that store nothing."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from lab import api, axes, config
from lab.guests.images import Image
from lab.guests.protocol import TEST_FILE_PATH, TEST_FILE_RECORD
from lab.guests.recipes import load_recipe
from lab.measure.plan import RunRequest
from lab.results.store import Sample, Store
from lab.text import parse_size
from tests.e2e.conftest import CORE, boot
from tests.e2e.test_cli import lab
from tests.faults.test_faults import write_config

STAGES = ("entry", "overhead", "malloc", "touch1", "touch2", "file_map", "file_read")


def test_every_count_is_the_same_on_the_ram_disk_and_the_virtio_disk(cli_config: Path, tmp_path: Path) -> None:
    """The e2e proof: every arch x variant x read order, RAM disk vs virtio disk, every stage's samples equal; the
    file stages' faults computed from the cell's own page size and file_bytes."""
    results = tmp_path / "results"
    done = lab(cli_config, "--results", str(results), "run", "--arch", "all", "--axis", "scratch=ram,disk",
               "--axis", "order=random,seq", "--repeat", "3", "--json", timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    file_bytes = parse_size(config.load(cli_config).run.file_bytes)
    with Store(results / "lab.sqlite", readonly=True) as store:
        cells = {(c.arch, c.variant, axes.shown(c.axes)): (c, store.samples(i)) for i, c in store.cells(store.run(None).id)}
    assert len(cells) == 2 * 2 * len(CORE) * 4

    def by(rows: list[Sample], stage: str) -> list[tuple[int, int]]:
        return sorted((s.delta_minflt, s.delta_majflt) for s in rows if s.stage == stage)

    for (arch, variant, axes_), (cell, samples) in cells.items():
        if "scratch=disk" in axes_:
            assert cell.scratch == "disk"
            continue
        assert cell.scratch == "ram"
        _, theirs = cells[(arch, variant, ",".join(x for x in ("scratch=disk", axes_) if x))]
        for stage in STAGES:
            assert by(samples, stage) == by(theirs, stage), (arch, variant, axes_, stage)
        pages = file_bytes // cell.page_size
        if "order=seq" not in axes_:  # cold and random: every page of the file is one major fault
            assert by(samples, "file_read") == [(0, pages)] * 3, (arch, variant)
    compared = lab(cli_config, "--results", str(results), "compare", "--across", "scratch", "--format", "json")
    assert compared.returncode == 0, compared.stdout[-2000:]
    assert json.loads(compared.stdout)["agree"] is True


@pytest.mark.parametrize("arch", [a.name for a in CORE])
def test_a_restored_guest_has_its_ram_disk_mounted_with_the_whole_test_file(
    cfg: config.Config, images: dict[str, Image], arch: str
) -> None:
    """The RAM disk is guest memory: the snapshot holds it (mounted by /init before the snapshot), byte for byte."""
    recipe = load_recipe(cfg.recipe)
    page = bytearray(b"\x5a" * TEST_FILE_RECORD)
    want = hashlib.md5()
    for i in range((recipe.test_file_mib << 20) // TEST_FILE_RECORD):
        page[:8] = i.to_bytes(8, "little")
        want.update(page)
    with boot(cfg, images[arch], "tcg"):
        pass  # a snapshot exists now
    with boot(cfg, images[arch], "tcg") as b:
        assert b.info.boot == "restored" and b.info.scratch == "ram"
        mounts = b.guest.run("grep ' /scratch ' /proc/mounts").stdout.split()
        assert mounts[:3] == ["/dev/ram0", "/scratch", "ext4"]
        assert b.guest.run(f"md5sum {TEST_FILE_PATH}").stdout.split()[0] == want.hexdigest()


def test_settings_the_scratch_cannot_serve_are_usage_errors(cli_config: Path, tmp_path: Path) -> None:
    recipe = load_recipe(config.load(cli_config).recipe)
    big = write_config(cli_config, tmp_path / "big.yaml", run__file_bytes=f"{recipe.test_file_mib * 2}M")
    done = lab(big, "run", "--arch", "x86_64")
    assert done.returncode == 3 and "run.file_bytes" in done.stderr and "Traceback" not in done.stderr, done.stderr
    roomy = tmp_path / "roomy.yaml"  # a recipe whose scratch image is 100 MiB: a RAM disk of 100 MiB in 128 MiB
    roomy.write_text(recipe.path.read_text().replace(f"size_mib: {recipe.scratch_size_mib}", "size_mib: 100"))
    (tmp_path / recipe.init.name).write_text(recipe.init.read_text())
    small = write_config(cli_config, tmp_path / "small.yaml", guest__memory_mib=128, recipe=str(roomy))
    done = lab(small, "run", "--arch", "x86_64")
    assert done.returncode == 3 and "guest.scratch: ram" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    on_disk = lab(small, "run", "--arch", "x86_64", "--axis", "scratch=disk", "--variant", "musl-static", "--repeat", "1")
    assert on_disk.returncode == 0, on_disk.stderr[-2000:]  # no RAM disk in this run: nothing to refuse


def test_a_kernel_without_a_ram_disk_fails_its_cells_at_the_image_stage(
    cfg: config.Config, images: dict[str, Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's kernel without brd: one line with the remedy, every cell failed with stage image, no sample."""
    monkeypatch.setattr(Image, "ram_disk", property(lambda self: False))
    out = tmp_path / "out"
    run_cfg = replace(cfg, results_dir=out, run=replace(cfg.run, store=out / "lab.sqlite"))
    result = api.run(run_cfg, RunRequest(arch="x86_64", variant="musl-static", repeat=1), reports=False)
    with Store(run_cfg.run.store, readonly=True) as store:
        errors, cells = store.errors(result.summary.run_id), store.cells(result.summary.run_id)
    assert result.summary.status == "failed" and cells == [] and len(errors) == 1
    assert errors[0].stage == "image" and "brd" in errors[0].message and "guest.scratch: disk" in errors[0].message
