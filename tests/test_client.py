"""IngleClient against the real app in-process: the same calls as the engine, the same types and errors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from ingle.adapters.client import DaemonUnavailable, IngleClient
from ingle.adapters.engine_api import EngineApi, LocalEngine
from ingle.core.engine import Engine
from ingle.core.errors import ContextOverflow, IngleError, InvalidRequest, ModelNotFound
from ingle.core.generation import ChatMessage, ContextChunk, GenerationRequest, SamplingOptions
from ingle.core.sources import PullProgress

from .conftest import DEFAULT_MODEL, fill_context_after
from .fakes.gguf_files import write_tiny_gguf
from .servers import poll, serving, serving_unix


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[IngleClient]:
    """A client of an in-process server over the session's engine (the default model loaded)."""
    async with serving(engine.settings, engine) as url, IngleClient(url) as connected:
        yield connected


def test_both_sides_satisfy_the_engine_api() -> None:
    assert isinstance(IngleClient("http://127.0.0.1:1"), EngineApi)
    assert isinstance(LocalEngine(engine=None), EngineApi)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_list_and_show(client: IngleClient, engine: Engine) -> None:
    listed = await client.list_models()
    assert DEFAULT_MODEL in [manifest.name for manifest in listed]
    shown = await client.show(DEFAULT_MODEL)
    local = engine.show(DEFAULT_MODEL)
    assert shown.name == DEFAULT_MODEL
    assert shown.digest == local.digest and shown.size == local.size
    assert shown.gguf.architecture == local.gguf.architecture
    assert shown.gguf.context_length == local.gguf.context_length


@pytest.mark.slow
async def test_generate_streams_chunks_with_stats(client: IngleClient) -> None:
    options = SamplingOptions(temperature=0, max_tokens=4)
    request = GenerationRequest(model=DEFAULT_MODEL, prompt="1, 2, 3,", raw=True, options=options)
    chunks = [chunk async for chunk in client.generate(request)]
    assert chunks[-1].done and not any(chunk.done for chunk in chunks[:-1])
    stats = chunks[-1].stats
    assert stats.completion_tokens == 4 and stats.done_reason == "length"
    assert stats.prompt_tokens > 0
    assert "4" in "".join(chunk.text for chunk in chunks)


@pytest.mark.slow
async def test_a_file_continued_after_other_files_answers_as_the_engine_does(
    client: IngleClient, engine: Engine
) -> None:
    # The language server's request on a blank line: a plain continuation with other files ahead of it.
    request = GenerationRequest(
        model=DEFAULT_MODEL,
        prompt="import phrases\n\n\ndef welcome(guest):\n    ",
        raw=True,
        extra_context=[ContextChunk('def greet_in_klingon(name):\n    return "nuqneH, " + name\n', "phrases.py")],
        filename="rooms.py",
        options=SamplingOptions(temperature=0, max_tokens=12),
    )
    through_daemon = [chunk async for chunk in client.generate(request)]
    in_process = [chunk async for chunk in LocalEngine(engine).generate(request)]
    # The same prompt, token for token in count, and the same first line. Past it the answers may part at a
    # near tie: the second request reads its prompt from the cache, which rounds otherwise than a fresh read
    # (README, "Deterministic answers").
    assert through_daemon[-1].stats.prompt_tokens == in_process[-1].stats.prompt_tokens
    for chunks in (through_daemon, in_process):
        text = "".join(chunk.text for chunk in chunks)
        assert text.startswith("return phrases.greet_in_klingon(guest)"), "the other file's function, called"


@pytest.mark.slow
async def test_chat_goes_through_the_template(client: IngleClient) -> None:
    request = GenerationRequest(
        model=DEFAULT_MODEL,
        messages=[ChatMessage("user", "What is the capital of France? Answer in one word.")],
        options=SamplingOptions(temperature=0, max_tokens=6),
    )
    text = "".join([chunk.text async for chunk in client.generate(request)])
    assert "Paris" in text


@pytest.mark.slow
async def test_closing_the_stream_early_frees_the_sequence(client: IngleClient, engine: Engine) -> None:
    request = GenerationRequest(
        model=DEFAULT_MODEL, prompt="Write a long essay about the sea.", options=SamplingOptions(max_tokens=400)
    )
    async with aclosing(client.generate(request)) as stream:
        async for chunk in stream:
            if chunk.text:
                break
    assert await poll(lambda: all(queue.active == 0 for queue in engine.queue_stats()), timeout=5)


@pytest.mark.slow
async def test_embed(client: IngleClient) -> None:
    result = await client.embed(DEFAULT_MODEL, ["hello", "world"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 896
    assert result.prompt_tokens > 0


@pytest.mark.slow
async def test_pull_a_file_then_remove_it(engine: Engine, tmp_path: Path) -> None:
    # Importing a server file is for the service's own user, over its unix socket (as the CLI connects).
    async with (
        serving_unix(engine.settings, engine, tmp_path / "api.sock") as path,
        IngleClient(socket_path=path) as client,
    ):
        await _pull_a_file_then_remove_it(client, tmp_path)


async def _pull_a_file_then_remove_it(client: IngleClient, tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny-Q8_0.gguf")
    reports: list[PullProgress] = []
    manifest = await client.pull(f"file:{gguf}", progress=reports.append)
    assert manifest.name == "tiny:q8_0"
    assert manifest.size == gguf.stat().st_size and manifest.digest.startswith("sha256-")
    assert manifest.source == f"file:{gguf}"
    assert reports and reports[-1].status == "success"
    copied = await client.copy("tiny:q8_0", "tiny-client:copy")
    assert copied.digest == manifest.digest
    await client.remove("tiny:q8_0")
    await client.remove("tiny-client:copy")
    names = [model.name for model in await client.list_models()]
    assert "tiny:q8_0" not in names and "tiny-client:copy" not in names
    # `ingle pull --name/--sha256` through the daemon: stored under the name, checked against the hash.
    named = await client.pull(f"file:{gguf}", name="other:1", sha256=manifest.digest.removeprefix("sha256-"))
    assert (named.name, named.digest) == ("other:1", manifest.digest)
    with pytest.raises(IngleError, match="not the expected sha256-0000"):
        await client.pull(f"file:{gguf}", name="other:2", sha256="0" * 64)
    assert "other:2" not in [model.name for model in await client.list_models()]
    await client.remove("other:1")


@pytest.mark.slow
async def test_errors_come_back_typed(client: IngleClient) -> None:
    with pytest.raises(ModelNotFound, match="nope"):
        await client.show("nope:1b")
    with pytest.raises(ModelNotFound):
        async for _ in client.generate(GenerationRequest(model="nope:1b", prompt="hi")):
            pass
    with pytest.raises(InvalidRequest):
        await client.show("../../etc/passwd")


@pytest.mark.slow
async def test_a_context_that_fills_mid_stream_comes_back_as_context_overflow(
    client: IngleClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The status line is long gone by then: the stream's last item carries the error's code, and the client
    # raises the same type the engine did (the language server answers empty on it, as --embedded does).
    fill_context_after(monkeypatch, decodes=3)
    options = SamplingOptions(temperature=0, max_tokens=32)
    request = GenerationRequest(model=DEFAULT_MODEL, prompt="1, 2, 3,", raw=True, options=options)
    texts = []
    with pytest.raises(ContextOverflow, match="context is full"):
        async for chunk in client.generate(request):
            texts.append(chunk.text)
    assert "".join(texts)


@pytest.mark.slow
async def test_running_lists_the_loaded_model(client: IngleClient) -> None:
    running = await client.running()
    assert [model.name for model in running] == [DEFAULT_MODEL]
    assert running[0].context_length > 0 and running[0].memory > 0


async def test_no_daemon_is_daemon_unavailable_with_a_sentence(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        async with IngleClient(url) as client:
            with pytest.raises(DaemonUnavailable, match=r"No ingle daemon answers at .*ingle serve"):
                await client.list_models()
    async with IngleClient(socket_path=tmp_path / "missing.sock") as client:
        with pytest.raises(DaemonUnavailable, match=r"missing\.sock"):
            await client.version(timeout=0.3)
