"""The variant table is the one source of libcs, linkages, toolchains and flags: a new row flows everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import arches, config
from lab.cli import build_parser
from lab.cli.common import run_request
from lab.errors import UserError
from lab.measure.plan import make_plan
from lab.payloads import toolchains, variants
from lab.payloads.variants import Toolchain, Variant

REPO = Path(__file__).resolve().parents[2]
BIONIC = Toolchain(
    name="ndk",
    libc="bionic",
    cc=("{triplet}-clang",),
    linkage_flags={"static": ("-static",), "dynamic": ()},
    version_argv=("true",),
    host_packages="apt-get install ndk",
    sysroot_packages=("libbionic-dev",),
)


@pytest.fixture
def bionic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(variants.TOOLCHAINS, "ndk", BIONIC)
    monkeypatch.setattr(variants, "VARIANTS", [*variants.VARIANTS, Variant("bionic-static", "bionic", "static", "ndk")])


@pytest.mark.usefixtures("bionic")
def test_a_new_libc_row_reaches_config_cli_plan_report_pairs_and_doctor(tmp_path: Path) -> None:
    assert variants.libcs() == ("glibc", "musl", "bionic")
    cfg = config.parse({"run": {"libc": ["bionic"], "linkage": ["static"]}}, tmp_path / "lab.yaml")
    assert cfg.run.libcs == ("bionic",)
    assert config.parse({}, tmp_path / "lab.yaml").run.libcs == ("glibc", "musl", "bionic")

    parser, _ = build_parser()
    args = parser.parse_args(["run", "--libc", "bionic,musl", "--linkage", "static"])
    plan = make_plan(config.load(REPO / "lab.yaml"), run_request(args))
    assert [v.name for v in plan.variants] == ["musl-static", "bionic-static"]

    assert ("bionic vs glibc, static", "glibc-static", "bionic-static") in variants.comparison_pairs()
    assert not any("bionic" in what and "dynamic" in what for what, _, _ in variants.comparison_pairs())  # no bionic-dynamic row
    assert "ndk" in [tc.name for tc in variants.toolchains()]
    from lab.payloads.sysroot import package_names

    assert package_names("14")[-1] == "libbionic-dev"  # its sysroot packages join the suite sysroot
    argv = toolchains.compile_argv(arches.get("arm64"), variants.variant("bionic-static"), Path("/s/p.c"), Path("/i"), Path("/o/p"))
    assert argv[:2] == ["aarch64-linux-gnu-clang", "-std=gnu11"] and "-static" in argv


def test_the_default_pairs_change_one_thing_at_a_time() -> None:
    assert variants.comparison_pairs() == [
        ("musl vs glibc, dynamic", "glibc-dynamic", "musl-dynamic"),
        ("musl vs glibc, static", "glibc-static", "musl-static"),
        ("static vs dynamic, glibc", "glibc-dynamic", "glibc-static"),
        ("static vs dynamic, musl", "musl-dynamic", "musl-static"),
    ]


def test_an_unknown_libc_in_config_lists_the_table(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"run.libc: \['bionic'\] is not valid \(expected a non-empty list of glibc, musl\)"):
        config.parse({"run": {"libc": ["bionic"]}}, tmp_path / "lab.yaml")


def test_a_linkage_without_flags_is_an_error_not_the_dynamic_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variants, "VARIANTS", [*variants.VARIANTS, Variant("glibc-pie", "glibc", "pie", "clang")])
    assert variants.linkages() == ("dynamic", "static", "pie")
    with pytest.raises(UserError, match="toolchain clang has no flags for linkage 'pie'"):
        toolchains.compile_argv(arches.get("x86_64"), variants.variant("glibc-pie"), Path("/s/p.c"), Path("/i"), Path("/o/p"))
