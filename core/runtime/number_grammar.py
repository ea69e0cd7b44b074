"""GBNF for a JSON schema's integer or number with `minimum`/`maximum`: exactly the values in range, as JSON writes.

llama-cpp-python's converter ignores the bounds of integers and numbers, so a
tool whose `count` has `"minimum": 1` could be called with 0 or -3, and a
probability with 7.5. Here the range becomes digits: split into the negative
and the non-negative part, each part into runs of numbers with the same count
of digits, and each run into the usual prefix-and-class alternatives (10-19 is
"1" [0-9], 20-99 is [2-9] [0-9]). A number adds its decimals: the integer
parts at either end of the range hold their fraction to the bound's digits, the
ones between take any. The grammar grows with the square of the digits, not
with the range's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from ..errors import InvalidRequest

# An unbounded side stops where the converter's own integers stop: 16 digits.
MAX_DIGITS = 16
_LARGEST = 10**MAX_DIGITS - 1
# And a number's decimals where the converter's stop: 16 after the point.
MAX_DECIMALS = 16
_UNIT = 10**MAX_DECIMALS


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
    for bound, is_strict in _read_bounds(schema, plain, exclusive, field):
        limit = to_int(bound)
        found.append(limit + step if is_strict and limit == bound else limit)
    if not found:
        return None
    return max(found) if step > 0 else min(found)


def _read_bounds(schema: dict[str, Any], plain: str, exclusive: str, field: str) -> list[tuple[Fraction, bool]]:
    """The schema's bounds on one side, exact, each with whether it is exclusive.

    A float is read by its shortest repr, as the client wrote it: 0.1 is 1/10,
    not the binary fraction nearest to it.
    """
    found: list[tuple[Fraction, bool]] = []
    value, strict = schema.get(plain), schema.get(exclusive)
    for name, bound, is_strict in ((plain, value, strict is True), (exclusive, strict, True)):
        if bound is None or isinstance(bound, bool):
            continue
        if not isinstance(bound, int | float) or not math.isfinite(bound):
            raise InvalidRequest(f"{field}: {name} in the JSON schema must be a number, not {bound!r}.")
        found.append((Fraction(repr(bound)) if isinstance(bound, float) else Fraction(bound), is_strict))
    return found


def integer_range(low: int, high: int) -> str:
    """A GBNF expression for the integers from `low` to `high` (low <= high)."""
    return _signed(low, high, _naturals)


def _signed(low: int, high: int, magnitudes: Callable[[int, int], str]) -> str:
    """The values from `low` to `high`: `magnitudes(a, b)` writes those from a to b (0 <= a <= b); the negative
    ones get a "-" before magnitudes from 1 up, which keeps "-0" out."""
    parts = []
    if high >= 0:
        parts.append(magnitudes(max(low, 0), high))
    if low < 0:
        parts.append('"-" ' + _group(magnitudes(max(-high, 1), -low)))
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


def number_bounds(schema: dict[str, Any], field: str) -> tuple[Fraction, Fraction]:
    """The least and greatest number a schema allows with at most MAX_DECIMALS decimals, both included.

    Bounds are read as for integers. Every number the grammar lets a model
    write is a whole count of 10**-MAX_DECIMALS, so an exclusive bound becomes
    the nearest such count inside it, and a bound with more decimals is
    rounded inwards. A side without a bound ends below 10**MAX_DIGITS.
    """
    lows = _read_bounds(schema, "minimum", "exclusiveMinimum", field)
    highs = _read_bounds(schema, "maximum", "exclusiveMaximum", field)
    if lows and highs:
        least, least_strict = max(lows)  # of two equal bounds, the exclusive one (True > False)
        greatest, greatest_strict = min(highs, key=lambda bound: (bound[0], not bound[1]))
        if least > greatest:
            raise InvalidRequest(f"{field}: a number with minimum above maximum in the JSON schema allows no value.")
        if least == greatest and (least_strict or greatest_strict):
            raise InvalidRequest(
                f"{field}: a number whose minimum and maximum in the JSON schema are equal and one of them "
                "exclusive allows no value."
            )
    low = max(
        (math.floor(bound * _UNIT) + 1 if strict else math.ceil(bound * _UNIT) for bound, strict in lows), default=None
    )
    high = min(
        (math.ceil(bound * _UNIT) - 1 if strict else math.floor(bound * _UNIT) for bound, strict in highs), default=None
    )
    if high is None:
        high = _open_end(low or 0)
    if low is None:
        low = -_open_end(-high)
    if low > high:
        raise InvalidRequest(
            f"{field}: no number with at most {MAX_DECIMALS} decimals lies between the minimum and maximum in the "
            "JSON schema."
        )
    return Fraction(low, _UNIT), Fraction(high, _UNIT)


def _open_end(bound: int) -> int:
    """The greatest number, in units, that an open upper side allows above `bound` (in units): MAX_DIGITS
    digits before the point, or as many as the bound has."""
    digits = max(MAX_DIGITS, len(str(bound // _UNIT)) if bound > 0 else 0)
    return 10**digits * _UNIT - 1


def number_range(low: Fraction, high: Fraction) -> str:
    """A GBNF expression for the JSON numbers from `low` to `high` (low <= high, at most MAX_DECIMALS decimals each).

    Numbers are written plainly: an optional "-", the integer part without
    leading zeros, and maybe "." and 1 to MAX_DECIMALS digits. No exponent
    form: its digits would need comparing against the bounds at every shift of
    the point, and a model writes a bounded value plainly anyway. "-0" (and
    "-0.0") is never written: zero is "0", and only when the range holds it.
    """
    return _signed(int(low * _UNIT), int(high * _UNIT), _unsigned)


_ALL_NINES = "9" * MAX_DECIMALS


def _unsigned(low: int, high: int) -> str:
    """The numbers without a sign from `low` to `high` units (0 <= low <= high): rows by integer part."""
    low_integer, low_decimals = _split(low)
    high_integer, high_decimals = _split(high)
    if low_integer == high_integer:
        return f'"{low_integer}" {_fraction(low_decimals, high_decimals)}'
    # The integer parts whose every fraction is in range, and the ends whose fraction is held.
    first = low_integer if low_decimals == "" else low_integer + 1
    last = high_integer if high_decimals == _ALL_NINES else high_integer - 1
    rows = []
    if first > low_integer:
        rows.append(f'"{low_integer}" {_fraction(low_decimals, _ALL_NINES)}')
    if first <= last:
        rows.append(f"{_group(_naturals(first, last))} {_fraction('', _ALL_NINES)}")
    if last < high_integer:
        rows.append(f'"{high_integer}" {_fraction("", high_decimals)}')
    return " | ".join(rows)


def _split(units: int) -> tuple[int, str]:
    """The integer part of a count of units, and its decimals without trailing zeros ("" for none)."""
    integer, fraction = divmod(units, _UNIT)
    return integer, str(fraction).rjust(MAX_DECIMALS, "0").rstrip("0")


def _fraction(low: str, high: str) -> str:
    """What may follow an integer part: nothing or "." and decimals, valued from 0.`low` to 0.`high`."""
    bare, written = _decimals(low, high, MAX_DECIMALS)
    point = f'"." {_group(written)}' if written else ""
    return f"({point})?" if bare and point else point


def _decimals(low: str, high: str, count: int) -> tuple[bool, str | None]:
    """Whether no digits at all are in range, and an expression for 1 to `count` digits d with
    0.`low` <= 0.d <= 0.`high` (None if none is); `low` <= `high`, each at most `count` digits, no trailing zeros.
    """
    if count == 0:
        return True, None
    if high == "":
        return True, f'"0"{{1,{count}}}'
    if low == "" and high == "9" * count:
        return True, f"[0-9]{{1,{count}}}"
    first_low, rest_low = int(low[:1] or 0), low[1:]
    first_high, rest_high = int(high[0]), high[1:]
    nines = "9" * (count - 1)
    if first_low == first_high:
        choices = [f'"{first_low}" {_rest(rest_low, rest_high, count - 1)}']
    else:
        # The first digits whose every continuation is in range share one class; the ends that are held
        # to the rest of a bound get their own choice.
        free_from = first_low if rest_low == "" else first_low + 1
        free_to = first_high if rest_high == nines else first_high - 1
        choices = []
        if free_from > first_low:
            choices.append(f'"{first_low}" {_rest(rest_low, nines, count - 1)}')
        if free_from <= free_to:
            free = f'"{free_from}"' if free_from == free_to else f"[{free_from}-{free_to}]"
            choices.append(free + (f" [0-9]{{0,{count - 1}}}" if count > 1 else ""))
        if free_to < first_high:
            choices.append(f'"{first_high}" {_rest("", rest_high, count - 1)}')
    return low == "", " | ".join(choice.strip() for choice in choices)


def _rest(low: str, high: str, count: int) -> str:
    """The digits after a first one: 0 to `count` of them, valued as in _decimals."""
    bare, written = _decimals(low, high, count)
    if written is None:
        return ""
    return f"({written})?" if bare else _group(written)
