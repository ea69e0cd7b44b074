"""Upstreams: OpenAIUpstream against a fake OpenAI server, the router's choices, and two real daemons.

The unit-level tests use a fake of the remote server (tests/fakes/openai_server.py)
or in-memory fake upstreams and an engine over an empty store. The end-to-end
tests run two ingle apps on loopback over the real default model: A routes a
model it does not have to B.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import openai
import pytest
from aiohttp import web

from ingle.adapters.client import IngleClient
from ingle.adapters.http.app import create_app
from ingle.adapters.upstreams import (
    BackendRouter,
    OpenAIUpstream,
    UpstreamUnavailable,
    openai_request,
)
from ingle.core.backend import GenerationBackend
from ingle.core.engine import Engine
from ingle.core.errors import InvalidRequest, ModelNotFound, QueueFull
from ingle.core.generation import (
    ChatMessage,
    EmbeddingResult,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    SamplingOptions,
)
from ingle.core.settings import Settings, UpstreamSettings
from tests.fakes import start_on_loopback

from .conftest import DEFAULT_MODEL, link_home, settings_for
from .fakes.openai_server import FakeOpenAIServer

REMOTE_MODEL = "remote-coder:latest"


def upstream_config(url: str, *models: str, **extra: Any) -> UpstreamSettings:
    return UpstreamSettings(url=url, models=list(models) or [REMOTE_MODEL], **extra)


def chat(model: str = REMOTE_MODEL, max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(
        model=model,
        messages=[ChatMessage("user", "Say hello.")],
        options=SamplingOptions(temperature=0, max_tokens=max_tokens),
    )


async def collect(backend: GenerationBackend, request: GenerationRequest) -> tuple[str, GenerationStats | None]:
    text, stats = "", None
    async for chunk in backend.generate(request):
        text += chunk.text
        if chunk.done:
            stats = chunk.stats
    return text, stats


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@asynccontextmanager
async def closing_listener() -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that accepts and closes at once; yields its URL and a one-item connection counter."""
    count = [0]

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count[0] += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", count


# --- the request mapping ----------------------------------------------------------------


def test_raw_prompts_and_fim_go_to_completions_and_the_rest_to_chat() -> None:
    options = SamplingOptions(temperature=0, max_tokens=5, stop=["\n"], seed=1)
    path, body = openai_request(GenerationRequest(model="m", prompt="def f(", suffix=")", options=options))
    assert path == "/v1/completions"
    assert (body["prompt"], body["suffix"], body["max_tokens"], body["stop"], body["seed"]) == (
        "def f(",
        ")",
        5,
        ["\n"],
        1,
    )
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    path, body = openai_request(GenerationRequest(model="m", prompt="Once", raw=True))
    assert path == "/v1/completions" and "suffix" not in body
    path, body = openai_request(GenerationRequest(model="m", prompt="Hi", system="Be brief.", format="json"))
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert body["response_format"] == {"type": "json_object"}
    # llama.cpp's knobs travel (ingle's and llama-server's /v1 take them); keep_alive has no field.
    assert body["repeat_penalty"] == 1.1 and body["top_k"] == 40 and "keep_alive" not in body


# --- OpenAIUpstream against a fake server -----------------------------------------------


async def test_upstream_streams_chat_and_reports_usage() -> None:
    async with (
        FakeOpenAIServer() as server,
        OpenAIUpstream(upstream_config(server.url + "/v1", api_key="s3cret"), read_timeout=10) as upstream,
    ):
        text, stats = await collect(upstream, chat())
    assert text == "Hello, world"
    assert (stats.prompt_tokens, stats.completion_tokens, stats.done_reason) == (7, 3, "length")
    path, body, headers = server.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == REMOTE_MODEL
    assert headers["Authorization"] == "Bearer s3cret"


async def test_upstream_error_statuses_become_ingle_errors() -> None:
    async with FakeOpenAIServer() as server, OpenAIUpstream(upstream_config(server.url), read_timeout=10) as upstream:
        server.status, server.retry_after = 503, "7"
        with pytest.raises(QueueFull) as busy:
            await collect(upstream, chat())
        assert busy.value.retry_after == 7
        server.status = 429
        with pytest.raises(QueueFull):
            await collect(upstream, chat())
        server.status = 404
        with pytest.raises(ModelNotFound):
            await collect(upstream, chat())
        server.status = 400
        with pytest.raises(InvalidRequest):
            await collect(upstream, chat())
        server.status = 500
        with pytest.raises(UpstreamUnavailable):
            await collect(upstream, chat())


async def test_an_unreachable_upstream_is_upstream_unavailable() -> None:
    async with OpenAIUpstream(upstream_config(f"http://127.0.0.1:{free_port()}"), read_timeout=10) as upstream:
        with pytest.raises(UpstreamUnavailable):
            await collect(upstream, chat())
    async with closing_listener() as (url, count), OpenAIUpstream(upstream_config(url), read_timeout=10) as upstream:
        with pytest.raises(UpstreamUnavailable):
            await collect(upstream, chat())
        assert count[0] >= 1


async def test_an_answer_cut_short_is_an_error_not_a_short_answer() -> None:
    async with FakeOpenAIServer(cut_short=True) as server:
        async with OpenAIUpstream(upstream_config(server.url), read_timeout=10) as upstream:
            with pytest.raises(UpstreamUnavailable):
                await collect(upstream, chat())


async def test_closing_the_stream_early_closes_the_upstream_response() -> None:
    async with FakeOpenAIServer(pieces=["x"] * 50, piece_delay=0.02) as server:
        async with OpenAIUpstream(upstream_config(server.url), read_timeout=10) as upstream:
            async with aclosing(upstream.generate(chat())) as stream:
                async for chunk in stream:
                    assert chunk.text == "x"
                    break
        for _ in range(200):  # the server notices on its next write
            if server.aborted:
                break
            await asyncio.sleep(0.01)
        assert server.aborted == 1


async def test_upstream_embeddings_are_ordered_and_normalised() -> None:
    async with FakeOpenAIServer() as server, OpenAIUpstream(upstream_config(server.url), read_timeout=10) as upstream:
        result = await upstream.embed(REMOTE_MODEL, ["a", "b"])
    assert result.embeddings == [[0.6, 0.8], [0.6, 0.8]]
    assert result.prompt_tokens == 5
    assert server.requests[0][1] == {"model": REMOTE_MODEL, "input": ["a", "b"]}


# --- the router, with in-memory upstreams ----------------------------------------------------


@dataclass
class ScriptedUpstream:
    """An in-memory upstream that fails with `errors` (one per request, in order), then answers `label`."""

    label: str
    models: list[str] = field(default_factory=lambda: [REMOTE_MODEL])
    errors: list[Exception] = field(default_factory=list)
    fail_after_first_chunk: bool = False
    calls: int = 0
    hold: asyncio.Event | None = None
    """While set to an unset event, answers wait on it after their first chunk (to stay busy)."""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        yield GenerationChunk(text=self.label)
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_after_first_chunk:
            raise UpstreamUnavailable(f"{self.label} fell over")
        yield GenerationChunk(text="", done=True, stats=GenerationStats(completion_tokens=1))

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return EmbeddingResult(model=model, embeddings=[[1.0]], prompt_tokens=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_router_never_substitutes_another_model(empty_engine: Engine) -> None:
    router = BackendRouter(empty_engine, [ScriptedUpstream("a", models=["other:7b"])])
    with pytest.raises(ModelNotFound):
        await collect(router, chat())
    with pytest.raises(ModelNotFound):
        await router.embed(REMOTE_MODEL, ["x"])


async def test_the_router_matches_names_like_the_store_does(empty_engine: Engine) -> None:
    router = BackendRouter(empty_engine, [ScriptedUpstream("a", models=["remote-coder"])])
    text, _ = await collect(router, chat("remote-coder:latest"))
    assert text == "a"


async def test_the_router_prefers_the_least_busy_upstream(empty_engine: Engine) -> None:
    first, second = ScriptedUpstream("first", hold=asyncio.Event()), ScriptedUpstream("second")
    router = BackendRouter(empty_engine, [first, second])
    async with aclosing(router.generate(chat())) as held:
        assert (await anext(held)).text == "first"  # first now has one request in flight
        text, _ = await collect(router, chat())
        assert text == "second"
        assert [state.in_flight for state in router.upstreams] == [1, 0]
    assert [state.in_flight for state in router.upstreams] == [0, 0]


async def test_busy_or_dead_upstreams_are_retried_on_the_next_and_cool_down(empty_engine: Engine) -> None:
    clock = FakeClock()
    dead = ScriptedUpstream("dead", errors=[UpstreamUnavailable("down")] * 3)
    busy = ScriptedUpstream("busy", errors=[QueueFull("full", retry_after=2)])
    good = ScriptedUpstream("good", hold=None)
    router = BackendRouter(empty_engine, [dead, busy, good], cooldown=30, max_cooldown=100, clock=clock)

    text, _ = await collect(router, chat())
    assert text == "good" and (dead.calls, busy.calls, good.calls) == (1, 1, 1)
    # The dead one is skipped for 30 s, the busy one for its Retry-After.
    clock.now += 1
    await collect(router, chat())
    assert (dead.calls, busy.calls) == (1, 1)
    clock.now += 2
    await collect(router, chat())
    assert (dead.calls, busy.calls) == (1, 2)
    # Each failure in a row doubles the pause, up to the limit; a success resets it.
    clock.now += 30
    await collect(router, chat())
    assert dead.calls == 2 and router.upstreams[0].cooling_until == clock.now + 60
    clock.now += 61
    await collect(router, chat())
    assert dead.calls == 3 and router.upstreams[0].cooling_until == clock.now + 100
    clock.now += 101
    text, _ = await collect(router, chat())
    assert text == "dead" and router.upstreams[0].failures == 0 and router.upstreams[0].cooling_until == 0


async def test_errors_when_every_candidate_fails(empty_engine: Engine) -> None:
    clock = FakeClock()
    busy = ScriptedUpstream("busy", errors=[QueueFull("full", retry_after=3)] * 2)
    dead = ScriptedUpstream("dead", errors=[UpstreamUnavailable("down")])
    router = BackendRouter(empty_engine, [busy, dead], clock=clock)
    with pytest.raises(QueueFull) as caught:  # busy wins: the client should retry soon
        await collect(router, chat())
    assert caught.value.retry_after == 3
    with pytest.raises(UpstreamUnavailable):  # both cooling down: nothing is tried
        await collect(router, chat())
    assert (busy.calls, dead.calls) == (1, 1)


async def test_no_retry_once_text_has_been_streamed(empty_engine: Engine) -> None:
    flaky, spare = ScriptedUpstream("flaky", fail_after_first_chunk=True), ScriptedUpstream("spare")
    router = BackendRouter(empty_engine, [flaky, spare])
    with pytest.raises(UpstreamUnavailable):
        await collect(router, chat())
    assert spare.calls == 0


async def test_invalid_requests_are_not_retried(empty_engine: Engine) -> None:
    strict, spare = ScriptedUpstream("strict", errors=[InvalidRequest("bad")]), ScriptedUpstream("spare")
    router = BackendRouter(empty_engine, [strict, spare])
    with pytest.raises(InvalidRequest):
        await collect(router, chat())
    assert spare.calls == 0


async def test_embeddings_are_routed_and_retried(empty_engine: Engine) -> None:
    dead, good = ScriptedUpstream("dead", errors=[UpstreamUnavailable("down")]), ScriptedUpstream("good")
    router = BackendRouter(empty_engine, [dead, good])
    result = await router.embed("remote-coder", ["x"])
    assert result.embeddings == [[1.0]] and result.model == "remote-coder"
    assert (dead.calls, good.calls) == (1, 1)


def test_upstreams_are_typed_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ingle.toml"
    config.write_text('[[upstreams]]\nurl = "http://gpu-box:8000/v1"\nmodels = ["coder:7b"]\napi_key = "k"\n')
    monkeypatch.setenv("INGLE_CONFIG", str(config))
    settings = Settings()
    [upstream] = settings.upstreams
    assert upstream.label == "gpu-box:8000" and upstream.api_key.get_secret_value() == "k"
    with pytest.raises(ValueError):
        Settings(upstreams=[{"url": "gpu-box", "models": ["m"]}])  # pyright: ignore[reportArgumentType] - a raw table


# --- two real daemons -----------------------------------------------------------------


class RecordingBackend:
    """B's backend: the engine, noting which models it was asked for."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.models: list[str] = []

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.models.append(request.model)
        return self.engine.generate(request)

    async def embed(self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True):
        self.models.append(model)
        return await self.engine.embed(model, inputs, keep_alive, truncate)


@asynccontextmanager
async def running_app(
    settings: Settings, engine: Engine, backend: GenerationBackend | None = None
) -> AsyncIterator[str]:
    """Serve the HTTP API on an ephemeral loopback port; yield its base URL."""
    runner, url = await start_on_loopback(create_app(settings, engine, backend))
    try:
        yield url
    finally:
        await runner.cleanup()


@dataclass
class DaemonB:
    url: str
    backend: RecordingBackend


@pytest.fixture(scope="module")
async def daemon_b(default_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DaemonB]:
    """Daemon B: its own engine and store, where the default model is also called `remote-coder`."""
    home = link_home(default_model_cache, tmp_path_factory.mktemp("daemon-b") / "home")
    settings = settings_for(home, keep_alive=-1, num_parallel=2)
    async with Engine(settings) as engine:
        engine.copy(DEFAULT_MODEL, REMOTE_MODEL)
        backend = RecordingBackend(engine)
        async with running_app(settings, engine, backend) as url:
            yield DaemonB(url, backend)


@asynccontextmanager
async def daemon_a(engine: Engine, upstreams: list[UpstreamSettings]) -> AsyncIterator[tuple[str, BackendRouter]]:
    """Daemon A: the session engine (no `remote-coder`), routing through `upstreams`."""
    settings = engine.settings.model_copy(update={"upstreams": upstreams})
    async with BackendRouter.from_settings(engine, settings) as router, running_app(settings, engine, router) as url:
        yield url, router


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


async def ask(url: str, model: str = REMOTE_MODEL) -> str:
    """One short streamed chat through the OpenAI client; the text it got."""
    stream = await client(url).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France? One word."}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    text = ""
    async for event in stream:
        if event.choices and event.choices[0].delta.content:
            text += event.choices[0].delta.content
    return text


@pytest.mark.slow
async def test_a_routes_a_model_it_lacks_to_b(engine: Engine, daemon_b: DaemonB) -> None:
    async with daemon_a(engine, [upstream_config(daemon_b.url)]) as (url, _):
        before = len(daemon_b.backend.models)
        assert "Paris" in await ask(url)
        assert daemon_b.backend.models[before:] == [REMOTE_MODEL]
        # Non-streaming too, and A's own model stays local.
        answer = await client(url).completions.create(
            model=REMOTE_MODEL, prompt="1, 2, 3,", max_tokens=4, temperature=0
        )
        assert "4" in answer.choices[0].text
        assert "Paris" in await ask(url, DEFAULT_MODEL)
        assert daemon_b.backend.models[before:] == [REMOTE_MODEL, REMOTE_MODEL]


@pytest.mark.slow
async def test_log_probabilities_come_back_through_an_upstream(engine: Engine, daemon_b: DaemonB) -> None:
    async with daemon_a(engine, [upstream_config(daemon_b.url)]) as (url, _):
        messages: list = [{"role": "user", "content": "What is the capital of France? One word."}]
        chat = await client(url).chat.completions.create(
            model=REMOTE_MODEL, messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2
        )
        entries = chat.choices[0].logprobs.content if chat.choices[0].logprobs else None
        assert entries and "".join(entry.token for entry in entries) == chat.choices[0].message.content
        assert all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in entries)
        legacy = await client(url).completions.create(
            model=REMOTE_MODEL, prompt="1, 2, 3,", max_tokens=4, temperature=0, logprobs=2
        )
        figures = legacy.choices[0].logprobs
        assert figures is not None and "".join(figures.tokens or []) == legacy.choices[0].text
        assert figures.top_logprobs and all(len(top) == 2 for top in figures.top_logprobs)


@pytest.mark.slow
async def test_a_dead_upstream_is_skipped_and_cools_down(engine: Engine, daemon_b: DaemonB) -> None:
    async with closing_listener() as (dead_url, attempts):
        upstreams = [upstream_config(dead_url, name="dead"), upstream_config(daemon_b.url, name="b")]
        async with daemon_a(engine, upstreams) as (url, router):
            assert "Paris" in await ask(url)
            tried = attempts[0]
            assert tried >= 1
            dead_state = router.upstreams[0]
            assert dead_state.failures == 1 and dead_state.cooling_until > 0
            assert "Paris" in await ask(url)
            assert attempts[0] == tried  # cooling down: not tried again


@pytest.mark.slow
async def test_an_upstream_answering_503_is_retried_elsewhere(engine: Engine, daemon_b: DaemonB) -> None:
    async with FakeOpenAIServer(status=503, retry_after="5") as busy:
        upstreams = [upstream_config(busy.url, name="busy"), upstream_config(daemon_b.url, name="b")]
        async with daemon_a(engine, upstreams) as (url, _):
            before = len(daemon_b.backend.models)
            assert "Paris" in await ask(url)
            assert len(busy.requests) == 1 and len(daemon_b.backend.models) == before + 1


@pytest.mark.slow
async def test_a_model_nothing_serves_is_404(engine: Engine, daemon_b: DaemonB) -> None:
    async with daemon_a(engine, [upstream_config(daemon_b.url)]) as (url, _):
        with pytest.raises(openai.NotFoundError):
            await ask(url, "nowhere:1b")


@pytest.mark.slow
async def test_a_busy_local_model_overflows_to_an_upstream_that_serves_it(engine: Engine) -> None:
    spare = ScriptedUpstream("spare", models=[DEFAULT_MODEL])
    router = BackendRouter(engine, [spare])
    local = chat(DEFAULT_MODEL, max_tokens=16)
    async with aclosing(router.generate(local)) as held:
        await anext(held)  # the local engine now has a request in flight; the upstream has none
        text, _ = await collect(router, chat(DEFAULT_MODEL))
        assert text == "spare"
    text, _ = await collect(router, chat(DEFAULT_MODEL, max_tokens=4))  # idle again: local wins the tie
    assert text != "spare" and spare.calls == 1


@pytest.mark.slow
async def test_ingle_serve_routes_through_the_configured_upstreams(daemon_b: DaemonB, tmp_path: Path) -> None:
    ingle = Path(sys.executable).with_name("ingle")
    upstreams = [{"url": daemon_b.url, "models": [REMOTE_MODEL], "name": "b"}]
    env = dict(
        os.environ,
        INGLE_HOME=str(tmp_path / "a-home"),
        INGLE_PORT=str(free_port()),
        INGLE_SOCKET_PATH="",
        INGLE_UPSTREAMS=json.dumps(upstreams),
    )
    process = await asyncio.create_subprocess_exec(
        str(ingle), "serve", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        url = None
        while url is None:  # `ingle serve` prints its URLs once it accepts connections
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
            assert line, "ingle serve exited before it listened"
            if line.startswith("Listening on http"):
                url = line.split()[-1]
        before = len(daemon_b.backend.models)
        assert "Paris" in await ask(url)
        assert daemon_b.backend.models[before:] == [REMOTE_MODEL]
    finally:
        process.terminate()
        await process.wait()


class CountingBackend:
    """A daemon's router, counting the generation requests that reach it."""

    def __init__(self, router: BackendRouter) -> None:
        self.router = router
        self.requests = 0

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.requests += 1
        return self.router.generate(request)

    async def embed(self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True):
        return await self.router.embed(model, inputs, keep_alive, truncate)


@pytest.mark.timeout(120)
async def test_two_daemons_listing_each_other_never_pass_a_request_back(tmp_path: Path) -> None:
    ports = free_port(), free_port()
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    async with AsyncExitStack() as stack:
        counters = []
        for index, port in enumerate(ports):
            settings = settings_for(tmp_path / f"home-{index}")
            other = urls[1 - index]
            settings = settings.model_copy(update={"upstreams": [upstream_config(other, "loop:1b")]})
            engine = await stack.enter_async_context(Engine(settings))
            router = await stack.enter_async_context(BackendRouter.from_settings(engine, settings))
            counters.append(CountingBackend(router))
            runner = web.AppRunner(create_app(settings, engine, counters[-1]), handler_cancellation=True)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", port).start()
        with pytest.raises(openai.NotFoundError, match="loop:1b"):
            await ask(urls[0], "loop:1b")
    # A asked B once; B, seeing a forwarded request, looked only in its own store.
    assert [counter.requests for counter in counters] == [1, 1]


@pytest.mark.slow
async def test_models_only_an_upstream_serves_are_listed_as_remote(engine: Engine, daemon_b: DaemonB) -> None:
    upstreams = [upstream_config(daemon_b.url, REMOTE_MODEL, DEFAULT_MODEL, name="b")]
    async with daemon_a(engine, upstreams) as (url, _):
        owners = {card.id: card.owned_by async for card in client(url).models.list()}
        # A's own model is listed once, as its own; B's other model as B's.
        assert owners == {DEFAULT_MODEL: "ingle", REMOTE_MODEL: "upstream:b"}
        assert (await client(url).models.retrieve(REMOTE_MODEL)).owned_by == "upstream:b"

        # Ollama clients list both (the `ollama` library ignores the remote fields, Ollama's own for this).
        assert {model.model for model in (await ollama.AsyncClient(url).list()).models} == {DEFAULT_MODEL, REMOTE_MODEL}
        async with aiohttp.ClientSession() as session, session.get(f"{url}/api/tags") as response:
            listed = {entry["name"]: entry for entry in (await response.json())["models"]}
        assert "remote_host" not in listed[DEFAULT_MODEL] and listed[DEFAULT_MODEL]["size"] > 0
        assert (listed[REMOTE_MODEL]["remote_host"], listed[REMOTE_MODEL]["remote_model"]) == ("b", REMOTE_MODEL)
        # `ingle list` through A shows its store: no upstream's model.
        async with IngleClient(url) as daemon:
            assert [manifest.name for manifest in await daemon.list_models()] == [DEFAULT_MODEL]
