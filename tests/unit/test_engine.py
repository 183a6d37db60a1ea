"""The measuring engine on canned guest output: every run judged, mismatched cells refused, a frozen guest keeps what finished."""

from __future__ import annotations

import json
from pathlib import Path

from lab.guests.ssh import Streamed
from lab.measure import batch, engine

GOLDEN = json.loads((Path(__file__).with_name("golden") / "probe-arm64-glibc-dynamic.json").read_text())
SIZE = GOLDEN["facts"]["buffer_size"]


def block(key: str, stdout: str, status: int = 0) -> str:
    """One run's frame as lab-runner writes it (payloads/runner.c)."""
    return f"{batch.RUN}{key} {status} 0 0 {len(stdout.encode())} 0\n{stdout}\n{batch.END}{key}\n"


class FakeGuest:
    """Answers each round's batch with the blocks it is given, then (optionally) stalls."""

    name = "arm64"

    def __init__(self, rounds: list[tuple[str, str | None]]) -> None:
        self.rounds = rounds
        self.calls = 0
        self.files: dict[str, bytes] = {}

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        self.files[remote] = data

    def stream(self, command: str, stall_seconds: float, progress: str, stdin: bytes = b"") -> Streamed:
        assert len(command) < 100 and stdin.startswith(batch.MAGIC), "the round's jobs go as input, never in the command string"
        out, stalled = self.rounds[self.calls]
        self.calls += 1
        return Streamed(out, "", None if stalled else 0, stalled, out.encode())


def test_a_probe_that_measured_another_buffer_is_refused() -> None:
    """Regression (issue 10.17): the runner never checked facts.buffer_size against what it asked for."""
    wrong = json.dumps({**GOLDEN, "facts": {**GOLDEN["facts"], "buffer_size": SIZE // 2}})
    guest = FakeGuest([(block(f"v:{SIZE}:0:0", wrong), None)])
    cells = engine.measure(guest, {"v": "/p/v"}, (SIZE,), repeat=1, per_run_seconds=5)  # type: ignore[arg-type]
    failure = cells[("v", SIZE, 0)].failure
    assert failure is not None and failure.stage == "parse" and f"measured a {SIZE // 2}-byte buffer, not {SIZE}" in failure.message


def test_a_frozen_guest_keeps_finished_runs_and_stops() -> None:
    """Regression (issue 10.7): a frozen guest threw away the rounds that had finished."""
    good = json.dumps(GOLDEN)
    rounds = [
        (block(f"a:{SIZE}:0:0", good) + block(f"b:{SIZE}:0:0", good), None),
        (block(f"a:{SIZE}:0:1", good), "no progress for 40s (guest frozen or SSH lost)"),  # b never came back
        ("", None),
    ]
    guest = FakeGuest(rounds)
    cells = engine.measure(guest, {"a": "/p/a", "b": "/p/b"}, (SIZE,), repeat=3, per_run_seconds=30)  # type: ignore[arg-type]
    assert guest.calls == 2  # nothing more is tried on a frozen guest
    assert len(cells[("a", SIZE, 0)].results) == 2 and len(cells[("b", SIZE, 0)].results) == 1
    b = cells[("b", SIZE, 0)].failure
    assert b is not None and "guest stopped answering: no progress for 40s" in b.message
    a = cells[("a", SIZE, 0)].failure
    assert a is not None  # it did not get its third run either
    assert engine.stall_seconds(120) == 150 and engine.stall_seconds(5) == 15


def test_a_guest_that_never_opens_a_session_is_a_stall_not_a_hang() -> None:
    """Regression: a frozen guest never answered the channel open, and paramiko waited an hour (found by the frozen-guest test)."""
    from pathlib import Path

    import paramiko

    from lab.guests.keys import KeyPair
    from lab.guests.ssh import Guest

    class Frozen:
        def is_active(self) -> bool:
            return True

        def open_session(self, timeout: float | None = None) -> None:
            assert timeout is not None  # never wait unbounded
            raise paramiko.SSHException("Unable to open channel.")

    class Client:
        def get_transport(self) -> Frozen:
            return Frozen()

    class Conn:
        client = Client()

    g = Guest("arm64", 1, KeyPair(Path("/k"), "ssh-ed25519 AAAA"), KeyPair(Path("/h"), "ssh-ed25519 AAAA"), 5)
    g.conn = Conn()
    done = g.stream("true", 3, "@@")
    assert done.exited is None and done.stalled is not None and "no session within 3s (guest frozen?)" in done.stalled


def test_run_axes_become_guest_jobs() -> None:
    """Issue 11: THP is written in the run's process before the exec when the run varies it; cache and order are
    probe flags; tunables the environment."""
    point = {"thp": "always", "cache": "warm", "order": "seq", "tunables": "glibc.malloc.mmap_threshold=65536"}
    assert engine.point_job("k", "/p/v", 8 << 20, 1 << 20, point, set_thp=True) == batch.Job(
        "k",
        ("/p/v", "--size", "8388608", "--file", "/scratch/probe.dat", "--order", "seq", "--file-bytes", "1048576", "--warm"),
        (("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536"),),
        (("/sys/kernel/mm/transparent_hugepage/enabled", "always"),),
    )
    plain = {"thp": "never", "cache": "cold", "order": "random", "tunables": ""}
    assert engine.point_job("k", "/p/v", 4096, 0, plain, set_thp=False) == batch.Job(
        "k", ("/p/v", "--size", "4096", "--file", "/scratch/probe.dat", "--order", "random")
    )


def test_a_cold_run_that_found_the_file_cached_is_an_error_not_a_sample() -> None:
    """Issue 21: on the virtio disk a run once reported resident_before 1 and file_read 1 minor + 255 major."""
    partly = {**GOLDEN, "file": {**GOLDEN["file"], "resident_before": 1}}
    guest = FakeGuest([(block(f"v:{SIZE}:0:0", json.dumps(partly)), None)])
    cells = engine.measure(guest, {"v": "/p/v"}, (SIZE,), repeat=1, per_run_seconds=5)  # type: ignore[arg-type]
    failure = cells[("v", SIZE, 0)].failure
    assert failure is not None and cells[("v", SIZE, 0)].results == []
    assert failure.stage == "payload" and "a cold run started warm: 1 of the test file's" in failure.message
    warm = FakeGuest([(block(f"v:{SIZE}:0:0", json.dumps(partly)), None)])
    ok = engine.measure(warm, {"v": "/p/v"}, (SIZE,), 1, 5, points=({"cache": "warm"},))  # type: ignore[arg-type]
    assert ok[("v", SIZE, 0)].failure is None  # a warm run finds the file cached by design


def test_a_runner_that_does_not_run_fails_every_cell_with_a_remedy() -> None:
    """Issue 21: a runner missing or built for another arch: one line naming it and the remedy, no sample."""

    class Broken(FakeGuest):
        def stream(self, command: str, stall_seconds: float, progress: str, stdin: bytes = b"") -> Streamed:
            self.calls += 1
            return Streamed("", "sh: /tmp/lab-payloads/lab-runner: Exec format error", 126, None)

    guest = Broken([])
    cells = engine.measure(guest, {"a": "/p/a", "b": "/p/b"}, (SIZE,), repeat=3, per_run_seconds=5)  # type: ignore[arg-type]
    assert guest.calls == 1
    for cell in cells.values():
        assert cell.results == [] and cell.failure is not None and cell.failure.stage == "payload"
        assert "the guest runner /tmp/lab-payloads/lab-runner failed (exit status 126: sh: " in cell.failure.message
        assert "lab payloads build --arch arm64" in cell.failure.message


def test_a_channel_that_closes_without_an_exit_status_is_a_lost_guest_not_a_failed_runner() -> None:
    """Regression (issue 21, found by test_qemu_killed_mid_run_errors_that_arch_only): QEMU killed mid-round closed
    the channel, paramiko reported exit status -1, and every cell read "the guest runner failed (exit status -1)"."""
    import os

    from lab.guests import ssh

    class Closed:
        def __init__(self) -> None:
            self.r, self.w = os.pipe()
            os.write(self.w, b"x")  # readable: select returns at once
            self.closed = True

        def fileno(self) -> int:
            return self.r

        def recv_ready(self) -> bool:
            return False

        recv_stderr_ready = recv_ready

        def exit_status_ready(self) -> bool:
            return True

        def recv_exit_status(self) -> int:
            return -1

        def close(self) -> None:
            os.close(self.r)
            os.close(self.w)

    _, _, status, why = ssh._drain(Closed(), 5)  # type: ignore[arg-type]
    assert (status, why) == (None, ssh.LOST)
    assert engine.runner_failed(Streamed("", "", -1, None)) is None
    assert engine.runner_failed(Streamed("", "exec format error", 126, None)) is not None


def test_a_guest_that_freezes_after_its_session_opens_is_a_stall_not_a_hang() -> None:
    """Regression (issue 21, found by the frozen-guest test under CPU hogs): paramiko waits for the answer to an exec
    request without a timeout, and a guest SIGSTOPped between the session's opening and that answer hung lab."""
    import threading

    from lab.guests.keys import KeyPair
    from lab.guests.ssh import Guest

    class Transport:
        def __init__(self) -> None:
            self.closed = threading.Event()

        def is_active(self) -> bool:
            return not self.closed.is_set()

        def open_session(self, timeout: float | None = None) -> object:
            transport = self

            class Chan:
                def settimeout(self, seconds: float) -> None:
                    pass

                def exec_command(self, command: str) -> None:
                    transport.closed.wait()  # the answer never comes; only closing the connection ends the wait
                    raise EOFError()

            return Chan()

        def close(self) -> None:
            self.closed.set()

    class Client:
        transport = Transport()

        def get_transport(self) -> Transport:
            return self.transport

    class Conn:
        client = Client()

    g = Guest("arm64", 1, KeyPair(Path("/k"), "ssh-ed25519 AAAA"), KeyPair(Path("/h"), "ssh-ed25519 AAAA"), 5)
    g.conn = Conn()
    done = g.stream("true", 1, "@@", b"jobs")
    assert done.exited is None and done.stalled == "no answer within 1s (guest frozen?)"
