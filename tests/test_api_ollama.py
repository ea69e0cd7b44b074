"""The Ollama-compatible API, driven by the real `ollama` client against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
import ollama
import pytest

from ingle.adapters.http.app import create_app
from ingle.core.engine import Engine
from tests.fakes import start_on_loopback

from .conftest import DEFAULT_MODEL
from .fakes.gguf_files import write_tiny_gguf
from .servers import serving_unix

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "num_predict": 8}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string", "description": "The name of the city"}},
        },
    },
}


@pytest.fixture(scope="module")
async def base_url(engine: Engine) -> AsyncIterator[str]:
    """The API over the session's engine, on an ephemeral loopback port, answering once it is up.

    Managing models over TCP is allowed (management_over_tcp), as for a front end that pulls
    models; test_api_management checks that it is refused by default.
    """
    settings = engine.settings.model_copy(update={"management_over_tcp": True})
    runner, url = await start_on_loopback(create_app(settings, engine))
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(url + "/") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                continue
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[ollama.AsyncClient]:
    """The official Ollama client, pointed at ingle."""
    async with ollama.AsyncClient(host=base_url) as connected:
        yield connected


async def post(base_url: str, path: str, body: bytes | dict) -> tuple[int, dict]:
    """A raw POST (for bodies the client library would never send); returns status and JSON."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(base_url + path, data=data, headers={"Content-Type": "application/json"}) as response:
            return response.status, await response.json(content_type=None)


def assert_final_stats(final: ollama.GenerateResponse | ollama.ChatResponse) -> None:
    """The last chunk carries Ollama's counts and nanosecond timings, and they add up."""
    assert final.done is True
    assert final.done_reason in ("stop", "length")
    assert final.prompt_eval_count and final.prompt_eval_count > 0
    assert final.eval_count and 0 < final.eval_count <= 32
    assert final.eval_duration and final.eval_duration > 0
    assert final.prompt_eval_duration and final.prompt_eval_duration > 0
    assert final.load_duration is not None and final.load_duration >= 0
    assert final.total_duration >= final.eval_duration
    assert final.total_duration < 120 * 10**9
    assert datetime.fromisoformat(final.created_at or "").tzinfo is not None


# --- the probes ---------------------------------------------------------------


async def test_root_and_version_answer_like_ollama(base_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(base_url + "/") as response:
            assert response.status == 200 and await response.text() == "Ollama is running"
        async with session.head(base_url + "/") as response:
            assert response.status == 200
        async with session.get(base_url + "/api/version") as response:
            version = (await response.json())["version"]
    assert version and version[0].isdigit()


# --- generation ---------------------------------------------------------------


async def test_generate_without_streaming(client: ollama.AsyncClient) -> None:
    answer = await client.generate(DEFAULT_MODEL, "Counting in English: one, two, three,", raw=True, options=GREEDY)
    assert "four" in (answer.response or "")
    assert answer.model == DEFAULT_MODEL
    assert_final_stats(answer)


async def test_generate_streams_chunks_then_the_stats(client: ollama.AsyncClient) -> None:
    chunks = [
        chunk
        async for chunk in await client.generate(
            DEFAULT_MODEL,
            "Write one sentence about the sea.",
            stream=True,
            options={"temperature": 0, "num_predict": 12},
        )
    ]
    assert len(chunks) > 2
    assert all(not chunk.done for chunk in chunks[:-1])
    assert "".join(chunk.response or "" for chunk in chunks).strip()
    assert_final_stats(chunks[-1])


async def test_generate_with_suffix_fills_in_the_middle(client: ollama.AsyncClient) -> None:
    answer = await client.generate(
        DEFAULT_MODEL, "def add(a, b):\n    return ", suffix="\n", options={"temperature": 0, "num_predict": 8}
    )
    assert answer.response.startswith("a + b")


async def test_format_json_and_json_schema(client: ollama.AsyncClient) -> None:
    any_json = await client.generate(
        DEFAULT_MODEL,
        'Reply with a JSON object whose key "color" is "blue".',
        format="json",
        options={"temperature": 0, "num_predict": 32},
    )
    assert isinstance(json.loads(any_json.response or ""), dict)
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    typed = await client.chat(
        DEFAULT_MODEL,
        [{"role": "user", "content": "What is 2 + 2? Reply in JSON."}],
        format=schema,
        options={"temperature": 0, "num_predict": 32},
    )
    assert isinstance(json.loads(typed.message.content or "")["answer"], int)


# --- chat -----------------------------------------------------------------------


async def test_chat_answers_the_question(client: ollama.AsyncClient) -> None:
    answer = await client.chat(
        DEFAULT_MODEL,
        [
            {"role": "system", "content": "You answer in as few words as possible."},
            {"role": "user", "content": "What is the capital of France? Answer in one word."},
        ],
        options=GREEDY,
        keep_alive="10m",
    )
    assert answer.message.role == "assistant"
    assert "Paris" in (answer.message.content or "")
    assert_final_stats(answer)


async def test_chat_streams(client: ollama.AsyncClient) -> None:
    chunks = [
        chunk
        async for chunk in await client.chat(
            DEFAULT_MODEL,
            [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            stream=True,
            options=GREEDY,
        )
    ]
    assert "Paris" in "".join(chunk.message.content or "" for chunk in chunks)
    assert_final_stats(chunks[-1])


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_with_tools_returns_parsed_tool_calls(client: ollama.AsyncClient, stream: bool) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris? Use the get_weather tool."}]
    options = {"temperature": 0, "num_predict": 32}
    if stream:
        chunks = [
            chunk
            async for chunk in await client.chat(
                DEFAULT_MODEL, messages, tools=[WEATHER_TOOL], stream=True, options=options
            )
        ]
    else:
        chunks = [await client.chat(DEFAULT_MODEL, messages, tools=[WEATHER_TOOL], options=options)]
    content = "".join(chunk.message.content or "" for chunk in chunks)
    calls = [call for chunk in chunks for call in chunk.message.tool_calls or []]
    assert "<tool_call>" not in content and '"arguments"' not in content
    assert [call.function.name for call in calls] == ["get_weather"]
    assert "Paris" in calls[0].function.arguments["city"]


async def test_a_tool_call_and_its_result_are_accepted_in_the_history(client: ollama.AsyncClient) -> None:
    answer = await client.chat(
        DEFAULT_MODEL,
        [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": "Sunny, 24 degrees Celsius", "tool_name": "get_weather"},
        ],
        tools=[WEATHER_TOOL],
        options={"temperature": 0, "num_predict": 8},
    )
    # The 0.5B model is too small to use the result reliably; what matters here is that the
    # assistant's call and the tool's answer are accepted and rendered by the chat template.
    assert answer.done and answer.eval_count


async def test_a_client_that_goes_away_frees_its_sequence(base_url: str, engine: Engine) -> None:
    scheduler = next(iter(engine._loaded.values())).scheduler
    body = {"model": DEFAULT_MODEL, "prompt": "Write a long story about a fox.", "options": {"num_predict": 500}}
    async with aiohttp.ClientSession() as session:
        async with session.post(base_url + "/api/generate", json=body) as response:
            # Without "stream", Ollama's API streams NDJSON.
            assert response.status == 200 and response.content_type == "application/x-ndjson"
            first = json.loads(await response.content.readline())
            assert first["done"] is False and first["model"] == DEFAULT_MODEL
            assert scheduler.active == 1
            response.close()  # drop the connection mid-stream
    deadline = asyncio.get_running_loop().time() + 10
    while scheduler.active and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert scheduler.active == 0


# --- embeddings -----------------------------------------------------------------


async def test_embed_and_legacy_embeddings(client: ollama.AsyncClient) -> None:
    result = await client.embed(DEFAULT_MODEL, ["The cat sat on the mat.", "Quarterly tax deadlines."])
    assert len(result.embeddings) == 2 and all(len(vector) == 896 for vector in result.embeddings)
    assert math.isclose(sum(value * value for value in result.embeddings[0]), 1.0, rel_tol=1e-3)
    assert result.prompt_eval_count > 0 and result.total_duration > 0
    short = await client.embed(DEFAULT_MODEL, "The cat sat on the mat.", dimensions=64)
    assert len(short.embeddings[0]) == 64
    assert math.isclose(sum(value * value for value in short.embeddings[0]), 1.0, rel_tol=1e-3)
    legacy = await client.embeddings(DEFAULT_MODEL, "The cat sat on the mat.")
    assert len(legacy.embedding) == 896


# --- model management -------------------------------------------------------------


async def test_list_show_copy_ps_delete_round_trip(client: ollama.AsyncClient) -> None:
    listed = {model.model: model for model in (await client.list()).models}
    default = listed[DEFAULT_MODEL]
    assert default.digest and len(default.digest) == 64 and not default.digest.startswith("sha256")
    assert default.size > 400 * 2**20
    assert default.details.format == "gguf" and default.details.family == "qwen2"
    assert default.details.parameter_size.endswith("M") and default.details.quantization_level == "Q4_K_M"

    shown = await client.show(DEFAULT_MODEL)
    assert shown.modelinfo["general.architecture"] == "qwen2"
    assert shown.modelinfo["qwen2.context_length"] == 32768
    assert {"completion", "insert", "tools"} <= set(shown.capabilities or [])
    assert "<tool_call>" in (shown.template or "") and "FROM" in (shown.modelfile or "")

    await client.copy(DEFAULT_MODEL, "coder-copy:v1")
    names = [model.model for model in (await client.list()).models]
    assert "coder-copy:v1" in names
    assert (await client.show("coder-copy:v1")).details.family == "qwen2"

    running = (await client.ps()).models
    assert [model.model for model in running] == [DEFAULT_MODEL]
    assert running[0].digest == default.digest and running[0].size_vram == 0
    assert running[0].context_length == 4096 and (running[0].size or 0) > (default.size or 0)
    assert running[0].expires_at.year > 2300  # the session engine keeps it loaded

    await client.delete("coder-copy:v1")
    assert "coder-copy:v1" not in [model.model for model in (await client.list()).models]
    with pytest.raises(ollama.ResponseError) as missing:
        await client.delete("coder-copy:v1")
    assert missing.value.status_code == 404
    assert DEFAULT_MODEL in [model.model for model in (await client.list()).models]


async def test_pull_a_local_gguf_streams_progress(engine: Engine, tmp_path: Path) -> None:
    # Importing a server file is for the service's own user: over its unix socket, not over TCP.
    path = write_tiny_gguf(tmp_path / "Tiny-Q4_K_M.gguf", seed=7)
    async with serving_unix(engine.settings, engine, tmp_path / "api.sock") as socket_path:
        client = ollama.AsyncClient("http://localhost", transport=httpx.AsyncHTTPTransport(uds=str(socket_path)))
        lines = [line async for line in await client.pull(f"file:{path}", stream=True)]
        statuses = [line.status for line in lines]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        assert "writing manifest" in statuses
        copying = [line for line in lines if line.status.startswith("copying")]
        assert copying and copying[-1].total == path.stat().st_size
        try:
            assert "tiny:q4_k_m" in [model.model for model in (await client.list()).models]
            again = await client.pull("tiny:q4_k_m")  # a stored name is already up to date
            assert again.status == "success"
        finally:
            await client.delete("tiny:q4_k_m")


async def test_pulling_the_stored_default_model_is_instant(client: ollama.AsyncClient) -> None:
    lines = [line.status async for line in await client.pull(DEFAULT_MODEL, stream=True)]
    assert lines[-1] == "success"


async def test_empty_requests_load_and_unload(client: ollama.AsyncClient, engine: Engine) -> None:
    try:
        unloaded = await client.chat(DEFAULT_MODEL, [], keep_alive=0)
        assert unloaded.done and unloaded.done_reason == "unload"
        assert (await client.ps()).models == []
        loaded = await client.generate(DEFAULT_MODEL, keep_alive="1h")
        assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
        expires = (await client.ps()).models[0].expires_at
        assert 3000 < (expires - loaded_at(loaded)).total_seconds() <= 3600 + 60
    finally:
        await engine.load(DEFAULT_MODEL, keep_alive=-1)  # as the session fixture left it


def loaded_at(response: ollama.GenerateResponse) -> datetime:
    return datetime.fromisoformat(response.created_at or "")


# --- errors -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_unknown_model_is_404_even_when_streaming(client: ollama.AsyncClient, stream: bool) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        if stream:
            [chunk async for chunk in await client.generate("no-such-model:1b", "hi", stream=True)]
        else:
            await client.generate("no-such-model:1b", "hi", stream=False)
    # A stream that had already begun would give the error without a status (-1): this one never started.
    assert caught.value.status_code == 404
    assert "no-such-model" in caught.value.error


async def test_bad_option_type_is_400_naming_the_field(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await client.generate(DEFAULT_MODEL, "hi", options={"temperature": "hot"})
    assert caught.value.status_code == 400 and "options.temperature" in caught.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        await client.chat(DEFAULT_MODEL, [{"role": "user", "content": "hi"}], options={"warp_speed": 9})
    assert unknown.value.status_code == 400 and "options.warp_speed" in unknown.value.error


async def test_bad_keep_alive_is_400(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await client.generate(DEFAULT_MODEL, "hi", keep_alive="soon")
    assert caught.value.status_code == 400 and "keep_alive" in caught.value.error


async def test_unknown_field_and_bad_json_are_400(base_url: str) -> None:
    status, body = await post(base_url, "/api/generate", {"model": DEFAULT_MODEL, "prompt": "hi", "prompts": ["x"]})
    assert status == 400 and "prompts" in body["error"]
    status, body = await post(base_url, "/api/chat", b'{"model": "x", "messages": [')
    assert status == 400 and "JSON" in body["error"]
    status, body = await post(
        base_url, "/api/generate", {"model": DEFAULT_MODEL, "prompt": "hi", "template": "{{ x }}"}
    )
    assert status == 400 and "template" in body["error"]


async def test_path_traversal_in_a_model_name_is_400(client: ollama.AsyncClient, base_url: str) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await client.show("../../etc/passwd")
    assert caught.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as streamed:
        [chunk async for chunk in await client.chat("../secret", [{"role": "user", "content": "hi"}], stream=True)]
    assert streamed.value.status_code == 400
    status, _ = await post(base_url, "/api/copy", {"source": DEFAULT_MODEL, "destination": "../../evil"})
    assert status == 400


async def test_unknown_pull_source_gets_a_status_not_a_stream(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        [line async for line in await client.pull("ftp://example.invalid/model.gguf", stream=True)]
    assert caught.value.status_code in (400, 502)
    assert caught.value.error
