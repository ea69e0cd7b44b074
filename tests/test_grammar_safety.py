"""No JSON schema a client sends can abort the daemon: each becomes a grammar llama.cpp can always follow, or a 400.

llama.cpp ends the process (`Unexpected empty grammar stack`) when a grammar
demands a character no token can write, such as NUL. The schemas that did so
run against a real `ingle serve` process, so a regression kills that process
and not the test run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from ingle.core.errors import InvalidRequest
from ingle.core.runtime.grammar import grammar_for_format, grammar_for_tool_calls, unwritable_terminal
from ingle.core.tool_calls import HERMES

from .conftest import DEFAULT_MODEL
from .servers import start_daemon

# Schemas a model can answer exactly; the constants hold what the grammar's escaping used to get wrong.
ANSWERABLE: list[tuple[dict[str, Any], Any]] = [
    ({"const": "\u0000"}, "\u0000"),
    ({"enum": ["\u0001\u0000"]}, "\u0001\u0000"),
    ({"const": 'say "hi" \\ ok\n'}, 'say "hi" \\ ok\n'),
    ({"type": "object", "properties": {"k\u0000": {"const": 1}}, "required": ["k\u0000"]}, {"k\u0000": 1}),
]
# Schemas no model can answer: each must be a 400 naming the field.
UNANSWERABLE: list[dict[str, Any]] = [
    {"type": "string", "pattern": "^\\x00$"},
    {"type": "string", "pattern": "^a\\u0000+$"},
    {"type": "string", "pattern": "^[b-a]$"},
    {"type": "string", "pattern": "^[^\\x01-\\U0010FFFF]$"},
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
            assert json.loads(answer.response) == value, (schema, answer.response)
        for schema in UNANSWERABLE:
            with pytest.raises(ollama.ResponseError) as refused:
                client.generate(DEFAULT_MODEL, "Answer in JSON.", format=schema, options=options)
            assert refused.value.status_code == 400 and refused.value.error.startswith("format: "), schema

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

        assert daemon.process.poll() is None, daemon.log
        plain = client.generate(DEFAULT_MODEL, "Say hi.", options=options)
        assert plain.done and plain.response
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    ("schema", "complaint"),
    [
        ({"type": "string", "pattern": "^\\x00$"}, "a NUL character"),
        ({"type": "string", "pattern": "^[b-a]$"}, "holds none a model can write"),
        ({"enum": []}, "allows no value"),
        ({"$ref": "https://example.com/schema.json"}, "may only point inside the schema"),
        ({"type": "string", "pattern": "^\\d+$"}, "uses \\d"),
        ({"type": "string", "pattern": "^(?=a)a$"}, "cannot be used"),
        ({"not": {"type": "string"}}, "cannot be used"),
        ({"type": "array", "minItems": 10**9}, "limited to"),
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


def test_tool_names_and_schemas_with_any_character_give_writable_grammars() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": 'a"\\\u0000',
            "parameters": {"type": "object", "properties": {"q": {"enum": ["\u0000", "\\", '"']}}},
        },
    }
    grammar = grammar_for_tool_calls(HERMES, [tool]).grammar
    assert unwritable_terminal(grammar) is None
    assert '"\\"a\\\\\\"\\\\\\\\\\\\u0000\\""' in grammar  # "a\"\\\u0000" as JSON, escaped once more for GBNF
