"""A string schema's `pattern` lets the model write exactly the JSON strings whose value the pattern matches.

Checked with llama.cpp's own grammar engine over the default model's tokens,
against Python's `re` as the reference for which values match: strings
hypothesis draws from each pattern must be accepted, and strings near them
that do not match must be refused.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingle.core.errors import InvalidRequest
from ingle.core.runtime.grammar import grammar_for_format

from .grammar_engine import GrammarEngine

# Patterns as tool and response schemas write them; each is valid in ECMA 262 and Python alike.
PATTERNS = [
    r"^\d{4}-\d{2}-\d{2}$",  # a date
    r"^v\d+\.\d+\.\d+$",  # a version
    r"^[A-Z]{2,3}-\d{1,5}$",  # a ticket
    r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$",  # an address
    r"^.{1,12}$",  # any line, quotes and backslashes included
    r"^[^,]+(,[^,]+)*$",  # a comma-separated list
    r"^\w+(\s\w+)?$",
    r"^(yes|no|maybe)$",
    r"^\S+$",
    r"^(?:\+\d{1,3} )?\(\d{3}\) \d{3}-\d{4}$",
    r"ab+c",  # unanchored: anywhere in the value
    r"^x|y$",  # starts with x or ends with y
]
# What values are drawn from: letters, digits, punctuation and control characters, ASCII and beyond, but no
# spaces beyond ASCII's space, where ECMA's \s and Python's differ.
ALPHABET = st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Cc"], include_characters=" ")


def python_matches(pattern: str, value: str) -> bool:
    """What a pattern means in a JSON schema (ECMA 262), by Python's `re`.

    ECMA's \\d and \\w are ASCII; its `.` matches no line break (Python's
    matches all but \\n); its `$` is the end of the value (Python's also
    allows a newline after it). Every `.` and `$` unescaped in PATTERNS is
    outside a class.
    """
    python = re.sub(r"(?<!\\)\.", r"[^\\n\\r\\u2028\\u2029]", pattern).replace("$", r"\Z")
    return re.search(python, value, re.ASCII) is not None


def string_grammar(pattern: str) -> str:
    grammar = grammar_for_format({"type": "string", "pattern": pattern})
    assert grammar is not None
    return grammar


def as_json(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


CHECKS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_value_the_pattern_matches_can_be_written(grammar_engine: GrammarEngine, pattern: str) -> None:
    grammar = string_grammar(pattern)

    @CHECKS
    @given(
        st.from_regex(re.compile(pattern, re.ASCII), alphabet=ALPHABET).filter(
            lambda value: python_matches(pattern, value)
        )
    )
    def check(value: str) -> None:
        assert grammar_engine.accepts(grammar, as_json(value)), value

    check()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_value_the_pattern_does_not_match_cannot_be_written(grammar_engine: GrammarEngine, pattern: str) -> None:
    grammar = string_grammar(pattern)
    near_misses = st.builds(
        lambda value, index, extra: value[:index] + extra + value[index + 1 :],
        st.from_regex(re.compile(pattern, re.ASCII), alphabet=ALPHABET),
        st.integers(0, 12),
        st.text(ALPHABET, max_size=2),
    )

    @CHECKS
    @given(st.one_of(near_misses, st.text(ALPHABET, max_size=12)))
    def check(value: str) -> None:
        assert grammar_engine.accepts(grammar, as_json(value)) == python_matches(pattern, value), value

    check()


def test_json_text_is_escaped_as_json_writes_it(grammar_engine: GrammarEngine) -> None:
    grammar = string_grammar(r"^.{1,12}$")
    assert grammar_engine.accepts(grammar, as_json('say "hi" \\ \t'))
    assert not grammar_engine.accepts(grammar, '"say "hi""')  # a bare quote would end the string
    assert not grammar_engine.accepts(grammar, '"a\tb"')  # a raw tab is not JSON
    assert not grammar_engine.accepts(grammar, '"a\\nb"')  # `.` does not match a line break, escaped or not


@pytest.mark.parametrize(
    ("pattern", "complaint"),
    [
        (r"^(?=a)a$", "lookahead"),
        (r"^(a)\1$", "back-reference"),
        (r"\bword\b", "\\b"),
        (r"^(a*)*$", "unbounded repeat of a part that can be empty"),
        (r"^[^\s\S]$", "matches no character"),
        (r"^[b-a]$", "not a regular expression"),
        (r"(?i)^a$", "flags"),
        (r"^\p{L}$", "not a regular expression"),
    ],
)
def test_a_pattern_no_grammar_can_follow_is_refused_with_a_sentence(pattern: str, complaint: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^format: ") as refused:
        grammar_for_format({"type": "string", "pattern": pattern})
    assert complaint in refused.value.message
