"""The measuring engine on canned guest output: every run judged, mismatched cells refused, a frozen guest keeps what finished."""

from __future__ import annotations

import json
from pathlib import Path

from lab.guests.ssh import Streamed
from lab.measure import batch, engine

GOLDEN = json.loads((Path(__file__).with_name("golden") / "probe-arm64-glibc-dynamic.json").read_text())
SIZE = GOLDEN["facts"]["buffer_size"]


def block(key: str, stdout: str, status: int = 0) -> str:
    return f"{batch.MARK}-BEGIN {key}\n{stdout}\n{batch.MARK}-STDERR\n\n{batch.MARK}-END {status} 0 0\n"


class FakeGuest:
    """Answers each round's batch with the blocks it is given, then (optionally) stalls."""

    name = "arm64"

    def __init__(self, rounds: list[tuple[str, str | None]]) -> None:
        self.rounds = rounds
        self.calls = 0
        self.files: dict[str, bytes] = {}

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        self.files[remote] = data

    def stream(self, command: str, stall_seconds: float, progress: str) -> Streamed:
        assert len(command) < 100, "the round's script goes as a file, never in the command string"
        out, stalled = self.rounds[self.calls]
        self.calls += 1
        return Streamed(out, "", None if stalled else 0, stalled)


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


def test_run_axes_become_guest_commands() -> None:
    """Issue 11: THP is set in the guest before each run when the run varies it; cache and order are probe flags; tunables env."""
    point = {"thp": "always", "cache": "warm", "order": "seq", "tunables": "glibc.malloc.mmap_threshold=65536"}
    assert engine.point_command("/p/v", 8 << 20, 1 << 20, point, set_thp=True) == (
        "echo always > /sys/kernel/mm/transparent_hugepage/enabled && GLIBC_TUNABLES=glibc.malloc.mmap_threshold=65536 "
        "exec /p/v --size 8388608 --file /scratch/probe.dat --order seq --file-bytes 1048576 --warm"
    )
    plain = {"thp": "never", "cache": "cold", "order": "random", "tunables": ""}
    assert engine.point_command("/p/v", 4096, 0, plain, set_thp=False) == "exec /p/v --size 4096 --file /scratch/probe.dat --order random"
