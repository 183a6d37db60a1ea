"""Truth checks of an account: does it add up, and does it agree with what the probe and ``lab run`` counted?

Pure. Every traced fault-probe cell carries these checks beside its table:

- ``adds up``: the process's own rusage equals the sampled faults plus the
  unsampled exec set-up plus the launcher's pre-exec faults (the unsampled line
  is never negative: the trace parser rejects that);
- ``exec set-up bounded``: the unsampled line is no larger than what execve can
  fault without a perf event (a page per page of argument and environment
  strings, plus two), so faults the tracer missed fail the account instead of
  filling that row;
- ``probe agrees``: per stage, the account's faults equal the deltas the probe
  itself printed in the traced run (its entry minus the pre-exec faults);
- ``untraced agrees``: per stage, within ±1 of the median of untraced runs of
  the same cell in the same launch mode (tracing must not change what it measures);
- ``touch1 in buffer``: the first touch's anonymous faults all land in one mapping, and with the malloc stage's
  faults there fault in every page of the buffer (a page may fault twice: under TCG, s390x's memset MVC fetches a
  page, which maps the zero page, before its store copies it); its other faults are named;
- ``file_read in file``: the file stage's major faults all land in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lab.explain.account import Account

TOLERANCE = 1  # faults: the stage boundary is a clock read, one instruction away from the counters' read


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _stage_mismatch(ours: Mapping[str, tuple[int, int]], theirs: Mapping[str, tuple[float, float]], tolerance: float) -> list[str]:
    bad = []
    for stage, (minor, major) in theirs.items():
        if stage not in ours:
            continue
        got = ours[stage]
        if abs(got[0] - minor) > tolerance or abs(got[1] - major) > tolerance:
            bad.append(f"{stage} {got[0]}/{got[1]} vs {minor:g}/{major:g}")
    return bad


def check(acc: Account, untraced: Mapping[str, tuple[float, float]] | None = None, buffer_pages: int | None = None) -> list[Check]:
    """The checks that apply to ``acc`` (those needing the probe's stages only when it has them)."""
    sampled = len(acc.faults)
    out = [
        Check(
            "adds up",
            sampled + acc.unsampled + acc.pre_exec == acc.rusage_total and acc.unsampled >= 0,
            f"{sampled} sampled + {acc.unsampled} exec set-up + {acc.pre_exec} before exec = {acc.rusage_total} (rusage)",
        )
    ]
    if acc.exec_bound is not None:  # a remainder larger than exec can fault is something the tracer did not see
        out.append(
            Check(
                "exec set-up bounded",
                acc.unsampled <= acc.exec_bound,
                f"{acc.unsampled} unsampled faults, at most {acc.exec_bound} from execve's copy of its argument and environment strings",
            )
        )
    totals = acc.stage_totals()
    if acc.probe_stages:
        own = dict(acc.probe_stages)
        first = acc.stages[0]
        own[first] = (own[first][0] - acc.pre_exec, own[first][1])  # the probe counts its launcher's fork too
        bad = _stage_mismatch(totals, {k: (float(a), float(b)) for k, a, b in ((k, *v) for k, v in own.items())}, 0)
        out.append(Check("probe agrees", not bad, "; ".join(bad) or "every stage equals the probe's own count in the traced run"))
    if untraced:
        bad = _stage_mismatch(totals, untraced, TOLERANCE)
        detail = "; ".join(bad) or f"every stage within ±{TOLERANCE} of the untraced median"
        out.append(Check("untraced agrees", not bad, detail))
    touch = [f for f in acc.faults if f.stage == "touch1"]
    if touch and buffer_pages:
        # The buffer's: anonymous memory. Others are named (the memset's own code where nothing ran it before: i386's
        # glibc picks __memset_sse2 at its first call; a stack page), never another anonymous mapping.
        buffer = [f for f in touch if f.object in ("[anon]", "[heap]")]
        regions = {f.region for f in buffer}
        mine = [*buffer, *(f for f in acc.faults if f.stage == "malloc" and f.region in regions)]
        # distinct pages where every fault says its page; one fault per page where a stored account does not
        pages = len({f.page for f in mine}) if all(f.page >= 0 for f in mine) else len(mine)
        ok = len(regions) == 1 and pages == buffer_pages
        twice = f", {len(mine) - pages} of them a second fault on a page" if len(mine) > pages else ""
        others = sorted({(f.object, f.section) for f in touch if f not in buffer})
        elsewhere = f"; {len(touch) - len(buffer)} elsewhere ({', '.join(f'{o} {s}' for o, s in others)})" if others else ""
        detail = (f"{len(buffer)} touch1 faults in {len(regions)} anonymous mapping(s) {sorted(regions)}: {len(mine)} with "
                  f"malloc's on {pages} pages{twice}; buffer spans {buffer_pages} pages{elsewhere}")  # fmt: skip
        out.append(Check("touch1 in buffer", ok, detail))
    reads = [f for f in acc.faults if f.stage == "file_read" and f.major]
    if reads:
        files = {f.object for f in reads}
        out.append(
            Check("file_read in file", len(files) == 1 and next(iter(files)).startswith("file:"), f"major faults in {sorted(files)}")
        )
    return out
