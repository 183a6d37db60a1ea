"""JUnit XML for CI dashboards: one testcase per cell x stage of a comparison."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from lab.results.compare import Comparison
from lab.results.verdict import Finding


def to_junit(c: Comparison) -> str:
    """One testcase per cell x stage; regressions fail, missing cells error, incomparable ones are skipped."""
    cases: dict[tuple[str, str], list[Finding]] = {}
    for f in c.findings:
        cases.setdefault((f.cell, f.stage), []).append(f)
    suite = ET.Element("testsuite", name=f"lab compare: {c.label}", timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    failures = errors = skipped = 0
    for (cell, stage), fs in sorted(cases.items()):
        case = ET.SubElement(suite, "testcase", classname=cell.replace("/", "."), name=stage if stage != "*" else "cell", time="0")
        regressed = [f for f in fs if f.verdict == "regressed"]
        if regressed:
            failures += 1
            msg = "; ".join(f"{cell} {stage} regressed: {f.describe()}" for f in regressed)
            ET.SubElement(case, "failure", type="regressed", message=msg).text = msg
        elif any(f.verdict == "missing" for f in fs):
            errors += 1
            msg = f"{cell} {stage} missing: " + "; ".join(f.detail for f in fs if f.verdict == "missing")
            ET.SubElement(case, "error", type="missing", message=msg).text = msg
        elif any(f.verdict == "incomparable" for f in fs):
            skipped += 1
            ET.SubElement(case, "skipped", message=f"{cell} incomparable: " + "; ".join(f.detail for f in fs))
        else:
            ET.SubElement(case, "system-out").text = "; ".join(f"{f.counter} {f.verdict}: {f.describe()}" for f in fs)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="lab", tests=str(len(cases)), failures=str(failures), errors=str(errors))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
