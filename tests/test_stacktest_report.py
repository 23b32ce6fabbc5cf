"""`stack test` reports: text, JSON, JUnit XML and markdown, for runs and for --plan comparisons."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from toolchain.stacktest.check import Answer
from toolchain.stacktest.collect import Test
from toolchain.stacktest.compare import Pair, TargetComparison, plain_word_diff, word_diff
from toolchain.stacktest.report import (
    TargetRun,
    render_compare,
    render_compare_markdown,
    render_junit,
    render_json,
    render_markdown,
    render_text,
)
from toolchain.stacktest.run import Result, exit_code
from toolchain.stacktest.spec import TestCase


def t(model: str, name: str, line: int = 3) -> Test:
    return Test(model, model, TestCase(name=name, prompt="hi"), f"stacks/stack.yaml:{line}")


def ok(test: Test, text: str = "Hello there.", tokens: int = 3) -> Result:
    return Result(test, test.model, "pass", [], Answer(text, tokens, 0.25, "stop"))


def bad(test: Test, text: str = "Goodbye.", reasons=("does not contain 'hello'",)) -> Result:
    return Result(test, test.model, "fail", list(reasons), Answer(text, 2, 0.5, "stop"))


def err(test: Test) -> Result:
    return Result(test, test.model, "error", error='model "x" not found')


RUNS = [
    TargetRun("gpu-1", "http://10.0.0.11:11434", [ok(t("bot:latest", "greets")), bad(t("bot:latest", "polite <&>")),
                                                   err(t("coder:latest", "json"))]),
    TargetRun("gpu-2", "http://10.0.0.12:11434", error="could not connect to http://10.0.0.12:11434: is the server running?"),
]


def test_exit_codes():
    a, b = t("m", "a"), t("m", "b")
    assert exit_code([ok(a), ok(b)]) == 0
    assert exit_code([ok(a), bad(b)]) == 1
    assert exit_code([bad(a), err(b)]) == 2
    assert exit_code([]) == 0


def test_junit_is_valid_xml_with_counts():
    root = ET.fromstring(render_junit(RUNS))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "1", "2")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"gpu-1/bot:latest", "gpu-1/coder:latest", "gpu-2"}
    bot = suites["gpu-1/bot:latest"]
    assert (bot.get("tests"), bot.get("failures"), bot.get("errors")) == ("2", "1", "0")
    polite = bot.find("testcase[@name='polite <&>']")
    assert polite.find("failure").get("message") == "does not contain 'hello'"
    assert polite.find("system-out").text == "Goodbye."
    assert polite.get("file") == "stacks/stack.yaml" and polite.get("line") == "3"
    assert suites["gpu-1/coder:latest"].find("testcase/error").get("message") == 'model "x" not found'
    assert "could not connect" in suites["gpu-2"].find("testcase/error").get("message")


def test_junit_survives_control_characters():
    run = TargetRun("t", "u", [ok(t("m", "a"), text="bell\x07 and \x00 null")])
    root = ET.fromstring(render_junit([run]))
    assert root.find(".//system-out").text == "bell\ufffd and \ufffd null"


def test_json_document():
    doc = json.loads(render_json(RUNS))
    assert doc["format_version"] == "1.0" and doc["summary"] == {"pass": 1, "fail": 1, "error": 1}
    first = doc["targets"][0]["results"][0]
    assert first == {"model": "bot:latest", "asked": "bot:latest", "test": "greets", "origin": "stacks/stack.yaml:3",
                     "outcome": "pass", "reasons": [], "error": None, "answer": "Hello there.", "tokens": 3,
                     "seconds": 0.25, "done_reason": "stop"}
    assert doc["targets"][1]["error"].startswith("could not connect")


def test_text_table():
    out = render_text(RUNS)
    assert "greets" in out and "✓ pass" in out and "✗ fail" in out and "! error" in out
    assert "does not contain 'hello'" in out and "“Goodbye.”" in out
    assert "[gpu-2] could not run the tests: could not connect" in out
    assert out.rstrip().endswith("1 passed, 1 failed, 1 error; target gpu-2 failed")


def test_markdown_run():
    out = render_markdown(RUNS)
    assert out.startswith("### Corral stack test\n\n**1 passed, 1 failed, 1 error**")
    assert "| `bot:latest` | polite &lt;&amp;&gt; | ✗ fail | 2 | 0.50 | does not contain 'hello' | Goodbye. |" in out


@pytest.mark.parametrize(
    "before, after, ops",
    [
        ("a b c", "a b c", [("=", "a b c")]),
        ("a b c", "a x c", [("=", "a "), ("-", "b"), ("+", "x"), ("=", " c")]),
        ("", "new", [("+", "new")]),
        ("old", "", [("-", "old")]),
        ("one  two", "one two three", [("=", "one"), ("-", "  "), ("+", " "), ("=", "two"), ("+", " three")]),
        # changed words separated only by blanks are one change
        ("for our internal tools. Bye", "for the finance team. Bye",
         [("=", "for "), ("-", "our internal tools."), ("+", "the finance team."), ("=", " Bye")]),
    ],
)
def test_word_diff(before, after, ops):
    assert word_diff(before, after) == ops
    assert "".join(text for op, text in ops if op != "+") == before
    assert "".join(text for op, text in ops if op != "-") == after


def test_plain_word_diff():
    assert plain_word_diff("reset the VPN token", "reset your VPN token now") == "reset [-the-]{+your+} VPN token{+ now+}"


def comparison() -> TargetComparison:
    same, flip, drift, new = t("bot:latest", "same"), t("bot:latest", "flip"), t("bot:latest", "drift"), t("fresh:latest", "n")
    pairs = [
        Pair(same, "update", ok(same), ok(same)),
        Pair(drift, "update", ok(drift, "Open the portal."), ok(drift, "Open the self-service portal.")),
        Pair(flip, "update", ok(flip, "Hello!"), bad(flip, "Go away.")),
        Pair(new, "create", None, ok(new)),
    ]
    return TargetComparison("local", "http://127.0.0.1:11434", pairs, untested=["other:latest"],
                            scratch=["corral.invalid/scratch-1/bot:latest"])


def test_compare_orders_changed_outcomes_first():
    assert [p.test.name for p in comparison().ordered()] == ["flip", "drift", "same", "n"]


def test_compare_markdown():
    out = render_compare_markdown([comparison()])
    assert "**4 test(s) of changed models, 1 outcome(s) changed, 2 answer(s) changed, 1 on new models" in out
    assert out.count("<details>") == 2 and out.count("</details>") == 2
    assert out.index("<code>bot:latest</code>") < out.index("<code>fresh:latest</code>")
    assert "| flip | ✓ pass → ✗ fail | does not contain 'hello' |" in out
    assert "| n | (new) → ✓ pass |  |" in out
    assert "Open the {+self-service +}portal." in out
    assert "- changed, no tests: other:latest" in out
    # answers cannot break out of their fence
    c = comparison()
    c.pairs[1].after.answer = Answer("```\n</details>", 2, 0.1)
    assert "````text\n```\n</details>\n````" in render_compare_markdown([c])


def test_compare_markdown_stays_under_the_comment_limit():
    test = t("bot:latest", "long")
    c = TargetComparison("local", "u", [Pair(test, "update", ok(test, "a " * 1400), ok(test, "b " * 1400))] * 1)
    many = [TargetComparison(f"t{i}", "u", c.pairs) for i in range(40)]
    out = render_compare_markdown(many, limit=20_000)
    assert len(out) < 20_200 and out.endswith("the full report is in the job's log._\n")
    assert out.count("<details>") == out.count("</details>")


def test_compare_json_and_junit():
    doc = json.loads(render_compare([comparison()], "json"))
    assert doc["summary"]["outcome_changed"] == 1 and doc["summary"]["after_fail"] == 1
    first = doc["targets"][0]["tests"][0]
    assert first["test"] == "flip" and first["before"]["outcome"] == "pass" and first["after"]["outcome"] == "fail"
    assert doc["targets"][0]["tests"][3]["before"] is None
    root = ET.fromstring(render_compare([comparison()], "junit"))
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "1", "0")


def test_compare_text():
    out = render_compare([comparison()], "text")
    assert out.index("flip") < out.index("drift") < out.index("same")
    assert "✓ pass → ✗ fail" in out and "Open the {+self-service +}portal." in out
