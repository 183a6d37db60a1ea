"""Files: content hashes and atomic writes (a reader never sees half a file)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path

from lab.errors import InfraError, LabError, UserError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(*parts: str | bytes) -> str:
    """A hash of several parts, each length-prefixed so ("ab", "c") and ("a", "bc") differ."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def write_error(path: Path, exc: OSError) -> LabError:
    """The one-line error for a failed write, with the remedy that fits the cause."""
    if exc.errno in (errno.EISDIR, errno.ENOTDIR):
        return UserError(
            f"cannot write {path}: {'it is a directory' if exc.errno == errno.EISDIR else 'a parent is not a directory'}",
            "give a file path",
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InfraError(f"cannot write {path}: {exc.strerror}", "free disk space there")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InfraError(
            f"cannot write {path}: {exc.strerror}", "that directory is read-only or not yours: fix its permissions or write elsewhere"
        )
    return InfraError(f"cannot write {path}: {exc.strerror}", "check that the path exists and is writable")


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and a rename.

    A full or read-only disk is an infrastructure error naming the path; nothing half-written stays.
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
