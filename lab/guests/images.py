"""Guest images: recipes → content-addressed, cached kernel + initramfs + scratch disk.

An image lives in ``<cache>/images/<arch>-<key>/`` with a ``manifest.json``
recording the resolved package versions and each artifact's SHA256. The key
hashes everything that shapes the image (recipe, init, resolved packages, SSH
keys, builder version), so an unchanged input never rebuilds and a changed one
always does. Builds happen in a temp directory renamed into place; an entry
whose files no longer match their recorded hashes is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

from lab import axes
from lab.arches import ARCHES, Arch, Flavour, get
from lab.cache import BuildCache, check_files, file_lock, read_record
from lab.config import Config
from lab.errors import CacheError, ImageError, UserError
from lab.files import sha256_file, sha256_text
from lab.guests import elf, kernel
from lab.guests.apt import Apt, Package, first_dependency
from lab.guests.initramfs import Tree, deb_tar, write_cpio
from lab.guests.kernel_file import Parts, from_debs, user_parts
from lab.guests.keys import KeyPair, client_key, host_key
from lab.guests.protocol import FAIL_MARKER, GATEWAY, GUEST_IP, RAM_MODULE, READY_MARKER, SCRATCH_MOUNT, TEST_FILE, TEST_FILE_RECORD
from lab.guests.recipes import Recipe, load_recipe
from lab.guests.snapshots import SnapshotStore
from lab.spec import GuestSpec

log = logging.getLogger(__name__)

BUILDER_VERSION = "4"  # bump when the builder's output changes for equal inputs
ARTIFACTS = ("kernel", "initrd.cpio", "scratch.ext4")


@dataclass(frozen=True)
class Image:
    """A built, verified image on disk."""

    arch: Arch
    key: str
    dir: Path
    manifest: dict[str, Any]
    host_key: KeyPair

    @property
    def kernel(self) -> Path:
        return self.dir / "kernel"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.cpio"

    @property
    def scratch(self) -> Path:
        return self.dir / "scratch.ext4"

    @property
    def kernel_release(self) -> str:
        return str(self.manifest["kernel_release"])

    @property
    def flavour(self) -> Flavour:
        """Its kernel's flavour (lab.arches.Flavour: page size, TCG CPU model)."""
        pagesize, suite = str(self.manifest.get("pagesize", "")), str(self.manifest.get("kernel_suite", ""))
        return self.arch.flavour(pagesize, suite) or self.arch.flavours[0]

    @property
    def ram_disk(self) -> bool:
        """Whether its kernel has the RAM disk driver guest.scratch: ram needs (lab.guests.protocol.RAM_MODULE)."""
        return bool(self.manifest.get("ram_disk"))


def image_key(recipe_text: str, arch: Arch, packages: list[Package], client_pub: str, host_pub: str) -> str:
    """The content address of an image: a hash of every input that shapes it."""
    pkgs = "\n".join(f"{p.name} {p.arch} {p.version} {p.sha256}" for p in packages)
    return sha256_text(BUILDER_VERSION, recipe_text, arch.name, arch.debian, pkgs, client_pub, host_pub)


def render_init(recipe: Recipe, arch: Arch, modules: list[str], ram_disk: bool = True) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    template = env.from_string(recipe.init.read_text())
    return template.render(
        modules=modules,
        hostname=f"lab-{arch.name}",
        scratch_mount=SCRATCH_MOUNT,
        scratch_device=axes.scratch_device("disk", arch.disk),
        scratch_disk=arch.disk,
        ram=axes.scratch("ram") if ram_disk else None,
        ram_module=f"/usr/lib/modules/lab/{RAM_MODULE}.ko",
        guest_ip=GUEST_IP,
        gateway=GATEWAY,
        ready_marker=READY_MARKER,
        fail_marker=FAIL_MARKER,
    )


class ImageStore:
    """Builds and finds images under ``<cache>/images`` for one config: one per guest spec (lab.spec)."""

    def __init__(self, cfg: Config, suite: str | None = None) -> None:
        """``suite``: the userland of :meth:`spec`'s default guests (default: the recipe's)."""
        self.cfg = cfg
        self.recipe = load_recipe(cfg.recipe)
        self.suite = suite or self.recipe.suite
        self.given = suite is not None  # the caller named the suite: no arch takes another instead (Arch.instead)
        self.root = cfg.cache_dir / "images"
        # 0700: the initramfs holds the guest's private host key (pinning means nothing if others can read it).
        self.cache = BuildCache(self.root, cfg.timeouts.scaled("lock"), "image", mode=0o700)
        self.keys_dir = cfg.cache_dir / "keys"
        self._apts: dict[str, Apt] = {}
        self.apt = self.apt_for(self.suite)

    def apt_for(self, suite: str) -> Apt:
        """The lab's apt of a suite (a backports suite over its base), for every arch it ships."""
        if suite not in self._apts:
            row = axes.suite(suite, guests=False)
            shipped = tuple(a.debian for a in ARCHES if a.debian in row.debian)
            self._apts[suite] = Apt(
                self.cfg.cache_dir / "apt" / suite, suite, self.recipe.components, shipped, self.cfg.apt.mirror, row.base
            )
        return self._apts[suite]

    def spec(self, arch: Arch, suite: str = "") -> GuestSpec:
        """``arch``'s default guest of ``suite`` (default: this store's): the recipe's kernel, the first flavour,
        lab.yaml's rest."""
        suite = suite or (self.suite if self.given else arch.instead_of(self.suite))
        kernel = arch.instead_of(self.recipe.suite if self.recipe.kernel_from == "recipe" else suite)
        return GuestSpec(arch, suite, kernel, arch.flavours[0].pagesize, self.cfg.qemu.origin, self.cfg.guest.scratch)

    def ships(self, arch: Arch) -> bool:
        """Whether this store's suite has ``arch`` at all (bookworm has no riscv64)."""
        return arch.debian in self.apt.arches

    def _resolve(self, g: GuestSpec) -> tuple[list[Package], list[Package]]:
        """The kernel's packages (none for a user's kernel file) and the recipe's, resolved in the lab's apt lists."""
        if problem := g.problem():
            raise UserError(problem, "lab run skips such guests: pick another suite, kernel or page size")
        packages = self.apt_for(g.suite).resolve(self.recipe.packages, g.arch.debian)
        if g.kernel_file is not None:
            return [], packages
        kapt = self.apt_for(g.kernel)
        named = kapt.resolve([self.recipe.kernel_for(g.arch, g.flavour)], g.arch.kernel_arch)[0]
        # A metapackage depends on the versioned linux-image package; a versioned one does not. From 7.x on that
        # one is small and depends on the image (linux-binary-) and the modules (linux-modules-).
        real = first_dependency(named.depends, "linux-image-")
        pkg = kapt.resolve([real], g.arch.kernel_arch)[0] if real else named
        split = [d for d in (first_dependency(pkg.depends, p) for p in ("linux-binary-", "linux-modules-")) if d]
        return [pkg, *(kapt.resolve(split, g.arch.kernel_arch) if split else [])], packages

    def _inputs(self, g: GuestSpec) -> tuple[str, list[Package], list[Package], KeyPair, KeyPair]:
        """The image key for ``g`` and what it was computed from (resolved in the local lists)."""
        kernel_pkgs, packages = self._resolve(g)
        client = client_key(self.keys_dir)
        hostk = host_key(self.keys_dir, g.arch.name)
        own = f"kernel-file {g.kernel_file.digest} {_tree_digest(g.kernel_file.modules)}" if g.kernel_file else ""
        key = image_key(self.recipe.canonical() + g.suite + own, g.arch, [*kernel_pkgs, *packages], client.public, hostk.public)
        return key, kernel_pkgs, packages, client, hostk

    def apt_lock(self) -> AbstractContextManager[None]:
        """One apt refresh and resolution at a time per cache (the lists are shared)."""
        return file_lock(self.cfg.cache_dir / "build.lock", "the apt lock", self.cfg.timeouts.scaled("lock"))

    def ensure(self, target: Arch | GuestSpec, refresh: bool = False) -> Image:
        """Return the image of a guest spec (an arch: its default one), building it if missing or corrupt. The apt
        lock covers the lists and the resolution only: downloads (unique temp names) and the build (its entry's
        lock) run beside other builds."""
        g = target if isinstance(target, GuestSpec) else self.spec(target)
        with self.apt_lock():
            for suite in dict.fromkeys((g.suite, *(() if g.kernel_file else (g.kernel,)))):
                self.apt_for(suite).update(0 if refresh else self.cfg.apt.refresh_hours)
            key, kernel_pkgs, packages, client, hostk = self._inputs(g)
        entry = self.cache.ensure(
            f"{g.arch.name}-{key[:16]}", lambda work: self._build(g, key, work, kernel_pkgs, packages, client, hostk), verify
        )
        return Image(g.arch, key, entry.path, _read_manifest(entry.path), hostk)

    def prune(self, snapshot_keys: Callable[[Arch, str], Iterable[str]]) -> list[Path]:
        """Delete cached images that are current for no guest of the recipe's defaults nor of ``run.axes``' suites,
        kernels and page sizes, abandoned build dirs, and every snapshot that is not a current one of a current image
        (``snapshot_keys``: the keys of (arch, image key) under this config's QEMUs; other QEMU builds, kernel
        arguments or memory go)."""
        ax = self.cfg.run.axes
        # each arch's default guest (its row's suite where it takes another: Arch.instead), then run.axes' suites
        defaults = [self.spec(a) for a in ARCHES] + [self.spec(a, suite) for a in ARCHES for suite in ax.get("suite", ())]
        specs = [
            g
            for d in defaults
            for kernel in dict.fromkeys((d.kernel, *ax.get("kernel", ())))
            for pagesize in dict.fromkeys((d.pagesize, *ax.get("pagesize", ())))
            if not (g := replace(d, kernel=kernel, pagesize=pagesize)).problem()
        ]
        with self.apt_lock():
            current = {self._inputs(g)[0]: g.arch.name for g in specs}
            keep = {f"{arch}-{key[:16]}" for key, arch in current.items()}
            doomed = [d for d in self.root.iterdir() if d.is_dir() and d.name not in keep] if self.root.exists() else []
            for d in doomed:
                shutil.rmtree(d)
            keys = {k for key, arch in current.items() for k in snapshot_keys(get(arch), key)}
            return doomed + SnapshotStore(self.cfg.cache_dir).prune(keys)

    def _build(
        self, g: GuestSpec, key: str, work: Path, kernel_pkgs: list[Package], packages: list[Package], client: KeyPair, hostk: KeyPair
    ) -> None:
        started = time.monotonic()
        arch = g.arch
        pool = self.cfg.cache_dir / "debs"
        kdebs = self.apt_for(g.kernel).download(kernel_pkgs, pool) if kernel_pkgs else {}
        debs = {**kdebs, **self.apt_for(g.suite).download(packages, pool)}
        tree = Tree()
        for pkg in packages:
            with deb_tar(debs[pkg.name]) as tar:
                tree.add_tar(tar, self.recipe.exclude)
        parts = user_parts(g.kernel_file) if g.kernel_file else from_debs([kdebs[p.name] for p in kernel_pkgs])
        kernel_release, modules, ram_disk = self._add_kernel(tree, parts, work / "kernel", arch)
        self._add_system(tree, arch, modules, ram_disk, client, hostk)
        problems = elf.check_closure(tree, self.recipe.check, ("usr/lib/" + arch.triplet, "usr/lib", "usr/lib64"))
        if problems:
            raise ImageError(
                f"{arch.name} image is incomplete: {problems[0]}", f"add the package providing it to 'packages' in {self.recipe.path}"
            )
        fd = os.open(work / "initrd.cpio", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            write_cpio(tree, out)
        self._make_scratch(work / "scratch.ext4", key)
        manifest = {
            "schema": 1,
            "arch": arch.name,
            "key": key,
            "recipe": self.recipe.name,
            "suite": g.suite,
            "kernel_suite": g.kernel,
            "pagesize": g.pagesize,
            "mirror": self.apt.mirror,
            "kernel_release": kernel_release,
            # the Debian package (the versioned linux-image) or the user's file (--kernel)
            "kernel_package": {"name": kernel_pkgs[0].name, "version": kernel_pkgs[0].version} if kernel_pkgs else {},
            "kernel_file": {"path": str(g.kernel_file.path), "sha256": g.kernel_file.digest} if g.kernel_file else {},
            "packages": [{"name": p.name, "version": p.version, "arch": p.arch, "sha256": p.sha256} for p in packages],
            "modules": modules,
            "ram_disk": ram_disk,  # the kernel's brd is in the image (guest.scratch: ram)
            "host_key": hostk.public,
            "files": {name: {"sha256": sha256_file(work / name), "size": (work / name).stat().st_size} for name in ARTIFACTS},
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - started, 2),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        log.info("built %s %s image %s-%s in %.1fs", g.suite, arch.name, arch.name, key[:16], manifest["build_seconds"])

    def _add_kernel(self, tree: Tree, parts: Parts, kernel_out: Path, arch: Arch) -> tuple[str, list[str], bool]:
        """Write the kernel image to ``kernel_out``; put the recipe's and the arch's modules (and deps) in the tree,
        and the RAM disk driver when the kernel has one (/init loads it with its size only for guest.scratch: ram).
        Returns the release, the modules /init loads at every boot (dependencies first) and whether the RAM disk
        is there."""
        kernel_out.write_bytes(kernel.prepare(parts.image, arch.kernel_format))
        modules = {name: _Lazy(path, data) for name, (path, data) in parts.modules.items()}
        order = elf.module_load_order(self.recipe.modules + arch.boot_modules, modules, parts.builtin)
        ram_disk = RAM_MODULE in modules
        if ram_disk:
            order += [m for m in elf.module_load_order([RAM_MODULE], modules) if m not in order and m != RAM_MODULE]
        for mod in (*order, *([RAM_MODULE] if ram_disk else [])):
            tree.file(f"usr/lib/modules/lab/{mod}.ko", modules[mod].data)
        return parts.release, order, ram_disk

    def _add_system(self, tree: Tree, arch: Arch, modules: list[str], ram_disk: bool, client: KeyPair, hostk: KeyPair) -> None:
        """usr-merge links, console node, accounts, keys and /init."""
        for link in ("bin", "sbin", "lib"):
            tree.symlink(link, f"usr/{link}")
        if "usr/lib64" in tree.entries:
            tree.symlink("lib64", "usr/lib64")
        tree.symlink("usr/bin/sh", "busybox")
        tree.chardev("dev/console", 5, 1)
        for d in ("proc", "sys", "dev", "run", "tmp", "etc", SCRATCH_MOUNT.strip("/")):
            tree.dir(d, 0o1777 if d == "tmp" else 0o755)
        tree.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        tree.file("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600)
        tree.file("etc/group", "root:x:0:\n")
        tree.file("etc/shells", "/bin/sh\n/usr/bin/sh\n")
        tree.file("etc/hostname", f"lab-{arch.name}\n")
        tree.dir("root", 0o700)
        tree.dir("root/.ssh", 0o700)
        tree.file("root/.ssh/authorized_keys", client.public + " lab-client\n", 0o600)
        tree.file("etc/dropbear/host_key", hostk.private.read_bytes(), 0o600)
        tree.file("init", render_init(self.recipe, arch, modules, ram_disk), 0o755)

    def _make_scratch(self, out: Path, key: str) -> None:
        """An ext4 image made with ``mke2fs -d`` (no loop mounts), holding the probe's test file."""
        with tempfile.TemporaryDirectory(prefix="lab-scratch-") as staging:
            data = Path(staging) / TEST_FILE
            with open(data, "wb") as f:
                page = bytearray(b"\x5a" * TEST_FILE_RECORD)
                for i in range((self.recipe.test_file_mib << 20) // TEST_FILE_RECORD):
                    page[:8] = i.to_bytes(8, "little")  # every page differs: no dedup, no sparse holes
                    f.write(page)
            uuid = f"{key[:8]}-{key[8:12]}-{key[12:16]}-{key[16:20]}-{key[20:32]}"
            argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "lab-scratch", "-U", uuid, "-E", "root_owner=0:0"]
            argv += ["-d", staging, str(out), f"{self.recipe.scratch_size_mib}M"]
            log.debug("running %s", " ".join(argv))
            try:
                subprocess.run(argv, check=True, capture_output=True, text=True, env=dict(os.environ, E2FSPROGS_FAKE_TIME="1"))
            except FileNotFoundError:
                raise ImageError("mke2fs not found", "install e2fsprogs (./setup.sh does)") from None
            except subprocess.CalledProcessError as exc:
                raise ImageError(f"mke2fs failed: {exc.stderr.strip()}", "e2fsprogs >= 1.43 is needed for -d") from None

    def cached(self) -> list[CachedImage]:
        """Every image directory in the cache with its manifest and whether it verifies."""
        rows = []
        for d in sorted(self.root.glob("*-*")) if self.root.exists() else []:
            if d.name.startswith(".") or not d.is_dir():
                continue
            try:
                manifest = _read_manifest(d)
            except CacheError as exc:
                rows.append(CachedImage(d, f"corrupt: {exc.message}", {}))
                continue
            problem = verify(d)
            rows.append(CachedImage(d, "ok" if problem is None else f"corrupt: {problem}", manifest))
        return rows


@dataclass(frozen=True)
class CachedImage:
    dir: Path
    status: str  # "ok" or "corrupt: why"
    manifest: dict[str, Any]

    @property
    def size(self) -> int:
        return sum(int(f.get("size", 0)) for f in self.manifest.get("files", {}).values())


@dataclass
class _Lazy:
    """A compressed kernel module, decompressed on first use (most are never used)."""

    path: str
    raw: bytes
    _data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = elf.decompress_module(self.path, self.raw)
        return self._data


def _tree_digest(path: Path | None) -> str:
    """A digest of a user's modules (a .deb, or every file of a directory tree, by path and content)."""
    if path is None:
        return ""
    if path.is_file():
        return sha256_file(path)
    return sha256_text(*(f"{f.relative_to(path)} {sha256_file(f)}" for f in sorted(path.rglob("*")) if f.is_file()))


def _read_manifest(d: Path) -> dict[str, Any]:
    return read_record(d / "manifest.json", "lab images build rebuilds it")


def verify(d: Path) -> str | None:
    """None if every artifact matches the manifest's size and SHA256, else what is wrong."""
    try:
        files = _read_manifest(d)["files"]
    except (CacheError, KeyError) as exc:
        return exc.message if isinstance(exc, CacheError) else "manifest has no file list"
    if not isinstance(files, dict):
        return "manifest has no file list"
    return check_files(d, {name: files.get(name, {}) for name in ARTIFACTS})
