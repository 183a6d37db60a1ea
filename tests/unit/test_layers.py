"""The package's shape: every module in a known layer, no import from a lower layer to a higher one, none too long."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lab"
MAX_LINES = 400

# Lowest first. A module may import from its own layer or any lower one, never a higher one.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "lab",
        "lab.version",
        "lab.errors",
        "lab.resources",
        "lab.deadline",
        "lab.text",
        "lab.files",
        "lab.arches",
        "lab.axes",
        "lab.payloads.variants",
        "lab.payloads.probe",
    ),
    ("lab.config", "lab.cache", "lab.progress"),
    ("lab.guests",),
    ("lab.payloads",),
    ("lab.explain",),
    ("lab.results",),
    ("lab.measure",),
    ("lab.fleet",),
    ("lab.api",),
    ("lab.cli", "lab.__main__"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    """The layer of the most specific entry naming ``name`` or one of its packages."""
    best, depth = -1, -1
    for i, names in enumerate(LAYERS):
        for entry in names:
            if (name == entry or name.startswith(entry + ".")) and entry.count(".") > depth and (entry != "lab" or name == "lab"):
                best, depth = i, entry.count(".")
    return best


MODULES = sorted(PACKAGE.rglob("*.py"))


# The package's lazy facade (``lab.run`` etc., loaded on first use) is the one deliberate upward reference.
FACADE = {("lab", "lab.api")}


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> list[str]:
    """Every lab module ``path`` imports (``from lab.x import y`` counts as lab.x.y when y is a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lab":
            found += [f"{node.module}.{a.name}" if is_module(f"{node.module}.{a.name}") else node.module for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "lab"]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_is_in_a_layer_and_imports_only_downwards(path: Path) -> None:
    me = module_name(path)
    mine = layer(me)
    assert mine >= 0, f"{me} is in no layer: add it to LAYERS"
    found = imports(path)
    unknown = [imp for imp in found if layer(imp) < 0]
    assert not unknown, f"{me} imports modules in no layer: {unknown}"
    upward = [(imp, layer(imp)) for imp in found if layer(imp) > mine and (me, imp) not in FACADE]
    assert not upward, f"{me} (layer {mine}) imports from higher layers: {upward}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_is_short_enough_to_read_in_one_sitting(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_layer_lookup_picks_the_most_specific_entry() -> None:
    assert layer("lab.payloads.variants") == 0 and layer("lab.payloads.build") == 3
    assert layer("lab.guests.qemu") == 2 and layer("lab.cli.runs") == 9 and layer("lab.fleet.plan") == 7 and layer("lab.nowhere") == -1


def test_no_package_file_is_git_ignored() -> None:
    """Regression: a top-level ``results/`` ignore rule once hid lab/results/*.py from git (green here, broken on a clean clone)."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (PACKAGE.parent / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    ignored = subprocess.run(["git", "check-ignore", *files], cwd=PACKAGE.parent, capture_output=True, text=True).stdout.split()
    assert ignored == []
