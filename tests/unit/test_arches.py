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
