"""JUnit XML: parses back to the same cases, counts failures, survives awkward text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from headstart.evaluate.junit import junit_xml

CASES = [
    {"name": "accuracy >= 0.85", "classname": "banking.test", "passed": True, "message": "accuracy 0.9100 >= 0.85", "time": 0.5},
    {"name": "macro_f1 drop <= 1.0 pt [label=refund]", "classname": "banking.test", "passed": False,
     "message": "macro_f1 drop 1.30 pt (0.9100 -> 0.8970) is not <= 1 pt\nsecond line", "time": 0.25},
    {"name": "accuracy >= 0.8", "classname": "banking.public", "passed": True, "message": "", "time": 0},
]


def test_round_trip():
    text = junit_xml("banking-regression", CASES)
    assert text.startswith("<?xml")
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    assert (root.get("name"), root.get("tests"), root.get("failures"), root.get("errors")) == ("banking-regression", "3", "1", "0")
    (suite,) = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "0")
    assert float(suite.get("time")) == pytest.approx(0.75)
    cases = suite.findall("testcase")
    assert [(c.get("name"), c.get("classname")) for c in cases] == [(c["name"], c["classname"]) for c in CASES]
    assert [float(c.get("time")) for c in cases] == [0.5, 0.25, 0.0]
    assert cases[0].find("failure") is None and cases[0].find("system-out").text == CASES[0]["message"]
    failure = cases[1].find("failure")
    assert failure.get("message") == "macro_f1 drop 1.30 pt (0.9100 -> 0.8970) is not <= 1 pt"
    assert failure.text == CASES[1]["message"]
    assert cases[2].find("failure") is None and cases[2].find("system-out") is None


def test_special_characters_are_escaped_or_replaced():
    case = {"name": 'a < b & "c"', "classname": "x", "passed": False, "message": "bad \x00 byte <tag>", "time": 1}
    root = ET.fromstring(junit_xml("s&s", [case]))
    tc = root.find("testsuite/testcase")
    assert tc.get("name") == 'a < b & "c"'
    assert tc.find("failure").text == "bad \ufffd byte <tag>"
    assert root.get("name") == "s&s"


def test_no_cases_is_an_empty_suite():
    root = ET.fromstring(junit_xml("empty", []))
    assert root.get("tests") == "0" and root.find("testsuite").findall("testcase") == []


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ({"name": "x", "classname": "y", "passed": True, "message": ""}, "lacks time"),
        ({"name": "x", "classname": "y", "passed": True, "message": "", "time": -1}, "time"),
        ("not a mapping", "mapping"),
    ],
)
def test_bad_cases_are_refused(case, message):
    with pytest.raises(ValueError, match=message):
        junit_xml("s", [case])
