"""Grammars that constrain output, built from a client's JSON schema and checked before llama.cpp sees them.

llama.cpp aborts the whole process when a grammar reaches a point where no
token may follow (`Unexpected empty grammar stack`): a grammar that demands a
NUL character, which no token can write, or a character class that matches
nothing. Every grammar ingle builds comes from a JSON schema through
llama-cpp-python's converter, so the checks live here: the schema is bounded
before conversion, the converter's literals are escaped correctly, and every
character the grammar can demand is checked to be one a model can write.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, RESERVED_NAMES, BuiltinRule, SchemaConverter

from ..errors import InvalidRequest
from ..tool_calls import ToolCallFormat, call_schema
from .number_grammar import integer_bounds, integer_range, number_bounds, number_range
from .pattern_grammar import pattern_grammar

# llama.cpp expands a grammar's repetition counts into copies of rules, so a schema's counts are
# bounded before any grammar is built: `{"maxItems": 10**9}` must be a 400, not an exhausted machine.
MAX_SCHEMA_REPEAT = 1000
# The converter writes a rule per repetition (`maxLength: 1000` is about 8 kB of grammar), and llama.cpp's
# parse of a grammar takes about 40 bytes of memory and 0.2 ms per byte of it: 8,000 such strings in one
# schema, each within the count above, held a daemon for 9 s and 3.5 GB. So the counts of a whole schema
# are bounded too: at this sum a grammar stays under about 1 MB (0.2 s, 40 MB), ten times any real one.
MAX_SCHEMA_TOTAL_REPEAT = 50_000
# And the grammar itself, whatever produced it (patterns, many tools at once).
MAX_GRAMMAR_CHARS = 2_000_000
# The converter recurses once per level (Python's stack), and so do llama.cpp's parser and its
# left-recursion check (the C stack); no real schema nests this deep.
MAX_SCHEMA_DEPTH = 100
MAX_SCHEMA_NODES = 100_000
_COUNT_KEYWORDS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")

# Whitespace in a tool call: bounded, so a constrained model cannot pad forever. JSON's whitespace
# replaces the converter's single optional space, since models pretty-print their calls.
_WHITESPACE = "[ \\t\\n]{0,20}"
# A lazy grammar is fed the text from its trigger's capture group to the end of the output so far, and
# llama.cpp aborts the process if the grammar rejects it. So each trigger matches only when the output
# ends with text the grammar accepts: the open tag and whitespace, or a bare call up to `"name":`.
# Small models often answer a tool request with the bare call, fenced or not, whatever their template
# says (the default model does); waiting for `{"name"` leaves a JSON answer that is no call free.
_BARE_CALL_TRIGGER = (
    r"^[ \t\n]{0,20}(?:```(?:json)?[ \t\n]{0,20})?(?:<\|python_tag\|>)?[ \t\n]{0,20}"
    r'(\{[ \t\n]{0,20}"name"[ \t\n]{0,20}(?::[ \t\n]{0,20})?)$'
)


def check_schema(schema: Any, field: str) -> None:
    """InvalidRequest naming `field` for a JSON schema that no safe grammar can be built from.

    Refused: repetition counts above MAX_SCHEMA_REPEAT, nesting deeper than
    MAX_SCHEMA_DEPTH, more than MAX_SCHEMA_NODES parts, `$ref`s that leave the
    schema (the converter would fetch URLs).
    """
    pending: list[tuple[Any, int]] = [(schema, 0)]
    seen = total_repeat = 0
    while pending:
        node, depth = pending.pop()
        seen += 1
        if seen > MAX_SCHEMA_NODES:
            raise InvalidRequest(f"{field}: the JSON schema is too large.")
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidRequest(f"{field}: the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels.")
        if isinstance(node, list):
            pending.extend((item, depth + 1) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        counts = [count for keyword in _COUNT_KEYWORDS if isinstance(count := node.get(keyword), int)]
        if any(count > MAX_SCHEMA_REPEAT for count in counts):
            raise InvalidRequest(f"{field}: counts in the JSON schema are limited to {MAX_SCHEMA_REPEAT}.")
        total_repeat += max(counts, default=0)
        if total_repeat > MAX_SCHEMA_TOTAL_REPEAT:
            raise InvalidRequest(
                f"{field}: the JSON schema's counts (maxLength, maxItems, …) add up to more than "
                f"{MAX_SCHEMA_TOTAL_REPEAT}; lower them or drop some."
            )
        if any(node.get(keyword) == [] for keyword in ("enum", "anyOf", "oneOf", "type")):
            raise InvalidRequest(
                f"{field}: an empty enum, anyOf, oneOf or type in the JSON schema allows no value at all."
            )
        reference = node.get("$ref")
        if reference is not None and not (isinstance(reference, str) and reference.startswith("#")):
            raise InvalidRequest(f"{field}: $ref may only point inside the schema (#/...), not to {reference!r}.")
        pending.extend((value, depth + 1) for value in node.values())


class _SchemaConverter(SchemaConverter):
    """llama-cpp-python's converter with literals escaped as llama.cpp's grammar parser reads them.

    The original escapes quotes but not backslashes, so the JSON text of a
    constant (`"a\\"b"`, `"\\u0000"`) reached llama.cpp as grammar escapes: a
    string that ends early, or a literal NUL that no token can write.
    """

    def _format_literal(self, literal: str) -> str:
        return '"' + "".join(_GRAMMAR_ESCAPES.get(char) or _escape_control(char) for char in literal) + '"'

    def _generate_constant_rule(self, value: Any) -> str:
        # Characters as themselves rather than \u escapes: what a model would write. JSON still escapes
        # controls; a lone surrogate (valid in JSON text, not in UTF-8) keeps its escape too.
        text = json.dumps(value, ensure_ascii=False)
        return self._format_literal(_SURROGATE.sub(lambda found: f"\\u{ord(found.group(0)):04x}", text))

    def __init__(self, field: str) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        self.field = field
        """The request field the schema came in, for the sentences of refusals."""

    def visit(self, schema: Any, name: str) -> str:
        # The original ignores the minimum and maximum of integers and numbers. A const, enum or
        # alternatives it reads first, and they say more than the bounds.
        kind = schema.get("type")
        if (
            kind in ("integer", "number")
            and any(key in schema for key in _BOUNDS)
            and not any(key in schema for key in _READ_BEFORE_TYPE)
        ):
            if kind == "integer":
                expression = integer_range(*integer_bounds(schema, self.field))
            else:
                expression = number_range(*number_bounds(schema, self.field))
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            return self._add_rule(rule_name, f"{expression} space")
        return super().visit(schema, name)

    def _visit_pattern(self, pattern: str, name: str) -> str:
        # The original copies the regex's classes into the grammar as they are (see pattern_grammar).
        return self._add_rule(name, f'"\\"" {pattern_grammar(pattern, MAX_SCHEMA_REPEAT)} "\\"" space')

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        # The original lets a string hold raw control characters (a newline), which is not JSON.
        return super()._add_primitive(name, _JSON_STRING_CHAR if name == "char" else rule)


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_READ_BEFORE_TYPE = ("$ref", "oneOf", "anyOf", "const", "enum")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_STRING_CHAR = BuiltinRule(r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})', [])
_GRAMMAR_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(char: str) -> str:
    return f"\\x{ord(char):02x}" if ord(char) < 0x20 or ord(char) == 0x7F else char


def schema_grammar(schema: dict[str, Any], field: str) -> str:
    """GBNF for a JSON schema, or InvalidRequest naming `field` when the schema cannot safely become one."""
    check_schema(schema, field)
    converter = _SchemaConverter(field)
    try:
        converter.visit(converter.resolve_refs(schema, "request"), "")
    except InvalidRequest:
        raise  # ours, with its own sentence
    except Exception as error:  # the converter raises bare Exceptions and AssertionErrors on bad schemas
        raise InvalidRequest(f"{field}: the JSON schema cannot be used ({error}).") from error
    grammar = converter.format_grammar()
    check_grammar_size(grammar, field)
    if found := _SURROGATE.search(grammar):  # from a pattern: llama.cpp takes the grammar as UTF-8
        raise InvalidRequest(f"{field}: the JSON schema holds a lone surrogate (U+{ord(found.group(0)):04X}).")
    problem = unwritable_terminal(grammar)
    if problem is not None:
        raise InvalidRequest(f"{field}: the JSON schema asks for {problem}, which no model can write; remove it.")
    return grammar


def check_grammar_size(grammar: str, field: str) -> None:
    """InvalidRequest naming `field` for a grammar too large for llama.cpp to parse quickly (see above)."""
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise InvalidRequest(
            f"{field}: the JSON schema makes a grammar of {len(grammar) // 1000:,} kB, more than the "
            f"{MAX_GRAMMAR_CHARS // 1000:,} kB allowed; use fewer or smaller counts and patterns."
        )


# --- what a grammar can demand -------------------------------------------------------------------

# A token's text reaches llama.cpp's grammar as a C string, so NUL ends it: no token can write U+0000.
# Every other code point can be written a byte at a time (byte-level vocabularies have all 256 bytes).
_WRITABLE = (1, 0x10FFFF)
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]"}


def unwritable_terminal(grammar: str) -> str | None:
    """A description of the first literal or character class in GBNF `grammar` no token can write, else None.

    A grammar whose every terminal matches a writable character never leaves
    llama.cpp without a token to allow: that is what keeps its abort out of
    reach. Escapes are read as llama.cpp's parser reads them; one it would not
    read is reported too.
    """
    index, length = 0, len(grammar)
    while index < length:
        char = grammar[index]
        if char == "#":
            newline = grammar.find("\n", index)
            index = length if newline == -1 else newline
        elif char == '"':
            index, problem = _check_literal(grammar, index + 1)
            if problem:
                return problem
        elif char == "[":
            index, problem = _check_class(grammar, index + 1)
            if problem:
                return problem
        elif char == "\x00":
            return "a NUL character"
        else:
            index += 1
    return None


def _read_char(grammar: str, index: int) -> tuple[int, int]:
    """The code point at `index` (an escape or a character) and the index after it; ValueError if unreadable."""
    if index >= len(grammar):
        raise ValueError("the grammar ends inside a literal")
    char = grammar[index]
    if char != "\\":
        return ord(char), index + 1
    kind = grammar[index + 1 : index + 2]
    if kind in _SIMPLE_ESCAPES:
        return ord(_SIMPLE_ESCAPES[kind]), index + 2
    digits = _HEX_DIGITS.get(kind)
    text = grammar[index + 2 : index + 2 + (digits or 0)]
    if digits is None or len(text) != digits or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"an escape llama.cpp cannot read ({grammar[index : index + 2]!r})")
    return int(text, 16), index + 2 + digits


def _describe(code: int) -> str:
    return "a NUL character" if code == 0 else f"the character U+{code:04X}"


def _check_literal(grammar: str, index: int) -> tuple[int, str | None]:
    while index < len(grammar) and grammar[index] != '"':
        try:
            code, index = _read_char(grammar, index)
        except ValueError as error:
            return len(grammar), str(error)
        if not _WRITABLE[0] <= code <= _WRITABLE[1]:
            return index, _describe(code)
    return index + 1, None


def _check_class(grammar: str, index: int) -> tuple[int, str | None]:
    start = index
    negated = grammar[index : index + 1] == "^"
    index += negated
    ranges: list[tuple[int, int]] = []
    try:
        while index < len(grammar) and grammar[index] != "]":
            low, index = _read_char(grammar, index)
            high = low
            if grammar[index : index + 1] == "-" and grammar[index + 1 : index + 2] not in ("]", ""):
                high, index = _read_char(grammar, index + 1)
            ranges.append((low, high))
    except ValueError as error:
        return len(grammar), str(error)
    if not ranges:  # llama.cpp adds nothing for `[]` or `[^]`: it matches the empty string
        return index + 1, None
    writable = _uncovered(ranges) if negated else [_clip(low, high) for low, high in ranges]
    if any(low <= high for low, high in writable):
        return index + 1, None
    return index + 1, f"a character in [{grammar[start:index]}], which holds none a model can write"


def _clip(low: int, high: int) -> tuple[int, int]:
    return max(low, _WRITABLE[0]), min(high, _WRITABLE[1])


def _uncovered(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The writable code points outside every one of `ranges`, as ranges."""
    gaps, next_free = [], _WRITABLE[0]
    for low, high in sorted(ranges):
        if low > high:
            continue  # a reversed range matches nothing, so it excludes nothing
        if low > next_free:
            gaps.append((next_free, low - 1))
        next_free = max(next_free, high + 1)
    gaps.append((next_free, _WRITABLE[1]))
    return gaps


# --- the grammars a request asks for ---------------------------------------------------------------


def grammar_for_format(output_format: str | dict[str, Any] | None) -> str | None:
    """GBNF grammar constraining output to JSON, or to a JSON schema; None if unconstrained."""
    if output_format is None or output_format == "":
        return None
    if output_format == "json":
        return JSON_GBNF
    if isinstance(output_format, dict):
        return schema_grammar(output_format, "format")
    raise InvalidRequest('format: expected "json" or a JSON schema object.')


@dataclass(frozen=True)
class LazyGrammar:
    """A grammar that starts constraining only once the output matches a trigger (llama.cpp's lazy grammar)."""

    grammar: str
    triggers: tuple[str, ...]
    """Regexes; the grammar applies from the first capture group (or the match) of the first that matches.
    None: it applies from the first token."""


def grammar_for_tool_calls(
    tool_format: ToolCallFormat, tools: list[dict[str, Any]], eager: bool = False
) -> LazyGrammar:
    """A lazy grammar that makes a started tool call parse and match its tool's JSON schema.

    `eager`: the answer must be a call, so the grammar applies from the start.

    A framed call is `open call close` (the model may end after it or start
    another) or, for a family that writes an array, `open [call, …]`; a bare
    call is the JSON object alone, with the closing fence of a ```json block.
    """
    call_rules = schema_grammar(call_schema(tool_format, tools), "tools")
    # The converter names its top rule `root`; it becomes `tool-call`, and `root` frames the calls.
    rules = re.sub(r"^root ::=", "tool-call ::=", call_rules, count=1, flags=re.MULTILINE)
    rules = re.sub(r"^space ::= .*$", lambda _: f"space ::= {_WHITESPACE}", rules, count=1, flags=re.MULTILINE)
    bare = 'tool-call (tool-space "```")?'
    triggers = [_BARE_CALL_TRIGGER]
    if tool_format.framed:
        opening = json.dumps(tool_format.open)
        if tool_format.as_list:
            framed = (
                f'{opening} tool-space "[" tool-space tool-call (tool-space "," tool-space tool-call)* tool-space "]"'
            )
        else:
            one = f"{opening} tool-space tool-call tool-space {json.dumps(tool_format.close)}"
            framed = f"{one} (tool-space {one})*"
        root = f"root ::= {framed} | {bare}"
        triggers.insert(0, f"({re.escape(tool_format.open)})[ \\t\\n]{{0,20}}$")
    else:
        root = f"root ::= {bare}"
    return LazyGrammar(f"{root}\ntool-space ::= {_WHITESPACE}\n{rules}", () if eager else tuple(triggers))
