from pathlib import Path

import pytest

from lab import arches
from lab.errors import UserError


@pytest.mark.parametrize(
    ("alias", "name"),
    [("x86_64", "x86_64"), ("amd64", "x86_64"), ("AARCH64", "arm64"), ("arm64", "arm64"), ("riscv64", "riscv64"), (" rv64 ", "riscv64")],
)
def test_get_accepts_names_and_aliases(alias: str, name: str) -> None:
    assert arches.get(alias).name == name


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(UserError) as err:
        arches.get("sparc")
    assert "'sparc'" in err.value.message
    for name in ("x86_64", "arm64", "riscv64", "all"):
        assert name in err.value.remedy


def test_select_all_and_lists_keep_table_order_without_duplicates() -> None:
    assert [a.name for a in arches.select("all")] == ["x86_64", "arm64", "riscv64"]
    assert arches.select("everything") == list(arches.ARCHES) and len(arches.ARCHES) > 3
    assert [a.name for a in arches.select("loong64,all")] == ["x86_64", "arm64", "riscv64", "loong64"]
    assert [a.name for a in arches.select("riscv64,amd64,x86_64")] == ["x86_64", "riscv64"]
    with pytest.raises(UserError):
        arches.select(",")


def test_every_row_is_complete_and_names_are_unique() -> None:
    seen: set[str] = set()
    for a in arches.ARCHES:
        assert a.qemu_binary.startswith("qemu-system-") and a.qemu_packages and a.console and a.triplet
        assert (a.bios is None) == (a.bios_package is None)
        assert a.kernel_format in ("as-is", "pvh")
        # a uname may repeat where the kernel is another row's (i386's userland runs on x86_64's kernel)
        mine = {k.lower() for k in (a.name, *([] if a.kernel_debian else [a.uname]), a.debian, *a.aliases)}
        assert not mine & seen, f"{a.name} shares a name with another arch"
        seen |= mine
        assert arches.get(a.name) is a and arches.get(a.debian) is a


def test_kvm_only_for_matching_host() -> None:
    x86, arm = arches.get("x86_64"), arches.get("arm64")
    assert arches.host_can_kvm(x86, "x86_64") and not arches.host_can_kvm(x86, "aarch64")
    assert arches.host_can_kvm(arm, "aarch64") and not arches.host_can_kvm(arm, "x86_64")


def test_rows_beyond_all_are_planned_with_their_own_suites_kernels_and_page_sizes() -> None:
    """Issue 23: loong64 is forky's only, with 16 KiB pages; trixie's ppc64el and s390x .debs are not on the mirror
    (their rows take forky instead); a run that names the suite or page size gets exactly that or a skip."""
    from lab import config
    from lab.measure.plan import RunRequest, make_plan

    cfg = config.load(Path(__file__).resolve().parents[2] / "lab.yaml")
    plan = make_plan(cfg, RunRequest(arch="everything"))
    made = {g.arch.name: (g.suite, g.kernel, g.pagesize) for g in plan.groups()}
    assert made["loong64"] == ("forky", "forky", "16k") and made["ppc64el"] == made["s390x"] == ("forky", "forky", "4k")
    assert made["x86_64"] == made["i386"] == made["armhf"] == ("trixie", "trixie", "4k") and len(made) == len(arches.ARCHES)
    assert plan.skipped() == []
    old = make_plan(cfg, RunRequest(arch="everything", axis=("suite=bookworm",)))
    assert {g.arch.name for g in old.groups()} == {a.name for a in arches.ARCHES} - {"riscv64", "loong64"}
    assert "Debian bookworm does not ship loong64: its cells are skipped" in old.skipped()
    power = make_plan(cfg, RunRequest(arch="ppc64el", axis=("pagesize=4k,64k", "kernel=bookworm,forky")))
    assert [(g.kernel, g.pagesize, g.flavour.kernel) for g in power.groups()] == [
        ("bookworm", "64k", "powerpc64le"), ("forky", "4k", "powerpc64le"), ("forky", "64k", "powerpc64le-64k")]  # fmt: skip
    assert power.skipped() == ["Debian bookworm has no ppc64el 4k kernel (linux-image-powerpc64le): its cells are skipped"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--axis", "suite=trixie"), "Debian trixie does not ship loong64"),
        (("--axis", "pagesize=4k"), "loong64 has no 4k kernel (16k)"),
    ],
)
def test_what_debian_lacks_for_a_row_is_one_line_before_anything(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lab import cli

    code = cli.main(["--config", str(Path(__file__).resolve().parents[2] / "lab.yaml"), "run", "--arch", "loong64", *argv])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and message in line and line.startswith("lab: error: ")


def test_a_host_qemu_without_an_arch_s_binary_or_firmware_says_which(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lab.guests import emulator

    monkeypatch.setattr("lab.guests.emulator.shutil.which", lambda name: None if name == "qemu-system-ppc64" else f"/usr/bin/{name}")
    ppc = emulator.HOST.missing(arches.get("ppc64el"))
    assert ppc is not None and ppc[0] == "qemu-system-ppc64 not found (ppc64el's QEMU)" and "qemu-system-ppc" in ppc[1]
    assert emulator.HOST.missing(arches.get("x86_64")) is None
    own = emulator.Emulator(origin="forky", root=tmp_path)  # a tree without loong64's UEFI firmware
    monkeypatch.setattr("lab.guests.emulator.shutil.which", lambda name: name)
    lacks = own.missing(arches.get("loong64"))
    assert (
        lacks is not None
        and "QEMU_EFI.fd not found (loong64's firmware)" in lacks[0]
        and lacks[1] == "apt-get install qemu-efi-loongarch64"
    )
