"""A JSON schema's `pattern` as GBNF for the text between a JSON string's quotes.

A pattern constrains a string's value; the grammar constrains the text the
model writes, where `"`, `\\` and control characters appear only escaped.
llama-cpp-python's converter copied a pattern's character classes into the
grammar as they were, so `.` and `[^,]` let the model close the string early
with a bare `"` (an answer that is not JSON), and `\\d` became the letter d.
Here Python's own regex parser reads the pattern (its syntax is ECMA 262's
for what schemas use: classes, groups, alternation, counted repeats, `\\d \\w
\\s`), and every set of characters becomes the JSON text that writes its
members: the plain ones as a class, `"` as `\\"`, a newline as `\\n`.
"""

from __future__ import annotations

import re
from re import _constants as sre  # pyright: ignore[reportAttributeAccessIssue]  # the parser's opcodes
from re import _parser as sre_parse  # pyright: ignore[reportAttributeAccessIssue]  # the stdlib's own regex parser
from typing import Any

Ranges = list[tuple[int, int]]

_LAST_CODE_POINT = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)  # not characters: UTF-8 cannot carry them
# What ECMA 262 means by the class escapes and `.`, which a schema's pattern follows.
_DIGIT: Ranges = [(0x30, 0x39)]
_WORD: Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE: Ranges = [
    (0x09, 0x0D),
    (0x20, 0x20),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
]
_LINE_TERMINATORS: Ranges = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]
_CATEGORIES: dict[Any, tuple[Ranges, bool]] = {
    sre.CATEGORY_DIGIT: (_DIGIT, False),
    sre.CATEGORY_NOT_DIGIT: (_DIGIT, True),
    sre.CATEGORY_WORD: (_WORD, False),
    sre.CATEGORY_NOT_WORD: (_WORD, True),
    sre.CATEGORY_SPACE: (_SPACE, False),
    sre.CATEGORY_NOT_SPACE: (_SPACE, True),
}
# Characters JSON text cannot hold as themselves.
_MUST_ESCAPE: Ranges = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]
_SHORT_ESCAPES = {0x08: "b", 0x09: "t", 0x0A: "n", 0x0C: "f", 0x0D: "r", 0x22: '"', 0x5C: "\\"}
_START_ANCHORS = ((sre.AT, sre.AT_BEGINNING), (sre.AT, sre.AT_BEGINNING_STRING))
_END_ANCHORS = ((sre.AT, sre.AT_END), (sre.AT, sre.AT_END_STRING))
_GROUPS = (sre.SUBPATTERN, sre.BRANCH)
_UNSUPPORTED = {
    sre.ASSERT: "a lookahead or lookbehind",
    sre.ASSERT_NOT: "a negative lookahead or lookbehind",
    sre.GROUPREF: "a back-reference",
    sre.GROUPREF_EXISTS: "a conditional group",
    sre.ATOMIC_GROUP: "an atomic group",
    sre.POSSESSIVE_REPEAT: "a possessive repeat",
}


class PatternError(ValueError):
    """A pattern no grammar can follow; the message is a sentence for the client."""


def pattern_grammar(pattern: str, max_repeat: int) -> str:
    """A GBNF expression for the text inside a JSON string whose value `pattern` matches.

    As in JSON Schema, the pattern matches anywhere in the value, except where
    `^` anchors it to the start or `$` to the end. PatternError for a pattern
    Python cannot read, one with parts a grammar cannot express (lookarounds,
    back-references, `\\b`), or one that counts past `max_repeat` (llama.cpp
    copies a rule for each count).
    """
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as error:
        raise PatternError(f"the pattern {pattern!r} is not a regular expression ({error})") from None
    if parsed.state.flags & ~(re.UNICODE | re.ASCII):
        raise PatternError(f"the pattern {pattern!r} sets flags such as (?i), which JSON Schema patterns have not")
    text, _ = _Translator(pattern, max_repeat).sequence(list(parsed), head=True, tail=True)
    return text


class _Translator:
    def __init__(self, pattern: str, max_repeat: int) -> None:
        self.pattern = pattern
        self.max_repeat = max_repeat

    def refuse(self, what: str) -> PatternError:
        return PatternError(f"the pattern {self.pattern!r} uses {what}, which a grammar cannot express")

    def sequence(self, items: list[Any], head: bool = False, tail: bool = False) -> tuple[str, bool]:
        """The GBNF for consecutive items and whether it can match the empty string.

        `head`: the items start the value, so any text may come before them
        unless they begin with `^` (or with a group whose branches decide for
        themselves); `tail` likewise for the end and `$`.
        """
        before = after = ""
        head_group = tail_group = False
        if head:
            if items and items[0] in _START_ANCHORS:
                items = items[1:]
            elif items and items[0][0] in _GROUPS:
                head_group = True
            else:
                before = _ANY_TEXT
        if tail:
            if items and items[-1] in _END_ANCHORS:
                items = items[:-1]
            elif items and items[-1][0] in _GROUPS:
                tail_group = True
            elif not (before and not items):  # an empty pattern allows any text once, not twice
                after = _ANY_TEXT
        parts = [before] if before else []
        literal = ""  # runs of plain characters become one quoted literal
        nullable = True
        for index, (op, argument) in enumerate(items):
            if op == sre.LITERAL and not _needs_escape(argument):
                literal += _grammar_char(argument)
                nullable = False
                continue
            if literal:
                parts.append(f'"{literal}"')
                literal = ""
            text, can_be_empty = self.item(
                op, argument, head=head_group and index == 0, tail=tail_group and index == len(items) - 1
            )
            parts.append(text)
            nullable = nullable and can_be_empty
        if literal:
            parts.append(f'"{literal}"')
        if after:
            parts.append(after)
        return " ".join(parts) or '""', nullable

    def item(self, op: Any, argument: Any, head: bool, tail: bool) -> tuple[str, bool]:
        if op == sre.LITERAL:
            if _SURROGATES[0] <= argument <= _SURROGATES[1]:
                raise PatternError(f"the pattern {self.pattern!r} holds a lone surrogate (U+{argument:04X})")
            return self.characters([(argument, argument)]), False
        if op == sre.NOT_LITERAL:
            return self.characters(_complement([(argument, argument)])), False
        if op == sre.ANY:
            return self.characters(_complement(_LINE_TERMINATORS)), False
        if op == sre.IN:
            return self.characters(self.class_ranges(argument)), False
        if op == sre.SUBPATTERN:
            _group, add_flags, del_flags, sub = argument
            if add_flags or del_flags:
                raise self.refuse("flags such as (?i)")
            text, nullable = self.sequence(list(sub), head, tail)
            return f"({text})", nullable
        if op == sre.BRANCH:
            alternatives = [self.sequence(list(branch), head, tail) for branch in argument[1]]
            return "(" + " | ".join(text for text, _ in alternatives) + ")", any(empty for _, empty in alternatives)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            return self.repeat(*argument)
        if op == sre.AT:
            raise self.refuse("an anchor or \\b other than ^ at the start and $ at the end")
        raise self.refuse(_UNSUPPORTED.get(op, str(op).lower()))

    def repeat(self, low: int, high: int, sub: Any) -> tuple[str, bool]:
        text, nullable = self.sequence(list(sub))
        unbounded = high == sre.MAXREPEAT
        count = max(low, 0 if unbounded else high)
        if count > self.max_repeat:
            raise PatternError(
                f"the pattern {self.pattern!r} counts to {count}; counts are limited to {self.max_repeat}"
            )
        # llama.cpp would loop forever on an unbounded repeat of something that can match nothing.
        if unbounded and nullable:
            raise self.refuse("an unbounded repeat of a part that can be empty")
        if (low, high) == (0, 1):
            count = "?"
        elif unbounded:
            count = "*" if low == 0 else "+" if low == 1 else f"{{{low},}}"
        else:
            count = f"{{{low}}}" if low == high else f"{{{low},{high}}}"
        return f"({text}){count}", nullable or low == 0

    def class_ranges(self, members: list[Any]) -> Ranges:
        negated = bool(members) and members[0][0] == sre.NEGATE
        ranges: Ranges = []
        for op, argument in members[int(negated) :]:
            if op == sre.LITERAL:
                ranges.append((argument, argument))
            elif op == sre.RANGE:
                ranges.append(argument)
            elif op == sre.CATEGORY and argument in _CATEGORIES:
                category, inverse = _CATEGORIES[argument]
                ranges += _complement(category) if inverse else category
            else:
                raise self.refuse(f"{op} in a character class")
        return _complement(ranges) if negated else _merge(ranges)

    def characters(self, ranges: Ranges) -> str:
        text = _set_text(ranges)
        if not text:
            raise PatternError(f"the pattern {self.pattern!r} has a character class that matches no character")
        return text


# --- sets of characters as JSON text ------------------------------------------------------------


def _set_text(ranges: Ranges) -> str:
    """GBNF for the JSON text of one character from `ranges`; empty if none can be written."""
    ranges = _subtract(ranges, [_SURROGATES])
    plain = _subtract(ranges, _MUST_ESCAPE)
    options: list[str] = []
    if plain:
        outside = _complement(plain)
        if len(outside) < len(plain):
            options.append("[^" + "".join(_class_range(low, high) for low, high in outside) + "]")
        else:
            options.append("[" + "".join(_class_range(low, high) for low, high in plain) + "]")
    escaped = [code for low, high in _intersect(ranges, _MUST_ESCAPE) for code in range(low, high + 1)]
    if all(code in escaped for code in range(0x20)):  # every control character: the short escapes or \u00XX
        options += ['"\\\\" [bfnrt]', '"\\\\u00" [01] [0-9a-fA-F]']
        escaped = [code for code in escaped if code >= 0x20]
    for code in escaped:
        short = _SHORT_ESCAPES.get(code)
        options.append(f'"\\\\{_grammar_char(ord(short))}"' if short else f'"\\\\u{code:04x}"')
    return options[0] if len(options) == 1 else "(" + " | ".join(options) + ")" if options else ""


def _needs_escape(code: int) -> bool:
    return any(low <= code <= high for low, high in _MUST_ESCAPE) or _SURROGATES[0] <= code <= _SURROGATES[1]


def _grammar_char(code: int) -> str:
    """A character as llama.cpp's grammar parser reads it in a literal or a class."""
    char = chr(code)
    if (char.isalnum() and code < 0x80) or char in " _.,:;!?@#%&'=<>~`{}()*+|/$":
        return char
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _class_range(low: int, high: int) -> str:
    return _grammar_char(low) if low == high else f"{_grammar_char(low)}-{_grammar_char(high)}"


def _merge(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for low, high in sorted(ranges):
        if low > high:
            continue  # a reversed range holds nothing
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _complement(ranges: Ranges) -> Ranges:
    gaps: Ranges = []
    next_free = 0
    for low, high in _merge(ranges):
        if low > next_free:
            gaps.append((next_free, low - 1))
        next_free = high + 1
    if next_free <= _LAST_CODE_POINT:
        gaps.append((next_free, _LAST_CODE_POINT))
    return gaps


def _subtract(ranges: Ranges, removed: Ranges) -> Ranges:
    return _intersect(ranges, _complement(removed))


def _intersect(first: Ranges, second: Ranges) -> Ranges:
    return _merge(
        [
            (max(low, other_low), min(high, other_high))
            for low, high in _merge(first)
            for other_low, other_high in _merge(second)
            if max(low, other_low) <= min(high, other_high)
        ]
    )


# Any character a JSON string can hold, as its text: what an unanchored pattern allows around its match.
_ANY_TEXT = f"{_set_text([(0, _LAST_CODE_POINT)])}*"
