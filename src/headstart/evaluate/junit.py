"""JUnit XML for suite results, so CI systems (GitHub Actions, GitLab, Jenkins) show each gate as a test.

The layout is the common subset those tools read (the schema Jenkins' JUnit plugin and
``pytest --junitxml`` produce)::

    <testsuites name=".." tests="N" failures="F" errors="0" time="T">
      <testsuite name=".." tests="N" failures="F" errors="0" skipped="0" time="T">
        <testcase name=".." classname=".." time="t">
          <failure message="first line">full message</failure>   (failed cases only)
          <system-out>message</system-out>                        (passed cases with a message)
        </testcase>
      </testsuite>
    </testsuites>
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

_CASE_KEYS = ("name", "classname", "passed", "message", "time")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
"""Characters XML 1.0 cannot hold even escaped; they are replaced by U+FFFD."""


def junit_xml(suite_name: str, cases: Sequence[Mapping]) -> str:
    """JUnit XML text for ``cases``, each ``{"name", "classname", "passed", "message", "time"}``.

    ``time`` is in seconds. A failed case carries a ``<failure>`` whose ``message`` attribute is
    the message's first line and whose text is the whole message. Raises ``ValueError`` for a case
    without one of those keys or with a negative or non-numeric time.
    """
    checked = [_check_case(i, case) for i, case in enumerate(cases)]
    failures = sum(not c["passed"] for c in checked)
    total_time = _seconds(sum(c["time"] for c in checked))
    counts = {"tests": str(len(checked)), "failures": str(failures), "errors": "0"}

    root = ET.Element("testsuites", {"name": _text(suite_name), **counts, "time": total_time})
    suite = ET.SubElement(root, "testsuite", {"name": _text(suite_name), **counts, "skipped": "0", "time": total_time})
    for c in checked:
        case = ET.SubElement(suite, "testcase", {"name": c["name"], "classname": c["classname"], "time": _seconds(c["time"])})
        if not c["passed"]:
            failure = ET.SubElement(case, "failure", {"message": c["message"].splitlines()[0] if c["message"] else "failed"})
            failure.text = c["message"]
        elif c["message"]:
            ET.SubElement(case, "system-out").text = c["message"]
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _check_case(i: int, case: Mapping) -> dict:
    if not isinstance(case, Mapping):
        raise ValueError(f"cases[{i}] must be a mapping with keys {', '.join(_CASE_KEYS)} (got {case!r})")
    missing = [k for k in _CASE_KEYS if k not in case]
    if missing:
        raise ValueError(f"cases[{i}] lacks {', '.join(missing)}; each case needs {', '.join(_CASE_KEYS)}")
    time = case["time"]
    if isinstance(time, bool) or not isinstance(time, (int, float)) or not time >= 0:
        raise ValueError(f"cases[{i}].time must be a number of seconds >= 0 (got {time!r})")
    return {
        "name": _text(case["name"]),
        "classname": _text(case["classname"]),
        "passed": bool(case["passed"]),
        "message": _text(case["message"] or ""),
        "time": float(time),
    }


def _text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _seconds(t: float) -> str:
    return f"{t:.3f}"
