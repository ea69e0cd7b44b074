"""Tool calls on every API: the family's format read from the chat template, parsed, and constrained by a grammar."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import jsonschema_rs
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionToolParam

from ingle.core.engine import Engine
from ingle.core.errors import InvalidRequest
from ingle.core.runtime.grammar import grammar_for_tool_calls
from ingle.core.tool_calls import (
    GENERIC,
    HERMES,
    LLAMA3,
    MISTRAL,
    AssistantOutputParser,
    ToolCallFormat,
    detect_tool_format,
)

from .conftest import DEFAULT_MODEL, settings_for
from .servers import serving
from .test_ollama_parsing import run

ALARM_PARAMETERS = {
    "type": "object",
    "properties": {
        "hour": {"type": "integer", "minimum": 0, "maximum": 23},
        "minute": {"type": "integer", "minimum": 0, "maximum": 59},
        "label": {"type": "string", "enum": ["work", "gym", "other"]},
    },
    "required": ["hour", "minute", "label"],
}
ALARM_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "set_alarm", "description": "Set an alarm clock.", "parameters": ALARM_PARAMETERS},
}
# The default model answers this with a label outside the enum unless the grammar holds it to the schema.
ALARM_PROMPT = "Set an alarm for 7:15 am labelled morning run."

# The tool parts of real templates (abridged): each family's way of writing a call.
MISTRAL_TEMPLATE = "{%- if tools %}[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]"
LLAMA3_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>{% if tools %}Respond with a JSON for a function call "
    '{"name": function name, "parameters": dictionary}{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}'
)
HERMES_TEMPLATE = "{% if tools %}<tools>{{ tools }}</tools> answer in <tool_call></tool_call> tags{% endif %}"
PLAIN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
)


def test_the_format_is_read_from_the_chat_template() -> None:
    assert detect_tool_format(HERMES_TEMPLATE) is HERMES
    assert detect_tool_format(MISTRAL_TEMPLATE) is MISTRAL
    assert detect_tool_format(LLAMA3_TEMPLATE) is LLAMA3
    assert detect_tool_format("{% if tools %}{{ tools }}{% endif %}{{ messages }}") is GENERIC
    assert detect_tool_format(PLAIN_TEMPLATE) is None
    assert detect_tool_format(None) is None


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_mistral_calls_come_as_one_array(step: int) -> None:
    text = '[TOOL_CALLS][{"name": "set_alarm", "arguments": {"hour": 7}}, {"name": "set_alarm", "arguments": {}}]'
    piece = run(AssistantOutputParser(["set_alarm"], keep_thinking=False, tool_format=MISTRAL), text, step)
    assert piece.content == ""
    assert [call["function"]["arguments"] for call in piece.tool_calls] == [{"hour": 7}, {}]


@pytest.mark.parametrize(
    "text",
    [
        '<|python_tag|>{"name": "set_alarm", "parameters": {"hour": 7}}',
        '{"name": "set_alarm", "parameters": {"hour": 7}}',
    ],
)
def test_llama3_calls_are_parsed_with_or_without_the_python_tag(text: str) -> None:
    piece = run(AssistantOutputParser(["set_alarm"], keep_thinking=False, tool_format=LLAMA3), text, 3)
    assert piece.tool_calls == [{"function": {"name": "set_alarm", "arguments": {"hour": 7}}}]
    assert piece.content == ""


def test_a_fenced_bare_call_is_parsed_and_other_json_stays_an_answer() -> None:
    fenced = '```json\n{\n  "name": "set_alarm",\n  "arguments": {"hour": 7}\n}\n```'
    for text in (fenced, fenced.removeprefix("```json\n")):  # a model sometimes writes the closing fence only
        piece = run(AssistantOutputParser(["set_alarm"], keep_thinking=False), text, 5)
        assert piece.tool_calls == [{"function": {"name": "set_alarm", "arguments": {"hour": 7}}}]
    answer = '{"name": "Ada", "age": 36}'
    piece = run(AssistantOutputParser(["set_alarm"], keep_thinking=False), answer, 5)
    assert piece.tool_calls == [] and piece.content == answer


@pytest.mark.parametrize("tool_format", [HERMES, MISTRAL, LLAMA3])
def test_a_call_nested_thousands_deep_stays_text_instead_of_breaking_the_answer(tool_format: ToolCallFormat) -> None:
    # A prompt can make a model write this; Python's parser raised RecursionError on it, which ended the stream.
    deep = "[" * 3000 + "]" * 3000
    text = f'{tool_format.open}{{"name": "set_alarm", "arguments": {deep}}}{tool_format.close}'
    piece = run(AssistantOutputParser(["set_alarm"], keep_thinking=False, tool_format=tool_format), text, 50)
    assert piece.tool_calls == [] and deep in piece.content


@pytest.fixture(scope="module")
async def base_url(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """ingle's HTTP API over the shared engine, with a model whose template cannot render tools beside it."""
    plain = dataclasses.replace(engine.show(DEFAULT_MODEL), name="plain-chat:latest", template=PLAIN_TEMPLATE)
    engine.store.put(plain)
    async with serving(settings_for(tmp_path_factory.mktemp("tools") / "home"), engine) as url:
        yield url
    await engine.remove("plain-chat:latest")


@pytest.mark.slow
async def test_openai_tool_arguments_follow_the_schema(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
        answer = await client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": ALARM_PROMPT}],
            tools=[ALARM_TOOL],
            temperature=0,
            max_tokens=80,
        )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "set_alarm"
    assert jsonschema_rs.validator_for(ALARM_PARAMETERS).is_valid(arguments), arguments


@pytest.mark.slow
async def test_ollama_streams_a_schema_valid_call(base_url: str) -> None:
    client = ollama.AsyncClient(host=base_url)
    messages = [{"role": "user", "content": ALARM_PROMPT}]
    options = {"temperature": 0, "num_predict": 80}
    chunks = [
        chunk
        async for chunk in await client.chat(DEFAULT_MODEL, messages, tools=[ALARM_TOOL], stream=True, options=options)
    ]
    calls = [call for chunk in chunks for call in chunk.message.tool_calls or []]
    assert [call.function.name for call in calls] == ["set_alarm"]
    assert jsonschema_rs.validator_for(ALARM_PARAMETERS).is_valid(dict(calls[0].function.arguments))
    assert "".join(chunk.message.content or "" for chunk in chunks).strip() == ""


async def test_tools_for_a_model_without_tool_support_are_a_400(base_url: str) -> None:
    client = ollama.AsyncClient(host=base_url)
    with pytest.raises(ollama.ResponseError) as refused:
        await client.chat("plain-chat", [{"role": "user", "content": "hi"}], tools=[ALARM_TOOL])
    assert refused.value.status_code == 400 and "no tool support" in refused.value.error


@pytest.mark.slow
async def test_a_required_tool_choice_makes_the_answer_a_call(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
        answer = await client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "Tell me a short joke about clocks."}],
            tools=[ALARM_TOOL],
            tool_choice={"type": "function", "function": {"name": "set_alarm"}},
            temperature=0,
            max_tokens=80,
        )
        call = answer.choices[0].message.tool_calls[0]
        assert call.type == "function" and call.function.name == "set_alarm"
        assert jsonschema_rs.validator_for(ALARM_PARAMETERS).is_valid(json.loads(call.function.arguments))
        with pytest.raises(openai.BadRequestError, match="not among the tools offered"):
            await client.chat.completions.create(
                model=DEFAULT_MODEL,
                messages=[{"role": "user", "content": "hi"}],
                tools=[ALARM_TOOL],
                tool_choice={"type": "function", "function": {"name": "missing"}},
            )


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"}, "minItems": 10**9}}},
        {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[0-9]{100000}$"}}},
    ],
)
def test_a_schema_that_would_blow_up_the_grammar_is_refused(parameters: dict) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    with pytest.raises(InvalidRequest, match="limited to"):
        grammar_for_tool_calls(HERMES, [tool])


def test_an_escaped_pattern_becomes_a_literal_llama_cpp_reads() -> None:
    version = {"type": "string", "pattern": "^v[0-9]+\\.[0-9]+$"}
    tool = {
        "type": "function",
        "function": {"name": "deploy", "parameters": {"type": "object", "properties": {"version": version}}},
    }
    grammar = grammar_for_tool_calls(HERMES, [tool]).grammar
    assert '"."' in grammar and "\\." not in grammar  # llama.cpp refuses the whole grammar over `\.`
