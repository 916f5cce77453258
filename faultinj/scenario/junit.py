"""JUnit XML for CI systems: one testsuite per scenario, one testcase per check."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .runner import Report


def write(reports: list[Report], path: str) -> None:
    root = ET.Element("testsuites")
    for r in reports:
        failures = sum(1 for c in r.checks if not c.ok)
        suite = ET.SubElement(root, "testsuite", name=r.scenario, tests=str(len(r.checks) + len(r.errors)),
                              failures=str(failures), errors=str(len(r.errors)), time=f"{r.seconds:.3f}")
        for c in r.checks:
            case = ET.SubElement(suite, "testcase", classname=f"faultinj.{r.scenario}", name=c.name, time="0")
            if not c.ok:
                ci = f" CI [{c.ci[0]:.4f}, {c.ci[1]:.4f}]" if c.ci else ""
                fail = ET.SubElement(case, "failure", message=f"observed {c.observed}, expected {c.expected}{ci}")
                fail.text = fail.get("message")
        for i, err in enumerate(r.errors):
            case = ET.SubElement(suite, "testcase", classname=f"faultinj.{r.scenario}", name=f"error {i}")
            ET.SubElement(case, "error", message=err).text = err
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
