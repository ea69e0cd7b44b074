"""A number schema's `minimum` and `maximum` let the model write exactly the numbers in range.

Checked with llama.cpp's own grammar engine over the default model's tokens:
chosen edge cases (fractions at either end, exclusive bounds, ranges below
and across zero, "-0"), then number strings drawn near and far from seeded
random bounds, each writable exactly when Python's Decimal comparison puts it
in range and it is a plain JSON decimal of at most 16 digits either side of
the point.
"""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal
from typing import Any

import ollama
import pytest

from ingle.core.engine import Engine
from ingle.core.errors import InvalidRequest
from ingle.core.runtime.grammar import grammar_for_format

from .conftest import DEFAULT_MODEL
from .grammar_engine import GrammarEngine
from .servers import serving

# What a bounded number may look like: no exponent, no leading zeros, at most 16 digits either side.
PLAIN_NUMBER = re.compile(r"-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,16})?")


def number(**bounds: Any) -> dict[str, Any]:
    return {"type": "number", **bounds}


def in_range(schema: dict[str, Any], value: Decimal) -> bool:
    """What the bounds mean, read straight from the schema; a float bound as its shortest repr."""

    def exact(key: str) -> Decimal | None:
        bound = schema.get(key)
        return None if bound is None or isinstance(bound, bool) else Decimal(repr(bound))

    low, high = exact("minimum"), exact("maximum")
    strict_low, strict_high = exact("exclusiveMinimum"), exact("exclusiveMaximum")
    return all(
        [
            low is None or (value > low if schema.get("exclusiveMinimum") is True else value >= low),
            high is None or (value < high if schema.get("exclusiveMaximum") is True else value <= high),
            strict_low is None or value > strict_low,
            strict_high is None or value < strict_high,
        ]
    )


def writable(schema: dict[str, Any], text: str) -> bool:
    """Whether a bounded number's grammar should let a model write `text`."""
    if not PLAIN_NUMBER.fullmatch(text):
        return False
    value = Decimal(text)
    return not (text.startswith("-") and value == 0) and in_range(schema, value)


EDGE_CASES = [
    (
        number(minimum=0.25, maximum=3.5),
        ["0.25", "0.250", "0.3", "0.9999", "1", "2.5", "3", "3.0", "3.5", "3.50", "3.4999", "3.5000000000000000"],
        ["0", "0.2", "0.24999", "3.51", "3.5000000000000001", "4", "7.5", "-3", "-0.3", "03", "3.", ".5", "3.5e0"],
    ),
    (
        number(minimum=0, maximum=1),
        ["0", "0.0", "0.5", "0.0000000000000001", "1", "1.0", "1.0000000000000000"],
        ["-0", "-0.0", "-0.5", "1.01", "7.5", "-3", "00", "01", "0.00000000000000001", "1e0", "1E-1"],
    ),
    (
        number(exclusiveMinimum=0.5),
        ["0.51", "0.5000000000000001", "1", "99.5", "9999999999999999.9999999999999999"],
        ["0.5", "0.50", "0.5000000000000000", "0.49", "0", "-1", "10000000000000000", "1e3"],
    ),
    (
        number(minimum=-2.5, exclusiveMaximum=0),
        ["-2.5", "-2.50", "-2", "-1.25", "-0.1", "-0.0000000000000001"],
        ["0", "0.0", "-0", "-0.0", "-0.00", "-2.51", "-3", "0.1", "2"],
    ),
    (
        number(minimum=-10.75, maximum=-3.25),
        ["-10.75", "-10.7", "-10", "-5", "-3.3", "-3.25", "-3.250"],
        ["-10.76", "-10.8", "-11", "-3.2", "-3", "-2", "3.5", "0", "-0"],
    ),
    (
        number(exclusiveMinimum=-1, exclusiveMaximum=1),
        ["0", "0.0", "-0.999", "0.999", "-0.9999999999999999", "0.5"],
        ["-1", "1", "-1.0", "1.0", "-1.00", "-0", "-0.0", "2", "-2"],
    ),
    (
        # Draft 4: the booleans make the plain bounds exclusive.
        number(minimum=0.1, exclusiveMinimum=True, maximum=0.3, exclusiveMaximum=True),
        ["0.1000001", "0.2", "0.2999"],
        ["0.1", "0.10", "0.3", "0.30", "0.30001", "0"],
    ),
    (
        # A float bound is what the client wrote (0.1), not the binary fraction nearest to it.
        number(minimum=0.1, maximum=1e-1),
        ["0.1", "0.10", "0.1000000000000000"],
        ["0.1000000000000001", "0.0999999999999999", "0.11"],
    ),
    (
        number(minimum=7, maximum=7),
        ["7", "7.0", "7.0000000000000000"],
        ["7.0000000000000001", "6.9999999999999999", "-7", "70"],
    ),
]


@pytest.mark.parametrize(("schema", "accepted", "refused"), EDGE_CASES)
def test_edge_cases_of_a_number_range(
    grammar_engine: GrammarEngine, schema: dict[str, Any], accepted: list[str], refused: list[str]
) -> None:
    grammar = grammar_for_format(schema)
    assert grammar is not None
    for text in accepted:
        assert writable(schema, text), text  # the case itself is right
        assert grammar_engine.accepts(grammar, text), text
    for text in refused:
        assert not writable(schema, text), text
        assert not grammar_engine.accepts(grammar, text), text


def test_an_enum_beside_the_bounds_still_holds(grammar_engine: GrammarEngine) -> None:
    grammar = grammar_for_format(number(minimum=0, maximum=10, enum=[1.5, 2]))
    assert grammar is not None
    assert grammar_engine.accepts(grammar, "1.5") and grammar_engine.accepts(grammar, "2")
    assert not grammar_engine.accepts(grammar, "2.5") and not grammar_engine.accepts(grammar, "3")


def random_bounds(draw: random.Random) -> dict[str, Any]:
    """Two bounds, each a small decimal (as an int, or a float as JSON would parse it), inclusive or not."""

    def bound() -> int | float:
        magnitude = draw.choice([1, 10, 1000, 10**6])
        if draw.random() < 0.3:
            return draw.randint(-magnitude, magnitude)
        return float(f"{draw.uniform(-magnitude, magnitude):.{draw.randint(1, 6)}f}")

    low, high = sorted([bound(), bound()])
    schema = number()
    if low == high or draw.random() < 0.8:
        schema["exclusiveMinimum" if draw.random() < 0.4 else "minimum"] = low
    if low == high or draw.random() < 0.8:
        schema["exclusiveMaximum" if draw.random() < 0.4 else "maximum"] = high
    if low == high or len(schema) == 1:  # one exclusive bound at a point allows nothing; none is no test
        schema = number(minimum=low, maximum=high)
    return schema


def near_strings(draw: random.Random, schema: dict[str, Any]) -> list[str]:
    """Number strings around the bounds, anywhere else, with trailing zeros and signed zeros."""
    edges = [Decimal(repr(bound)) for bound in schema.values() if not isinstance(bound, str)]  # no booleans here
    steps = [Decimal(10) ** -draw.randint(0, 16) for _ in range(4)] + [Decimal("1E-16"), Decimal(1)]
    values = [edge + sign * step for edge in edges for step in steps for sign in (-1, 0, 1)]
    values += [Decimal(f"{draw.uniform(-(10**k), 10**k):.{draw.randint(0, 18)}f}") for k in (0, 2, 7, 17)]
    texts = [f"{value:f}" for value in values]
    texts += [text + "0" * draw.randint(1, 3) if "." in text else text + ".0" for text in draw.sample(texts, 4)]
    texts += ["0", "-0", "-0.0", "0.0", f"{draw.randint(1, 9)}e{draw.randint(0, 3)}"]
    return texts


def test_numbers_in_random_ranges_are_writable_exactly_when_in_range(grammar_engine: GrammarEngine) -> None:
    draw = random.Random(20240531)
    checked = 0
    for _ in range(60):
        schema = random_bounds(draw)
        grammar = grammar_for_format(schema)
        assert grammar is not None
        for text in near_strings(draw, schema):
            assert grammar_engine.accepts(grammar, text) == writable(schema, text), (schema, text)
            checked += 1
    assert checked > 2000


def test_the_grammar_grows_with_the_digits_not_the_range() -> None:
    wide = grammar_for_format(number(minimum=-123456789.12345678, exclusiveMaximum=9876543210.987654))
    assert wide is not None and len(wide) < 4000


@pytest.mark.parametrize(
    ("schema", "complaint"),
    [
        (number(minimum=0.75, maximum=0.5), "minimum above maximum"),
        (number(minimum=1.5, exclusiveMaximum=1.5), "equal and one of them exclusive"),
        (number(exclusiveMinimum=0, exclusiveMaximum=1e-17), "no number with at most 16 decimals"),
        (number(maximum="1"), "must be a number"),
        (number(minimum=float("inf")), "must be a number"),
    ],
)
def test_bounds_no_number_meets_are_refused_with_a_sentence(schema: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^format: ") as refused:
        grammar_for_format(schema)
    assert complaint in refused.value.message


@pytest.mark.slow
async def test_the_model_answers_with_a_number_in_range(engine: Engine) -> None:
    schema = {
        "type": "object",
        "properties": {"p": {"type": "number", "minimum": 0.5, "maximum": 0.75}},
        "required": ["p"],
    }
    async with serving(engine.settings, engine) as url, ollama.AsyncClient(host=url) as client:
        answer = await client.chat(
            DEFAULT_MODEL,
            [{"role": "user", "content": "Give a probability p of 0.9 as JSON."}],
            format=schema,
            options={"temperature": 0, "num_predict": 24},
        )
    p = json.loads(answer.message.content or "")["p"]
    assert isinstance(p, int | float) and 0.5 <= p <= 0.75, answer.message.content
