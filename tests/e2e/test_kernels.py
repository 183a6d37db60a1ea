"""The kernel and page-size axes and a user's own kernel, for real (issue 22): other suites' kernels under the
recipe's userland on every arch, arm64's 16 KiB kernel, and a kernel file with modules unpacked from a Debian .deb by
hand; every number asserted from the tables (pages = size // the cell's page size)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from lab import arches, axes, config
from lab.files import sha256_file
from lab.guests.images import ImageStore
from lab.guests.recipes import load_recipe
from lab.results.store import Cell, Sample, Store
from lab.text import parse_size
from tests.e2e.conftest import CORE
from tests.e2e.test_cli import lab

KERNELS = ("bookworm", "forky")  # besides the recipe's (trixie): the oldest and the newest kernel Debian has here
SIZE = 1 << 20


def _median(samples: list[Sample], stage: str, counter: str) -> float:
    values = sorted(getattr(s, f"delta_{counter}") for s in samples if s.stage == stage)
    return float(values[len(values) // 2])


def _run(cli_config: Path, results: Path, *argv: str) -> tuple[dict[str, object], str, list[tuple[Cell, list[Sample]]]]:
    done = lab(cli_config, "--results", str(results), "run", *argv, "--json", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    with Store(results / "lab.sqlite", readonly=True) as s:
        cells = [(c, s.samples(i)) for i, c in s.cells(str(summary["run_id"]))]
    return summary, done.stderr, cells


def _pages_hold(cell: Cell, samples: list[Sample], file_bytes: int) -> None:
    """touch1 is one fault per page of the buffer (±1: the allocator's header page), a cold random file_read one
    major fault per page of the file, at the cell's own page size."""
    pages = SIZE // cell.page_size
    assert abs(_median(samples, "touch1", "minflt") - pages) <= 1, (cell.arch, cell.variant, cell.axes)
    assert _median(samples, "file_read", "majflt") == file_bytes // cell.page_size == cell.file_pages, (cell.arch, cell.axes)


def test_other_suites_kernels_boot_under_the_recipe_s_userland_on_every_arch(cli_config: Path, tmp_path: Path) -> None:
    cfg = config.load(cli_config)
    recipe = load_recipe(cfg.recipe)
    summary, stderr, cells = _run(cli_config, tmp_path / "r", "--arch", "all", "--axis", f"kernel={','.join(KERNELS)}",
                                  "--repeat", "3")  # fmt: skip
    for a in CORE:
        for k in KERNELS:
            if k not in a.suites:
                assert f"Debian {k} has no {a.name} kernel: its cells are skipped" in stderr
    want = {(a.name, k) for a in CORE for k in KERNELS if k in a.suites}
    got = {(c.arch, axes.values(c.axes)["kernel"]) for c, _ in cells}
    assert got == want and summary["errors"] == 0 and len(cells) == len(want) * 4
    store = ImageStore(cfg)
    file_bytes = parse_size(cfg.run.file_bytes)
    for c, samples in cells:
        named = axes.values(c.axes)
        assert named["suite"] == recipe.suite  # the userland held: the libc is the recipe suite's in every cell
        image = store.ensure(replace(store.spec(arches.get(c.arch)), kernel=named["kernel"]))
        assert c.kernel_release == image.kernel_release and c.kernel_source.startswith(f"{named['kernel']} linux-image-")
        assert c.libc_version_build == c.libc_version_run
        _pages_hold(c, samples, file_bytes)
    md = (Path(str(summary["run_dir"])) / "report.md").read_text()
    assert "## Kernels" in md and "→" in md


def test_arm64_16k_pages_scale_the_counts_and_fault_around(cli_config: Path, tmp_path: Path) -> None:
    cfg = config.load(cli_config)
    arm = arches.get("arm64")
    sizes = {f.pagesize: f.bytes for f in arm.flavours}
    assert "16k" in sizes
    _, _, cells = _run(cli_config, tmp_path / "r", "--arch", "arm64", "--axis", "pagesize=4k,16k", "--axis", "cache=cold,warm",
                       "--repeat", "3")  # fmt: skip
    file_bytes = parse_size(cfg.run.file_bytes)
    assert {c.page_size for c, _ in cells} == {sizes["4k"], sizes["16k"]}
    for c, samples in cells:
        named = axes.values(c.axes)
        assert c.page_size == sizes[named["pagesize"]]
        if named["cache"] == "cold":
            _pages_hold(c, samples, file_bytes)
        else:  # warm: fault-around maps 64 KiB of cached pages per read fault (16 pages at 4 KiB, 4 at 16 KiB)
            window = 65536 // c.page_size
            faults = _median(samples, "file_read", "minflt")
            assert file_bytes // c.page_size // window <= faults <= file_bytes // c.page_size // window + 1, (c.variant, named, faults)
            assert _median(samples, "file_read", "majflt") == 0


def test_arm64_16k_entry_faults_are_explained_and_add_up(cli_config: Path) -> None:
    done = lab(cli_config, "explain", "--arch", "arm64", "--axis", "pagesize=16k", "--variant", "glibc-dynamic,musl-static",
               timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # exit 0: every check of both cells holds
    checks = [line.split()[:3] for line in done.stdout.splitlines() if line.startswith("  ") and line.split()[:1] in (["ok"], ["FAIL"])]
    assert checks.count(["ok", "adds", "up:"]) == 2 and not [c for c in checks if c[0] != "ok"], checks
    page = arches.get("arm64").flavour("16k").bytes  # type: ignore[union-attr]
    assert f"buffer spans {SIZE // page + 1} pages" in done.stdout  # touch1 in the buffer, counted in 16 KiB pages


@pytest.fixture(scope="module")
def own_kernel(cfg: config.Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """forky's x86_64 kernel and modules unpacked from its .debs by hand (dpkg-deb -x): a stand-in for a user's build."""
    store = ImageStore(cfg)
    apt = store.apt_for("forky")
    x86 = arches.get("x86_64")
    with store.apt_lock():
        apt.update(cfg.apt.refresh_hours)
        meta = apt.resolve([f"linux-image-{x86.flavours[0].kernel}"], x86.debian)[0]
        image = apt.resolve([next(d.split()[0] for d in meta.depends.split(",") if d.strip().startswith("linux-image-"))], x86.debian)[0]
        parts = [p.split()[0] for p in image.depends.split(",") if p.strip().startswith(("linux-binary-", "linux-modules-"))]
        packages = apt.resolve(parts, x86.debian)
    debs = apt.download(packages, cfg.cache_dir / "debs")
    root = tmp_path_factory.mktemp("own-kernel")
    for deb in debs.values():
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    [kernel] = list(root.glob("usr/lib/modules/*/vmlinuz"))
    return kernel, root


def test_a_kernel_file_boots_measures_and_records_its_digest(cli_config: Path, own_kernel: tuple[Path, Path], tmp_path: Path) -> None:
    kernel, modules = own_kernel
    cfg = config.load(cli_config)
    _, _, cells = _run(cli_config, tmp_path / "r", "--arch", "x86_64", "--kernel", str(kernel), "--modules", str(modules),
                       "--repeat", "3")  # fmt: skip
    digest = sha256_file(kernel)
    assert len(cells) == 4
    for c, samples in cells:
        assert c.kernel_source == f"file sha256:{digest}" and axes.values(c.axes)["kernel"] == f"{axes.KERNEL_FILE}{digest[:12]}"
        assert c.kernel_release == kernel.parent.name
        _pages_hold(c, samples, parse_size(cfg.run.file_bytes))


def test_a_wrong_kernel_file_is_refused_before_anything_boots(cli_config: Path, own_kernel: tuple[Path, Path], tmp_path: Path) -> None:
    kernel, modules = own_kernel
    few = tmp_path / "few"
    shutil.copytree(modules, few, symlinks=True)
    for ko in few.rglob("virtio_blk.ko*"):
        ko.unlink()
    results = tmp_path / "r"
    for argv, message in (
        (["--arch", "arm64", "--kernel", str(kernel), "--modules", str(modules)], "a kernel for x86_64, not arm64"),
        (["--arch", "x86_64", "--kernel", str(kernel), "--modules", str(few)], "no virtio_blk (neither a module nor built in)"),
        (["--arch", "x86_64", "--kernel", str(modules / "usr/lib/modules"), "--modules", str(modules)], "cannot read it"),
    ):
        done = lab(cli_config, "--results", str(results), "run", *argv)
        assert done.returncode == 3 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (results / "lab.sqlite").exists() or not json.loads(
        lab(cli_config, "--results", str(results), "runs", "list", "--json").stdout
    )
