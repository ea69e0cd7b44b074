"""Generation options from clients are bounded by what they mean (issue 18, items 4, 7 and 10).

Driven through the real HTTP app over the session's engine, with the real
client libraries where the route has one and raw JSON where a body is one
that no library would send.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import ollama
import openai
import pytest

from ingle.core.engine import Engine
from ingle.core.generation import MAX_STOP_LENGTH, MAX_STOP_STRINGS

from .conftest import DEFAULT_MODEL, settings_for
from .servers import serving

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


@pytest.fixture(scope="module")
async def base_url(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The API over the session's engine on an ephemeral loopback port."""
    async with serving(settings_for(tmp_path_factory.mktemp("limits") / "home"), engine) as url:
        yield url


@pytest.fixture
async def openai_client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official OpenAI client, pointed at ingle."""
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


async def post(base_url: str, path: str, body: dict[str, Any] | str) -> tuple[int, dict[str, Any]]:
    """A raw POST of a JSON body (a str is sent as it is); the status and the decoded answer."""
    data = body if isinstance(body, str) else json.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + path, data=data, headers={"Content-Type": "application/json"}) as response,
    ):
        return response.status, await response.json()


def memory_kib(field: str) -> int:
    """A line of /proc/self/status, in KiB: VmRSS (now) or VmHWM (the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} is not in /proc/self/status")


def restart_peak_memory() -> None:
    """Make VmHWM start again from the memory in use now (proc(5), clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


async def test_a_huge_repeat_window_does_not_allocate_it(base_url: str) -> None:
    # llama.cpp sizes the penalties' history by repeat_last_n up front: 2^27 tokens were 512 MiB.
    body = {"model": DEFAULT_MODEL, "prompt": "1, 2, 3,", "max_tokens": 2, "temperature": 0, "repeat_penalty": 1.1}
    status, _ = await post(base_url, "/v1/completions", {**body, "repeat_last_n": 64})  # first-use allocations
    assert status == 200
    before = memory_kib("VmRSS")
    restart_peak_memory()
    status, answer = await post(base_url, "/v1/completions", {**body, "repeat_last_n": 2**27})
    assert status == 200, answer
    assert (memory_kib("VmHWM") - before) * 1024 < 128 * MIB


async def test_too_many_or_too_long_stop_strings_are_refused_on_every_route(
    base_url: str, openai_client: openai.AsyncOpenAI
) -> None:
    too_many = [f"stop {index}" for index in range(MAX_STOP_STRINGS + 1)]
    with pytest.raises(openai.BadRequestError, match=f"at most {MAX_STOP_STRINGS} stop strings"):
        await openai_client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1, stop=too_many
        )
    async with ollama.AsyncClient(host=base_url) as client:
        with pytest.raises(ollama.ResponseError, match=f"at most {MAX_STOP_LENGTH} characters") as refused:
            await client.generate(
                DEFAULT_MODEL, "Hi", options={"num_predict": 1, "stop": ["x" * (MAX_STOP_LENGTH + 1)]}
            )
        assert refused.value.status_code == 400
    # The review's request: 400,000 stop strings, now one sentence instead of 0.4 s per token for everyone.
    status, answer = await post(
        base_url, "/completion", {"prompt": "1, 2, 3,", "n_predict": 1, "stop": ["7"] * 400_000}
    )
    assert status == 400 and "at most 64 stop strings" in answer["error"]
    status, answer = await post(
        base_url,
        "/v1/completions",
        {"model": DEFAULT_MODEL, "prompt": "1, 2, 3,", "max_tokens": 1, "stop": [f"{n}!" for n in range(64)]},
    )
    assert status == 200, answer


async def test_numbers_that_are_not_finite_are_refused(base_url: str) -> None:
    # Python's JSON reader takes NaN and Infinity; no sampling option means anything with them.
    status, answer = await post(base_url, "/completion", '{"prompt": "1, 2,", "n_predict": 1, "presence_penalty": NaN}')
    assert status == 400 and answer["error"].startswith("presence_penalty:")


async def test_penalties_are_bounded_by_what_they_mean(base_url: str) -> None:
    body = {"model": DEFAULT_MODEL, "prompt": "1, 2, 3,", "max_tokens": 1}
    # 0 would divide every repeated token's logit by zero: certain repetition, not "off".
    status, answer = await post(base_url, "/v1/completions", {**body, "repeat_penalty": 0})
    assert status == 400 and "repeat_penalty: must be above 0" in answer["error"]["message"]
    # OpenAI's routes stop at 2 as OpenAI does; Ollama's options had no bound before float32's infinity.
    ollama_body = {"model": DEFAULT_MODEL, "prompt": "1, 2, 3,", "stream": False, "options": {"num_predict": 1}}
    ollama_body["options"]["frequency_penalty"] = 1e39
    status, answer = await post(base_url, "/api/generate", ollama_body)
    assert status == 400 and "frequency_penalty: must be between -100 and 100" in answer["error"]
    status, answer = await post(base_url, "/v1/completions", {**body, "presence_penalty": 2, "repeat_penalty": 1.5})
    assert status == 200, answer


async def test_a_token_limit_of_zero_is_never_unlimited(base_url: str, openai_client: openai.AsyncOpenAI) -> None:
    hello: list[Any] = [{"role": "user", "content": "Count to a thousand."}]
    with pytest.raises(openai.BadRequestError, match="max_tokens: 0 tokens would be no answer") as refused:
        await openai_client.chat.completions.create(model=DEFAULT_MODEL, messages=hello, max_tokens=0)
    assert refused.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens: 0 tokens") as refused:
        await openai_client.chat.completions.create(model=DEFAULT_MODEL, messages=hello, max_completion_tokens=0)
    assert refused.value.param == "max_completion_tokens"
    with pytest.raises(openai.BadRequestError, match="max_tokens: 0 tokens"):
        await openai_client.completions.create(model=DEFAULT_MODEL, prompt="1, 2, 3,", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="max_output_tokens"):
        await openai_client.responses.create(model=DEFAULT_MODEL, input="Count to a thousand.", max_output_tokens=0)
    async with anthropic.AsyncAnthropic(base_url=base_url, api_key="unused", max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
            await client.messages.create(model=DEFAULT_MODEL, messages=hello, max_tokens=0)
    async with ollama.AsyncClient(host=base_url) as client:
        with pytest.raises(ollama.ResponseError, match="token limit of 0") as refused:
            await client.generate(DEFAULT_MODEL, "1, 2, 3,", options={"num_predict": 0})
        assert refused.value.status_code == 400
    # llama-server's n_predict 0 only puts the prompt in the cache.
    status, answer = await post(base_url, "/completion", {"prompt": "1, 2, 3,", "n_predict": 0})
    assert status == 200 and answer["content"] == ""
