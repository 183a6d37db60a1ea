"""The cache discipline on real payload builds (a sysroot from the mirror, a real compile): two processes, healing, leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import config
from lab.arches import ARCHES, host_can_kvm
from lab.deadline import Deadline
from lab.payloads.build import PayloadStore
from lab.payloads.variants import variant

REPO = Path(__file__).resolve().parents[2]
NATIVE = next(a for a in ARCHES if host_can_kvm(a))
BUILD_ONE = """
import json, logging, sys
from dataclasses import replace
from pathlib import Path
from lab import arches, config
from lab.payloads.build import PayloadStore
from lab.payloads.variants import variant
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
p = PayloadStore(config.load(sys.argv[1]), root=Path(sys.argv[2])).ensure(arches.get(sys.argv[3]), variant("glibc-static"))
print(json.dumps({"built": p.built, "digest": p.digest, "dir": str(p.dir)}))
"""


@pytest.fixture
def store(tmp_path: Path) -> PayloadStore:
    return PayloadStore(config.load(REPO / "lab.yaml"), root=tmp_path / "payloads")


def test_two_processes_on_a_cold_cache_build_once_and_share(store: PayloadStore) -> None:
    """Both wait on the entry lock (held here), then one builds and the other reuses its build."""
    name = store.entry_name(NATIVE, variant("glibc-static"))
    argv = [sys.executable, "-c", BUILD_ONE, str(REPO / "lab.yaml"), str(store.root), NATIVE.name]
    with store.cache.lock(name):
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        deadline = Deadline(60)
        for proc in procs:  # each says it is waiting, naming this process as the holder
            assert proc.stderr is not None
            line = ""
            while "waiting for the payload build lock" not in line and not deadline.expired:  # not the apt lock the two share
                line = proc.stderr.readline()
                assert line or proc.poll() is None, "builder ended before waiting"
            assert f"held by pid {os.getpid()}" in line
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(json.loads(out))
    assert sorted(o["built"] for o in outs) == [False, True]
    assert outs[0]["digest"] == outs[1]["digest"] and outs[0]["dir"] == outs[1]["dir"]
    assert [p.name for p in store.root.iterdir() if p.is_dir()] == [name]


def test_a_corrupt_build_json_is_listed_and_healed(store: PayloadStore) -> None:
    p = store.ensure(NATIVE, variant("glibc-static"))
    (p.dir / "build.json").write_text("{not json")
    [row] = store.cached()
    assert row["status"].startswith("corrupt: ") and "build.json unreadable" in row["status"]
    healed = store.ensure(NATIVE, variant("glibc-static"))
    assert healed.built and healed.digest == p.digest
    assert [r["status"] for r in store.cached()] == ["ok"]


def test_a_killed_builders_temp_dir_is_removed_by_the_next_build(store: PayloadStore) -> None:
    name = store.entry_name(NATIVE, variant("glibc-static"))
    stale = store.root / f".{name}-abandoned"
    stale.mkdir(parents=True)
    (stale / "half").write_bytes(b"x" * 100)
    store.ensure(NATIVE, variant("glibc-static"))
    assert not stale.exists()


def test_payloads_build_builds_labs_guest_programs_too(cli_config: Path) -> None:
    """The remedy for a missing or wrong-arch lab-runner names `lab payloads build --arch ARCH`: it must build it."""
    from tests.e2e.test_cli import lab

    done = lab(cli_config, "payloads", "build", "--arch", "riscv64", "--variant", "musl-static")
    assert done.returncode == 0, done.stderr
    built = {line.split()[1]: line.split()[-1] for line in done.stdout.splitlines()}
    assert set(built) == {"musl-static", "lab-runner", "lab-reseed"}
    for name, path in built.items():
        head = Path(path).read_bytes()[:20]
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 243, name  # EM_RISCV: the arch asked
