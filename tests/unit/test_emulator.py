"""Lab's own QEMU, the pure parts: its argv as a list, the version rule for snapshots, qemu.from in lab.yaml, and
the across-an-axis agreement rule (issue 20)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import arches, axes, config
from lab.errors import UserError
from lab.guests import emulator
from lab.guests.emulator import HOST, Emulator
from lab.guests.qemu import qemu_argv
from lab.results import across
from lab.results.rows import Cell, Sample
from tests.unit.test_qemu_argv import spec

REPO = Path(__file__).resolve().parents[2]
OWN = Emulator(
    "trixie-backports",
    Path("/c/qemu/e/root"),
    "1:11.1.3+ds-2~bpo13+1",
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    ("usr/lib/x86_64-linux-gnu", "usr/lib64"),
    "usr/lib/x86_64-linux-gnu/qemu",
    ("usr/share/qemu", "usr/share/seabios"),
)


def test_lab_qemu_runs_through_its_own_loader_libraries_and_data_directories() -> None:
    argv = qemu_argv(spec("riscv64", emulator=OWN))
    assert argv[:13] == [
        "/c/qemu/e/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "--library-path",
        "/c/qemu/e/root/usr/lib/x86_64-linux-gnu:/c/qemu/e/root/usr/lib64",
        "/c/qemu/e/root/usr/bin/qemu-system-riscv64",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-L", "/c/qemu/e/root/usr/share/qemu", "-L", "/c/qemu/e/root/usr/share/seabios",
    ]  # fmt: skip
    assert argv[argv.index("-bios") + 1] == "/c/qemu/e/root/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"
    assert OWN.env() == {"QEMU_MODULE_DIR": "/c/qemu/e/root/usr/lib/x86_64-linux-gnu/qemu"}
    host = qemu_argv(spec("riscv64"))
    assert host[0] == "qemu-system-riscv64" and "-L" not in host and HOST.env() == {}
    assert host[host.index("-bios") + 1] == "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"
    assert OWN.describe() == "trixie-backports 1:11.1.3+ds-2~bpo13+1" and HOST.describe() == "host"


def test_snapshots_follow_the_qemu_release_from_the_arch_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert emulator.release("QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-2~bpo13+1)") == (11, 1, 3)
    assert emulator.release("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)") == (7, 2, 22)
    assert emulator.release("unknown") == ()
    riscv = arches.get("riscv64")
    for line, works in (("QEMU emulator version 7.2.22", False), ("QEMU emulator version 10.0.13", False),
                        ("QEMU emulator version 10.2.0", True), ("QEMU emulator version 11.1.3", True), ("unknown", False)):  # fmt: skip
        monkeypatch.setattr(emulator, "_versions", {(riscv.qemu_binary,): line, (arches.get("x86_64").qemu_binary,): line})
        assert emulator.snapshots_work(HOST, riscv) is works, line
        assert emulator.snapshots_work(HOST, arches.get("x86_64")) is (line != "unknown")
    # a row whose restores no release makes reliable (loong64: restored guests of 11.1.3 sometimes never ran again)
    loong = arches.get("loong64")
    monkeypatch.setattr(emulator, "_versions", {(loong.qemu_binary,): "QEMU emulator version 11.1.3"})
    assert emulator.snapshots_work(HOST, loong) is False and loong.no_snapshots == "no snapshots on loong64: its restores are unreliable"
    assert riscv.no_snapshots == "no snapshots on riscv64 with QEMU < 10.2"


def test_qemu_from_is_checked_against_the_suites_table(tmp_path: Path) -> None:
    assert config.load(REPO / "lab.yaml").qemu == config.QemuConfig("trixie-backports", "")
    assert axes.suite("trixie-backports", guests=False).base == "trixie"
    with pytest.raises(UserError, match="trixie-backports"):
        axes.suite("trixie-backports")  # not a guest suite
    for text, bad in (("qemu: {from: sid}", "qemu.from"), ("qemu: {from: host, version: '1:2'}", "qemu.version"),
                      ("qemu: {from: forky, version: 'a b'}", "qemu.version"), ("qemu: {form: forky}", "qemu.form")):  # fmt: skip
        f = tmp_path / "lab.yaml"
        f.write_text(text + "\n")
        with pytest.raises(UserError) as err:
            config.load(f)
        assert bad in err.value.message and str(f) in err.value.message, err.value.message
    with pytest.raises(UserError, match="axis qemu: 'sid' is not valid"):
        axes.parse(["qemu=host,sid"])
    assert axes.parse(["qemu=host,forky"]) == {"qemu": ("host", "forky")}


def _cell(axes_: str) -> Cell:
    return Cell("x86_64", "musl-static", "musl", "static", 1 << 20, "1.2", "1.2", "clang", "", "i", "p", "6.12", 4096, "never",
                "QEMU", "tcg", 1, 1, axes=axes_)  # fmt: skip


def _samples(entry: list[int], touch1: list[int]) -> list[Sample]:
    return [
        Sample(i, s, 0, 0, v, 0, 0) for i, (e, t) in enumerate(zip(entry, touch1, strict=True)) for s, v in (("entry", e), ("touch1", t))
    ]


def _id(**values: str) -> str:
    return axes.identity({**{a.name: a.default for a in axes.AXES}, **values})


def test_counts_agree_across_an_axis_when_exact_and_entry_within_its_range() -> None:
    same = across.across(
        [(_cell(_id()), _samples([6, 7, 6], [256] * 3)), (_cell(_id(qemu="host")), _samples([7, 7, 6], [256] * 3))], "qemu"
    )
    assert {(r.stage, r.counter): r.agree for r in same} == {("entry", "minflt"): True, ("entry", "majflt"): True,
                                                              ("touch1", "minflt"): True, ("touch1", "majflt"): True}  # fmt: skip
    moved = across.across(
        [(_cell(_id()), _samples([6, 6, 6], [256] * 3)), (_cell(_id(qemu="host")), _samples([9, 9, 9], [256, 257, 257]))], "qemu"
    )
    assert [(r.stage, r.counter) for r in moved if not r.agree] == [("entry", "minflt"), ("touch1", "minflt")]
    assert across.per_cell(moved)[0].differ == ("entry minflt", "touch1 minflt")
    assert across.across([(_cell(""), _samples([6], [256]))], "qemu") == []  # nothing to pair


def test_a_suite_without_qemu_for_this_hosts_architecture_is_a_usage_error() -> None:
    from lab.guests import qemu_store

    class NoQemu:
        suite, arches = "forky", ("loong64",)

        def names(self, prefix: str) -> set[str]:
            return {"opensbi"} if prefix == "opensbi" else set()

    with pytest.raises(UserError) as err:
        qemu_store.wanted(NoQemu(), "")  # type: ignore[arg-type]
    assert "qemu.from: forky has no qemu-system-x86 for loong64" in err.value.message and "qemu.from: host" in err.value.remedy

    class Split:  # QEMU >= 10: riscv64 has a package of its own, and it is preferred
        suite, arches = "trixie-backports", ("amd64",)

        def names(self, prefix: str) -> set[str]:
            have = ("qemu-system-x86", "qemu-system-arm", "qemu-system-riscv", "qemu-system-misc", "qemu-system-ppc",
                    "qemu-system-s390x", "opensbi", "qemu-efi-loongarch64")  # fmt: skip
            return {n for n in have if n.startswith(prefix)}

    assert qemu_store.wanted(Split(), "1:11") == [  # type: ignore[arg-type]
        "qemu-system-x86=1:11", "qemu-system-arm=1:11", "qemu-system-riscv=1:11", "opensbi", "qemu-system-ppc=1:11",
        "qemu-system-s390x=1:11", "qemu-system-misc=1:11", "qemu-efi-loongarch64"]  # fmt: skip


def test_a_fleet_host_with_another_qemu_is_refused_unless_qemu_is_an_axis(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from lab.fleet import run as fleet_run
    from lab.guests import qemu_store
    from lab.measure.plan import RunRequest, make_plan

    cfg = config.load(REPO / "lab.yaml")
    monkeypatch.setattr(qemu_store, "ensure", lambda cfg, origin=None, pin=None: OWN)
    monkeypatch.setattr(emulator, "_versions", {tuple(OWN.command(arches.get("x86_64"))): "QEMU emulator version 11.1.3"})
    same = replace(_cell(""), qemu_version="QEMU emulator version 11.1.3", host="hosta")
    other = replace(same, qemu_version="QEMU emulator version 7.2.22", qemu_origin="host", host="hostb")
    plan = make_plan(cfg, RunRequest(arch="x86_64"))
    assert fleet_run._foreign_qemu(cfg, plan, [same]) == ""
    why = fleet_run._foreign_qemu(cfg, plan, [same, other])
    assert why.startswith("host hostb ran x86_64 under QEMU emulator version 7.2.22 (host), not the controller's") and "not merged" in why
    both = make_plan(cfg, RunRequest(arch="x86_64", axis=("qemu=host,trixie-backports",)))
    assert fleet_run._foreign_qemu(cfg, both, [same, other]) == ""  # each cell names its QEMU in its identity
    assert "--axis" in (args := fleet_run.run_args(both, RunRequest())) and "qemu=host,trixie-backports" in args
    assert not any(a.startswith("qemu=") for a in fleet_run.run_args(plan, RunRequest()))  # the host's provisioned QEMU
