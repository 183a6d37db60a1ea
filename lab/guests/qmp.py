"""A minimal QMP client: QEMU's JSON control socket, for pausing, saving and resuming a guest.

One command at a time, each under the caller's deadline; asynchronous events
are skipped. Every failure is a :class:`~lab.errors.BootError` (the callers
fall back to a cold boot on it).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.deadline import Deadline, check
from lab.errors import BootError

POLL = 0.02
SLICE = 0.25  # the longest a read blocks before checking cancellation and QEMU's liveness
FAILED = frozenset({"internal-error", "guest-panicked", "shutdown"})


def _alive() -> None:
    return None


class QMP:
    def __init__(self, path: Path, deadline: Deadline, alive: Callable[[], None] = _alive) -> None:
        """Connect to QEMU's QMP socket at ``path`` (retrying until QEMU has created it) and negotiate.

        ``alive`` raises (a :class:`BootError` with QEMU's exit status, stderr and console tail) once QEMU has
        exited: a QEMU that dies at once is reported as such within a poll, not after the whole deadline.
        """
        self.path = path
        self.alive = alive
        self._buf = b""
        self._id = 0  # every command carries an id, and only the reply with that id answers it
        while True:
            alive()
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError as exc:
                self.sock.close()
                if deadline.expired:
                    raise BootError(f"QMP socket {path}: {exc.strerror or exc}", "see QEMU's stderr log") from None
                deadline.pause(POLL)
        self._read(deadline)  # the greeting
        self.command("qmp_capabilities", deadline=deadline)

    def _read(self, deadline: Deadline) -> dict[str, Any]:
        while b"\n" not in self._buf:
            check()
            if deadline.expired:
                self.alive()
                raise BootError(f"QMP {self.path}: no answer in {deadline.seconds:.0f}s", "QEMU is hung; it is killed")
            self.sock.settimeout(max(0.01, min(SLICE, deadline.remaining)))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                self.alive()
                continue
            except OSError as exc:
                check()
                self.alive()
                raise BootError(f"QMP {self.path}: {exc}", "QEMU died; see its stderr log") from None
            if not chunk:
                check()
                self.alive()
                raise BootError(f"QMP {self.path}: QEMU closed the socket", "QEMU died; see its stderr log")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def command(self, name: str, deadline: Deadline, **arguments: Any) -> Any:
        """Run one command; its "return" value, or BootError with QEMU's error."""
        self._id += 1
        msg: dict[str, Any] = {"execute": name, "id": self._id}
        if arguments:
            msg["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            check()
            self.alive()
            raise BootError(f"QMP {name}: {exc}", "QEMU died; see its stderr log") from None
        while True:
            reply = self._read(deadline)
            if "event" in reply or reply.get("id") != self._id:  # events, and late replies to abandoned commands
                continue
            if "error" in reply:
                raise BootError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}", "see QEMU's stderr log")
            return reply.get("return")

    def status(self, deadline: Deadline) -> str:
        return str(self.command("query-status", deadline)["status"])

    def wait_status(self, wanted: set[str], deadline: Deadline, failed: frozenset[str] = FAILED) -> str:
        """Poll until the VM's run state is one of ``wanted``; BootError on a failed state or the deadline."""
        while True:
            state = self.status(deadline)
            if state in wanted:
                return state
            if state in failed:
                raise BootError(f"QMP: the guest is {state}", "see QEMU's stderr log")
            if deadline.expired:
                raise BootError(f"QMP: the guest is still {state} after {deadline.seconds:.0f}s", "QEMU is hung; it is killed")
            deadline.pause(POLL)

    def close(self) -> None:
        self.sock.close()
