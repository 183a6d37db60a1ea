"""Headless Chromium for the tests that look at lab's HTML for real: screenshots, the DOM after layout, and the
laid-out boxes of every SVG label (no two overlap, none leaves its chart)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.e2e.png import pixels

# Measures every SVG text box after layout and writes what overlaps into the DOM (test copies only: lab's pages
# carry no script).
_MEASURE = """<script>
(function () {
  const bad = [];
  document.querySelectorAll("svg").forEach((svg) => {
    const frame = svg.getBoundingClientRect();
    const boxes = [...svg.querySelectorAll("text")].map((t) => [t.textContent, t.getBoundingClientRect()]).filter(([, b]) => b.width > 0);
    boxes.forEach(([text, b], i) => {
      if (b.left < frame.left - 0.5 || b.right > frame.right + 0.5) bad.push("outside its chart: " + text);
      boxes.slice(0, i).forEach(([other, o]) => {
        if (b.left < o.right - 0.5 && o.left < b.right - 0.5 && b.top < o.bottom - 0.5 && o.top < b.bottom - 0.5) bad.push(other + " | " + text);
      });
    });
  });
  document.body.setAttribute("data-overlaps", JSON.stringify(bad));
})();
</script>"""


def chromium() -> str:
    browser = shutil.which("chromium")
    assert browser, "chromium is a test dependency (ansible/host-packages.txt, ./setup.sh)"
    return browser


def _flags(profile: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]  # fmt: skip


def screenshot(page: Path, shot: Path, size: tuple[int, int] = (1200, 1600)) -> tuple[int, int, list[bytes]]:
    """The page as Chromium draws it: (width, height, rows of RGB(A) bytes)."""
    cmd = [chromium(), *_flags(shot.parent / "profile"), f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    return pixels(shot.read_bytes())


def dom(page: Path, work: Path) -> str:
    cmd = [chromium(), *_flags(work / "profile"), "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def overlapping_labels(page: Path, work: Path) -> list[str]:
    """Every pair of SVG labels whose laid-out boxes overlap, and every label outside its chart, on ``page``."""
    copy = work / f"measured-{page.name}"
    copy.write_text(page.read_text().replace("</body>", _MEASURE + "\n</body>"))
    text = dom(copy, work)
    start = text.index('data-overlaps="') + len('data-overlaps="')
    raw = text[start : text.index('"', start)].replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    found: list[str] = json.loads(raw)
    return found


def colours(rows: list[bytes], bpp: int, step: int = 1) -> set[bytes]:
    """The RGB values of every ``step``-th pixel of ``rows``."""
    return {row[i : i + 3] for row in rows for i in range(0, len(row), bpp * step)}


def has_colour(rows: list[bytes], rgb: tuple[int, int, int], bpp: int, slack: int = 6) -> bool:
    """Whether any pixel is within ``slack`` of ``rgb`` in every channel (antialiasing moves edges, not fills)."""
    return any(all(abs(px[k] - rgb[k]) <= slack for k in range(3)) for px in colours(rows, bpp))
