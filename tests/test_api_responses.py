"""OpenAI's Responses API, driven by the official `openai` client's `responses` against ingle on loopback."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema_rs
import openai
import pytest
from openai.types.responses import FunctionToolParam, ResponseCompletedEvent, ResponseIncompleteEvent

from ingle.adapters.http.response_store import ResponseStore, StoredResponse
from ingle.core.engine import Engine

from .conftest import DEFAULT_MODEL, settings_for
from .servers import serving

WEATHER_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": None,  # the client's type wants the key; None is the server's default
}


@pytest.fixture(scope="module")
async def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's home, where responses.sqlite lives."""
    return tmp_path_factory.mktemp("responses") / "home"


@pytest.fixture(scope="module")
async def client(engine: Engine, home: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official client against ingle over the shared engine."""
    async with serving(settings_for(home), engine) as url:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as api:
            yield api


@pytest.mark.slow
async def test_create_answers_and_is_stored(client: openai.AsyncOpenAI, home: Path) -> None:
    response = await client.responses.create(
        model=DEFAULT_MODEL,
        instructions="Answer in one word.",
        input="What is the capital of France?",
        max_output_tokens=8,
        temperature=0,
    )
    assert response.id.startswith("resp_") and "Paris" in response.output_text
    assert response.status in ("completed", "incomplete") and response.usage.input_tokens > 10
    fetched = await client.responses.retrieve(response.id)
    assert fetched.output_text == response.output_text
    assert (home / "responses.sqlite").is_file()
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


@pytest.mark.slow
async def test_stream_sends_the_documented_events(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(
        model=DEFAULT_MODEL, input="Name three primary colours.", max_output_tokens=24, temperature=0, stream=True
    )
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_text.done" in kinds and "response.output_item.done" in kinds
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    last = events[-1]
    assert isinstance(last, ResponseCompletedEvent | ResponseIncompleteEvent)
    assert deltas and deltas == last.response.output_text
    assert [event.sequence_number for event in events] == list(range(1, len(events) + 1))


@pytest.mark.slow
async def test_previous_response_id_continues_and_store_false_keeps_nothing(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(
        model=DEFAULT_MODEL, input="My name is Zorblax. Reply with just OK.", max_output_tokens=4, temperature=0
    )
    second = await client.responses.create(
        model=DEFAULT_MODEL,
        input="What is my name? Answer with the name only.",
        previous_response_id=first.id,
        max_output_tokens=8,
        temperature=0,
        store=False,
    )
    assert "Zorblax" in second.output_text and second.previous_response_id == first.id
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model=DEFAULT_MODEL, input="hi", previous_response_id="resp_missing")


@pytest.mark.slow
async def test_a_function_call_round_trip(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(
        model=DEFAULT_MODEL,
        input="What is the weather in Paris right now?",
        tools=[WEATHER_TOOL],
        max_output_tokens=64,
        temperature=0,
    )
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    second = await client.responses.create(
        model=DEFAULT_MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 degrees Celsius"}],
        tools=[WEATHER_TOOL],
        max_output_tokens=48,
        temperature=0,
    )
    # The earlier call and its output went into the prompt ahead of the answer.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.output and second.status in ("completed", "incomplete")


@pytest.mark.slow
async def test_allowed_tools_offers_only_those_it_names(client: openai.AsyncOpenAI) -> None:
    # The weather question would go to get_weather; allowed_tools leaves only get_time, and "required" makes
    # the answer call it (OpenAI's shape for keeping the tool list, and the prompt's cache, the same).
    time_tool: FunctionToolParam = {
        "type": "function",
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    }
    response = await client.responses.create(
        model=DEFAULT_MODEL,
        input="What is the weather in Paris right now?",
        tools=[WEATHER_TOOL, time_tool],
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]},
        max_output_tokens=64,
        temperature=0,
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["get_time"]
    with pytest.raises(openai.BadRequestError, match="not among the tools offered"):
        await client.responses.create(
            model=DEFAULT_MODEL,
            input="hi",
            tools=[WEATHER_TOOL],
            tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]},
        )


@pytest.mark.slow
async def test_text_format_json_schema_holds_the_answer_to_it(client: openai.AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response = await client.responses.create(
        model=DEFAULT_MODEL,
        input="Invent a person and give their name and age as JSON.",
        text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}},
        max_output_tokens=40,
        temperature=0,
    )
    assert jsonschema_rs.validator_for(schema).is_valid(json.loads(response.output_text))


async def test_expired_responses_are_gone_and_deleted(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    async with ResponseStore(path, keep_seconds=3600) as store:
        await store.put("resp_old", StoredResponse(response={"id": "resp_old"}, conversation=[]))
        with sqlite3.connect(path) as db:  # age the row by two hours, as if it had been stored then
            db.execute("UPDATE responses SET created_at = created_at - 7200")
        assert await store.get("resp_old") is None
        await store.put("resp_new", StoredResponse(response={"id": "resp_new"}, conversation=[{"role": "user"}]))
        assert (await store.get("resp_new")).conversation == [{"role": "user"}]
    with sqlite3.connect(path) as db:
        assert [row[0] for row in db.execute("SELECT id FROM responses")] == ["resp_new"]
