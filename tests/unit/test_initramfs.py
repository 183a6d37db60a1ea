import io
import stat
import tarfile

from lab.guests.initramfs import Tree, read_cpio, write_cpio


def sample() -> Tree:
    t = Tree()
    t.file("usr/bin/busybox", b"\x7fELFbusybox", 0o755)
    t.symlink("bin", "usr/bin")
    t.symlink("usr/bin/sh", "busybox")
    t.file("root/.ssh/authorized_keys", "ssh-ed25519 AAAA\n", 0o600)
    t.chardev("dev/console", 5, 1)
    return t


def test_cpio_roundtrip_keeps_modes_links_and_devices() -> None:
    buf = io.BytesIO()
    write_cpio(sample(), buf)
    entries = read_cpio(buf.getvalue())
    assert entries["usr/bin/busybox"] == (stat.S_IFREG | 0o755, b"\x7fELFbusybox")
    assert entries["bin"] == (stat.S_IFLNK | 0o777, b"usr/bin")
    assert entries["root/.ssh/authorized_keys"][0] == stat.S_IFREG | 0o600
    assert stat.S_ISCHR(entries["dev/console"][0])
    assert stat.S_ISDIR(entries["root/.ssh"][0])  # parents are implicit
    assert ".ssh" in "".join(entries)  # dot-files keep their names


def test_cpio_is_deterministic_and_aligned() -> None:
    a, b = io.BytesIO(), io.BytesIO()
    write_cpio(sample(), a)
    write_cpio(sample(), b)
    assert a.getvalue() == b.getvalue()
    assert len(a.getvalue()) % 4 == 0


def test_resolve_follows_absolute_relative_and_directory_links() -> None:
    t = sample()
    t.file("usr/lib/x86_64-linux-gnu/libc.so.6", b"libc")
    t.symlink("lib64", "usr/lib64")
    t.symlink("usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld.so")
    t.file("usr/lib/x86_64-linux-gnu/ld.so", b"ld")
    assert t.resolve("/bin/sh") == "usr/bin/busybox"
    assert t.read("/lib64/ld-linux-x86-64.so.2") == b"ld"
    assert t.exists("/usr/lib/x86_64-linux-gnu/libc.so.6")
    assert not t.exists("/lib/missing.so")
    t.symlink("loop", "loop")
    assert t.resolve("loop") is None


def test_add_tar_excludes_and_copies_hardlinks() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (("./usr/bin/prog", b"prog"), ("./usr/share/doc/prog/README", b"doc")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./usr/bin/prog2")
        link.type, link.linkname = tarfile.LNKTYPE, "./usr/bin/prog"
        tar.addfile(link)
    raw.seek(0)
    t = Tree()
    with tarfile.open(fileobj=raw, mode="r|") as tar:
        t.add_tar(tar, ["usr/share/doc/*"])
    assert t.read("usr/bin/prog2") == b"prog"
    assert not t.exists("usr/share/doc/prog/README")
    assert t.size() == 8


def test_packages_from_before_the_usr_merge_land_in_usr() -> None:
    """Issue 11: bookworm's busybox-static ships ./bin/busybox; the image links bin -> usr/bin."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("./bin/busybox", "./lib/x86_64-linux-gnu/libc.so.6", "./usr/bin/other"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
    buf.seek(0)
    tree = Tree()
    with tarfile.open(fileobj=buf, mode="r") as tar:
        tree.add_tar(tar)
    assert {p for p, _ in tree.files()} == {"usr/bin/busybox", "usr/lib/x86_64-linux-gnu/libc.so.6", "usr/bin/other"}
