"""Unloading a model that requests are using (Ollama's keep_alive 0, /api/delete), on the real models over HTTP.

Any client may ask for an unload, as in Ollama: it must not take the answers of the others with it. The
model goes once its last request in flight is done; until then its memory stays, since a prompt being
tokenized in a worker thread, a decode step or an embedding step still reads it. Only the engine's own
close (the daemon stopping) cuts answers, and those end with an error, never as if complete.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import pytest

from ingle.adapters.http.anthropic_api import _stop_reason
from ingle.adapters.http.errors import status_for
from ingle.adapters.http.openai_api import _finish_reason
from ingle.adapters.http.responses_api import _finished
from ingle.core.engine import Engine
from ingle.core.errors import ModelUnloaded
from ingle.core.generation import GenerationChunk, GenerationRequest, GenerationStats, SamplingOptions
from ingle.core.runtime.prompt import PreparedPrompt, PromptBuilder
from ingle.core.runtime.text_output import StopMatcher
from ingle.core.runtime.worker_thread import run_to_the_end
from ingle.core.sources.embed_model import EMBED_MODEL_NAME
from ingle.core.tool_calls import AssistantPiece

from .conftest import DEFAULT_MODEL, link_home, settings_for
from .knowledge_support import embed_model_cache  # noqa: F401 (a fixture)
from .servers import poll, serving
from .test_cli import ingle

pytestmark = pytest.mark.slow

# Every wait in these tests is bounded by this, so that a regression fails instead of hanging.
BOUND = 60.0
PROMPT = "def fibonacci(n):\n"


@pytest.fixture
async def served(default_model_home: Path) -> AsyncIterator[tuple[Engine, str]]:
    """A fresh engine with the default model loaded (kept loaded unless unloaded), served over HTTP."""
    settings = settings_for(default_model_home, keep_alive=-1, management_over_tcp=True)
    async with Engine(settings) as engine:
        await engine.load(DEFAULT_MODEL)
        async with serving(settings, engine) as url:
            yield engine, url


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST a JSON body; the status and the parsed answer (the last line of NDJSON)."""
    async with asyncio.timeout(BOUND), session.post(url, json=body) as response:
        text = await response.text()
    lines = [line for line in text.splitlines() if line.strip()]
    return response.status, json.loads(lines[-1]) if lines else None


async def unload(session: aiohttp.ClientSession, url: str, model: str) -> float:
    """Ollama's unload request (any client may send it); how long it took to be answered."""
    started = time.monotonic()
    status, answer = await post(session, url + "/api/generate", {"model": model, "keep_alive": 0})
    assert status == 200 and answer["done_reason"] == "unload", answer
    return time.monotonic() - started


async def unloaded(engine: Engine) -> bool:
    """Whether the engine let go of every model within the bound (once the requests on them are done)."""
    return await poll(lambda: not engine.running(), BOUND)


async def still_answers(session: aiohttp.ClientSession, url: str) -> None:
    """A new request loads the model again and answers."""
    status, answer = await post(
        session,
        url + "/api/generate",
        {"model": DEFAULT_MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}},
    )
    assert status == 200 and answer["done"], answer


def hold_prompts(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Hold every prompt in its worker thread, where it is tokenized, until the second event is set; the first
    is set once one is held.

    A prompt of a few MiB takes a second or two to tokenize there: holding one, rather than racing a timer,
    keeps a request in flight for as long as a test needs.
    """
    tokenizing, go_on = threading.Event(), threading.Event()
    build = PromptBuilder.build

    def held_build(builder: PromptBuilder, request: GenerationRequest) -> PreparedPrompt:
        tokenizing.set()
        if not go_on.wait(BOUND):
            raise TimeoutError("the test never let the prompt go on")
        if not builder.model.raw:  # tokenizing now would read freed memory and crash the process
            raise AssertionError("the model was freed while its prompt was being tokenized")
        return build(builder, request)

    monkeypatch.setattr(PromptBuilder, "build", held_build)
    return tokenizing, go_on


async def test_unload_while_a_prompt_is_tokenized_lets_it_answer(
    served: tuple[Engine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, url = served
    tokenizing, go_on = hold_prompts(monkeypatch)
    body = {"model": DEFAULT_MODEL, "prompt": PROMPT, "raw": True, "stream": False}
    body["options"] = {"num_predict": 16, "temperature": 0}
    async with aiohttp.ClientSession() as session:
        answering = asyncio.ensure_future(post(session, url + "/api/generate", body))
        try:
            assert await asyncio.to_thread(tokenizing.wait, BOUND)
            took = await unload(session, url, DEFAULT_MODEL)
            assert took < 5, f"the unload waited {took:.1f} s for the request in flight"
            assert [model.name for model in engine.running()] == [DEFAULT_MODEL], "in use: it stays for now"
        finally:
            go_on.set()
        status, answer = await answering
        assert status == 200, answer
        assert answer["done_reason"] == "length" and answer["eval_count"] == 16 and answer["response"], answer
        assert await unloaded(engine), "the model stayed loaded after its last request"
        monkeypatch.undo()
        await still_answers(session, url)


async def test_a_model_waiting_for_its_requests_to_unload_is_shown_as_stopping(
    served: tuple[Engine, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine, url = served
    tokenizing, go_on = hold_prompts(monkeypatch)
    body = {"model": DEFAULT_MODEL, "prompt": PROMPT, "raw": True, "stream": False, "options": {"num_predict": 2}}
    async with aiohttp.ClientSession() as session:
        answering = asyncio.ensure_future(post(session, url + "/api/generate", body))
        try:
            assert await asyncio.to_thread(tokenizing.wait, BOUND)
            asked = datetime.now(UTC)
            await unload(session, url, DEFAULT_MODEL)
            running = (await ollama.AsyncClient(host=url).ps()).models
            listed = await asyncio.to_thread(ingle, "--host", url, "ps", home=tmp_path / "user")
        finally:
            go_on.set()
        status, answer = await answering
    # As Ollama answers for a model it is unloading: due since the unload was asked, which `ollama ps` shows
    # as "Stopping..." (not far in the future, as a model that stays loaded).
    assert [model.model for model in running] == [DEFAULT_MODEL]
    expires = running[0].expires_at
    assert expires is not None and asked - timedelta(seconds=1) <= expires <= datetime.now(UTC), (asked, expires)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split()
    assert (row[0], row[-1]) == (DEFAULT_MODEL, "Stopping..."), listed.stdout
    assert status == 200 and answer["done"], answer
    assert await unloaded(engine)


async def test_unload_while_streaming_lets_the_ollama_stream_finish(served: tuple[Engine, str]) -> None:
    engine, url = served
    body = {
        "model": DEFAULT_MODEL,
        "stream": True,
        "options": {"num_predict": 32, "temperature": 0},
        "messages": [{"role": "user", "content": "Count from 1 to 100, one per line."}],
    }
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(BOUND), session.post(url + "/api/chat", json=body) as streaming:
            assert streaming.status == 200
            lines = [json.loads(await streaming.content.readline())]
            assert not lines[0]["done"], lines
            took = await unload(session, url, DEFAULT_MODEL)
            lines += [json.loads(line) async for line in streaming.content if line.strip()]
        final = lines[-1]
        assert final["done"] and final["done_reason"] == "length" and final["eval_count"] == 32, final
        assert "".join(line["message"]["content"] for line in lines).count("\n") >= 5
        assert took < 5, f"the unload waited {took:.1f} s for the stream"
        assert await unloaded(engine)
        await still_answers(session, url)


async def test_unload_while_streaming_lets_the_openai_stream_finish(served: tuple[Engine, str]) -> None:
    engine, url = served
    body = {
        "model": DEFAULT_MODEL,
        "stream": True,
        "max_tokens": 32,
        "temperature": 0,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Count from 1 to 100, one per line."}],
    }
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(BOUND), session.post(url + "/v1/chat/completions", json=body) as streaming:
            assert streaming.status == 200
            unloading: asyncio.Future[float] | None = None
            async for line in streaming.content:
                data = line.decode().removeprefix("data:").strip()
                if not data or data == "[DONE]":
                    continue
                events.append(json.loads(data))
                if unloading is None:
                    unloading = asyncio.ensure_future(unload(session, url, DEFAULT_MODEL))
            assert unloading is not None
            await unloading
        reasons = [
            choice["finish_reason"] for event in events for choice in event["choices"] if choice["finish_reason"]
        ]
        assert reasons == ["length"], events[-3:]
        assert events[-1]["usage"]["completion_tokens"] == 32, events[-1]
        assert await unloaded(engine)
        await still_answers(session, url)


async def test_delete_of_a_model_in_use_lets_its_stream_finish(served: tuple[Engine, str]) -> None:
    engine, url = served
    body = {"model": DEFAULT_MODEL, "prompt": PROMPT, "raw": True, "options": {"num_predict": 32, "temperature": 0}}
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(BOUND), session.post(url + "/api/generate", json=body) as streaming:
            lines = [json.loads(await streaming.content.readline())]
            async with session.delete(url + "/api/delete", json={"model": DEFAULT_MODEL}) as deleting:
                assert deleting.status == 200, await deleting.text()
            assert DEFAULT_MODEL not in [model.name for model in engine.list_models()], "the name goes at once"
            lines += [json.loads(line) async for line in streaming.content if line.strip()]
        final = lines[-1]
        assert final["done"] and final["done_reason"] == "length" and final["eval_count"] == 32, final
        assert await unloaded(engine)


async def test_unload_while_embedding_lets_it_finish(embed_model_cache: Path, tmp_path: Path) -> None:  # noqa: F811
    home = link_home(embed_model_cache, tmp_path / "home")
    settings = settings_for(home, keep_alive=-1)
    # Five decodes of seven inputs each: the request is still running when the first is done, below.
    inputs = [f"Paragraph {index}: " + "the quick brown fox jumps over the lazy dog " * 15 for index in range(35)]
    async with Engine(settings) as engine, serving(settings, engine) as url, aiohttp.ClientSession() as session:
        await engine.load(EMBED_MODEL_NAME)
        embedding = asyncio.ensure_future(
            post(session, url + "/api/embed", {"model": EMBED_MODEL_NAME, "input": inputs})
        )

        def started() -> bool:
            return any(stats.embedded_inputs > 0 for stats in engine.queue_stats())

        assert await poll(started, BOUND)
        assert not embedding.done(), "the request ended before the unload: make it longer"
        took = await unload(session, url, EMBED_MODEL_NAME)
        status, answer = await embedding
        assert status == 200, answer
        assert len(answer["embeddings"]) == len(inputs) and all(answer["embeddings"]), "every input has its vector"
        assert took < 5, f"the unload waited {took:.1f} s for the embedding"
        assert await unloaded(engine)
        status, again = await post(session, url + "/api/embed", {"model": EMBED_MODEL_NAME, "input": "again"})
        assert status == 200 and len(again["embeddings"]) == 1, again


async def test_unload_while_the_model_loads_lets_the_waiting_request_answer(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home, keep_alive=-1)) as engine:
        options = SamplingOptions(temperature=0, repeat_penalty=1.0, max_tokens=8)
        request = GenerationRequest(model=DEFAULT_MODEL, prompt=PROMPT, raw=True, options=options)

        async def answer() -> list[GenerationChunk]:
            return [chunk async for chunk in engine.generate(request)]

        answering = asyncio.ensure_future(answer())
        assert await poll(lambda: engine._loading, BOUND)
        async with asyncio.timeout(BOUND):
            await engine.unload(DEFAULT_MODEL)
            chunks = await answering
        assert chunks[-1].done and chunks[-1].stats and chunks[-1].stats.done_reason == "length", chunks[-1]
        assert chunks[-1].stats.completion_tokens == 8
        assert await unloaded(engine), "the unload asked for during the load still stands"


async def test_closing_the_engine_cuts_a_stream_with_an_error(default_model_home: Path) -> None:
    engine = Engine(settings_for(default_model_home, keep_alive=-1))
    await engine.__aenter__()
    try:
        await engine.load(DEFAULT_MODEL)
        options = SamplingOptions(temperature=0, repeat_penalty=1.0, max_tokens=2000)
        request = GenerationRequest(model=DEFAULT_MODEL, prompt=PROMPT, raw=True, options=options)
        first = asyncio.get_running_loop().create_future()
        chunks: list[GenerationChunk] = []

        async def read() -> None:
            async for chunk in engine.generate(request):
                chunks.append(chunk)
                if not first.done():
                    first.set_result(None)

        reading = asyncio.ensure_future(read())
        async with asyncio.timeout(BOUND):
            await asyncio.wait([first, reading], return_when=asyncio.FIRST_COMPLETED)
        assert first.done(), reading
    finally:
        async with asyncio.timeout(BOUND):
            await engine.close()
    with pytest.raises(ModelUnloaded) as cut:
        async with asyncio.timeout(BOUND):
            await reading
    assert not any(chunk.done for chunk in chunks), "a cut answer never ends as if it were complete"
    assert engine.running() == []
    assert status_for(cut.value) == 503  # over HTTP: the server is stopping, try again


async def test_a_closed_scheduler_fails_calls_and_jobs_at_once(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home, keep_alive=-1)) as engine:
        await engine.load(DEFAULT_MODEL)
        (loaded,) = engine._loaded.values()
        scheduler = loaded.scheduler
        assert await asyncio.wrap_future(scheduler.call(lambda: 42)) == 42
        await engine.unload(DEFAULT_MODEL)  # idle: at once
        assert engine.running() == []
        with pytest.raises(ModelUnloaded):
            async with asyncio.timeout(5):
                await asyncio.wrap_future(scheduler.call(lambda: 42))


def test_an_answer_that_did_not_end_on_its_own_never_reads_as_complete() -> None:
    # The scheduler ends a job with "cancel" only for a reader that has gone; should one ever reach a client,
    # it must not read as a whole answer (OpenAI "stop", Anthropic "end_turn", Responses "completed").
    cut, whole = GenerationStats(done_reason="cancel"), GenerationStats(done_reason="stop")
    assert (_finish_reason(cut), _finish_reason(whole)) == ("length", "stop")
    assert _stop_reason(AssistantPiece("1"), cut, StopMatcher([])) == "max_tokens"
    assert _stop_reason(AssistantPiece("1"), whole, StopMatcher([])) == "end_turn"
    assert _finished({}, [], cut)["status"] == "incomplete"
    assert _finished({}, [], whole)["status"] == "completed"


async def test_work_on_a_thread_outlives_a_cancelled_caller_and_its_result_is_freed() -> None:
    # A grammar sampler is built on a thread that reads the model: a request cancelled meanwhile must not let go
    # of the model (an unload would free it under the thread), and the sampler it no longer wants is freed.
    started, release = threading.Event(), threading.Event()
    freed: list[str] = []

    def build() -> str:
        started.set()
        release.wait(10)
        return "sampler"

    task = asyncio.create_task(run_to_the_end(build, abandoned=freed.append))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    await asyncio.sleep(0.1)
    assert not task.done()  # still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert freed == ["sampler"]
