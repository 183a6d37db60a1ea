import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from lab.arches import get
from lab.errors import UserError
from lab.files import sha256_file
from lab.guests.apt import Package
from lab.guests.images import ARTIFACTS, image_key, render_init, verify
from lab.guests.protocol import READY_MARKER
from lab.guests.recipes import load_recipe

REPO = Path(__file__).resolve().parents[2]
PKGS = [Package("busybox-static", "1:1.37.0-6+b9", "amd64", "aa", 1), Package("libc6", "2.41-12", "amd64", "bb", 2)]


def key(**kw: object) -> str:
    args: dict[str, object] = dict(recipe_text="r", arch=get("x86_64"), packages=PKGS, client_pub="c", host_pub="h")
    args.update(kw)
    return image_key(**args)  # type: ignore[arg-type]


def test_image_key_is_stable_and_changes_with_every_input() -> None:
    base = key()
    assert base == key() and len(base) == 64
    variants = [
        key(recipe_text="r2"),
        key(arch=get("arm64")),
        key(packages=[replace(PKGS[0], version="1:1.37.0-7"), PKGS[1]]),
        key(packages=[replace(PKGS[0], sha256="ff"), PKGS[1]]),
        key(packages=PKGS[:1]),
        key(client_pub="c2"),
        key(host_pub="h2"),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_recipe_canonical_form_includes_init_text(tmp_path: Path) -> None:
    shutil.copy(REPO / "images/tiny.yaml", tmp_path / "tiny.yaml")
    shutil.copy(REPO / "images/init.sh.j2", tmp_path / "init.sh.j2")
    recipe = load_recipe(tmp_path / "tiny.yaml")
    before = recipe.canonical()
    (tmp_path / "init.sh.j2").write_text(recipe.init.read_text() + "# changed\n")
    assert recipe.canonical() != before


def test_default_recipe_and_init_render() -> None:
    recipe = load_recipe(REPO / "images/tiny.yaml")
    riscv, arm = get("riscv64"), get("arm64")
    assert recipe.kernel_for(riscv, riscv.flavours[0]) == "linux-image-riscv64"
    assert [recipe.kernel_for(arm, f) for f in arm.flavours] == [f"linux-image-{f.kernel}" for f in arm.flavours]
    assert {"dropbear-bin", "busybox-static", "musl", "openssh-sftp-server"} <= set(recipe.packages)
    text = render_init(recipe, get("arm64"), ["failover", "net_failover", "virtio_net"])
    assert text.startswith("#!/usr/bin/busybox sh\n")
    assert "for m in failover net_failover virtio_net; do" in text
    assert f'echo "{READY_MARKER} $(uname -r) $(uname -m)"' in text
    assert "{{" not in text and "lab-arm64" in text


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("packages: []\n", "packages: must not be empty"),
        ("packages: [a]\nscratch: {size_mib: 16, test_file_mib: 16}\n", "test_file_mib: 16 does not fit"),
        ("packages: [a]\nkernel: {modules: virtio}\n", "kernel.modules"),
        ("packages: [a]\ninit: nope.j2\n", "init: .*nope.j2 not found"),
        ("packages: [a]\nsize: 3\n", "size: unknown key"),
    ],
)
def test_recipe_errors(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "init.sh.j2").write_text("#!/bin/sh\n")
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(UserError, match=match):
        load_recipe(tmp_path / "r.yaml")


def fake_image(d: Path) -> Path:
    d.mkdir()
    for name in ARTIFACTS:
        (d / name).write_bytes(name.encode() * 100)
    files = {n: {"sha256": sha256_file(d / n), "size": (d / n).stat().st_size} for n in ARTIFACTS}
    (d / "manifest.json").write_text(json.dumps({"files": files}))
    return d


def test_verify_detects_corruption_missing_files_and_bad_manifests(tmp_path: Path) -> None:
    d = fake_image(tmp_path / "img")
    assert verify(d) is None
    data = bytearray((d / "initrd.cpio").read_bytes())
    data[10] ^= 1  # same size, different content
    (d / "initrd.cpio").write_bytes(bytes(data))
    assert verify(d) == "initrd.cpio does not match its recorded SHA256"
    (d / "initrd.cpio").unlink()
    assert verify(d) == "initrd.cpio is missing"
    (d / "manifest.json").write_text("{truncated")
    assert "unreadable" in (verify(d) or "")
