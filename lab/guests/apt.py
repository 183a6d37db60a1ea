"""A private apt for foreign-architecture .debs, never touching the host's apt setup.

The lab keeps its own apt state (lists, archives, config) under the cache
directory and drives the host's ``apt-get``/``apt-cache`` through
``APT_CONFIG``. Nothing is installed: packages are resolved to exact versions
and downloaded, then unpacked by the image builder.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.errors import ImageError, UserError
from lab.files import sha256_file, sha256_text, write_atomic

log = logging.getLogger(__name__)

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
HOST_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


@dataclass(frozen=True)
class Package:
    """One binary package resolved to an exact version in the index."""

    name: str
    version: str
    arch: str
    sha256: str
    size: int
    depends: str = ""

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.arch}={self.version}"

    @property
    def deb_name(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Parse apt's RFC822-style stanzas (continuation lines are joined)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif line[0] in " \t" and key:
            current[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def first_dependency(depends: str, prefix: str) -> str | None:
    """The first package named in a Depends field that starts with ``prefix``."""
    for alternative in depends.split(","):
        name = re.split(r"[\s(:|]", alternative.strip(), maxsplit=1)[0]
        if name.startswith(prefix):
            return name
    return None


def detect_mirror(sources: Iterable[Path] = HOST_SOURCES) -> str:
    """The host's Debian mirror URI (not the security archive), or deb.debian.org."""
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in (".list", ".sources"))
        elif src.is_file():
            files.append(src)
    for file in files:
        try:
            text = file.read_text(errors="replace")
        except OSError:
            continue
        if file.suffix == ".sources":
            uris = [u for s in parse_deb822(text) for u in s.get("URIs", "").split()]
        else:
            uris = [w for line in text.splitlines() if line.startswith("deb ") for w in line.split() if "://" in w]
        for uri in uris:
            if re.search(r"/debian/?$", uri) and "security" not in uri:
                return uri.rstrip("/")
    return FALLBACK_MIRROR


MEMO_VERSION = "2"  # bump when Package's fields change: older answers in resolved.json are then never read


class Apt:
    """A private apt root at ``root`` for ``suite`` and the given Debian architectures."""

    def __init__(self, root: Path, suite: str, components: tuple[str, ...], arches: tuple[str, ...], mirror: str, base: str = "") -> None:
        """``base``: for a backports ``suite``, the suite it extends: both are sources, and the backports' versions
        win wherever they exist (what ``apt-get install -t SUITE`` does)."""
        self.root, self.suite, self.components, self.arches, self.base = root, suite, components, arches, base
        self.suites = (base, suite) if base else (suite,)
        self.mirror = detect_mirror() if mirror == "auto" else mirror
        self.conf = root / "apt.conf"

    def _write_config(self) -> None:
        for sub in ("lists/partial", "archives/partial", "etc"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        r = self.root
        arch_list = " ".join(f'"{a}";' for a in self.arches)
        sandbox = getpass.getuser() if os.geteuid() == 0 else ""
        lines = [
            f'Dir "{r}/";',
            f'Dir::State "{r}/";',
            f'Dir::State::status "{r}/status";',
            f'Dir::Cache "{r}/";',
            f'Dir::Cache::archives "{r}/archives/";',
            f'Dir::Etc "{r}/etc/";',
            f'Dir::Etc::SourceList "{r}/etc/sources.list";',
            'Dir::Etc::SourceParts "/dev/null";',
            'Dir::Etc::Parts "/dev/null";',
            'Dir::Etc::PreferencesParts "/dev/null";',
            f'APT::Architecture "{self.arches[0]}";',
            f"APT::Architectures {{ {arch_list} }};",
            'Acquire::Languages "none";',
            # Testing suites (forky) carry a Valid-Until a mirror snapshot can outlive; signatures are still checked.
            'Acquire::Check-Valid-Until "false";',
            'Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";',
        ]
        if sandbox:  # downloads into a root-owned cache: do not drop to _apt
            lines.append(f'APT::Sandbox::User "{sandbox}";')
        if self.base:
            lines.append(f'APT::Default-Release "{self.suite}";')
        if not KEYRING.exists():
            raise UserError(f"{KEYRING} is missing", "install debian-archive-keyring (./setup.sh does)")
        sources = "".join(f"deb [signed-by={KEYRING}] {self.mirror} {suite} {' '.join(self.components)}\n" for suite in self.suites)
        # Rewritten only when changed: apt rebuilds its package cache whenever these files are newer.
        for path, text in ((self.conf, "\n".join(lines) + "\n"), (self.root / "etc/sources.list", sources)):
            if not path.exists() or path.read_text() != text:
                write_atomic(path, text)

    def _run(self, argv: list[str], cwd: Path | None = None, timeout: float = 900, ok_missing: bool = False) -> str:
        env = dict(os.environ, APT_CONFIG=str(self.conf), LC_ALL="C")
        log.debug("running %s", " ".join(argv))
        try:
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise UserError(f"{argv[0]} not found", "lab needs a Debian/Ubuntu host with apt (./setup.sh)") from None
        except subprocess.TimeoutExpired:
            raise ImageError(f"{' '.join(argv[:2])} timed out after {timeout:.0f}s", "check the network and the mirror") from None
        if proc.returncode != 0 and not (ok_missing and "No packages found" in proc.stderr):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ImageError(
                f"{' '.join(argv[:3])} failed (exit {proc.returncode}): {' | '.join(tail)}",
                f"check that {self.mirror} serves {self.suite} for {','.join(self.arches)} (apt.mirror in lab.yaml)",
            )
        return proc.stdout

    def missing_lists(self) -> list[str]:
        """(component, arch) pairs whose Packages list is absent: what an offline ``apt-get update`` leaves."""
        lists = self.root / "lists"
        return [
            f"{component}/{arch}"
            for suite in self.suites
            for component in self.components
            for arch in self.arches
            if not any(lists.glob(f"*_dists_{suite}_{component}_binary-{arch}_Packages*"))
        ]

    def lists_age_hours(self) -> float | None:
        """Hours since the last refresh that really fetched every list; None if there was none."""
        stamp = self.root / "lists" / ".lab-updated"
        if not stamp.exists() or stamp.read_text() != self._identity() or self.missing_lists():
            return None
        return (time.time() - stamp.stat().st_mtime) / 3600

    def _identity(self) -> str:
        return f"{self.mirror} {' '.join(self.suites)} {' '.join(self.components)} {' '.join(sorted(self.arches))}"

    def update(self, max_age_hours: float) -> bool:
        """Refresh the package lists when missing or older than ``max_age_hours``; True if refreshed."""
        self._write_config()
        age = self.lists_age_hours()
        if age is not None and age < max_age_hours:
            return False
        log.info("apt-get update: %s %s for %s", self.mirror, self.suite, ",".join(self.arches))
        out = self._run(["apt-get", "-q", "update"])
        missing = self.missing_lists()
        if missing:  # apt-get update exits 0 having fetched nothing (offline): never record that as fresh
            why = next((ln.strip() for ln in out.splitlines() if ln.startswith(("Err:", "W:", "E:"))), "nothing was fetched")
            raise ImageError(
                f"apt-get update fetched no package list for {', '.join(missing)} of {self.suite} from {self.mirror} ({why})",
                "check the network or apt.mirror in lab.yaml; the next lab command retries",
            )
        (self.root / "lists" / ".lab-updated").write_text(self._identity())
        return True

    def resolve(self, names: Iterable[str], arch: str) -> list[Package]:
        """Resolve package names to the candidate versions in the lists, in the given order."""
        wanted = list(dict.fromkeys(names))
        return self._memo(("resolve", arch, *wanted), lambda: self._resolve(wanted, arch))

    def closure(self, names: Iterable[str], arch: str) -> list[Package]:
        """``names`` (``NAME`` or ``NAME=VERSION``) and everything they depend on, Recommends left out, as an
        ``apt-get install`` into an empty system would unpack them (sorted by name)."""
        wanted = list(dict.fromkeys(names))
        return self._memo(("closure", arch, *wanted), lambda: self._closure(wanted, arch))

    def _memo(self, question: tuple[str, ...], answer: Callable[[], list[Package]]) -> list[Package]:
        """Answers are remembered per list refresh (``resolved.json``): apt-cache takes ~0.5 s a call, a closure ~2 s."""
        self._lists()
        stamp = self.root / "lists" / ".lab-updated"
        memo_key = sha256_text(MEMO_VERSION, str(stamp.stat().st_mtime_ns), self._identity(), *question)
        memo_file = self.root / "resolved.json"
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
        if isinstance(memo, dict) and memo.get("stamp") == stamp.stat().st_mtime_ns and memo_key in memo.get("answers", {}):
            return [Package(**p) for p in memo["answers"][memo_key]]
        packages = answer()
        answers = memo.get("answers", {}) if isinstance(memo, dict) and memo.get("stamp") == stamp.stat().st_mtime_ns else {}
        answers[memo_key] = [asdict(p) for p in packages]
        write_atomic(memo_file, json.dumps({"stamp": stamp.stat().st_mtime_ns, "answers": answers}))
        return packages

    def _lists(self) -> None:
        """Lists to answer from: fetched now if there are none from a complete refresh."""
        if self.lists_age_hours() is None:
            self.update(0)

    def names(self, prefix: str) -> set[str]:
        """Every package name in the lists that starts with ``prefix``."""
        self._lists()
        return set(self._run(["apt-cache", "pkgnames", prefix], ok_missing=True).split())

    def _closure(self, wanted: list[str], arch: str) -> list[Package]:
        out = self._run(["apt-get", "install", "-s", "-q", "--no-install-recommends", *wanted])
        chosen = re.findall(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)", out, re.MULTILINE)
        if not chosen:
            raise ImageError(f"apt-get install -s {' '.join(wanted)} in {self.suite} chose nothing", "check the mirror")
        specs = [f"{name}:{pkg_arch}={version}" for name, version, pkg_arch in chosen]
        found = {(s["Package"], s["Version"]): s for s in parse_deb822(self._run(["apt-cache", "show", *specs]))}
        packages = []
        for name, version, pkg_arch in sorted(chosen):
            s = found[(name, version)]
            packages.append(Package(name, version, pkg_arch, s.get("SHA256", ""), int(s.get("Size", "0")), s.get("Depends", "")))
        return packages

    def _resolve(self, wanted: list[str], arch: str) -> list[Package]:
        out = self._run(["apt-cache", "show", "--no-all-versions", *(f"{n}:{arch}" for n in wanted)])
        named = {s["Package"] for s in parse_deb822(out)}
        rest = [n for n in wanted if n not in named]
        if rest:  # Architecture: all packages (linux-libc-dev) answer only to :all
            out += "\n" + self._run(["apt-cache", "show", "--no-all-versions", *(f"{n}:all" for n in rest)], ok_missing=True)
        found = {}
        for s in parse_deb822(out):
            found[s["Package"]] = Package(
                name=s["Package"],
                version=s["Version"],
                arch=s["Architecture"],
                sha256=s.get("SHA256", ""),
                size=int(s.get("Size", "0")),
                depends=s.get("Depends", ""),
            )
        missing = [n for n in wanted if n not in found]
        if missing:
            raise UserError(f"package(s) not in {self.suite}/{arch}: {', '.join(missing)}", "fix the recipe's package list")
        return [found[n] for n in wanted]

    def download(self, packages: Iterable[Package], pool: Path) -> dict[str, Path]:
        """Download packages into ``pool`` (skipping those already there with the right hash)."""
        packages = list(packages)
        pool.mkdir(parents=True, exist_ok=True)
        paths = {p.name: pool / p.deb_name for p in packages}
        todo = [p for p in packages if not paths[p.name].exists() or sha256_file(paths[p.name]) != p.sha256]
        if todo:
            # A directory of its own: two downloads into one pool (the QEMU's beside an image's) run side by side.
            partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=pool))
            try:
                log.info("downloading %d .deb(s): %s", len(todo), " ".join(p.name for p in todo))
                self._run(["apt-get", "-q", "download", *(p.spec for p in todo)], cwd=partial)
                for p in todo:
                    got = partial / p.deb_name
                    if not got.exists() or sha256_file(got) != p.sha256:
                        raise ImageError(
                            f"download of {p.spec} is missing or has a wrong SHA256", "run again; if it persists, check the mirror"
                        )
                    os.replace(got, paths[p.name])
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        return paths
