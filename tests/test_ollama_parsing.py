"""Pieces of the Ollama adapter that need no model: model-output parsing and keep_alive durations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ingle.adapters.http.ollama_wire import (
    ChatRequest,
    GenerateRequest,
    parse_keep_alive,
)
from ingle.core.tool_calls import (
    AssistantOutputParser,
    AssistantPiece,
    parse_tool_call,
)

TOOLS = ["get_weather"]


def run(parser: AssistantOutputParser, text: str, step: int) -> AssistantPiece:
    """Feed `text` in pieces of `step` characters, as a stream would, and gather everything released."""
    whole = AssistantPiece()
    for start in range(0, len(text), step):
        whole.extend(parser.feed(text[start : start + step]))
    whole.extend(parser.finish())
    return whole


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_tagged_tool_calls_are_parsed_at_any_split(step: int) -> None:
    text = (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}\n</tool_call>'
    )
    piece = run(AssistantOutputParser(TOOLS, keep_thinking=False), text, step)
    assert piece.content == "Let me check.\n"
    assert piece.tool_calls == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
    ]


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_a_bare_or_fenced_json_call_is_a_tool_call(step: int) -> None:
    for text in (
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '```json\n{\n  "name": "get_weather",\n  "arguments": {"city": "Paris"}\n}\n```',
    ):
        piece = run(AssistantOutputParser(TOOLS, keep_thinking=False), text, step)
        assert piece.content == ""
        assert piece.tool_calls == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]


def test_json_that_is_not_a_known_tool_stays_content() -> None:
    text = '{"name": "Ada", "age": 36}'
    piece = run(AssistantOutputParser(TOOLS, keep_thinking=False), text, 3)
    assert piece.content == text and not piece.tool_calls


def test_without_tools_tags_are_plain_text() -> None:
    text = 'Use <tool_call>{"name": "x", "arguments": {}}</tool_call> like that.'
    assert run(AssistantOutputParser(None, keep_thinking=False), text, 2).content == text


def test_a_broken_tool_call_is_shown_rather_than_lost() -> None:
    text = "<tool_call>\nnot json\n</tool_call>"
    piece = run(AssistantOutputParser(TOOLS, keep_thinking=False), text, 5)
    assert piece.content == text and not piece.tool_calls


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_reasoning_is_split_out_or_dropped(step: int) -> None:
    text = "<think>\nThe user wants a greeting.\n</think>\n\nHello <b>there</b>!"
    kept = run(AssistantOutputParser(None, keep_thinking=True), text, step)
    assert kept.thinking == "\nThe user wants a greeting.\n"
    assert kept.content == "Hello <b>there</b>!"
    dropped = run(AssistantOutputParser(None, keep_thinking=False), text, step)
    assert dropped.thinking == "" and dropped.content == "Hello <b>there</b>!"


def test_text_is_released_as_soon_as_it_cannot_be_a_tag() -> None:
    parser = AssistantOutputParser(TOOLS, keep_thinking=False)
    assert parser.feed("Hello wor").content == "Hello wor"
    assert parser.feed("ld <tool").content == "ld "
    assert parser.feed("s>").content == "<tools>"


def test_parse_tool_call_checks_names_when_asked() -> None:
    assert parse_tool_call('{"name": "f", "arguments": {}}') == {"function": {"name": "f", "arguments": {}}}
    assert parse_tool_call('{"name": "f", "arguments": {}}', ["g"]) is None
    assert parse_tool_call('{"arguments": {}}') is None
    assert parse_tool_call("[1, 2]") is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(300, 300.0), (2.5, 2.5), ("5m", 300.0), ("1h30m", 5400.0), ("90s", 90.0), ("250ms", 0.25),
     ("0", 0.0), (0, 0.0), ("-1", -1.0), (-1, -1.0), ("-5m", -1.0), ("10", 10.0), (None, None),
     (1e308, -1.0), (float("inf"), -1.0), ("99999999h", -1.0)],
)  # fmt: skip
def test_keep_alive_durations(value: object, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5x", "", "m", True, [1], float("nan")])
def test_bad_keep_alive_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        GenerateRequest.model_validate({"model": "m", "keep_alive": value})
    assert caught.value.errors()[0]["loc"] == ("keep_alive",)


def test_requests_accept_what_the_ollama_client_sends() -> None:
    GenerateRequest.model_validate(
        {"model": "m", "prompt": "p", "suffix": "", "system": "", "template": "", "context": [1, 2], "stream": False,
         "think": "high", "raw": False, "format": "json", "images": [], "options": {"num_ctx": 2048, "num_gpu": 0},
         "keep_alive": "5m", "logprobs": False, "top_logprobs": 0}
    )  # fmt: skip
    ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "tool", "content": "18C", "tool_name": "get_weather"}],
         "tools": [], "stream": True, "think": False, "format": {"type": "object"}, "options": {"stop": ["x"]}}
    )  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        GenerateRequest.model_validate({"model": "m", "format": "xml"})
    assert caught.value.errors()[0]["loc"] == ("format",)


def test_options_refuse_values_llama_cpp_cannot_take() -> None:
    for options, field in (({"temperature": float("inf")}, "temperature"), ({"top_k": 2**40}, "top_k"),
                           ({"presence_penalty": float("nan")}, "presence_penalty")):  # fmt: skip
        with pytest.raises(ValidationError) as caught:
            GenerateRequest.model_validate({"model": "m", "options": options})
        assert caught.value.errors()[0]["loc"] == ("options", field)
