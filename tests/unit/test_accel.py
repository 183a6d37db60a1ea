from pathlib import Path

import pytest

from lab.arches import get
from lab.errors import UserError
from lab.guests.accel import KvmMemo, kvm_precheck, plan

X86, ARM = get("x86_64"), get("arm64")


@pytest.mark.parametrize(
    ("choice", "memo", "pre", "accels", "note"),
    [
        ("tcg", None, None, ("tcg",), "TCG (forced)"),
        ("kvm", None, None, ("kvm",), "KVM (forced)"),
        ("auto", None, None, ("kvm", "tcg"), "KVM if it boots, else TCG"),
        ("auto", None, "host is x86_64, guest is arm64", ("tcg",), "TCG (host is x86_64, guest is arm64)"),
        (
            "auto",
            "QEMU exited with status -6",
            None,
            ("tcg",),
            "TCG (KVM failed here before: QEMU exited with status -6; lab doctor re-checks)",
        ),
    ],
)
def test_plan(choice: str, memo: str | None, pre: str | None, accels: tuple[str, ...], note: str) -> None:
    p = plan(choice, X86, memo, pre)
    assert p.accels == accels and p.note == note


def test_forced_kvm_that_cannot_work_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--accel kvm is impossible for arm64: host is x86_64"):
        plan("kvm", ARM, None, "host is x86_64, guest is arm64")


def test_precheck(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    assert kvm_precheck(ARM, dev, machine="x86_64") == "host is x86_64, guest is arm64"
    assert kvm_precheck(X86, dev, machine="x86_64") == f"{dev} does not exist"
    dev.write_text("")
    assert kvm_precheck(X86, dev, machine="x86_64") is None


def test_memo_roundtrip(tmp_path: Path) -> None:
    memo = KvmMemo(tmp_path / "accel.json")
    assert memo.broken("k") is None
    memo.record("k", "internal error")
    assert KvmMemo(tmp_path / "accel.json").broken("k") == "internal error"
    memo.record("k", None)
    assert memo.broken("k") is None
    (tmp_path / "accel.json").write_text("garbage")
    assert memo.broken("k") is None
