"""The probe's own command line and honesty, on a native build run on this host (no fault numbers asserted:
those are measured in guests only)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lab import config
from lab.arches import ARCHES, host_can_kvm
from lab.payloads.build import PayloadStore
from lab.payloads.variants import variant

REPO = Path(__file__).resolve().parents[2]
NATIVE = next(a for a in ARCHES if host_can_kvm(a))


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return (
        PayloadStore(config.load(REPO / "lab.yaml"), root=tmp_path_factory.mktemp("payloads"))
        .ensure(NATIVE, variant("glibc-static"))
        .binary
    )


def run(probe: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(probe), *args], capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("bad", ["010x", "1M1", "", "0", "-1", "1.5M", "0x10", "99999999999999999999999"])
def test_byte_counts_are_strict(probe: Path, bad: str) -> None:
    """Regression (issue 10.17): strtoull(s, 0, 0) read 010 as 8 and 1M as 1."""
    proc = run(probe, "--size", bad)
    assert proc.returncode == 64 and f"--size {bad}: not a byte count" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(("text", "size"), [("010", 10), ("4096", 4096), ("64K", 65536), ("1M", 1 << 20)])
def test_the_reported_buffer_is_the_one_asked_for(probe: Path, text: str, size: int) -> None:
    out = json.loads(run(probe, "--size", text).stdout)
    assert out["facts"]["buffer_size"] == size


def test_reexec_reports_what_happened(probe: Path) -> None:
    """Regression (issue 10.17): an inherited LAB_PROBE_CHILD made a process launched directly report reexec true."""
    assert json.loads(run(probe, "--size", "4096", env={"LAB_PROBE_CHILD": "1"}).stdout)["mode"]["reexec"] is True  # it re-executed
    assert json.loads(run(probe, "--size", "4096", "--no-reexec", env={"LAB_PROBE_CHILD": "1"}).stdout)["mode"]["reexec"] is False


def test_a_failed_reexec_says_so(probe: Path) -> None:
    """Regression (issue 10.17): execv failure exited 127 with no message. Here /proc is not mounted, so /proc/self/exe is missing."""
    script = f"umount -l /proc && exec {probe} --size 4096"
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    if "umount" in proc.stderr or "unshare" in proc.stderr:
        pytest.skip(f"cannot hide /proc here: {proc.stderr.strip()}")
    assert proc.returncode == 127 and "fault-probe: re-exec of /proc/self/exe failed" in proc.stderr
