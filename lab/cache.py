"""Content-addressed cache entries, one discipline for images, sysroots and payloads.

An entry is a directory named by a hash of its inputs. :meth:`BuildCache.ensure`
guarantees, for one entry name:

1. one builder at a time: an exclusive lock beside the entry (``.NAME.lock``),
   waited for under a deadline that names the holder's PID;
2. reuse only after verification (the caller's ``verify`` checks digests); a
   corrupt entry is removed and rebuilt (healed);
3. builds happen in a fresh temp directory beside the entry and are renamed into
   place only when the build returns; a failed or interrupted build leaves no
   entry, and temp directories left by a killed builder are removed by the next
   one (it holds the lock, so nobody else is using them).

A second process asking for an entry that is being built waits, then reuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.deadline import Deadline
from lab.errors import CacheError, InfraError
from lab.files import sha256_file

log = logging.getLogger(__name__)
POLL_SECONDS = 0.1


@contextmanager
def file_lock(path: Path, what: str, seconds: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; wait at most ``seconds``, saying who holds it.

    The holder writes its PID into the file, so a waiter can name it. The lock dies with
    its process (a SIGKILLed holder frees it at once); a suspended one (Ctrl-Z) does not.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InfraError(f"cannot create {path}: {exc.strerror}", "check paths.cache (free space, permissions)") from None
    try:
        deadline: Deadline | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if deadline is None:
                    deadline = Deadline(seconds)
                    log.info("waiting for %s (held by pid %s)", what, holder)
                if deadline.expired:
                    raise InfraError(
                        f"{what} is still held by pid {holder} after {seconds:.0f}s ({path})",
                        f"wait for that lab command to finish or stop it (kill {holder}); a suspended one (Ctrl-Z) holds it forever",
                    ) from None
                deadline.pause(POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Entry:
    path: Path
    built: bool  # False: an existing, verified entry was reused


class BuildCache:
    """Entries under ``root``; ``lock_seconds`` bounds the wait for another builder."""

    def __init__(self, root: Path, lock_seconds: float, kind: str, mode: int = 0o755) -> None:
        """``mode`` is each entry directory's: 0o700 where an entry holds key material."""
        self.root, self.lock_seconds, self.kind, self.mode = root, lock_seconds, kind, mode

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.root / f".{name}.lock", f"the {self.kind} build lock of {name}", self.lock_seconds)

    def ensure(self, name: str, build: Callable[[Path], None], verify: Callable[[Path], str | None]) -> Entry:
        """The verified entry ``name``, built by ``build(work_dir)`` if missing or corrupt."""
        final = self.root / name
        with self.lock(name):
            return self._ensure_locked(name, final, build, verify)

    def _ensure_locked(self, name: str, final: Path, build: Callable[[Path], None], verify: Callable[[Path], str | None]) -> Entry:
        if final.exists():
            problem = verify(final)
            if problem is None:
                return Entry(final, built=False)
            log.warning("%s %s is corrupt (%s): rebuilding", self.kind, name, problem)
            shutil.rmtree(final)
        self.sweep(own=name)
        try:
            with build_dir(final, self.mode) as work:
                build(work)
        except OSError as exc:  # a full disk, or the cache removed under us: one line, nothing half-built left
            where = f" ({exc.filename})" if exc.filename else ""
            raise InfraError(
                f"building {self.kind} {name} failed: {exc.strerror or exc}{where}",
                f"free disk space in {self.root} and check it still exists",
            ) from None
        return Entry(final, built=True)

    def sweep(self, own: str | None = None) -> list[Path]:
        """Remove temp build directories whose builder is gone (its entry lock is free): a SIGKILLed build's leftovers.

        ``own`` is the entry whose lock the caller holds and is not building yet: its temp directories are
        leftovers too. Any other busy lock is a live build, in another process or another thread of this one."""
        removed = []
        for tmp in self.root.glob(".*-*"):
            if not tmp.is_dir():
                continue
            name = tmp.name[1:].rsplit("-", 1)[0]
            fd = os.open(self.root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if name != own:
                        continue  # a live builder's work in progress
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
            finally:
                os.close(fd)  # closing our own descriptor releases only a lock taken through it
        return removed

    def entries(self) -> list[Path]:
        """Every entry directory (temp and lock files excluded)."""
        if not self.root.exists():
            return []
        return sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))


@contextmanager
def build_dir(final: Path, mode: int = 0o755) -> Iterator[Path]:
    """A fresh temp directory beside ``final``: renamed to ``final`` when the body succeeds, removed when it fails."""
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield work
        os.chmod(work, mode)
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def read_record(path: Path, remedy: str) -> dict[str, Any]:
    """An entry's JSON record (manifest, build facts); unreadable or not an object is a :class:`CacheError`."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path} unreadable: {exc}", remedy) from None
    if not isinstance(data, dict):
        raise CacheError(f"{path} is not an object", remedy)
    return data


def check_files(d: Path, recorded: Mapping[str, Mapping[str, Any]]) -> str | None:
    """None if every named file in ``d`` matches its recorded ``sha256`` (and ``size``, when recorded), else what is wrong."""
    for name, want in recorded.items():
        path = d / name
        if not path.is_file():
            return f"{name} is missing"
        if ("size" in want and path.stat().st_size != want["size"]) or sha256_file(path) != want.get("sha256"):
            return f"{name} does not match its recorded SHA256"
    return None
