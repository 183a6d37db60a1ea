"""The axes table: parsing, identity, the plan's points and guests, config validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab import axes, config
from lab.errors import UserError
from lab.measure.plan import RunRequest, make_plan

REPO = Path(__file__).resolve().parents[2]


def test_specs_parse_into_values_in_order() -> None:
    assert axes.parse(["thp=never,always", "cache=warm", "thp=always"]) == {"thp": ("never", "always"), "cache": ("warm",)}
    assert axes.parse(["tunables=glibc.malloc.mmap_threshold=65536", "tunables="]) == {
        "tunables": ("glibc.malloc.mmap_threshold=65536", "")
    }


def test_identity_lists_non_default_values_in_table_order() -> None:
    defaults = {
        "suite": "trixie",
        "qemu": "trixie-backports",
        "scratch": "ram",
        "thp": "never",
        "cache": "cold",
        "order": "random",
        "tunables": "",
    }
    assert axes.identity(defaults, defaults) == ""
    assert axes.identity({**defaults, "cache": "warm", "suite": "forky"}, defaults) == "suite=forky,cache=warm"
    assert axes.identity({**defaults, "qemu": "host", "thp": "always"}, defaults) == "qemu=host,thp=always"
    assert axes.identity({**defaults, "scratch": "disk"}, defaults) == "scratch=disk"


def test_the_plan_makes_one_guest_per_shipped_arch_and_suite_and_every_run_point() -> None:
    cfg = config.load(REPO / "lab.yaml")
    plan = make_plan(cfg, RunRequest(arch="all", axis=("suite=bookworm,trixie", "thp=never,always", "cache=cold,warm")))
    assert [(a.name, b["suite"], b["qemu"]) for a, b in plan.groups()] == [
        ("x86_64", "bookworm", "trixie-backports"), ("arm64", "bookworm", "trixie-backports"), ("x86_64", "trixie", "trixie-backports"),
        ("arm64", "trixie", "trixie-backports"), ("riscv64", "trixie", "trixie-backports")]  # fmt: skip
    assert plan.skipped() == ["Debian bookworm does not ship riscv64: its cells are skipped"]
    assert plan.labels()[0] == "x86_64/bookworm" and len(plan.run_points()) == 4
    trixie = plan.boot_points()[1]
    assert trixie == {"suite": "trixie", "qemu": "trixie-backports", "scratch": "ram"}
    assert [plan.identity(trixie, p) for p in plan.run_points()] == ["", "cache=warm", "thp=always", "thp=always,cache=warm"]
    assert make_plan(cfg, RunRequest(arch="x86_64")).labels() == ["x86_64"]  # one suite: labels are arches


def test_a_run_whose_suites_ship_none_of_its_arches_is_a_usage_error() -> None:
    with pytest.raises(UserError, match="no arch of this run is shipped by its suites"):
        make_plan(config.load(REPO / "lab.yaml"), RunRequest(arch="riscv64", axis=("suite=bookworm",)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run:\n  axes:\n    thp: [sometimes]\n", "run.axes.thp: axis thp: 'sometimes' is not valid"),
        ("run:\n  axes:\n    colour: [red]\n", "run.axes.colour: unknown axis 'colour'"),
        ("run:\n  axes:\n    suite: []\n", "run.axes.suite: [] is not valid"),
    ],
)
def test_run_axes_in_lab_yaml_are_checked(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "lab.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        config.load(f)


def test_suite_shorthands_on_the_command_line_and_in_lab_yaml(tmp_path: Path) -> None:
    """Issue 11 names `lab run --suite trixie,forky` and `suites:` in lab.yaml: both are the suite axis."""
    from lab.cli import build_parser
    from lab.cli.common import run_request

    parser, _ = build_parser()
    req = run_request(parser.parse_args(["run", "--suite", "trixie,forky", "--axis", "thp=always"]))
    assert req.axis == ("thp=always", "suite=trixie,forky")
    assert make_plan(config.load(REPO / "lab.yaml"), req).suites == ("trixie", "forky")
    f = tmp_path / "lab.yaml"
    f.write_text(f"recipe: {REPO / 'images' / 'tiny.yaml'}\nsuites: [bookworm, trixie]\n")
    assert config.load(f).run.axes["suite"] == ("bookworm", "trixie")
    f.write_text("suites: [sid]\n")
    with pytest.raises(UserError, match=re.escape("suites: axis suite: 'sid' is not valid")):
        config.load(f)


def test_default_parallelism_counts_guests_not_arches() -> None:
    from lab.measure.plan import default_jobs

    cfg = config.load(REPO / "lab.yaml")
    one = make_plan(cfg, RunRequest(arch="x86_64"))
    three = make_plan(cfg, RunRequest(arch="x86_64", axis=("suite=bookworm,trixie,forky",)))
    assert one.jobs == 1 and three.jobs == default_jobs(3) and len(three.groups()) == 3
    assert make_plan(cfg, RunRequest(arch="x86_64", jobs=2)).jobs == 2
