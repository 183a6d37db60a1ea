"""One cache discipline for images, sysroots and payloads: locked, verified on reuse, healed, renamed into place."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lab.cache import BuildCache, file_lock
from lab.errors import InfraError


def test_sweep_removes_dead_builders_temp_dirs_of_any_entry_but_not_live_ones(tmp_path: Path) -> None:
    """Regression (issue 10.15): a SIGKILLed image build left a 55 MB dot-directory until lab images prune."""
    cache = BuildCache(tmp_path, lock_seconds=1, kind="image")
    dead, live = tmp_path / ".x86_64-aaaa-k1w2e3r4", tmp_path / ".arm64-bbbb-q9w8e7r6"
    dead.mkdir()
    live.mkdir()
    with file_lock(tmp_path / ".arm64-bbbb.lock", "a live builder", 1):
        assert cache.sweep() == [dead]
    assert live.exists() and not dead.exists()
    cache.ensure("other", lambda work: None, lambda d: None)  # any later build sweeps too
    assert not live.exists()


def test_parallel_builds_in_one_process_never_sweep_each_others_work(tmp_path: Path) -> None:
    """Regression (issue 13, first run on an empty cache): payload variants build side by side through one
    BuildCache; a second build's sweep removed the first one's temp directory mid-build (compile failed:
    "no such file or directory"), because every entry this object held counted as its own leftovers."""
    cache = BuildCache(tmp_path, lock_seconds=5, kind="payload")
    started, swept = threading.Event(), threading.Event()
    seen: list[bool] = []

    def slow(work: Path) -> None:
        (work / "half").write_text("x")
        started.set()
        assert swept.wait(5)
        seen.append((work / "half").exists())
        (work / "done").write_text("x")

    first = threading.Thread(target=cache.ensure, args=("x86_64-glibc-static-k1", slow, lambda d: None))
    first.start()
    assert started.wait(5)
    cache.ensure("x86_64-musl-static-k2", lambda work: None, lambda d: None)  # sweeps before it builds
    swept.set()
    first.join(5)
    assert seen == [True]
    assert (tmp_path / "x86_64-glibc-static-k1" / "done").exists()


def test_a_held_lock_gives_up_at_its_deadline_naming_the_holder(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path, lock_seconds=0.3, kind="payload")
    with file_lock(tmp_path / ".x.lock", "test", 1), pytest.raises(InfraError) as err:
        cache.ensure("x", lambda work: None, lambda d: None)
    assert f"still held by pid {os.getpid()}" in err.value.message and f"kill {os.getpid()}" in err.value.remedy
    assert not (tmp_path / "x").exists()


def test_a_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path, lock_seconds=1, kind="image")

    def fail(work: Path) -> None:
        (work / "partial").write_text("x")
        raise InfraError("boom")

    with pytest.raises(InfraError):
        cache.ensure("e", fail, lambda d: None)
    assert cache.entries() == [] and [p.name for p in tmp_path.iterdir()] == [".e.lock"]

    def ok(work: Path) -> None:
        (work / "ok").write_text("y")

    entry = cache.ensure("e", ok, lambda d: None if (d / "ok").exists() else "no ok")
    assert entry.built and (entry.path / "ok").read_text() == "y"
    assert not cache.ensure("e", lambda work: None, lambda d: None).built
