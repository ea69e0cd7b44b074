"""GBNF for a JSON schema's integer with `minimum`/`maximum`: exactly the integers in range, as JSON writes them.

llama-cpp-python's converter ignores an integer's bounds, so a tool whose
`count` has `"minimum": 1` could be called with 0 or -3. Here the range
becomes digits: split into the negative and the non-negative part, each part
into runs of numbers with the same count of digits, and each run into the
usual prefix-and-class alternatives (10-19 is "1" [0-9], 20-99 is [2-9] [0-9]).
The grammar grows with the square of the digits, not with the range's size.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidRequest

# An unbounded side stops where the converter's own integers stop: 16 digits.
MAX_DIGITS = 16
_LARGEST = 10**MAX_DIGITS - 1


def integer_bounds(schema: dict[str, Any], field: str) -> tuple[int, int]:
    """The least and greatest integer a schema allows; a side without a bound ends at MAX_DIGITS digits.

    Reads `minimum`/`maximum` with `exclusiveMinimum`/`exclusiveMaximum` as
    numbers (JSON Schema since draft 6) or as booleans on the plain bounds
    (draft 4). A bound that is not a finite number is refused.
    """
    low = _bound(schema, "minimum", "exclusiveMinimum", math.ceil, 1, field)
    high = _bound(schema, "maximum", "exclusiveMaximum", math.floor, -1, field)
    if low is not None and high is not None and low > high:
        raise InvalidRequest(f"{field}: an integer with minimum above maximum in the JSON schema allows no value.")
    if high is None:
        high = max(_LARGEST, low or 0)
    if low is None:
        low = min(-_LARGEST, high)
    return low, high


def _bound(schema: dict[str, Any], plain: str, exclusive: str, to_int: Any, step: int, field: str) -> int | None:
    found: list[int] = []
    value, strict = schema.get(plain), schema.get(exclusive)
    for name, bound, is_strict in ((plain, value, strict is True), (exclusive, strict, True)):
        if bound is None or isinstance(bound, bool):
            continue
        if not isinstance(bound, int | float) or not math.isfinite(bound):
            raise InvalidRequest(f"{field}: {name} in the JSON schema must be a number, not {bound!r}.")
        limit = to_int(bound)
        found.append(limit + step if is_strict and limit == bound else limit)
    if not found:
        return None
    return max(found) if step > 0 else min(found)


def integer_range(low: int, high: int) -> str:
    """A GBNF expression for the integers from `low` to `high` (low <= high)."""
    parts = []
    if high >= 0:
        parts.append(_naturals(max(low, 0), high))
    if low < 0:
        parts.append('"-" ' + _group(_naturals(max(-high, 1), -low)))
    return _group(" | ".join(parts))


def _naturals(low: int, high: int) -> str:
    """The numbers from `low` to `high` (0 <= low <= high), without leading zeros."""
    runs = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        first = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        last = min(high, 10**digits - 1)
        runs.append(_same_length(str(first), str(last)))
    return " | ".join(runs)


def _same_length(low: str, high: str) -> str:
    """The numbers from `low` to `high`, both written with the same count of digits."""
    common = 0
    while common < len(low) and low[common] == high[common]:
        common += 1
    prefix = f'"{low[:common]}" ' if common else ""
    if common == len(low):
        return prefix.strip()
    first, last = int(low[common]), int(high[common])
    rest = len(low) - common - 1
    tail = f" [0-9]{{{rest}}}" if rest else ""
    if low[common + 1 :] == "0" * rest and high[common + 1 :] == "9" * rest:
        return prefix + f"[{first}-{last}]{tail}"
    choices = [f'"{first}" ' + _group(_same_length(low[common + 1 :], "9" * rest))]
    if first + 1 <= last - 1:
        choices.append(f"[{first + 1}-{last - 1}]{tail}")
    choices.append(f'"{last}" ' + _group(_same_length("0" * rest, high[common + 1 :])))
    return prefix + _group(" | ".join(choices))


def _group(expression: str) -> str:
    return f"({expression})"
