"""SSH to a running guest through Fabric: key-only, host key pinned, readiness under a deadline.

QEMU's user network accepts TCP before the guest listens, and a just-started
dropbear may drop the first connection ("Error reading SSH protocol banner");
:meth:`Guest.connect` therefore retries transport-level failures until its
deadline, but never retries an authentication or host-key failure.
"""

from __future__ import annotations

import base64
import io
import logging
import select
import shlex
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut
from invoke.runners import Result

from lab.deadline import Deadline, check
from lab.errors import GuestError
from lab.guests.keys import KeyPair

log = logging.getLogger(__name__)
HOST = "127.0.0.1"
LOST = "the SSH connection was lost (guest or QEMU gone?)"


@dataclass(frozen=True)
class Streamed:
    stdout: str
    stderr: str
    exited: int | None  # None: given up (see ``stalled``)
    stalled: str | None
    raw: bytes = b""  # stdout's bytes as they came (framed output is parsed from these)


class HostKeyRejected(GuestError):
    """The guest presented a host key other than the one pinned for it."""


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyRejected(
            f"{hostname} presented an unpinned {key.get_name()} host key ({key.fingerprint})",
            "something else is listening on that port, or the image is stale: rebuild with lab images build",
        )


class Guest:
    """One SSH session to a guest on ``127.0.0.1:port``. Close it with :meth:`close` (or ``with``)."""

    def __init__(self, name: str, port: int, client_key: KeyPair, host_key: KeyPair, command_timeout: float) -> None:
        self.name, self.port = name, port
        self.client_key, self.host_key = client_key, host_key
        self.command_timeout = command_timeout
        self.conn: Connection | None = None

    @property
    def host_alias(self) -> str:
        return f"[{HOST}]:{self.port}"

    def known_hosts_line(self) -> str:
        return f"{self.host_alias} {self.host_key.key_type} {self.host_key.key_base64}"

    def ssh_argv(self, known_hosts: Path) -> list[str]:
        """An OpenSSH command line that reaches this guest with the same pinning."""
        return [
            "ssh", "-p", str(self.port), "-i", str(self.client_key.private),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no", f"root@{HOST}",
        ]  # fmt: skip

    def _connection(self, deadline: Deadline) -> Connection:
        remaining = max(1.0, deadline.remaining)
        conn = Connection(
            HOST,
            user="root",
            port=self.port,
            config=Config(overrides={"load_ssh_configs": False}),
            connect_timeout=max(1, int(min(10.0, remaining))),
            connect_kwargs={
                "key_filename": [str(self.client_key.private)],
                "look_for_keys": False,
                "allow_agent": False,
                "banner_timeout": remaining,
                "auth_timeout": remaining,
            },
        )
        conn.client.set_missing_host_key_policy(_RejectUnknown())
        pinned = paramiko.PKey.from_type_string(self.host_key.key_type, base64.b64decode(self.host_key.key_base64))
        conn.client.get_host_keys().add(self.host_alias, self.host_key.key_type, pinned)
        return conn

    def connect(self, deadline: Deadline, alive: Callable[[], None] = lambda: None) -> float:
        """Open an authenticated session; returns seconds spent. Retries transport errors until ``deadline``.

        ``alive`` raises once the guest's QEMU has exited (retrying a dead guest's port is pointless), and a
        cancelled run (:func:`lab.deadline.cancel`) stops the retries at once with :class:`~lab.deadline.Cancelled`."""
        started = time.monotonic()
        attempt, last = 0, "no attempt"
        while True:
            attempt += 1
            check()
            conn = self._connection(deadline)
            try:
                conn.open()
                conn.client.get_transport().channel_timeout = self.command_timeout  # fabric's runs open channels too
                self.conn = conn
                log.debug("%s: SSH up after %d attempt(s)", self.name, attempt)
                return time.monotonic() - started
            except paramiko.BadHostKeyException as exc:
                conn.close()
                raise HostKeyRejected(
                    f"{self.name}: host key mismatch on {self.host_alias} (got {exc.key.fingerprint})",
                    "another process owns that port or the image is stale: rebuild with lab images build",
                ) from None
            except paramiko.AuthenticationException as exc:
                conn.close()
                raise GuestError(f"{self.name}: SSH authentication failed: {exc}", "rebuild the image (lab images build)") from None
            except HostKeyRejected:
                conn.close()
                raise
            except (paramiko.SSHException, EOFError, OSError) as exc:  # OSError covers refused, reset and timeouts
                conn.close()
                last = f"{type(exc).__name__}: {exc}"
                alive()
            if deadline.expired:
                raise GuestError(
                    f"{self.name}: no SSH session on {self.host_alias} after {deadline.seconds:.0f}s ({attempt} attempts; last: {last})",
                    "the guest is up but sshd does not answer: check the console log; raise timeouts.ssh on slow hosts",
                )
            deadline.pause(0.2)

    def _require(self) -> Connection:
        if self.conn is None:
            raise RuntimeError("Guest used before connect()")
        return self.conn

    def run(self, command: str, timeout: float | None = None, hide: bool = True, pty: bool = False, stdin: bytes = b"") -> Result:
        """Run ``command`` in the guest's shell (``stdin`` its input); a non-zero exit is returned, not raised.

        A hidden run is one SSH channel read until it ends (a few ms); a shown one (``hide=False``: ``lab exec``) or
        one with a terminal goes through Fabric, which relays the output as it comes."""
        limit = timeout or self.command_timeout
        timed_out = GuestError(f"{self.name}: command timed out after {limit:.0f}s: {command}", "raise timeouts.command or fix the command")
        failed = f"{self.name}: SSH failed while running {command!r}"
        if hide and not pty:
            started_chan = self._start(command, limit, stdin)
            if isinstance(started_chan, str):
                raise GuestError(f"{failed}: {started_chan}", "see the console log; the guest may have crashed")
            out, err, status, why = _drain(started_chan, limit)
            if status is None:
                raise timed_out if why == TIMED_OUT else GuestError(f"{failed}: {why}", "see the console log; the guest may have crashed")
            return Result(stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"), command=command, exited=status)
        started = time.monotonic()
        try:
            result: Result = self._require().run(
                command, hide=hide, warn=True, timeout=limit, pty=pty, in_stream=False if not pty else None
            )
        except CommandTimedOut:
            raise timed_out from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise GuestError(f"{failed}: {exc}", "see the console log; the guest may have crashed") from None
        # invoke raises CommandTimedOut only if its timer thread has finished by the time the closed channel ends the
        # wait; under load it may not have, and the run comes back with no exit status (-1). Past the limit, a run
        # without a status is the timeout, whichever thread won.
        if result.exited == -1 and time.monotonic() - started >= limit:
            raise timed_out
        return result

    def put_files(self, files: Sequence[tuple[str, bytes, int]], then: str = "", timeout: float | None = None) -> Result:
        """Ship ``files`` ((absolute path, bytes, mode)) in one round trip: a gzip'd tar on the stdin of one command
        that unpacks it at / (their directories made first), then runs ``then`` (``&&``). Never inside the command
        string, so their size is unbounded."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1, format=tarfile.USTAR_FORMAT) as tar:
            for path, data, mode in files:
                tar.addfile(_entry(path.lstrip("/"), mode, len(data)), io.BytesIO(data))
        dirs = sorted({str(Path(p).parent) for p, _, _ in files} - {"/"})
        command = (f"mkdir -p {shlex.join(dirs)} && " if dirs else "") + "tar -xzf - -C /" + (f" && {then}" if then else "")
        return self.run(command, timeout=timeout, stdin=buf.getvalue())

    def _start(self, command: str, seconds: float, stdin: bytes) -> paramiko.Channel | str:
        """A session running ``command`` with ``stdin`` sent, all within ``seconds``; or why not. A frozen guest never
        answers an exec request, and paramiko waits for that answer without a timeout: a timer closes the connection
        at ``seconds``, which ends every wait on it."""
        transport = self._require().client.get_transport()
        if transport is None or not transport.is_active():
            return LOST
        fired = threading.Event()

        def give_up() -> None:
            fired.set()
            transport.close()

        timer = threading.Timer(seconds, give_up)
        timer.daemon = True
        timer.start()
        try:
            try:
                chan: paramiko.Channel = transport.open_session(timeout=seconds)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                frozen = fired.is_set() or transport.is_active()
                return f"no session within {seconds:.0f}s (guest frozen?): {exc or type(exc).__name__}" if frozen else LOST
            try:
                chan.settimeout(seconds)  # a guest that stops reading its input is frozen too
                chan.exec_command(command)
                chan.sendall(stdin)
                chan.shutdown_write()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if fired.is_set():
                    return f"no answer within {seconds:.0f}s (guest frozen?)"
                return LOST if not transport.is_active() else f"the SSH session failed: {exc or type(exc).__name__}"
            return chan
        finally:
            timer.cancel()

    def stream(self, command: str, stall_seconds: float, progress: str, stdin: bytes = b"") -> Streamed:
        """Run ``command`` (``stdin`` its input), reading its output as it comes; give up when no line containing
        ``progress`` arrives for ``stall_seconds`` (a frozen guest), keeping everything read so far. Exit status
        None when given up."""
        chan = self._start(command, stall_seconds, stdin)
        if isinstance(chan, str):
            return Streamed("", "", None, chan)
        out, err, status, why = _drain(chan, stall_seconds, progress.encode())
        if why == TIMED_OUT:
            why = f"no progress for {stall_seconds:.0f}s (guest frozen?)"
        return Streamed(out.decode(errors="replace"), err.decode(errors="replace"), status, why or None, bytes(out))

    def put(self, local: Path, remote: str) -> None:
        """Upload over SFTP (the image ships sftp-server for dropbear)."""
        try:
            self._require().put(str(local), remote)
        except (paramiko.SSHException, OSError) as exc:
            raise GuestError(f"{self.name}: upload of {local} to {remote} failed: {exc}", "check free space in the guest") from None

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``remote`` over SFTP, the file's mode set before its contents arrive. How lab ships
        anything of unbounded size (scripts, seeds): never inside a command line, which the guest's SSH server caps
        (dropbear refuses commands over 9000 bytes)."""
        transport = self._require().client.get_transport()
        try:
            if transport is None or not transport.is_active():
                raise EOFError()
            sftp = self._require().sftp()
            sftp.get_channel().settimeout(self.command_timeout)  # a frozen guest must not hang the upload forever
            with sftp.open(remote, "wb") as f:
                f.chmod(mode)
                f.write(data)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if transport is None or not transport.is_active() or "connection dropped" in str(exc).lower():
                raise GuestError(f"{self.name}: {LOST} while writing {remote}", "see the console log") from None
            raise GuestError(
                f"{self.name}: writing {remote} failed: {exc or type(exc).__name__}", "check free space in the guest"
            ) from None

    def get(self, remote: str, local: Path) -> None:
        try:
            self._require().get(remote, str(local))
        except (paramiko.SSHException, OSError) as exc:
            raise GuestError(f"{self.name}: download of {remote} failed: {exc}", "check that the file exists in the guest") from None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


TIMED_OUT = "timed out"


def _entry(name: str, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.size, info.mtime = mode, size, int(time.time())
    return info


def _drain(chan: paramiko.Channel, seconds: float, progress: bytes = b"") -> tuple[bytearray, bytearray, int | None, str]:
    """Read ``chan`` until its command exits: (stdout, stderr, exit status, ""), or status None and why not. The
    ``seconds`` run from the start, or (with ``progress``) from the last output holding ``progress``."""
    out, err = bytearray(), bytearray()
    deadline = Deadline(seconds)
    seen = 0
    try:
        while True:
            ready, _, _ = select.select([chan], [], [], min(0.5, max(0.01, deadline.remaining)))
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if progress and (count := out.count(progress)) > seen:
                seen, deadline = count, Deadline(seconds)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                status = chan.recv_exit_status()  # -1: the channel closed without one (the guest or QEMU died)
                return (out, err, None, LOST) if status == -1 else (out, err, status, "")
            if deadline.expired:
                return out, err, None, TIMED_OUT
            if not ready and chan.closed:
                return out, err, None, LOST
    except (paramiko.SSHException, EOFError, OSError) as exc:
        return out, err, None, f"the SSH connection was lost ({exc})"
    finally:
        chan.close()
