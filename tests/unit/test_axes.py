"""The axes table: parsing, identity, the plan's points and guests, config validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab import arches, axes, config
from lab.errors import UserError
from lab.measure.plan import RunRequest, make_plan

REPO = Path(__file__).resolve().parents[2]


def test_specs_parse_into_values_in_order() -> None:
    assert axes.parse(["thp=never,always", "cache=warm", "thp=always"]) == {"thp": ("never", "always"), "cache": ("warm",)}
    assert axes.parse(["tunables=glibc.malloc.mmap_threshold=65536", "tunables="]) == {
        "tunables": ("glibc.malloc.mmap_threshold=65536", "")
    }


DEFAULTS = {a.name: a.default for a in axes.AXES}


def test_identity_is_every_value_in_table_order_and_display_leaves_table_defaults_out() -> None:
    ident = axes.identity({**DEFAULTS, "cache": "warm", "suite": "forky"})
    assert ident.split(",") == [f"{a.name}={ {**DEFAULTS, 'cache': 'warm', 'suite': 'forky'}[a.name] }".replace(" ", "") for a in axes.AXES]
    assert axes.shown(ident) == "suite=forky,cache=warm"
    assert axes.shown(axes.identity(DEFAULTS)) == ""
    assert axes.values(ident)["tunables"] == "" and axes.values("tunables=a=1")["tunables"] == "a=1"


def test_older_relative_identities_become_absolute_from_what_the_cell_recorded() -> None:
    """Store v8 and baselines v3: a value the old identity named wins, then the cell's recorded one, then the table's."""
    made = axes.values(axes.explicit("suite=forky,cache=warm", {"thp": "always", "pagesize": "16k"}))
    assert made == {**DEFAULTS, "suite": "forky", "cache": "warm", "thp": "always", "pagesize": "16k"}
    assert axes.explicit("", {}) == axes.identity(DEFAULTS)
    assert axes.pagesize_of(16384) == "16k"


def test_the_plan_makes_one_guest_per_shipped_arch_and_suite_and_every_run_point() -> None:
    cfg = config.load(REPO / "lab.yaml")
    plan = make_plan(cfg, RunRequest(arch="all", axis=("suite=bookworm,trixie", "thp=never,always", "cache=cold,warm")))
    assert [(g.arch.name, g.suite, g.kernel, g.qemu) for g in plan.groups()] == [
        ("x86_64", "bookworm", "trixie", "trixie-backports"), ("arm64", "bookworm", "trixie", "trixie-backports"),
        ("x86_64", "trixie", "trixie", "trixie-backports"), ("arm64", "trixie", "trixie", "trixie-backports"),
        ("riscv64", "trixie", "trixie", "trixie-backports")]  # fmt: skip
    assert plan.skipped() == ["Debian bookworm does not ship riscv64: its cells are skipped"]
    assert plan.labels()[0] == "x86_64/bookworm" and len(plan.run_points()) == 4
    trixie = plan.groups()[2]
    assert trixie.boot() == {"suite": "trixie", "kernel": "trixie", "pagesize": "4k", "qemu": "trixie-backports", "scratch": "ram"}
    shown = [axes.shown(plan.identity(trixie, p)) for p in plan.run_points()]
    assert shown == ["", "cache=warm", "thp=always", "thp=always,cache=warm"]
    assert make_plan(cfg, RunRequest(arch="x86_64")).labels() == ["x86_64"]  # one suite: labels are arches


def test_kernel_and_pagesize_axes_plan_only_the_guests_debian_has() -> None:
    """--axis kernel=... holds the userland at the recipe's suite; a flavour or kernel a suite lacks is skipped."""
    cfg = config.load(REPO / "lab.yaml")
    plan = make_plan(cfg, RunRequest(arch="all", axis=("kernel=bookworm,forky", "pagesize=4k,16k")))
    made = [(g.arch.name, g.suite, g.kernel, g.pagesize) for g in plan.groups()]
    for arch in arches.select("all"):
        for kernel in ("bookworm", "forky"):
            for f in arch.flavours:
                has = arch.kernel_arch in axes.suite(kernel, guests=False).debian and (not f.suites or kernel in f.suites)
                assert ((arch.name, "trixie", kernel, f.pagesize) in made) == has
    assert ("arm64", "trixie", "forky", "16k") in made and ("arm64", "trixie", "bookworm", "16k") not in made
    assert "Debian bookworm has no riscv64 kernel: its cells are skipped" in plan.skipped()
    assert "Debian bookworm has no arm64 16k kernel (linux-image-arm64-16k): its cells are skipped" in plan.skipped()
    assert len({(g.arch.name, plan.identity(g, plan.run_points()[0])) for g in plan.groups()}) == len(plan.groups())
    assert plan.labels()[0] == "x86_64/kernel-bookworm/pagesize-4k"


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        ("pagesize=16k", "Debian cannot make any guest of this run: riscv64 has no 16k kernel (4k)"),
        ("kernel=sid", "axis kernel: 'sid' is not valid"),
        ("pagesize=8k", "axis pagesize: '8k' is not valid"),
    ],
)
def test_kernels_and_flavours_that_do_not_exist_are_usage_errors(axis: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        make_plan(config.load(REPO / "lab.yaml"), RunRequest(arch="riscv64", axis=(axis,)))


def test_changing_lab_yaml_s_thp_default_keeps_every_cell_s_identity(tmp_path: Path) -> None:
    """Issue 22: identities are absolute. A cell measured at THP never is thp=never whatever lab.yaml's default."""
    before = config.load(REPO / "lab.yaml")
    changed = tmp_path / "lab.yaml"
    text = (REPO / "lab.yaml").read_text().replace("transparent_hugepage: never", "transparent_hugepage: always")
    changed.write_text(text.replace("recipe: images/tiny.yaml", f"recipe: {REPO / 'images/tiny.yaml'}"))
    after = config.load(changed)
    assert after.guest.transparent_hugepage == "always"
    old = make_plan(before, RunRequest(arch="x86_64"))
    new = make_plan(after, RunRequest(arch="x86_64", axis=("thp=never",)))
    assert old.identity(old.groups()[0], old.run_points()[0]) == new.identity(new.groups()[0], new.run_points()[0])
    default_new = make_plan(after, RunRequest(arch="x86_64"))
    assert "thp=always" in default_new.identity(default_new.groups()[0], default_new.run_points()[0])


def test_a_run_whose_suites_ship_none_of_its_arches_is_a_usage_error() -> None:
    with pytest.raises(UserError, match="Debian bookworm does not ship riscv64"):
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
