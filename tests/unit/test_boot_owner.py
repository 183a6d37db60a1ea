"""boot() as the owner of a guest, driven by the fake QEMU: early death, cancellation, no snapshot blamed.

Regression (issue 19.6): boot() connected to QMP before watching the console, and the QMP connect loop never
checked that QEMU was alive, so a QEMU that died at once cost the whole deadline and said only "QMP socket: refused".
"""

from __future__ import annotations

import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from lab import arches, config, deadline
from lab.errors import BootError
from lab.guests import boot as boot_mod
from lab.guests.emulator import HOST
from lab.guests.images import Image
from lab.guests.keys import KeyPair
from lab.guests.qemu import VM, VMSpec

FAKE = Path(__file__).with_name("fake_qemu.py")
REPO = Path(__file__).resolve().parents[2]


def fake_argv(spec: VMSpec) -> list[str]:
    argv = [sys.executable, str(FAKE), "-serial", f"file:{spec.console_log}"]
    return argv + (["-qmp", f"unix:{spec.qmp},server=on,wait=off"] if spec.qmp else [])


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[config.Config, Image]:
    monkeypatch.setattr(boot_mod, "qemu_argv", fake_argv)
    base = config.load(REPO / "lab.yaml")
    cfg = replace(base, results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", accel="tcg")
    image = Image(
        arches.get("x86_64"),
        "k" * 64,
        tmp_path / "image",
        {"kernel_release": "6.1-fake", "ram_disk": True},
        KeyPair(tmp_path / "k", "ssh-ed25519 AAAA"),
    )
    return cfg, image


def test_a_qemu_that_dies_at_once_is_reported_with_its_stderr_not_after_the_deadline(
    setup: tuple[config.Config, Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, image = setup
    monkeypatch.setenv("FAKE_QEMU_MODE", "die")
    slow = replace(cfg, timeouts=replace(cfg.timeouts, boot=3600.0))  # if death went unnoticed, this test would hang
    with pytest.raises(BootError) as caught, boot_mod.boot(slow, image, "tcg", snapshots=False, emulator=HOST):
        pass
    err = caught.value
    assert "QEMU exited with status 3" in err.message, err.message
    assert "Could not open kernel" in err.details and "console tail" in err.details


def test_cancellation_reaches_the_qmp_wait_of_a_hung_qemu(setup: tuple[config.Config, Image], monkeypatch: pytest.MonkeyPatch) -> None:
    """A QEMU that never opens its QMP socket (hang mode): cancel() ends the wait at once, as Cancelled, not a timeout."""
    cfg, image = setup
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    slow = replace(cfg, timeouts=replace(cfg.timeouts, boot=3600.0, shutdown=1.0))
    launched = threading.Event()
    real_launch = VM.launch

    def launch(vm: VM) -> None:
        real_launch(vm)
        launched.set()

    monkeypatch.setattr(VM, "launch", launch)
    outcome: list[BaseException] = []

    def worker() -> None:
        try:
            with boot_mod.boot(slow, image, "tcg", snapshots=False, emulator=HOST):
                pass
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert launched.wait(60)
        deadline.cancel()
        t.join(60)
        assert not t.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], deadline.Cancelled), outcome
        with pytest.raises(deadline.Cancelled):  # and a cancelled run starts no new guest
            VM(["true"], image.dir / "c.log", "X").launch()
    finally:
        deadline.reset()
