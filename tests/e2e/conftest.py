"""End-to-end fixtures: real images, real QEMU guests for every arch, real SSH.

Every test here is marked ``e2e``. Images come from the lab's normal cache
(built on first use from Debian's packages); run directories go to a temp dir.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import arches, config
from lab.guests import boot as boot_mod
from lab.guests import emulator, qemu_store
from lab.guests.boot import Booted
from lab.guests.images import Image, ImageStore
from lab.payloads.build import RUNNER, guest_tool, reseed_helper

REPO = Path(__file__).resolve().parents[2]
# The arches the heavy truth tests (suites, kernels, knobs, QEMU builds, scratch devices) run on: --arch all's.
# Every other row gets a smoke, a measured and a traced run of every variant (tests/e2e/test_arches.py).
CORE = tuple(arches.select(arches.ALL))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath) or "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def qemu_processes(cache_dir: Path) -> list[tuple[int, str]]:
    """Live QEMU processes booting images from ``cache_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        # argv[0] is the binary, or lab's own QEMU's loader with the binary a few words on (lab.guests.emulator)
        binary = next((i for i, a in enumerate(argv[:4]) if b"qemu-system-" in a), None)
        if state != "Z" and binary is not None and str(cache_dir).encode() in b" ".join(argv):
            found.append((int(entry.name), b" ".join(argv[binary:]).decode(errors="replace")[:200]))  # from the binary on
    return found


@pytest.fixture(scope="session")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> config.Config:
    base = config.load(REPO / "lab.yaml")
    return replace(base, results_dir=tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="session")
def store(cfg: config.Config) -> ImageStore:
    return ImageStore(cfg)


@pytest.fixture(scope="session")
def images(store: ImageStore) -> dict[str, Image]:
    return {a.name: store.ensure(a) for a in arches.ARCHES}


@pytest.fixture(scope="session")
def cli_config(cfg: config.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lab.yaml for CLI subprocesses: the repo's settings, this session's cache and results dirs."""
    raw = yaml.safe_load((REPO / "lab.yaml").read_text())
    raw["recipe"] = str(REPO / "images" / "tiny.yaml")
    raw["paths"] = {"cache": str(cfg.cache_dir), "results": str(cfg.results_dir)}
    path = tmp_path_factory.mktemp("config") / "lab.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session", autouse=True)
def no_qemu_left_behind(cfg: config.Config) -> Iterator[None]:
    before = {pid for pid, _ in qemu_processes(cfg.cache_dir)}
    yield
    leftovers = [p for p in qemu_processes(cfg.cache_dir) if p[0] not in before]
    assert not leftovers, f"QEMU processes outlived the tests: {leftovers}"


def interruptible() -> None:
    """preexec_fn for a child the test will Ctrl-C: SIGINT back to its default. A suite started in the background
    by a non-interactive shell (`./test.sh &`) inherits SIGINT ignored, and so would every lab it starts: Python
    then installs no KeyboardInterrupt handler and the test's SIGINT does nothing (the Ctrl-C tests hung)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_lab(cli_config: Path, *argv: str, until: str) -> subprocess.Popen[str]:
    """Start ``lab`` in the background and return once a progress line containing ``until`` was printed."""
    argv_ = [sys.executable, "-m", "lab", "--config", str(cli_config), *argv]
    proc = subprocess.Popen(argv_, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if until in line:
            return proc
    raise AssertionError(f"lab ended before printing {until!r}: {''.join(seen[-20:])}")


def snapshots_work(cfg: config.Config, arch: arches.Arch) -> bool:
    """Whether lab's configured QEMU restores guests of ``arch`` (a table fact: Arch.snapshots_since)."""
    return emulator.snapshots_work(qemu_store.ensure(cfg), arch)


def no_snapshots(arch: arches.Arch) -> str:
    return f"cold ({arch.no_snapshots})"


def boot(cfg: config.Config, image: Image, accel: str | None = None, **kwargs: Any) -> AbstractContextManager[Booted]:
    """lab.guests.boot.boot as lab's commands call it: with the arch's reseed helper, so snapshots restore."""
    return boot_mod.boot(cfg, image, accel, reseed=reseed_helper(cfg, image.arch), **kwargs)


def runner(cfg: config.Config, arch: str) -> Path:
    """The arch's lab-runner (payloads/runner.c), as lab run uploads it with the payloads."""
    return guest_tool(cfg, arches.get(arch), RUNNER)
