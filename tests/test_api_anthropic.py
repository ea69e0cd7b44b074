"""Anthropic's Messages API, driven by the official `anthropic` client against ingle on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import pytest
from anthropic.types import ContentBlock, MessageParam, TextBlock, ToolParam, ToolResultBlockParam

from ingle.core.engine import Engine

from .conftest import DEFAULT_MODEL, settings_for
from .servers import serving

pytestmark = pytest.mark.slow

API_KEY = "anthropic-test-key"
# Sampling knobs are no longer parameters of the SDK's create(); they still travel in the body.
GREEDY = {"temperature": 0}
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def text_of(block: ContentBlock) -> str:
    """The text of a content block that must be text."""
    assert isinstance(block, TextBlock), block
    return block.text


def error_of(failure: anthropic.APIStatusError) -> dict:
    """The `error` object of an Anthropic-style error body."""
    assert isinstance(failure.body, dict), failure.body
    return failure.body["error"]


@pytest.fixture(scope="module")
async def base_url(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """ingle over the shared engine, with an API key, so clients must send it as x-api-key."""
    settings = settings_for(tmp_path_factory.mktemp("anthropic") / "home", api_key=API_KEY)
    async with serving(settings, engine) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The official client, as Claude Code configures it: ANTHROPIC_BASE_URL and a key sent as x-api-key."""
    async with anthropic.AsyncAnthropic(base_url=base_url, api_key=API_KEY, max_retries=0) as api:
        yield api


async def test_create_answers_with_text_and_usage(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=DEFAULT_MODEL,
        system=[{"type": "text", "text": "You answer in one word."}],
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
        extra_body=GREEDY,
    )
    assert message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "text" and "Paris" in message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 10 and 0 < message.usage.output_tokens <= 8


async def test_stream_sends_anthropics_event_sequence(client: anthropic.AsyncAnthropic, base_url: str) -> None:
    request = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Name three primary colours."}],
        "max_tokens": 24,
    }
    async with client.messages.stream(**request, extra_body=GREEDY) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == text_of(final.content[0]) and len(texts) > 1
    assert final.usage.output_tokens > 0 and final.stop_reason in ("end_turn", "max_tokens")
    # The event names on the wire, in order, as Anthropic documents them.
    headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base_url}/v1/messages", json={**request, **GREEDY, "stream": True}, headers=headers
        ) as response:
            body = await response.text()
    names = [line.removeprefix("event: ") for line in body.splitlines() if line.startswith("event: ")]
    assert names[:4] == ["message_start", "content_block_start", "ping", "content_block_delta"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_stop_sequences_end_the_answer_and_are_named(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas, nothing else."}],
        max_tokens=40,
        extra_body=GREEDY,
        stop_sequences=["6"],
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "6"
    text = text_of(message.content[0])
    assert "5" in text and "6" not in text


async def test_a_tool_round_trip(client: anthropic.AsyncAnthropic) -> None:
    question: MessageParam = {"role": "user", "content": "What is the weather in Paris right now?"}
    first = await client.messages.create(
        model=DEFAULT_MODEL, messages=[question], tools=[WEATHER_TOOL], max_tokens=64, extra_body=GREEDY
    )
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and call.input["city"] == "Paris" and call.id.startswith("toolu_")
    result: ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": "Sunny, 24 degrees Celsius",
    }
    second = await client.messages.create(
        model=DEFAULT_MODEL,
        messages=[question, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}],
        tools=[WEATHER_TOOL],
        max_tokens=48,
        extra_body=GREEDY,
    )
    # The call and its result went into the prompt (the 0.5B model's next move is its own business).
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.content and second.stop_reason in ("end_turn", "max_tokens", "tool_use")


async def test_a_streamed_tool_call_arrives_as_input_json(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=[WEATHER_TOOL],
        max_tokens=64,
        extra_body=GREEDY,
    ) as stream:
        final = await stream.get_final_message()
    call = next(block for block in final.content if block.type == "tool_use")
    assert final.stop_reason == "tool_use" and call.input == {"city": "Paris"}


async def test_count_tokens_matches_the_prompt_a_request_takes(client: anthropic.AsyncAnthropic) -> None:
    messages: list[MessageParam] = [{"role": "user", "content": "Say hi."}]
    counted = await client.messages.count_tokens(model=DEFAULT_MODEL, system="Be brief.", messages=messages)
    answered = await client.messages.create(
        model=DEFAULT_MODEL, system="Be brief.", messages=messages, max_tokens=1, extra_body=GREEDY
    )
    assert counted.input_tokens == answered.usage.input_tokens > 0


async def test_an_unknown_model_is_anthropics_404(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert error_of(missing.value)["type"] == "not_found_error"
    assert "no-such-model" in error_of(missing.value)["message"]


async def test_bad_input_and_a_wrong_key_get_anthropics_errors(base_url: str) -> None:
    async with anthropic.AsyncAnthropic(base_url=base_url, api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(anthropic.AuthenticationError):
            await wrong.messages.count_tokens(model=DEFAULT_MODEL, messages=[{"role": "user", "content": "hi"}])
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}]}  # max_tokens is required
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/v1/messages", json=body, headers=headers) as response:
            error = json.loads(await response.text())
    assert response.status == 400 and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error" and "max_tokens" in error["error"]["message"]
