"""An integer schema's `minimum` and `maximum` let the model write exactly the integers in range.

Checked with llama.cpp's own grammar engine over the default model's tokens:
for bounds hypothesis draws (inclusive and exclusive, draft 4's boolean form
too), every integer near them and anywhere else must be writable exactly when
Python's comparison says it is in range.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingle.core.errors import InvalidRequest
from ingle.core.runtime.grammar import grammar_for_format

from .grammar_engine import GrammarEngine

CHECKS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
BOUND = st.integers(-(10**7), 10**7) | st.integers(-120, 120)


def in_range(schema: dict[str, Any], value: int) -> bool:
    """What the bounds mean, read straight from the schema."""
    low, high = schema.get("minimum"), schema.get("maximum")
    strict_low, strict_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    checks = [
        low is None or (value > low if strict_low is True else value >= low),
        high is None or (value < high if strict_high is True else value <= high),
        # Draft 4's booleans are no bounds of their own (and 0 == False in Python: test the type).
        strict_low is None or isinstance(strict_low, bool) or value > strict_low,
        strict_high is None or isinstance(strict_high, bool) or value < strict_high,
    ]
    return all(checks)


@st.composite
def bounded_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    low, high = sorted([draw(BOUND), draw(BOUND)])
    if draw(st.booleans()):
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high
    if "minimum" in schema and draw(st.booleans()):
        schema["exclusiveMinimum"] = True  # draft 4
    if len(schema) == 1:
        schema["minimum"] = low
    if not any(in_range(schema, value) for value in (low, low + 1, high - 1, high)):
        # An empty range is refused (the last test); drop the upper bound instead.
        schema.pop("maximum", None)
        schema.pop("exclusiveMaximum", None)
    return schema


@CHECKS
@given(bounded_schemas(), st.data())
def test_exactly_the_integers_in_range_can_be_written(
    grammar_engine: GrammarEngine, schema: dict[str, Any], data: st.DataObject
) -> None:
    grammar = grammar_for_format(schema)
    assert grammar is not None
    edges = [bound for key, bound in schema.items() if isinstance(bound, int) and not isinstance(bound, bool)]
    near = st.sampled_from([edge + step for edge in edges for step in (-11, -1, 0, 1, 10)])
    for value in data.draw(st.lists(near | BOUND | st.integers(-(10**17), 10**17), min_size=6, max_size=6)):
        assert grammar_engine.accepts(grammar, json.dumps(value)) == (
            in_range(schema, value) and abs(value) < 10**16
        ), value


def test_a_bounded_count_in_a_tool_call_stays_in_range(grammar_engine: GrammarEngine) -> None:
    schema = {"type": "object", "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 250}}}
    grammar = grammar_for_format({**schema, "required": ["count"]})
    assert grammar is not None
    assert grammar_engine.accepts(grammar, '{"count": 250}') and grammar_engine.accepts(grammar, '{"count": 1}')
    assert not grammar_engine.accepts(grammar, '{"count": 0}') and not grammar_engine.accepts(grammar, '{"count": 251}')
    assert not grammar_engine.accepts(grammar, '{"count": -3}') and not grammar_engine.accepts(grammar, '{"count": 01}')
    # An exclusive bound of 0 (which Python also reads as False, draft 4's "not exclusive").
    positive = grammar_for_format({"type": "integer", "exclusiveMinimum": 0})
    assert positive is not None and grammar_engine.accepts(positive, "1")
    assert not grammar_engine.accepts(positive, "0") and not grammar_engine.accepts(positive, "-11")


@pytest.mark.parametrize(
    ("schema", "complaint"),
    [
        ({"type": "integer", "minimum": 5, "maximum": 4}, "minimum above maximum"),
        ({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 4}, "minimum above maximum"),
        ({"type": "integer", "minimum": "1"}, "must be a number"),
    ],
)
def test_bounds_no_integer_meets_are_refused_with_a_sentence(schema: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^format: ") as refused:
        grammar_for_format(schema)
    assert complaint in refused.value.message
