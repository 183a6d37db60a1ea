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
        "lab.health",
        "lab.resources",
        "lab.deadline",
        "lab.text",
        "lab.files",
        "lab.arches",
        "lab.axes",
        "lab.spec",
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


def _facade() -> set[str]:
    """The names ``lab`` loads lazily from lab.api (its ``_API`` tuple)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_API" for t in node.targets):
            return {str(e.value) for e in node.value.elts if isinstance(e, ast.Constant)}  # type: ignore[attr-defined]
    return set()


API_NAMES = _facade()


def _target(module: str, name: str) -> str:
    """What ``from module import name`` really imports: a submodule, the API behind the facade, or the module."""
    if is_module(f"{module}.{name}"):
        return f"{module}.{name}"
    if module == "lab" and name in API_NAMES:
        return "lab.api"  # `from lab import run` is lab.api.run, loaded lazily: not layer 0
    return module


def imports(path: Path, top_level_only: bool = False) -> list[str]:
    """Every lab module ``path`` imports (``from lab.x import y`` counts as lab.x.y when y is a module); with
    ``top_level_only``, only those run at import time (not inside functions)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lab":
            found += [_target(node.module, a.name) for a in node.names]
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
    named = ("lab.payloads.variants", "lab.payloads.build", "lab.guests.qemu", "lab.cli.runs", "lab.fleet.run", "lab.api.runs")
    assert all(is_module(n) for n in named), "the lookup is tested on modules that exist"
    assert layer("lab.payloads.variants") == 0 and layer("lab.payloads.build") == 3
    assert layer("lab.guests.qemu") == 2 and layer("lab.cli.runs") == 9 and layer("lab.fleet.run") == 7 and layer("lab.api.runs") == 8
    assert layer("lab.nowhere") == -1


def test_the_facade_counts_as_the_api() -> None:
    """Regression (issue 19.11): `from lab import run` counted as layer 0 though it is lab.api's."""
    assert "run" in API_NAMES and _target("lab", "run") == "lab.api" and _target("lab", "config") == "lab.config"


CLI_MAY_IMPORT = 1  # the CLI calls the API; beneath it only the tables, primitives and config (layers 0 and 1)


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.stem)
def test_the_cli_only_calls_the_api(path: Path) -> None:
    """Regression (issue 19.11): the CLI reached into guests, payloads, results and explain directly."""
    below = [imp for imp in imports(path) if layer(imp) > CLI_MAY_IMPORT and not imp.startswith(("lab.api", "lab.cli"))]
    assert not below, f"{module_name(path)} imports {below}: call lab.api instead"


def test_no_import_cycles() -> None:
    """Regression (issue 19.11): measure.runner -> lab (for __version__) -> lazy api -> measure.runner."""
    graph = {module_name(p): {i for i in imports(p, top_level_only=True) if is_module(i)} for p in MODULES}
    graph["lab"].add("lab.api")  # a name taken from the facade (`from lab import __version__`) may load the API
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt) :], nxt]) if nxt in trail else nxt)
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_pure_argv_modules_load_no_ssh() -> None:
    """Regression (issue 19.11): payloads/toolchains (compile argv) imported guests.doctor and with it paramiko."""
    import subprocess
    import sys

    code = "import sys, lab.payloads.toolchains, lab.guests.qemu; print(sorted(m for m in ('paramiko', 'fabric') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"


def test_no_package_file_is_git_ignored() -> None:
    """Regression: a top-level ``results/`` ignore rule once hid lab/results/*.py from git (green here, broken on a clean clone)."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (PACKAGE.parent / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    ignored = subprocess.run(["git", "check-ignore", *files], cwd=PACKAGE.parent, capture_output=True, text=True).stdout.split()
    assert ignored == []


def test_every_package_of_lab_goes_into_the_wheel() -> None:
    """Regression: lab.api became a package and the wheel's explicit package list lacked it, so every fleet host's
    installed lab failed to import its API (lab.explain was missed the same way before)."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert packages <= listed, f"missing from pyproject's [tool.setuptools] packages: {sorted(packages - listed)}"
