"""JUnit XML for CI dashboards: a comparison (one testcase per cell x stage) or a run (one per cell).

Shaped for Jenkins and GitLab: the suite name is stable from night to night
(run ids go into ``<properties>``), the classname is ``arch.variant`` and the
buffer size is part of the test name (``entry[1M]``: a dotted size would read
as a class), every element has a ``time``, and the medians behind a verdict
are testcase properties.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from lab.results.compare import Comparison
from lab.results.report import Report
from lab.results.verdict import Finding
from lab.text import size_text


def _split(cell: str) -> tuple[str, str]:
    """``arch/variant/size[/axes]`` -> (classname ``arch.variant``, the test-name suffix ``[1M]`` or ``[1M][thp=always]``)."""
    arch, variant, size, *axes = cell.split("/", 3)
    return f"{arch}.{variant}", f"[{size_text(int(size))}]" + "".join(f"[{a}]" for a in axes)


def _suffix(size: int, axes: str) -> str:
    return f"[{size_text(size)}]" + (f"[{axes}]" if axes else "")


def _properties(parent: ET.Element, values: Iterable[tuple[str, object]]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in values:
        ET.SubElement(props, "property", name=name, value=f"{value:g}" if isinstance(value, float) else str(value))


def _document(suite_name: str, suite_props: Iterable[tuple[str, object]], seconds: float, fill: ET.Element) -> str:
    counts = {k: sum(1 for c in fill.iter("testcase") if c.find(k) is not None) for k in ("failure", "error", "skipped")}
    tests = len(fill.findall("testcase"))
    suite = ET.Element("testsuite", name=suite_name, tests=str(tests), failures=str(counts["failure"]), errors=str(counts["error"]),
                       skipped=str(counts["skipped"]), time=f"{seconds:.3f}", timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))  # fmt: skip
    _properties(suite, suite_props)
    suite.extend(fill.findall("testcase"))
    root = ET.Element("testsuites", name="lab", tests=str(tests), failures=str(counts["failure"]), errors=str(counts["error"]),
                      time=f"{seconds:.3f}")  # fmt: skip
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def to_junit(c: Comparison, seconds: float = 0.0) -> str:
    """One testcase per cell x stage; regressions fail, missing cells error, incomparable ones are skipped."""
    cases: dict[tuple[str, str], list[Finding]] = {}
    for f in c.findings:
        cases.setdefault((f.cell, f.stage), []).append(f)
    holder = ET.Element("holder")
    for (cell, stage), fs in sorted(cases.items()):
        classname, suffix = _split(cell)
        case = ET.SubElement(holder, "testcase", classname=classname, name=f"{stage if stage != '*' else 'cell'}{suffix}", time="0")
        _properties(case, [(f"{f.counter}.{k}", v) for f in fs if f.base_median is not None
                           for k, v in (("baseline_median", f.base_median), ("current_median", f.cur_median))])  # fmt: skip
        regressed = [f for f in fs if f.verdict == "regressed"]
        if regressed:
            msg = "; ".join(f"{cell} {stage} regressed: {f.describe()}" for f in regressed)
            ET.SubElement(case, "failure", type="regressed", message=msg).text = msg
        elif any(f.verdict == "missing" for f in fs):
            msg = f"{cell} {stage} missing: " + "; ".join(f.detail for f in fs if f.verdict == "missing")
            ET.SubElement(case, "error", type="missing", message=msg).text = msg
        elif any(f.verdict == "incomparable" for f in fs):
            ET.SubElement(case, "skipped", message=f"{cell} incomparable: " + "; ".join(f.detail for f in fs))
        else:
            ET.SubElement(case, "system-out").text = "; ".join(f"{f.counter} {f.verdict}: {f.describe()}" for f in fs)
    if c.nothing_comparable:
        case = ET.SubElement(holder, "testcase", classname="lab", name="comparable", time="0")
        ET.SubElement(case, "error", type="nothing-comparable", message=c.nothing_comparable).text = c.nothing_comparable
    props = [("baseline", c.baseline_ref), ("run", c.run_id), ("label", c.label)]
    return _document("lab compare", props, seconds, holder)


def run_to_junit(report: Report) -> str:
    """``lab run --junit``: one testcase per cell; an errored cell is an error, a measured one passes with its medians."""
    holder = ET.Element("holder")
    for v in report.cells:
        case = ET.SubElement(
            holder,
            "testcase",
            classname=f"{v.cell.arch}.{v.cell.variant}",
            name=f"cell{_suffix(v.cell.buffer_size, v.cell.axes)}",
            time="0",
        )
        _properties(case, [(f"{stage}.minflt_median", s.median) for stage, s in v.minor.items()]
                    + [(f"{stage}.majflt_median", s.median) for stage, s in v.major.items()])  # fmt: skip
    for e in report.errors:
        case = ET.SubElement(holder, "testcase", classname=f"{e.arch}.{e.variant}", name=f"cell{_suffix(e.buffer_size, e.axes)}", time="0")
        ET.SubElement(case, "error", type=e.stage, message=e.message).text = e.evidence
    run = report.run
    seconds = (run.ended - run.started) if run.ended else 0.0
    return _document("lab run", [("run", run.id), ("status", run.status)], seconds, holder)
