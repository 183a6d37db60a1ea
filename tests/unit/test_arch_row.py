"""An architecture is one row (issue 22): a row registered here, and nothing else, flows through QEMU's argv, the
recipe's kernel, the payload compilers, explain, the plan and the report; a user's kernel is checked against the
rows before anything is built."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab import arches, axes, config
from lab.arches import Flavour
from lab.errors import UserError
from lab.explain import trace
from lab.guests import kernel_file
from lab.guests.emulator import HOST
from lab.guests.qemu import VMSpec, kernel_cmdline, qemu_argv
from lab.guests.recipes import load_recipe
from lab.measure.plan import RunRequest, make_plan
from lab.payloads import toolchains
from lab.payloads.variants import variant
from lab.results import report
from lab.results.store import Cell, RunMeta, Sample, Store

REPO = Path(__file__).resolve().parents[2]

# A made-up big-endian-ish arch: every field differs from the three real rows' values, so a fact taken from
# anywhere but the row shows up as a wrong argument.
TOY = replace(
    arches.get("riscv64"),
    name="toy64",
    uname="toy64le",
    aliases=("toy",),
    debian="toyel",
    triplet="toy64le-linux-gnu",
    qemu_binary="qemu-system-toy64",
    machine="toyboard",
    cpu="toycpu",
    console="hvc0",
    virtio="ccw",
    disk="vdz",
    musl="toy64le-musl",
    flavours=(Flavour("64k", 65536, "toy64le-64k"), Flavour("4k", 4096, "toy64le", ("forky",))),
    suites=("trixie", "forky"),
    kernel_magic=(0x20, b"TOYKRNL!"),
    modules=("toy_iommu",),
)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[arches.Arch]:
    """TOY as the table's fourth row, in every loaded module that holds the table."""
    rows = (*arches.ARCHES, TOY)
    for module in [m for name, m in sys.modules.items() if name.startswith("lab") and m is not None]:
        if getattr(module, "ARCHES", None) is arches.ARCHES:
            monkeypatch.setattr(module, "ARCHES", rows)
    by_name = dict(arches._BY_NAME)
    for key in (TOY.name, TOY.uname, TOY.debian, *TOY.aliases):
        by_name[key] = TOY
    monkeypatch.setattr(arches, "_BY_NAME", by_name)
    yield TOY


def test_argv_and_kernel_command_line_come_from_the_row(toy: arches.Arch) -> None:
    spec = VMSpec(toy, Path("/k"), Path("/i"), kernel_cmdline(toy, "never", (), "disk"), 256, 1, "tcg", 2222, Path("/c"),
                  scratch=Path("/s"), emulator=HOST)  # fmt: skip
    argv = qemu_argv(spec)
    assert argv[0] == toy.qemu_binary and argv[argv.index("-machine") + 1] == toy.machine
    assert argv[argv.index("-cpu") + 1] == toy.cpu
    assert "virtio-net-ccw,netdev=net0" in argv and "virtio-blk-ccw,drive=scratch" in argv  # no option ROM off PCI
    assert spec.append.startswith("console=hvc0 ")
    assert axes.scratch_device("disk", toy.disk) == "/dev/vdz" and toy.boot_modules == ("virtio_ccw?", "toy_iommu")


def test_recipe_kernels_and_compilers_come_from_the_row(toy: arches.Arch) -> None:
    recipe = load_recipe(REPO / "images" / "tiny.yaml")
    assert [recipe.kernel_for(toy, f) for f in toy.flavours] == ["linux-image-toy64le-64k", "linux-image-toy64le"]
    dynamic = toolchains.compile_argv(toy, variant("musl-dynamic"), Path("/s/p.c"), Path("/s"), Path("/o"))
    assert "--target=toy64le-musl-linux-musl" in dynamic and "-Wl,-dynamic-linker,/lib/ld-musl-toy64le-musl.so.1" in dynamic
    assert "--target=toy64le-linux-gnu" in toolchains.compile_argv(toy, variant("glibc-static"), Path("/s/p.c"), Path("/s"), Path("/o"))


def test_explain_takes_in_kernel_from_the_record_not_from_an_address() -> None:
    """s390x's kernel has an address space of its own, and a 32-bit kernel's starts at 3 GiB: no arch row says where
    the kernel's addresses are; each sample's perf record says whether the kernel took it."""
    from tests.unit.test_explain import raw_trace

    samples = [[0, 50, 0x1000, 0x7FFF0008, 7, 7, 1], [0, 51, 0xFFFF_FFFF_8000_0000, 0x7FFF1008, 7, 7, 0]]
    t = trace.parse(raw_trace(samples, rusage=10 + 2))
    assert [s.in_kernel for s in t.samples] == [True, False]


def test_the_plan_takes_suites_and_flavours_from_the_row(toy: arches.Arch) -> None:
    cfg = config.load(REPO / "lab.yaml")
    plan = make_plan(cfg, RunRequest(arch="toy", axis=("suite=bookworm,trixie", "pagesize=64k,4k", "kernel=trixie,forky")))
    assert [(g.suite, g.kernel, g.pagesize) for g in plan.groups()] == [
        ("trixie", "trixie", "64k"), ("trixie", "forky", "64k"), ("trixie", "forky", "4k")]  # fmt: skip
    assert "Debian bookworm does not ship toy64: its cells are skipped" in plan.skipped()
    assert "Debian trixie has no toy64 4k kernel (linux-image-toy64le): its cells are skipped" in plan.skipped()
    assert "toyel" in axes.suite("trixie").debian and "toyel" not in axes.suite("bookworm").debian


def test_the_report_shows_the_row_s_cells_per_page_at_its_page_size(toy: arches.Arch, tmp_path: Path) -> None:
    page = toy.flavours[0].bytes
    pages = (1 << 20) // page
    with Store(tmp_path / "s.db") as s:
        s.begin_run(RunMeta("r1", 1.0, "h", 1, "0.1", "g", "c", "lab run", 1, str(tmp_path)))
        ident = axes.identity({**{a.name: a.default for a in axes.AXES}, "pagesize": toy.flavours[0].pagesize})
        cell = Cell(toy.name, "musl-static", "musl", "static", 1 << 20, "1.2.6", "1.2.6", "clang 16", "", "i", "p", "7.2", page,
                    "never", "QEMU", "tcg", 1, 1, axes=ident, file_pages=pages)  # fmt: skip
        s.add_cell("r1", cell, [Sample(0, "entry", 5, 0, 5, 0, 1), Sample(0, "touch1", pages + 5, 0, pages, 0, 1),
                                Sample(0, "file_read", pages + 5, pages, 0, pages, 1)])  # fmt: skip
        s.finish_run("r1", "complete")
        rep = report.build(s)
    assert rep.arches == [f"{toy.name} [pagesize=64k]"]
    [row] = rep.per_page()
    assert (row.page_size, row.values[0], row.values[3]) == (page, "1", "1")
    assert "toy64 [pagesize=64k]" in report.render(rep, "md")


def _tree(root: Path, release: str, modules: tuple[str, ...], builtin: tuple[str, ...] = ()) -> Path:
    top = root / "lib" / "modules" / release
    for m in modules:
        (top / "kernel" / f"{m}.ko.xz").parent.mkdir(parents=True, exist_ok=True)
        (top / "kernel" / f"{m}.ko.xz").write_bytes(b"not read by the checks")
    top.mkdir(parents=True, exist_ok=True)
    (top / "modules.builtin").write_text("".join(f"kernel/{b}.ko\n" for b in builtin))
    return root


def _kernel(path: Path, arch: arches.Arch, release: str) -> Path:
    """A file with the row's boot image magic, or (a row without one: ppc64el's vmlinux) an ELF header of its machine."""
    from elftools.elf.enums import ENUM_E_MACHINE

    at, magic = arch.kernel_magic
    head = b"\0" * at + magic if magic else b"\x7fELF\x02\x01" + b"\0" * 12 + ENUM_E_MACHINE[arch.elf_machine].to_bytes(2, "little")
    path.write_bytes(head + b"\0" * 64 + f"Linux version {release} (builder@host) #1".encode() + b"\0" * 64)
    return path


NEEDED = ("virtio_blk", "ext4", "crc32c_generic|crc32c_cryptoapi", "virtio_pci?")


def test_a_user_kernel_is_checked_for_its_arch_release_and_modules_before_anything(tmp_path: Path) -> None:
    for arch in arches.ARCHES:
        k = _kernel(tmp_path / f"{arch.name}.img", arch, "7.9.0-lab")
        mods = _tree(tmp_path / arch.name, "7.9.0-lab", ("virtio_blk", "crc32c_cryptoapi"), builtin=("ext4",))
        made = kernel_file.kernel_file(arch, k, mods, NEEDED)
        assert made.release == "7.9.0-lab" and made.value.startswith(axes.KERNEL_FILE) and len(made.digest) == 64
        others = [a for a in arches.ARCHES if a.kernel_arch != arch.kernel_arch]  # i386 boots x86_64's kernels
        owner = next(a for a in arches.ARCHES if a.kernel_arch == arch.kernel_arch)  # i386's kernels are x86_64's
        with pytest.raises(UserError, match=f"a kernel for {owner.name}, not {others[0].name}"):
            kernel_file.kernel_file(others[0], k, mods, NEEDED)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("junk", "not a kernel image lab knows"),
        ("no modules", "no --modules"),
        ("release", "release 6.1.0-lab, but the kernel is 7.9.0-lab"),
        ("missing", re.escape("no virtio_blk (neither a module nor built in)")),
        ("empty", "holds no lib/modules/RELEASE/ tree"),
    ],
)
def test_bad_user_kernels_are_one_line_usage_errors(tmp_path: Path, case: str, message: str) -> None:
    arch = arches.get("arm64")
    k = _kernel(tmp_path / "Image", arch, "7.9.0-lab")
    mods: Path | None = _tree(tmp_path / "m", "7.9.0-lab", ("virtio_blk", "ext4", "crc32c_generic"))
    if case == "junk":
        k.write_bytes(b"#!/bin/sh\necho not a kernel\n")
    elif case == "no modules":
        mods = None
    elif case == "release":
        mods = _tree(tmp_path / "old", "6.1.0-lab", ("virtio_blk", "ext4", "crc32c_generic"))
    elif case == "missing":
        mods = _tree(tmp_path / "few", "7.9.0-lab", ("ext4", "crc32c_generic"))
    elif case == "empty":
        (tmp_path / "nothing").mkdir()
        mods = tmp_path / "nothing"
    with pytest.raises(UserError, match=message) as err:
        kernel_file.kernel_file(arch, k, mods, NEEDED)
    assert "\n" not in err.value.message


def test_kernel_file_runs_are_one_arch_and_not_also_a_kernel_axis(tmp_path: Path) -> None:
    cfg = config.load(REPO / "lab.yaml")
    k = _kernel(tmp_path / "bzImage", arches.get("x86_64"), "7.9.0-lab")
    mods = _tree(tmp_path / "m", "7.9.0-lab", ("virtio_net", "virtio_blk", "ext4", "crc32c_generic"))
    with pytest.raises(UserError, match="a kernel file boots one arch, and this run has 3"):
        make_plan(cfg, RunRequest(arch="all", kernel=k, modules=mods))
    with pytest.raises(UserError, match="--kernel FILE and the kernel axis both name the kernel"):
        make_plan(cfg, RunRequest(arch="x86_64", kernel=k, modules=mods, axis=("kernel=forky",)))
    plan = make_plan(cfg, RunRequest(arch="x86_64", kernel=k, modules=mods))
    [g] = plan.groups()
    assert g.kernel_file is not None and g.kernel == g.kernel_file.value and f"kernel={g.kernel}" in plan.identity(g, plan.run_points()[0])
