"""Guests, images and payloads: ``lab boot/shell/exec``, ``smoke``, ``images ...``, ``payloads ...``, ``doctor``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab import arches as arches_mod
from lab.arches import Arch
from lab.axes import QEMU_HOST
from lab.config import Config
from lab.guests import doctor as doctor_mod
from lab.guests import qemu_store
from lab.guests import smoke as smoke_mod
from lab.guests.boot import Booted as Booted  # re-exported: what lab boot/shell/exec hand back
from lab.guests.boot import boot, new_log_dir, snapshot_key_of
from lab.guests.images import CachedImage, Image, ImageStore
from lab.payloads import toolchains
from lab.payloads import variants as variants_mod
from lab.payloads.build import GUEST_TOOLS, Payload, PayloadStore, reseed_helper
from lab.payloads.variants import Variant


@contextmanager
def booted(cfg: Config, arch: str, accel: str | None = None) -> Iterator[Booted]:
    """``lab boot``/``shell``/``exec``: one fresh guest of ``arch`` (restored, and reseeded, when a snapshot matches),
    shut down when the block ends."""
    a = arches_mod.get(arch)
    image = ImageStore(cfg).ensure(a)
    with boot(cfg, image, accel, new_log_dir(cfg, a.name), reseed=reseed_helper(cfg, a)) as b:
        yield b


def smoke(cfg: Config, arch: str | None = None, accel: str | None = None) -> list[smoke_mod.SmokeResult]:
    """``lab smoke``: boot each selected arch and check what measurements rely on; a failure is a result."""
    store = ImageStore(cfg)
    selected = arches_mod.select(arch if arch is not None else cfg.arches)
    return [smoke_mod.smoke(cfg, a, store, accel, lambda a: reseed_helper(cfg, a)) for a in selected]


def prune_images(cfg: Config) -> list[Path]:
    """``lab images prune``: images current for no arch, every snapshot that is not current (under any QEMU the
    config runs, or the host's) and QEMU entries no origin uses (what was deleted)."""
    emulators = {qemu_store.ensure(cfg, origin) for origin in (*qemu_store.origins(cfg), QEMU_HOST)}
    gone = ImageStore(cfg).prune(lambda arch, key: [snapshot_key_of(cfg, arch, key, e) for e in emulators])
    return gone + qemu_store.prune(cfg)


def doctor(cfg: Config, kvm: bool = True) -> list[doctor_mod.Check]:
    """``lab doctor``: host checks (QEMU, firmware, tools, toolchains, disk, mirror, cache, KVM)."""
    return doctor_mod.run_checks(cfg, kvm=kvm, extra=toolchains.checks)


def images_build(cfg: Config, arch: str | None = None, refresh: bool = False) -> Iterator[tuple[Arch, Image, float]]:
    """``lab images build``: each selected arch's image (a no-op when its inputs are unchanged), with seconds taken."""
    store = ImageStore(cfg)
    for i, a in enumerate(arches_mod.select(arch if arch is not None else cfg.arches)):
        started = time.monotonic()
        image = store.ensure(a, refresh=refresh and i == 0)
        yield a, image, time.monotonic() - started


def images_list(cfg: Config) -> tuple[Path, list[CachedImage]]:
    """``lab images list``: the cache's image directory and its entries (corrupt ones flagged)."""
    store = ImageStore(cfg)
    return store.root, store.cached()


def payloads_build(cfg: Config, arch: str | None = None, variant: str = "all") -> Iterator[tuple[Arch, Variant, Payload]]:
    """``lab payloads build``: each arch x variant cross-built (cached by content), then lab's own guest programs
    for the arch (lab-runner, lab-reseed: static musl), which every run ships with the payloads."""
    store = PayloadStore(cfg)
    tools = [PayloadStore(cfg, program=p) for p in GUEST_TOOLS]
    for a in arches_mod.select(arch if arch is not None else cfg.arches):
        for v in variants_mod.select_variants(variant):
            yield a, v, store.ensure(a, v)
        for tool in tools:
            yield a, variants_mod.variant("musl-static"), tool.ensure(a, variants_mod.variant("musl-static"))


def payloads_list(cfg: Config) -> tuple[Path, list[dict[str, Any]]]:
    """``lab payloads list``: the cache's payload directory and its builds."""
    store = PayloadStore(cfg)
    return store.root, store.cached()
