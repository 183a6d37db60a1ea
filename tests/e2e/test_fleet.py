"""Issue 14, for real: two lab hosts on this machine (an sshd each on 127.0.0.2 and 127.0.0.3, each with its own
directory for lab's venv, cache, results and units), provisioned by the lab role through ansible-playbook, the
matrix run across them, merged into the controller's store; then one host dies mid-run.

Each host's cache starts as hard links of the session's warm cache (images, payloads, snapshots), so the test
measures the fleet, not three image builds; everything a host writes goes to its own directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import arches, config
from lab.guests import qemu_store
from lab.results.store import Store
from tests.e2e.conftest import REPO, qemu_processes
from tests.e2e.fleet_hosts import LoopbackHost, free_port, inventory

HOSTS = {"hosta": "127.0.0.2", "hostb": "127.0.0.3"}


def seed_cache(source: Path, target: Path) -> None:
    """Hard links of ``source``'s files (lock files and the controller's fleet wheels excluded)."""
    for dirpath, _, files in os.walk(source):
        rel = Path(dirpath).relative_to(source)
        if rel.parts[:1] == ("fleet",):
            continue
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if not name.endswith(".lock"):
                os.link(Path(dirpath) / name, target / rel / name)


def lab(conf: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", "--config", str(conf), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fleet(
    cfg: config.Config, images: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path, dict[str, LoopbackHost]]]:
    """(controller lab.yaml, inventory, hosts), provisioned once."""
    d = tmp_path_factory.mktemp("fleet")
    key = d / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    hosts = {name: LoopbackHost(name, addr, free_port(addr), d / name) for name, addr in HOSTS.items()}
    for h in hosts.values():
        seed_cache(cfg.cache_dir, h.root / "cache")
        h.start(key.with_suffix(".pub"))
    inv = inventory(
        d / "inventory.yml",
        list(hosts.values()),
        key,
        d / "known_hosts",
        groups={"kvm_x86_64": ["hosta"], "tcg": ["hostb"]},  # hosta is the x86_64 KVM host: x86_64 must go there
        per_host={
            "hosta": {"lab_arches": ["x86_64", "riscv64"], "lab_accel": "tcg"},  # KVM hangs on this machine: TCG
            "hostb": {"lab_arches": ["arm64", "riscv64"], "lab_accel": "tcg"},
        },
    )
    raw = yaml.safe_load((REPO / "lab.yaml").read_text())
    raw["recipe"] = str(REPO / "images" / "tiny.yaml")
    raw["paths"] = {"cache": str(cfg.cache_dir), "results": str(d / "controller")}
    conf = d / "lab.yaml"
    conf.write_text(yaml.safe_dump(raw))
    try:
        yield conf, inv, hosts
    finally:
        for h in hosts.values():
            h.stop()


def test_the_role_provisions_every_host_and_a_second_provisioning_changes_nothing(
    fleet: tuple[Path, Path, dict[str, LoopbackHost]],
) -> None:
    conf, inv, hosts = fleet
    first = lab(conf, "fleet", "provision", "-i", str(inv), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    assert {h: o["failures"] + o["unreachable"] for h, o in json.loads(first.stdout)["hosts"].items()} == {"hosta": 0, "hostb": 0}
    second = lab(conf, "fleet", "provision", "-i", str(inv), "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    assert {h: o["changed"] for h, o in json.loads(second.stdout)["hosts"].items()} == {"hosta": 0, "hostb": 0}
    for name, h in hosts.items():
        rendered = yaml.safe_load((h.root / "lab" / "lab.yaml").read_text())
        assert rendered["host"] == name and rendered["paths"]["cache"] == str(h.root / "cache")
        own = qemu_store.ensure(config.load(conf))  # every host runs the controller's QEMU: its suite and package version
        assert rendered["qemu"] == {"from": own.origin, "version": own.package_version}
        version = subprocess.run([str(h.root / "lab" / "venv" / "bin" / "lab"), "--version"], capture_output=True, text=True, check=True)
        assert version.stdout.split()[-1] == __import__("lab").__version__  # the controller's version, from its wheel
        # regression: an installed wheel's lab looked for "MultiplexedPath('…/lab/_images')/tiny.yaml"
        where = "from lab import resources as r; print(r.images_dir(), r.payloads_dir(), r.ansible_dir(), sep='\\n')"
        found = subprocess.run(
            [str(h.root / "lab" / "venv" / "bin" / "python"), "-c", where], capture_output=True, text=True, check=True, cwd="/"
        )
        images, payloads, playbooks = (Path(p) for p in found.stdout.split("\n")[:3])
        assert (images / "tiny.yaml").is_file() and (payloads / "fault_probe.c").is_file() and (playbooks / "fleet-run.yml").is_file()
        assert "site-packages" in str(images)
        units = sorted(str(p) for p in (h.root / "systemd").iterdir())
        assert [Path(u).name for u in units] == ["lab-nightly-failure.service", "lab-nightly.service", "lab-nightly.timer"]
        verify = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr


def merged_cells(conf: Path, run_id: str) -> dict[tuple[str, str], tuple[str, dict[str, tuple[list[int], list[int]]]]]:
    with Store(Path(yaml.safe_load(conf.read_text())["paths"]["results"]) / "lab.sqlite", readonly=True) as s:
        return {(c.arch, c.variant): (c.host, stages) for c, stages in s.measured(run_id)}


@pytest.fixture(scope="module")
def merged(fleet: tuple[Path, Path, dict[str, LoopbackHost]]) -> dict[str, object]:
    """One fleet run of the whole matrix (provisioning first: idempotent, so it costs a no-op when already done)."""
    conf, inv, _ = fleet
    provisioned = lab(conf, "fleet", "provision", "-i", str(inv))
    assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
    ran = lab(conf, "fleet", "run", "-i", str(inv), "--repeat", "3", "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary: dict[str, object] = json.loads(ran.stdout)
    return summary


def test_the_matrix_runs_across_the_hosts_into_one_merged_run(
    fleet: tuple[Path, Path, dict[str, LoopbackHost]], merged: dict[str, object]
) -> None:
    conf, _, _ = fleet
    summary = merged
    run_id = str(summary["run_id"])
    cells = merged_cells(conf, run_id)
    assert len(cells) == 12
    hosts = {arch: {h for (a, _), (h, _) in cells.items() if a == arch} for arch in ("x86_64", "arm64", "riscv64")}
    assert hosts == {"x86_64": {"hosta"}, "arm64": {"hostb"}, "riscv64": {"hosta"}}  # KVM host first, then the less loaded
    for (arch, variant), (_, stages) in cells.items():
        minor = stages["touch1"][0]
        pages = (1 << 20) // arches.get(arch).flavours[0].bytes  # the 1 MiB buffer's (and file's) pages
        # one fault per page of the 1 MiB buffer (malloc itself may already have touched the first or last)
        assert len(minor) == 3 and all(pages - 1 <= m <= pages + 1 for m in minor), (arch, variant, minor)
        assert stages["file_read"][1] == [pages] * 3, (arch, variant)  # every page of the 1 MiB read is a major fault
        assert 5 <= min(stages["entry"][0]) <= 60, (arch, variant)
    report = (Path(str(summary["run_dir"])) / "report.html").read_text()
    assert "hosta" in report and "hostb" in report
    runs = json.loads(lab(conf, "runs", "list", "--json").stdout)
    assert sorted(r["cells"] for r in runs if r["id"] != run_id)[-2:] == [4, 8]  # each host's own run, imported
    saved = lab(conf, "baseline", "save", "fleet-merged", "--run", run_id)
    assert saved.returncode == 0, saved.stderr
    same = lab(conf, "compare", run_id, "--baseline", "fleet-merged")
    assert same.returncode == 0, same.stdout + same.stderr  # a fleet run against its own baseline: nothing changed


def test_a_host_that_dies_mid_run_leaves_its_cells_missing_and_the_others_kept(
    fleet: tuple[Path, Path, dict[str, LoopbackHost]], merged: dict[str, object]
) -> None:
    conf, inv, hosts = fleet
    saved = lab(conf, "baseline", "save", "fleet", "--run", str(merged["run_id"]))
    assert saved.returncode == 0, saved.stderr
    nightly = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab",
            "--config",
            str(conf),
            "fleet",
            "nightly",
            "-i",
            str(inv),
            "--baseline",
            "fleet",
            "--repeat",
            "3",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    hostb = hosts["hostb"]
    deadline = time.monotonic() + 120
    while not qemu_processes(hostb.root / "cache"):  # hostb's lab run has a guest up: cut the host off now
        assert time.monotonic() < deadline and nightly.poll() is None, "hostb never booted a guest"
        time.sleep(0.2)
    hostb.stop()
    out, err = nightly.communicate(timeout=600)
    assert nightly.returncode == 2, out + err
    doc = json.loads(out)
    cells = merged_cells(conf, doc["run"]["run_id"])
    assert {h for h, _ in cells.values()} == {"hosta"} and len(cells) == 8  # hosta's x86_64 and riscv64, all kept
    with Store(Path(yaml.safe_load(conf.read_text())["paths"]["results"]) / "lab.sqlite", readonly=True) as s:
        errors = s.errors(doc["run"]["run_id"])
    assert {(e.arch, e.stage, e.host) for e in errors} == {("arm64", "host", "hostb")} and len(errors) == 4
    assert all("hostb" in e.message for e in errors)
    verdicts = {f["verdict"] for f in doc["comparison"]["findings"] if f["cell"].startswith("arm64")}
    assert verdicts == {"missing"}
    # the controller's history site, from the merged store: the fleet run is one run there, its host runs part of it
    with Store(Path(yaml.safe_load(conf.read_text())["paths"]["results"]) / "lab.sqlite", readonly=True) as s:
        parts = [r.id for r in s.runs() if r.part_of == doc["run"]["run_id"]]
    index = (Path(doc["site"]) / "index.html").read_text()
    assert f'href="runs/{doc["run"]["run_id"]}.html"' in index and parts and not any(f"runs/{p}.html" in index for p in parts)
    assert "hosta" in (Path(doc["site"]) / "runs" / f"{doc['run']['run_id']}.html").read_text()
    deadline = time.monotonic() + 180  # the cut-off host's own lab run finishes and shuts its guests down
    while qemu_processes(hostb.root / "cache") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not qemu_processes(hostb.root / "cache")
