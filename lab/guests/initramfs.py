"""An in-memory root filesystem tree and a deterministic ``newc`` cpio writer.

The tree is filled from .deb data tarballs (``dpkg-deb --fsys-tarfile``), so
no root privileges, loop mounts or host paths are involved; ownership is always
root and every timestamp is ``mtime``, so equal inputs give equal bytes.
"""

from __future__ import annotations

import fnmatch
import io
import stat
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ImageError


@dataclass(frozen=True)
class Entry:
    mode: int  # full st_mode: type bits | permissions
    data: bytes = b""  # file contents, or symlink target
    rdev: tuple[int, int] = (0, 0)


def _norm(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return "" if path == "." else path.strip("/")


MERGED = ("bin", "sbin", "lib", "lib64")  # usr-merge: /bin is a link to usr/bin (older suites ship /bin files)


def _usrmerge(path: str) -> str:
    """``bin/busybox`` -> ``usr/bin/busybox`` (bookworm's packages predate the usr-merged layout)."""
    top = path.split("/", 1)[0]
    return f"usr/{path}" if top in MERGED else path


class Tree:
    """A path → :class:`Entry` map; parents are created implicitly on write."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.entries:
                self.entries[parent] = Entry(stat.S_IFDIR | 0o755)

    def add(self, path: str, entry: Entry) -> None:
        path = _norm(path)
        if not path:
            return
        self._parents(path)
        existing = self.entries.get(path)
        if existing and stat.S_ISDIR(existing.mode) and stat.S_ISDIR(entry.mode):
            return
        self.entries[path] = entry

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.add(path, Entry(stat.S_IFREG | mode, raw))

    def dir(self, path: str, mode: int = 0o755) -> None:
        self.add(path, Entry(stat.S_IFDIR | mode))

    def symlink(self, path: str, target: str) -> None:
        self.add(path, Entry(stat.S_IFLNK | 0o777, target.encode()))

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self.add(path, Entry(stat.S_IFCHR | mode, rdev=(major, minor)))

    def resolve(self, path: str, depth: int = 0) -> str | None:
        """Follow symlinks (absolute or relative, in any component) to a real path in the tree."""
        if depth > 32:
            return None
        parts = _norm(path).split("/")
        done: list[str] = []
        for i, part in enumerate(parts):
            if part in ("", "."):
                continue
            if part == "..":
                done = done[:-1]
                continue
            current = "/".join([*done, part])
            entry = self.entries.get(current)
            if entry is None:
                return None
            if stat.S_ISLNK(entry.mode):
                target = entry.data.decode()
                base = [] if target.startswith("/") else done
                rest = "/".join([*base, target.lstrip("/"), *parts[i + 1 :]])
                return self.resolve(rest, depth + 1)
            done.append(part)
        return "/".join(done)

    def exists(self, path: str) -> bool:
        return self.resolve(path) is not None

    def read(self, path: str) -> bytes:
        real = self.resolve(path)
        if real is None or not stat.S_ISREG(self.entries[real].mode):
            raise KeyError(path)
        return self.entries[real].data

    def files(self) -> Iterator[tuple[str, Entry]]:
        for path, entry in sorted(self.entries.items()):
            if stat.S_ISREG(entry.mode):
                yield path, entry

    def add_tar(self, tar: tarfile.TarFile, exclude: Iterable[str] = ()) -> None:
        """Copy a tar's members in (hard links become copies), skipping ``exclude`` globs."""
        patterns = tuple(exclude)
        for member in tar:
            path = _usrmerge(_norm(member.name))
            if not path or any(fnmatch.fnmatch(path, p) for p in patterns):
                continue
            perm = member.mode & 0o7777
            if member.isdir():
                self.dir(path, perm)
            elif member.issym():
                self.symlink(path, member.linkname)
            elif member.islnk():
                try:
                    self.file(path, self.read(member.linkname), perm)
                except KeyError:
                    continue  # target was excluded
            elif member.isfile():
                f = tar.extractfile(member)
                self.file(path, f.read() if f else b"", perm)

    def size(self) -> int:
        return sum(len(e.data) for _, e in self.files())


@contextmanager
def deb_tar(deb: Path) -> Iterator[tarfile.TarFile]:
    """Stream the data tarball of a .deb through ``dpkg-deb --fsys-tarfile`` (iterate it once).

    dpkg-deb is always reaped; its failure is reported only when nothing else (Ctrl-C included) is on the way out.
    """
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            yield tar
        proc.stdout.read()
    except tarfile.TarError as exc:
        raise ImageError(f"cannot read {deb}: {exc}", "delete the file and rebuild") from None
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        status = proc.wait()
    if status != 0:
        raise ImageError(f"dpkg-deb cannot read {deb}: {err or f'exit status {status}'}", "delete the file and rebuild")


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int], name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_cpio(tree: Tree, out: io.BufferedIOBase | io.BytesIO, mtime: int = 0) -> None:
    """Write ``tree`` as an uncompressed newc archive, sorted by path, owned by root."""
    for ino, (path, entry) in enumerate(sorted(tree.entries.items()), start=1):
        name = path.encode()
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        header = _header(ino, entry.mode, nlink, mtime, len(entry.data), entry.rdev, name)
        out.write(header + _pad(len(header)))
        out.write(entry.data + _pad(len(entry.data)))
    trailer = _header(0, 0, 1, 0, 0, (0, 0), b"TRAILER!!!")
    out.write(trailer + _pad(len(trailer)))


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes]]:
    """Parse a newc archive into ``{path: (mode, data)}`` (used to verify what was written)."""
    result: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        if data[pos : pos + 6] != b"070701":
            raise ValueError(f"bad cpio magic at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return result
        result[name] = (mode, body)
