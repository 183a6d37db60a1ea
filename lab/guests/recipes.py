"""Guest image recipes (``images/*.yaml``): loaded once into frozen objects, validated with file and key."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from lab.arches import Arch, Flavour
from lab.config import Section
from lab.errors import UserError


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    suite: str
    components: tuple[str, ...]
    kernel_package: str  # may contain {flavour} (the arch's kernel flavour: lab.arches.Flavour) or {debian}
    kernel_from: str  # the kernel axis's default: recipe (the recipe suite's kernel for every suite) or suite (its own)
    modules: tuple[str, ...]
    packages: tuple[str, ...]
    check: tuple[str, ...]
    exclude: tuple[str, ...]
    init: Path
    scratch_size_mib: int
    test_file_mib: int

    def kernel_for(self, arch: Arch, flavour: Flavour) -> str:
        """The kernel package of ``arch``'s ``flavour``; a package template without {flavour} has one flavour."""
        if flavour != arch.flavours[0] and "{flavour}" not in self.kernel_package:
            raise UserError(f"{self.path}: kernel.package {self.kernel_package!r} has no {{flavour}}: it cannot name the "
                            f"{flavour.pagesize} kernel", "use linux-image-{flavour}")  # fmt: skip
        return self.kernel_package.format(debian=arch.kernel_arch, flavour=flavour.kernel)

    def canonical(self) -> str:
        """A stable text form of everything that shapes the image (for cache keys)."""
        data = asdict(self)
        data.pop("path")
        data["init"] = self.init.read_text()
        return json.dumps(data, sort_keys=True, default=str)


def load_recipe(path: Path) -> Recipe:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: recipe not found", "set 'recipe' in lab.yaml to a file in images/") from None
    except yaml.YAMLError:
        raise UserError(f"{path}: not valid YAML", "fix the recipe's syntax") from None
    top = Section(path, "", raw)
    name = top.text("name", path.stem)
    suite = top.text("suite", "trixie")
    components = top.strings("components", ("main",))
    k = top.section("kernel")
    kernel_package = k.text("package", "linux-image-{flavour}")
    kernel_from = k.text("from", "recipe", ("recipe", "suite"))
    modules = k.strings("modules", ())
    k.finish()
    packages = top.strings("packages", ())
    check = top.strings("check", ())
    exclude = top.strings("exclude", ())
    init = path.parent / top.text("init", "init.sh.j2")
    s = top.section("scratch")
    scratch_size = s.integer("size_mib", 64, 8, 65536)
    test_file = s.integer("test_file_mib", 16, 0, 65536)
    s.finish()
    top.finish()
    if test_file >= scratch_size:
        raise UserError(
            f"{path}: scratch.test_file_mib: {test_file} does not fit", f"make it smaller than scratch.size_mib ({scratch_size})"
        )
    if not init.is_file():
        raise UserError(f"{path}: init: {init} not found", "point 'init' at a template next to the recipe")
    for field, value in (("packages", packages), ("components", components)):
        if not value:
            raise UserError(f"{path}: {field}: must not be empty", "list at least one")
    return Recipe(
        path, name, suite, components, kernel_package, kernel_from, modules, packages, check, exclude, init, scratch_size, test_file
    )
