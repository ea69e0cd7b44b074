"""The OpenAI-compatible API, driven by the real `openai` client against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from ingle.core.engine import Engine

from .conftest import DEFAULT_MODEL, fill_context_after, settings_for
from .servers import serving

pytestmark = pytest.mark.slow


@pytest.fixture
async def client(engine: Engine, tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    """An OpenAI client pointed at a fresh ingle app on an ephemeral loopback port."""
    async with (
        serving(settings_for(tmp_path / "home"), engine) as base_url,
        openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as api,
    ):
        yield api


async def test_chat_answers_with_usage(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "What is the capital of France? Answer in one word."}],
            }
        ],
        temperature=0,
        max_tokens=8,
        seed=1,
        user="someone",
    )
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion"
    assert answer.system_fingerprint == "ingle" and answer.model == DEFAULT_MODEL
    assert "Paris" in (answer.choices[0].message.content or "")
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens > 10 and 0 < answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


async def test_chat_streams_chunks_and_a_usage_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        temperature=0,
        max_completion_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "Paris" in text
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].usage.prompt_tokens > 10


async def test_json_schema_response_format_gives_matching_json(client: openai.AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    answer = await client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Invent a person and give their name and age as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
        temperature=0,
        max_tokens=32,
    )
    value = json.loads(answer.choices[0].message.content or "")
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


async def test_allowed_tools_offers_only_those_it_names(client: openai.AsyncOpenAI) -> None:
    # The weather question would go to get_weather; allowed_tools leaves only get_time, and "required" makes the
    # answer call it. The tool list stays the same from request to request, and so does the prompt's cache.
    def tool(name: str, what: str) -> ChatCompletionToolParam:
        parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        return {"type": "function", "function": {"name": name, "description": what, "parameters": parameters}}

    tools = [tool("get_weather", "The current weather in a city."), tool("get_time", "The local time in a city.")]
    answer = await client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=tools,
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]},
        },
        temperature=0,
        max_tokens=32,
    )
    calls = answer.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls if call.type == "function"] == ["get_time"] and len(calls) == 1
    for allowed in (
        {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_date"}}]},
        {"mode": "all"},
    ):
        with pytest.raises(openai.BadRequestError, match="tool_choice"):
            await client.chat.completions.create(
                model=DEFAULT_MODEL,
                messages=[{"role": "user", "content": "hi"}],
                tools=tools,
                tool_choice={"type": "allowed_tools", "allowed_tools": allowed},  # pyright: ignore[reportArgumentType]
            )


async def test_tool_calls_come_back_parsed(client: openai.AsyncOpenAI) -> None:
    tools: list[ChatCompletionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    answer = await client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=tools,
        tool_choice="auto",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=32,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"
    stream = await client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=tools,
        temperature=0,
        max_tokens=32,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    streamed = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or []]
    assert [call.function.name for call in streamed] == ["get_weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_completion_with_suffix_fills_in_the_middle(client: openai.AsyncOpenAI) -> None:
    answer = await client.completions.create(
        model=DEFAULT_MODEL, prompt="def add(a, b):\n    return ", suffix="\n", temperature=0, max_tokens=8
    )
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert answer.choices[0].text.startswith("a + b")
    assert answer.usage.completion_tokens <= 8


async def test_completion_streams_text_completion_chunks(client: openai.AsyncOpenAI) -> None:
    stream = await client.completions.create(
        model=DEFAULT_MODEL,
        prompt=["Counting: one, two, three,"],
        temperature=0,
        max_tokens=4,
        stop=["six"],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert "four" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 4


async def test_embeddings_as_floats_and_as_the_clients_default_base64(client: openai.AsyncOpenAI) -> None:
    floats = await client.embeddings.create(
        model=DEFAULT_MODEL, input=["The cat sat.", "A dog ran."], encoding_format="float"
    )
    assert [item.index for item in floats.data] == [0, 1]
    assert all(len(item.embedding) == 896 for item in floats.data)
    assert floats.usage.prompt_tokens > 0
    default = await client.embeddings.create(model=DEFAULT_MODEL, input="The cat sat.")
    vector = default.data[0].embedding
    assert len(vector) == 896
    assert vector == pytest.approx(floats.data[0].embedding, abs=1e-5)


async def test_models_are_listed_and_retrieved(client: openai.AsyncOpenAI) -> None:
    listed = [model async for model in client.models.list()]
    assert [model.id for model in listed] == [DEFAULT_MODEL]
    assert listed[0].owned_by == "ingle" and listed[0].created > 0
    one = await client.models.retrieve(DEFAULT_MODEL)
    assert one.id == DEFAULT_MODEL and one.object == "model"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("nope:1b")


async def test_unknown_model_is_not_found_also_when_streaming(client: openai.AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="nope:1b", messages=messages)
    assert "nope" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope:1b", messages=messages, stream=True)


def error_param(error: openai.APIStatusError) -> object:
    """The `param` of an OpenAI-style error body: the request field the server names."""
    assert isinstance(error.body, dict)
    return error.body["param"]


async def test_unsupported_and_malformed_fields_are_named(client: openai.AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=DEFAULT_MODEL, messages=messages, n=2)
    assert error_param(caught.value) == "n" and "n:" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=DEFAULT_MODEL, messages=messages, temperature="hot")  # pyright: ignore[reportArgumentType]
    assert error_param(caught.value) == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=DEFAULT_MODEL, messages=messages, logit_bias={"42": 1})
    assert error_param(caught.value) == "logit_bias"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.embeddings.create(model=DEFAULT_MODEL, input=[[1, 2, 3]])
    assert "token-id" in caught.value.message


async def test_a_prompt_beyond_the_context_is_context_length_exceeded(client: openai.AsyncOpenAI) -> None:
    # About 6,000 tokens against the engine's 4,096: OpenAI's clients tell this error apart by its code.
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "ab, " * 3000}]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=DEFAULT_MODEL, messages=messages)
    assert caught.value.code == "context_length_exceeded" and "num_ctx" in caught.value.message


async def test_a_context_that_fills_mid_stream_ends_it_with_context_length_exceeded(
    client: openai.AsyncOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_context_after(monkeypatch, decodes=3)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count from one to fifty."}]
    stream = await client.chat.completions.create(model=DEFAULT_MODEL, messages=messages, stream=True, seed=3)
    pieces = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            pieces.append(chunk)
    # The status line was sent long ago: the last event says what happened, in OpenAI's error shape and code.
    assert pieces and "context is full" in caught.value.message
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "context_length_exceeded"


async def test_closing_a_stream_frees_the_sequence(client: openai.AsyncOpenAI, engine: Engine) -> None:
    loaded = next(iter(engine._loaded.values()))
    stream = await client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Write a very long essay about the sea."}],
        max_tokens=500,
        stream=True,
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    deadline = time.monotonic() + 10
    while loaded.scheduler.active and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert loaded.scheduler.active == 0
