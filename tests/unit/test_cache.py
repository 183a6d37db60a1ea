"""One cache discipline for images, sysroots and payloads: locked, verified on reuse, healed, renamed into place."""

from __future__ import annotations

import os
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
