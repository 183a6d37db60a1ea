"""Fleet planning and Ansible plumbing as data: inventory parsing, arch assignment, argv builders, outcomes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lab import arches, axes, config, resources
from lab.cli import build_parser
from lab.cli.common import run_request
from lab.errors import UserError
from lab.fleet import ansible, inventory
from lab.fleet.run import provision, run_args
from lab.measure.plan import RunRequest, make_plan

INV = Path("inv.yml")


def listing(hosts: dict[str, dict[str, object]], groups: dict[str, list[str]]) -> dict[str, object]:
    """What ansible-inventory --list prints for lab_hosts with these child groups."""
    doc: dict[str, object] = {
        "_meta": {"hostvars": hosts},
        "all": {"children": ["ungrouped", "lab_hosts"]},
        "lab_hosts": {"children": list(groups)},
    }
    doc.update({g: {"hosts": names} for g, names in groups.items()})
    return doc


def test_hosts_come_from_lab_hosts_and_its_child_groups_with_their_arches_and_kvm_groups() -> None:
    data = listing(
        {"a": {"lab_arches": ["amd64", "riscv"]}, "b": {"lab_arches": "arm64"}, "c": {}},
        {"kvm_x86_64": ["a"], "kvm_arm64": ["b"], "tcg": ["c"]},
    )
    hosts = inventory.parse(INV, data)
    assert [(h.name, h.arches, h.kvm) for h in hosts] == [
        ("a", ("x86_64", "riscv64"), ("x86_64",)),
        ("b", ("arm64",), ("arm64",)),
        ("c", tuple(arches.names()), ()),  # no lab_arches: every arch it has a row for
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (listing({"a": {"lab_arches": ["sparc"]}}, {"tcg": ["a"]}), "inv.yml: a: lab_arches: unknown arch 'sparc'"),
        (listing({"a": {"lab_arches": []}}, {"tcg": ["a"]}), "inv.yml: a: lab_arches: [] is not valid"),
        ({"_meta": {"hostvars": {}}, "all": {"children": ["ungrouped"]}}, "inv.yml: no hosts in the group lab_hosts"),
    ],
)
def test_bad_inventories_are_usage_errors_naming_file_host_and_value(data: dict[str, object], message: str) -> None:
    with pytest.raises(UserError) as err:
        inventory.parse(INV, data)
    assert message in err.value.message and err.value.remedy


def test_each_arch_goes_to_one_host_kvm_hosts_first_then_the_least_loaded() -> None:
    hosts = inventory.parse(
        INV,
        listing(
            {"a": {"lab_arches": ["x86_64", "riscv64"]}, "b": {"lab_arches": ["arm64", "riscv64"]}, "c": {"lab_arches": ["x86_64"]}},
            {"tcg": ["a"], "kvm_x86_64": ["c"], "more": ["b"]},
        ),
    )
    assert inventory.assign(hosts, ["x86_64", "arm64", "riscv64"], INV) == {"c": ("x86_64",), "b": ("arm64",), "a": ("riscv64",)}
    a, b = (h for h in hosts if h.name in ("a", "b"))
    assert inventory.assign([a, b], ["x86_64", "arm64", "riscv64"], INV) == {"a": ("x86_64", "riscv64"), "b": ("arm64",)}
    with pytest.raises(UserError, match="no host in lab_hosts runs arm64"):
        inventory.assign([hosts[0]], ["arm64"], INV)


def test_a_real_inventory_file_is_read_through_ansible_inventory(tmp_path: Path) -> None:
    """The example inventory parses with Ansible's own parser, and a broken file is one usage error."""
    hosts = inventory.load(resources.ansible_dir() / "inventory.example.yml")
    assert [(h.name, h.kvm) for h in hosts] == [
        ("x86-01.lab.example.org", ("x86_64",)),
        ("arm-01.lab.example.org", ("arm64",)),
        ("spare-01.lab.example.org", ()),
    ]
    bad = tmp_path / "bad.yml"
    bad.write_text("lab_hosts: [unclosed\n")
    with pytest.raises(UserError) as err:
        inventory.load(bad)
    assert "bad.yml: no hosts in the group lab_hosts (Ansible: " in err.value.message  # with what Ansible said about it


def test_each_host_runs_the_controllers_resolved_matrix_not_its_own_defaults() -> None:
    """Regression (review): only typed options were forwarded, so a host's own lab.yaml (repeat, sizes, axes) decided
    what it measured while the merged run and its owed cells followed the controller's plan."""
    cfg = config.load(resources.images_dir().parent / "lab.yaml")
    req = RunRequest(
        arch="all", repeat=7, size="1M,8M", variant="musl-static", axis=("thp=never,always", "tunables=a=1", "tunables="), cold_boot=True
    )
    args = run_args(make_plan(cfg, req), req)
    assert args == [
        "--variant", "musl-static", "--repeat", "7", "--size", "1M,8M",
        "--axis", "suite=trixie", "--axis", "kernel=trixie", "--axis", "pagesize=4k", "--axis", "scratch=ram", "--axis", "thp=never,always", "--axis", "cache=cold", "--axis", "order=random",
        "--axis", "tunables=a=1", "--axis", "tunables=",
        "--cold-boot",
    ]  # fmt: skip
    # the host parses them back into the same plan (its arches aside)
    mine, theirs = make_plan(cfg, req), make_plan(cfg, host_request(args))
    assert (theirs.variants, theirs.sizes, theirs.repeat) == (mine.variants, (1 << 20, 8 << 20), 7)
    assert {a.name: theirs.values(a.name) for a in axes.AXES} == {a.name: mine.values(a.name) for a in axes.AXES}
    defaults = run_args(make_plan(cfg, RunRequest()), RunRequest())
    assert defaults[:6] == ["--variant", "glibc-dynamic,glibc-static,musl-dynamic,musl-static", "--repeat", "5", "--size", "1M"]


def host_request(args: list[str]) -> RunRequest:
    """The RunRequest a host's `lab run --arch all ARGS` builds (the CLI's own parser)."""
    return run_request(build_parser()[0].parse_args(["run", "--arch", "all", *args]))


def test_playbook_argv_names_inventory_playbook_vars_file_and_limit() -> None:
    argv = ansible.playbook_argv("fleet-run.yml", INV, Path("/w/vars.json"), ("a", "b"))
    assert argv[0].endswith("ansible-playbook")
    assert argv[1:] == ["-i", "inv.yml", str(resources.ansible_dir() / "fleet-run.yml"), "-e", "@/w/vars.json", "--limit", "a,b"]
    assert ansible.inventory_argv(INV)[1:] == ["-i", "inv.yml", "--list"]
    env = ansible.environment(Path("/tmp/cp"))
    assert env["ANSIBLE_CONFIG"] == str(resources.ansible_dir() / "ansible.cfg") and env["ANSIBLE_SSH_CONTROL_PATH_DIR"] == "/tmp/cp"


def test_outcomes_are_read_from_the_callbacks_document() -> None:
    doc = {
        "stats": {
            "a": {"ok": 3, "changed": 1, "unreachable": 0, "failures": 0},
            "b": {"ok": 1, "changed": 0, "unreachable": 1, "failures": 0},
        },
        "why": {"b": "Run lab on this host's arches: Failed to connect to the host via ssh"},
    }
    got = ansible.outcomes(doc)
    assert got["a"] == ansible.HostOutcome(3, 1, 0, 0, "") and got["a"].good
    assert not got["b"].good and "Failed to connect" in got["b"].why


def test_the_ansible_callback_writes_outcomes_only_when_asked(tmp_path: Path) -> None:
    """lab_outcomes runs inside ansible-playbook: a local play with one failing host writes stats and the reason."""
    inv = tmp_path / "inv.yml"
    inv.write_text(
        f"lab_hosts:\n  hosts:\n    here:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
    )
    play = tmp_path / "p.yml"
    play.write_text(
        "- hosts: lab_hosts\n  gather_facts: false\n  tasks:\n    - name: Fail on purpose\n      ansible.builtin.fail:\n        msg: boom\n"
    )
    out = tmp_path / "out.json"
    subprocess.run(
        [ansible.tool("ansible-playbook"), "-i", str(inv), str(play)],
        env=ansible.environment(),
        capture_output=True,
        check=False,
        cwd=tmp_path,
    )
    assert not out.exists() and not list(tmp_path.glob("*.json"))  # not asked: nothing written
    env = {**ansible.environment(), "LAB_ANSIBLE_OUTCOMES": str(out)}
    subprocess.run([ansible.tool("ansible-playbook"), "-i", str(inv), str(play)], env=env, capture_output=True, check=False)
    doc = json.loads(out.read_text())
    assert doc["stats"]["here"]["failures"] == 1 and doc["why"] == {"here": "Fail on purpose: boom"}


def test_a_limit_naming_no_inventory_host_is_a_usage_error_before_anything_is_built(tmp_path: Path) -> None:
    cfg = config.load(resources.images_dir().parent / "lab.yaml")
    cfg = replace(cfg, cache_dir=tmp_path / "cache", results_dir=tmp_path / "results")
    with pytest.raises(UserError, match="--limit nope: not in"):
        provision(cfg, resources.ansible_dir() / "inventory.example.yml", ("nope",))
    assert not (tmp_path / "cache").exists()


def test_a_host_with_another_thp_default_measures_the_cells_the_controller_owes_and_its_baseline_keys(tmp_path: Path) -> None:
    """Issue 22: identities were relative to each lab.yaml's defaults, so a host whose lab_config set THP always
    labelled its never cells "thp=never" while the controller (and its baseline) called them "": they missed their
    keys. Absolute identities: the host's cells are the controller's owed cells, key for key."""
    from lab.fleet.run import _owed

    cfg = config.load(resources.images_dir().parent / "lab.yaml")
    req = RunRequest(arch="all", repeat=3, axis=("cache=cold,warm",))
    plan = make_plan(cfg, req)
    host_yaml = tmp_path / "lab.yaml"
    text = (resources.images_dir().parent / "lab.yaml").read_text().replace("transparent_hugepage: never", "transparent_hugepage: always")
    host_yaml.write_text(text.replace("recipe: images/tiny.yaml", f"recipe: {resources.images_dir() / 'tiny.yaml'}"))
    host_cfg = config.load(host_yaml)
    assert host_cfg.guest.transparent_hugepage == "always" != cfg.guest.transparent_hugepage
    parser, _ = build_parser()
    host_req = run_request(parser.parse_args(["run", "--arch", "arm64", *run_args(plan, req)]))
    host_plan = make_plan(host_cfg, host_req)
    host_keys = {(g.arch.name, v.name, size, host_plan.identity(g, p)) for g in host_plan.groups() for p in host_plan.run_points()
                 for v in host_plan.variants for size in host_plan.sizes}  # fmt: skip
    assert host_keys == set(_owed(plan, ("arm64",)))
    assert all(axes.values(k[3])["thp"] == "never" for k in host_keys)  # the controller's value, named, not the host's default
