"""Sampler chains: how the next token is chosen from the logits."""

from __future__ import annotations

import ctypes
import json
import re
from dataclasses import dataclass
from typing import Any

import llama_cpp as llama
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from ..errors import InvalidRequest
from ..generation import SamplingOptions
from ..tool_calls import ToolCallFormat, call_schema
from .llama_model import LlamaModel

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


# llama.cpp expands a grammar's repetition counts into copies of rules, so a schema's counts are
# bounded before any grammar is built: `{"maxItems": 10**9}` must be a 400, not an exhausted machine.
MAX_SCHEMA_REPEAT = 1000
_COUNT_KEYWORDS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
_PATTERN_COUNT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def check_schema_counts(schema: Any, field: str) -> None:
    """InvalidRequest naming `field` when a JSON schema repeats anything more than MAX_SCHEMA_REPEAT times."""
    pending, seen = [schema], 0
    while pending:
        node = pending.pop()
        seen += 1
        if seen > 100_000:
            raise InvalidRequest(f"{field}: the JSON schema is too large.")
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        counts = [node.get(keyword) for keyword in _COUNT_KEYWORDS]
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            counts += [int(number) for match in _PATTERN_COUNT.findall(pattern) for number in match if number]
        if any(isinstance(count, int) and count > MAX_SCHEMA_REPEAT for count in counts):
            raise InvalidRequest(f"{field}: counts in the JSON schema are limited to {MAX_SCHEMA_REPEAT}.")
        pending.extend(node.values())


_LITERAL = re.compile(r'"(?:\\.|[^"\\])*"')
_UNKNOWN_ESCAPE = re.compile(r'\\([^\\"nrtxuU\[\]])')


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema, with the literals made readable for llama.cpp's grammar parser.

    llama-cpp-python's converter keeps a pattern's escaped characters (`\\.` from
    `"^v[0-9]+\\.[0-9]+$"`) in string literals, where llama.cpp knows no such
    escape and rejects the whole grammar; inside a literal the character stands
    for itself.
    """
    grammar = json_schema_to_gbnf(json.dumps(schema))
    return _LITERAL.sub(lambda literal: _UNKNOWN_ESCAPE.sub(r"\1", literal.group(0)), grammar)


def grammar_for_format(output_format: str | dict[str, Any] | None) -> str | None:
    """GBNF grammar constraining output to JSON, or to a JSON schema; None if unconstrained."""
    if output_format is None or output_format == "":
        return None
    if output_format == "json":
        return JSON_GBNF
    if isinstance(output_format, dict):
        check_schema_counts(output_format, "format")
        try:
            return schema_grammar(output_format)
        except Exception as error:  # the converter raises bare Exceptions on bad schemas
            raise InvalidRequest(f"format: the JSON schema cannot be used ({error}).") from error
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
    schema = call_schema(tool_format, tools)
    check_schema_counts(schema, "tools")
    try:
        call_rules = schema_grammar(schema)
    except Exception as error:  # the converter raises bare Exceptions on bad schemas
        raise InvalidRequest(f"tools: a tool's parameters schema cannot be used ({error}).") from error
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


def _penalty_window(repeat_last_n: int, model: LlamaModel) -> int:
    """The tokens the penalties look back over: llama.cpp allocates this many up front, so never more than
    a context holds (-1 asks for the whole context, as in llama.cpp)."""
    context = max(model.n_ctx_train, 0)
    return context if repeat_last_n < 0 else min(repeat_last_n, context)


class Sampler:
    """A llama.cpp sampler chain built from SamplingOptions; free() it when done.

    `grammar` constrains the whole output; `tool_grammar` only what follows its
    trigger (ignored when `grammar` is given: the output format wins).
    """

    def __init__(
        self,
        model: LlamaModel,
        options: SamplingOptions,
        grammar: str | None = None,
        tool_grammar: LazyGrammar | None = None,
    ) -> None:
        options.check()
        self._chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        # Greedy with nothing that reads the history or constrains tokens: the pick is the logits' argmax,
        # which the scheduler takes itself, without llama.cpp's copy of the whole vocabulary (~1 ms a token).
        self.argmax_only = (
            grammar is None
            and tool_grammar is None
            and options.temperature <= 0
            and options.repeat_penalty == 1.0
            and not options.frequency_penalty
            and not options.presence_penalty
        )
        try:
            if grammar is not None:
                self._add_grammar(model, grammar)
            elif tool_grammar is not None and tool_grammar.triggers:
                self._add_lazy_grammar(model, tool_grammar)
            elif tool_grammar is not None:
                self._add_grammar(model, tool_grammar.grammar)
            if options.repeat_penalty != 1.0 or options.frequency_penalty or options.presence_penalty:
                self._add(
                    llama.llama_sampler_init_penalties(
                        model.n_vocab,
                        _penalty_window(options.repeat_last_n, model),
                        options.repeat_penalty,
                        options.frequency_penalty,
                        options.presence_penalty,
                    )
                )
            if options.temperature <= 0:
                self._add(llama.llama_sampler_init_greedy())
                return
            if options.top_k > 0:
                # More than the vocabulary keeps it all; ctypes would wrap a larger count to int32.
                self._add(llama.llama_sampler_init_top_k(min(options.top_k, model.n_vocab)))
            if options.top_p < 1.0:
                self._add(llama.llama_sampler_init_top_p(options.top_p, 1))
            if options.min_p > 0.0:
                self._add(llama.llama_sampler_init_min_p(options.min_p, 1))
            self._add(llama.llama_sampler_init_temp(options.temperature))
            seed = llama.LLAMA_DEFAULT_SEED if options.seed is None else options.seed & 0xFFFFFFFF
            self._add(llama.llama_sampler_init_dist(seed))
        except Exception:
            self.free()
            raise

    def _add(self, sampler: llama.llama_sampler_p) -> None:
        llama.llama_sampler_chain_add(self._chain, sampler)  # pyright: ignore[reportArgumentType] - None only once freed

    def _add_grammar(self, model: LlamaModel, grammar: str) -> None:
        sampler = llama.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
        if not sampler:
            raise InvalidRequest("format: the grammar derived from it could not be parsed by llama.cpp.")
        self._add(sampler)

    def _add_lazy_grammar(self, model: LlamaModel, lazy: LazyGrammar) -> None:
        patterns = (ctypes.c_char_p * len(lazy.triggers))(*(pattern.encode() for pattern in lazy.triggers))
        no_tokens = (llama.llama_token * 0)()
        sampler = llama.llama_sampler_init_grammar_lazy_patterns(
            model.vocab, lazy.grammar.encode(), b"root", patterns, len(lazy.triggers), no_tokens, 0
        )
        if not sampler:
            raise InvalidRequest("tools: the grammar derived from the tools' schemas could not be parsed by llama.cpp.")
        self._add(sampler)

    def sample(self, context: llama.llama_context_p, batch_index: int) -> int:
        """Pick (and accept) the next token from the logits at `batch_index`."""
        return llama.llama_sampler_sample(self._chain, context, batch_index)  # pyright: ignore[reportArgumentType] - as above

    def free(self) -> None:
        """Release the chain and every sampler in it."""
        if self._chain:
            llama.llama_sampler_free(self._chain)
            self._chain = None
