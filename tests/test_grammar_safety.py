"""No JSON schema a client sends can abort the daemon: each becomes a grammar llama.cpp can always follow, or a 400.

llama.cpp ends the process (`Unexpected empty grammar stack`) when a grammar
demands a character no token can write, such as NUL. The schemas that did so
run against a real `ingle serve` process, so a regression kills that process
and not the test run.
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import llama_cpp as llama
import numpy as np
import ollama
import openai
import pytest

from ingle.core.errors import InvalidRequest
from ingle.core.runtime.grammar import grammar_for_format, grammar_for_tool_calls, unwritable_terminal
from ingle.core.runtime.llama_model import LlamaModel
from ingle.core.settings import Settings
from ingle.core.store import ModelStore
from ingle.core.tool_calls import HERMES

from .conftest import DEFAULT_MODEL
from .grammar_engine import TOKEN_DATA
from .servers import start_daemon

# llama.cpp's llama_token_data, as numpy lays out an array of them.
# Schemas a model can answer exactly; the constants hold what the grammar's escaping used to get wrong.
ANSWERABLE: list[tuple[dict[str, Any], Any]] = [
    ({"const": "\u0000"}, "\u0000"),
    ({"enum": ["\u0001\u0000"]}, "\u0001\u0000"),
    ({"const": 'say "hi" \\ ok\n'}, 'say "hi" \\ ok\n'),
    ({"type": "object", "properties": {"k\u0000": {"const": 1}}, "required": ["k\u0000"]}, {"k\u0000": 1}),
    # Patterns that demanded a raw NUL: JSON writes it as an escape.
    ({"type": "string", "pattern": "^\\x00$"}, "\u0000"),
    ({"type": "string", "pattern": "^[^\\x01-\\U0010FFFF]$"}, "\u0000"),
]
# Schemas no model can answer: each must be a 400 naming the field.
UNANSWERABLE: list[dict[str, Any]] = [
    {"type": "string", "pattern": "^[b-a]$"},
    {"type": "string", "pattern": "^[^\\s\\S]$"},
    {"enum": []},
    {"anyOf": []},
]


@pytest.mark.slow
def test_schemas_that_aborted_llama_cpp_are_answered_or_refused_and_the_daemon_lives(default_model_home: Path) -> None:
    daemon = start_daemon(default_model_home, INGLE_NUM_THREADS="2", INGLE_NUM_CTX="1024", INGLE_NUM_PARALLEL="1")
    try:
        client = ollama.Client(host=daemon.url, timeout=300)
        options = {"temperature": 0, "num_predict": 24}
        for schema, value in ANSWERABLE:
            answer = client.generate(DEFAULT_MODEL, "Answer in JSON.", format=schema, options=options)
            assert json.loads(answer.response or "") == value, (schema, answer.response)
        for schema in UNANSWERABLE:
            with pytest.raises(ollama.ResponseError) as refused:
                client.generate(DEFAULT_MODEL, "Answer in JSON.", format=schema, options=options)
            assert refused.value.status_code == 400 and refused.value.error.startswith("format: "), schema

        # A pattern with \\d, as dates are written in schemas, was refused (the converter made it the letter d).
        date_schema = {"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}$"}
        date = client.generate(
            DEFAULT_MODEL, "When did Apollo 11 land? Answer in JSON.", format=date_schema, options=options
        )
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", json.loads(date.response or "")), date.response

        openai_client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="unused", max_retries=0, timeout=300)
        completion = openai_client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "Answer in JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "nul", "schema": {"const": "\u0000"}}},
            max_tokens=24,
            temperature=0,
        )
        assert json.loads(completion.choices[0].message.content or "") == "\u0000"
        with pytest.raises(openai.BadRequestError, match="tools: "):
            openai_client.chat.completions.create(
                model=DEFAULT_MODEL,
                messages=[{"role": "user", "content": "Call it."}],
                tools=[
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "object", "properties": UNANSWERABLE[0]}},
                    }
                ],
                max_tokens=24,
            )

        booking = openai_client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "Book the dentist for March 3rd, 2027."}],
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "book",
                        "parameters": {"type": "object", "properties": {"date": date_schema}, "required": ["date"]},
                    },
                }
            ],
            tool_choice={"type": "function", "function": {"name": "book"}},
            max_tokens=48,
            temperature=0,
        )
        calls = booking.choices[0].message.tool_calls or []
        assert calls and calls[0].type == "function", booking
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", json.loads(calls[0].function.arguments)["date"]), calls

        assert daemon.process.poll() is None, daemon.log
        plain = client.generate(DEFAULT_MODEL, "Say hi.", options=options)
        assert plain.done and plain.response
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    ("schema", "complaint"),
    [
        ({"type": "string", "pattern": "^[b-a]$"}, "not a regular expression"),
        ({"type": "string", "pattern": "^\ud800$"}, "lone surrogate"),
        ({"enum": []}, "allows no value"),
        ({"$ref": "https://example.com/schema.json"}, "may only point inside the schema"),
        ({"type": "string", "pattern": "^(?=a)a$"}, "cannot be used"),
        ({"not": {"type": "string"}}, "cannot be used"),
        ({"type": "array", "minItems": 10**9}, "limited to"),
        ({"type": []}, "allows no value"),
    ],
)
def test_a_schema_no_grammar_can_follow_is_refused_with_a_sentence(schema: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^format: ") as refused:
        grammar_for_format(schema)
    assert complaint in refused.value.message


def test_a_schema_nested_past_the_limit_is_refused_before_the_converter_recurses() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(2000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InvalidRequest, match="nests deeper"):
        grammar_for_format(schema)


def test_a_schema_whose_counts_add_up_to_a_huge_grammar_is_refused_at_once() -> None:
    # Each count is within the limit, but together they made a 64 MB grammar that held a daemon for 9 s and 3.5 GB.
    def strings(count: int) -> dict[str, Any]:
        names = [f"field{index}" for index in range(count)]
        return {"type": "object", "properties": {name: {"type": "string", "maxLength": 1000} for name in names}}

    with pytest.raises(InvalidRequest, match=r"^format: .*add up to more than") as refused:
        grammar_for_format(strings(8000))
    assert "lower them" in refused.value.message
    # A large real schema still converts: 50 strings of up to 1,000 characters.
    grammar = grammar_for_format(strings(50))
    assert grammar is not None and len(grammar) < 1_000_000


def test_tool_names_and_schemas_with_any_character_give_writable_grammars() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": 'a"\\\u0000',
            "parameters": {"type": "object", "properties": {"q": {"enum": ["\u0000", "\\", '"', "\ud800"]}}},
        },
    }
    grammar = grammar_for_tool_calls(HERMES, [tool]).grammar
    assert unwritable_terminal(grammar) is None
    grammar.encode()  # llama.cpp takes it as UTF-8: the lone surrogate stays a JSON escape
    assert '"\\"a\\\\\\"\\\\\\\\\\\\u0000\\""' in grammar  # "a\"\\\u0000" as JSON, escaped once more for GBNF


# Samples once, greedily and at random, under a grammar that allows no token at all (it demands NUL).
DEAD_END_SAMPLING = r"""
import sys
from pathlib import Path

from ingle.core.generation import SamplingOptions
from ingle.core.runtime.llama_model import Batch, ContextShape, LlamaModel
from ingle.core.runtime.sampler import Sampler

model = LlamaModel(Path(sys.argv[1]))
context = model.new_context(ContextShape(sequences=1, tokens_per_sequence=128, batch_tokens=32, threads=2))
batch = Batch(32)
tokens = model.tokenize("Say a word:")
for position, token in enumerate(tokens):
    batch.add(token, position, 0, position == len(tokens) - 1)
context.decode(batch)
for options in (SamplingOptions(temperature=0), SamplingOptions()):
    sampler = Sampler(model, options, grammar='root ::= "\\x00"')
    print(sampler.sample(context.raw, len(tokens) - 1) == model.eos)
    sampler.free()
"""


@pytest.mark.slow
def test_a_grammar_that_allows_no_token_ends_the_output_instead_of_the_process(default_model_cache: Path) -> None:
    store = ModelStore(Settings(home=default_model_cache).models_dir)
    blob = store.blob_path(store.get(DEFAULT_MODEL).digest)
    # In a process of its own: before the check, llama.cpp aborted the process that sampled.
    result = subprocess.run(
        [sys.executable, "-c", DEAD_END_SAMPLING, str(blob)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True"]


def test_a_string_in_a_schema_cannot_hold_a_raw_control_character(default_model_cache: Path) -> None:
    store = ModelStore(Settings(home=default_model_cache).models_dir)
    model = LlamaModel(store.blob_path(store.get(DEFAULT_MODEL).digest))
    grammar = grammar_for_format({"type": "object", "properties": {"note": {"type": "string"}}})
    assert grammar is not None
    sampler = llama.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    try:
        for token in model.tokenize('{"note": "', parse_special=False):
            llama.llama_sampler_accept(sampler, token)  # pyright: ignore[reportArgumentType]
        # Inside the string: a newline or a tab is not JSON there, a letter or an escape is.
        pieces = ["\n", "\t", "a", "\\"]
        tokens = [model.tokenize(piece, parse_special=False) for piece in pieces]
        assert all(len(token) == 1 for token in tokens)
        candidates = np.array([(token[0], 0.0, 0.0) for token in tokens], dtype=TOKEN_DATA)
        pointer = candidates.ctypes.data_as(ctypes.POINTER(llama.llama_token_data))
        array = llama.llama_token_data_array(pointer, len(candidates), -1, False)
        llama.llama_sampler_apply(sampler, ctypes.byref(array))  # pyright: ignore[reportArgumentType]
        allowed = dict(zip(pieces, np.isfinite(candidates["logit"]), strict=True))
        assert allowed == {"\n": False, "\t": False, "a": True, "\\": True}
    finally:
        llama.llama_sampler_free(sampler)
        model.free()
