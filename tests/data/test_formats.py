"""The linear-time format checks agree with the reference regexes (with/without DOTALL)."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from data.tasks import formats

SOFT = r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>"
STRICT = r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$"
PIECES = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "\n", " ", "x", "\t"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14).map("".join))
def test_soft_format_matches_regex(text):
    assert formats.soft_format(text, "d1") == (re.match(SOFT, text) is not None)
    assert formats.soft_format(text, "fixed") == (re.match(SOFT, text, re.DOTALL) is not None)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14).map("".join))
def test_strict_format_matches_regex(text):
    assert formats.strict_format(text, "d1") == (re.match(STRICT, text) is not None)
    fixed = re.fullmatch(STRICT[1:-1] + r"\n?", text, re.DOTALL) is not None
    assert formats.strict_format(text, "fixed") == fixed


def test_count_xml_golden():
    text = "<reasoning>\nr\n</reasoning>\n<answer>\n7\n</answer>\nxyz"
    # 4 * 0.125 - 0.001 * len("7\n</answer>\nxyz") - 0.001 * (len("\nxyz") - 1)
    assert formats.count_xml(text, "d1") == 0.5 - 0.015 - 0.003
    assert formats.count_xml("\n<answer>\n" + "x" * 1000, "d1") < 0
    assert formats.count_xml("\n<answer>\n" + "x" * 1000, "fixed") == 0.0
