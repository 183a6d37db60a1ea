"""The VM owner driven by a fake QEMU: ready, early death, hang, init failure, process-group kill."""

import os
import sys
import time
from pathlib import Path

import pytest

from lab.deadline import Deadline
from lab.errors import BootError
from lab.guests.qemu import VM

FAKE = Path(__file__).with_name("fake_qemu.py")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def make_vm(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch, shutdown: float = 2.0) -> VM:
    monkeypatch.setenv("FAKE_QEMU_MODE", mode)
    monkeypatch.setenv("FAKE_QEMU_PIDS", str(tmp_path / "pids"))
    console = tmp_path / "console.log"
    return VM([sys.executable, str(FAKE), "-serial", f"file:{console}"], console, "LAB-READY", "LAB-INIT-FAILED", shutdown, "fake")


def pids(tmp_path: Path) -> list[int]:
    return [int(p) for p in (tmp_path / "pids").read_text().split()]


def test_ready_then_polite_shutdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with make_vm(tmp_path, "boot", monkeypatch) as vm:
        assert vm.wait_ready(Deadline(10)) == "LAB-READY 6.1-fake fake64"
        assert vm.returncode is None
        pid = vm.pid
    assert pid is not None and not alive(pid)
    assert vm.returncode is not None


def test_early_death_is_reported_within_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = make_vm(tmp_path, "die", monkeypatch)
    with vm, pytest.raises(BootError) as err:
        vm.wait_ready(Deadline(30))
    assert time.monotonic() - vm.launched_at < 1.5  # dies at once; found by polling, not by the 30 s deadline
    e = err.value
    assert "QEMU exited with status 3" in e.message
    assert "command: " in e.details and str(FAKE) in e.details
    assert "Could not open kernel" in e.details and "Booting..." in e.details
    assert vm.console_log in e.logs and vm.stderr_log in e.logs


def test_hang_hits_deadline_and_is_killed_despite_ignoring_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = make_vm(tmp_path, "hang", monkeypatch, shutdown=0.5)
    with pytest.raises(BootError, match="not ready after 1s"), vm:
        vm.wait_ready(Deadline(1))
    assert vm.returncode == -9  # SIGTERM was ignored, SIGKILL was not
    assert not any(alive(p) for p in pids(tmp_path))


def test_init_failure_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with make_vm(tmp_path, "fail", monkeypatch) as vm, pytest.raises(BootError, match="guest init failed: LAB-INIT-FAILED cannot mount"):
        vm.wait_ready(Deadline(10))


def test_process_group_dies_with_the_vm_even_on_exceptions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match="boom"), make_vm(tmp_path, "spawn", monkeypatch) as vm:
        vm.wait_ready(Deadline(10))
        assert len(pids(tmp_path)) == 2
        raise RuntimeError("boom")
    deadline = Deadline(5)
    while any(alive(p) for p in pids(tmp_path)) and not deadline.expired:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids(tmp_path))


def test_keyboard_interrupt_still_shuts_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyboardInterrupt), make_vm(tmp_path, "boot", monkeypatch) as vm:
        raise KeyboardInterrupt
    assert vm.pid is not None and not alive(vm.pid)


def test_missing_binary_is_an_infra_error(tmp_path: Path) -> None:
    vm = VM(["/nonexistent/qemu-system-x"], tmp_path / "c.log", "READY")
    with pytest.raises(Exception, match="not found"):
        vm.launch()
    vm.shutdown()  # nothing to do, must not raise


def test_qemu_dies_with_a_sigkilled_owner_through_the_exec_wrapper(tmp_path: Path) -> None:
    """No preexec_fn (unsafe with threads): setpriv sets the parent-death signal, then execs QEMU itself."""
    from lab.guests.qemu import launch_argv

    assert launch_argv(["qemu-system-x86_64", "-m", "512"]) == ["setpriv", "--pdeathsig", "KILL", "--", "qemu-system-x86_64", "-m", "512"]
    console = tmp_path / "console.log"
    owner = (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from lab.guests.qemu import VM; from lab.deadline import Deadline;"
        f"vm = VM([sys.executable, {str(FAKE)!r}, '-serial', 'file:{console}'], __import__('pathlib').Path({str(console)!r}), 'LAB-READY');"
        "vm.launch(); vm.wait_ready(Deadline(10)); print(vm.pid, flush=True); time.sleep(60)"
    )
    import subprocess

    env = dict(os.environ, FAKE_QEMU_MODE="boot", FAKE_QEMU_PIDS=str(tmp_path / "pids"))
    proc = subprocess.Popen(
        [sys.executable, "-c", owner, str(Path(__file__).resolve().parents[2])], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    qemu = int(proc.stdout.readline())
    assert qemu == pids(tmp_path)[0]  # the wrapper exec'd QEMU: same process, no intermediate
    assert Path(f"/proc/{qemu}/cmdline").read_text().split("\0")[1] == str(FAKE)
    proc.kill()
    proc.wait()
    deadline = Deadline(5)
    while alive(qemu) and not deadline.expired:
        time.sleep(0.05)
    assert not alive(qemu)
