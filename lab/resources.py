"""Files lab ships besides its code: payload sources, the default image recipe, the Ansible project.

In a checkout they are the top-level ``payloads/``, ``images/`` and ``ansible/``; a wheel carries the same
directories as the packages ``lab._payloads``, ``lab._images`` and ``lab._ansible`` (pyproject's
``package-dir``), so an installed lab finds them beside its code.
"""

from __future__ import annotations

from importlib import util
from pathlib import Path

from lab.errors import InfraError

_CHECKOUT = Path(__file__).resolve().parents[1]


def _find(top: str, package: str) -> Path:
    here = _CHECKOUT / top
    if here.is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return here
    spec = util.find_spec(package)  # a namespace package (data only, no __init__.py): its one directory
    if spec is None or not spec.submodule_search_locations:
        raise InfraError(f"lab is installed without its {top}/ ({package})", "reinstall lab from a complete wheel or use a checkout")
    return Path(next(iter(spec.submodule_search_locations)))


def payloads_dir() -> Path:
    return _find("payloads", "lab._payloads")


def images_dir() -> Path:
    return _find("images", "lab._images")


def ansible_dir() -> Path:
    return _find("ansible", "lab._ansible")
