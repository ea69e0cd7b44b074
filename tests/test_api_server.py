"""The daemon end to end: `ingle serve` as a process that the CLI talks to, and the server's limits.

Queue, disconnect and timeout behaviour run the app in-process on an
ephemeral port, so the test can watch the engine's own counters.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from ingle.core.engine import Engine
from ingle.core.generation import GenerationRequest, SamplingOptions

from .conftest import DEFAULT_MODEL, settings_for
from .fakes.gguf_files import write_tiny_gguf
from .servers import metric_value, poll, serving, start_daemon
from .test_cli import ingle

pytestmark = pytest.mark.slow

# Asked greedily (temperature 0), the default model writes hundreds of tokens of it: sampled, it sometimes
# stops after a few lines, too soon for the tests that need a request still running.
LONG = "Write a very long essay about the history of the sea, with many chapters."


def generate_body(prompt: str, max_tokens: int, stream: bool = True, **options: object) -> dict[str, object]:
    """An Ollama /api/generate body for the default model."""
    return {
        "model": DEFAULT_MODEL,
        "prompt": prompt,
        "stream": stream,
        "options": {"num_predict": max_tokens, **options},
    }


def test_the_cli_goes_through_a_running_daemon(default_model_home: Path, tmp_path: Path) -> None:
    daemon = start_daemon(default_model_home, INGLE_NUM_THREADS="2", INGLE_NUM_CTX="2048", INGLE_NUM_PARALLEL="2")
    try:
        listed = ingle("list", home=default_model_home)
        assert listed.returncode == 0, listed.stderr
        assert DEFAULT_MODEL in listed.stdout

        before = ingle("ps", home=default_model_home)
        assert before.returncode == 0, before.stderr
        assert DEFAULT_MODEL not in before.stdout and "No ingle daemon" not in before.stderr

        answer = ingle("run", DEFAULT_MODEL, "Say hi", "--max-tokens", "8", home=default_model_home, timeout=300)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip()

        # The model stayed loaded in the daemon, not in the `run` process that has exited.
        after = ingle("ps", home=default_model_home)
        assert after.returncode == 0, after.stderr
        assert after.stdout.splitlines()[1].split()[0] == DEFAULT_MODEL

        gguf = write_tiny_gguf(tmp_path / "tiny-Q8_0.gguf")
        pulled = ingle("pull", str(gguf), home=default_model_home)
        assert pulled.returncode == 0, pulled.stderr
        # Piped, a pull through the daemon writes the stored name and nothing else (progress is for terminals).
        assert pulled.stdout.strip() == "tiny:q8_0" and pulled.stderr == ""
        shown = ingle("show", "tiny:q8_0", home=default_model_home)
        assert shown.returncode == 0, shown.stderr
        assert "llama" in shown.stdout and f"file:{gguf}" in shown.stdout
        assert ingle("rm", "tiny:q8_0", home=default_model_home).returncode == 0
        for route in ("GET /api/tags", "POST /api/chat", "GET /api/ps", "POST /api/pull", "DELETE /api/delete"):
            assert route in daemon.log
    finally:
        status = daemon.stop()
    assert status == 0, daemon.log
    assert "Traceback" not in daemon.log


def test_ps_without_a_daemon_says_so(tmp_path: Path) -> None:
    result = ingle("ps", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert "No ingle daemon is running" in result.stderr


async def test_full_queue_answers_503_with_retry_after(
    default_model_home: Path, session: aiohttp.ClientSession
) -> None:
    async with Engine(settings_for(default_model_home, num_parallel=1, queue_size=1, keep_alive=-1)) as busy:
        await busy.load(DEFAULT_MODEL)
        async with serving(busy.settings, busy) as url:

            async def occupy() -> None:
                async with session.post(
                    f"{url}/api/generate", json=generate_body(LONG, 300, temperature=0)
                ) as response:
                    await response.read()

            # Headers come with the first token, so the two run as tasks: one generates, one waits.
            occupants = [asyncio.create_task(occupy()) for _ in range(2)]
            try:
                queues = busy.queue_stats
                assert await poll(lambda: queues()[0].active + queues()[0].waiting == 2, timeout=30)
                # Refused, not queued: a queued request would wait and then answer 200.
                async with session.post(f"{url}/api/generate", json=generate_body("One more.", 2)) as third:
                    assert third.status == 503
                    assert int(third.headers["Retry-After"]) >= 1
                    assert "busy" in (await third.json())["error"]
            finally:
                for task in occupants:
                    task.cancel()
                await asyncio.gather(*occupants, return_exceptions=True)


async def test_a_client_that_disconnects_frees_its_sequence(engine: Engine, session: aiohttp.ClientSession) -> None:
    async with serving(engine.settings, engine) as url:
        response = await session.post(f"{url}/api/generate", json=generate_body(LONG, 400, temperature=0))
        assert response.status == 200
        first = json.loads(await response.content.readline())
        assert first["done"] is False
        assert await metric_value(session, url, "ingle_active_sequences", f'model="{DEFAULT_MODEL}"') == 1
        response.close()  # drop the connection mid-stream

        async def idle() -> bool:
            return await metric_value(session, url, "ingle_active_sequences", f'model="{DEFAULT_MODEL}"') == 0

        assert await poll(idle, timeout=30)
        async with session.post(f"{url}/api/generate", json=generate_body("1, 2, 3,", 2, stream=False)) as next_one:
            assert next_one.status == 200
            assert (await next_one.json())["done"] is True


async def test_a_request_over_the_time_limit_ends_with_a_clear_error(
    engine: Engine, session: aiohttp.ClientSession
) -> None:
    # The limit must fall after the streamed request's first token and long before its 600th. The
    # prompt is decoded beforehand so the first token comes from the cache, and the limit is set
    # from how long that takes here and now (the CPU may be shared).
    warm_up = GenerationRequest(model=DEFAULT_MODEL, prompt=LONG, options=SamplingOptions(max_tokens=2))
    first_token: float | None = None
    for _ in range(2):  # the second run finds the whole prompt cached
        started = time.monotonic()
        first_token = None
        async for _chunk in engine.generate(warm_up):
            first_token = first_token or time.monotonic() - started
    assert first_token is not None, "the warm-up produced no token"
    limit = max(2.0, round(5 * first_token))
    settings = engine.settings.model_copy(update={"request_timeout": limit})
    whole = generate_body(LONG, 600, stream=False, temperature=0)
    streamed = generate_body(LONG, 600, temperature=0)
    async with serving(settings, engine) as url:
        async with session.post(f"{url}/api/generate", json=whole) as response:
            assert response.status == 504
            message = (await response.json())["error"]
        assert f"request_timeout ({limit:g} s)" in message
        # The work stopped with the answer (no sequence left busy); how soon is a timing, for benchmarks.
        assert await poll(lambda: all(queue.active == 0 for queue in engine.queue_stats()), timeout=10)

        async with session.post(f"{url}/api/generate", json=streamed) as response:
            assert response.status == 200
            lines = [json.loads(line) async for line in response.content if line.strip()]
        assert len(lines) >= 2 and lines[0]["response"]  # it streamed before the limit hit
        assert "request_timeout" in lines[-1]["error"]
        assert not any(line.get("done") for line in lines)
        assert await poll(lambda: all(queue.active == 0 for queue in engine.queue_stats()), timeout=10)


async def test_generation_metrics_after_a_request(engine: Engine, session: aiohttp.ClientSession) -> None:
    async with serving(engine.settings, engine) as url:
        async with session.post(f"{url}/api/generate", json=generate_body("1, 2, 3,", 3, stream=False)) as response:
            assert response.status == 200
        labels = f'model="{DEFAULT_MODEL}"'
        assert await metric_value(session, url, "ingle_generated_tokens_total", labels) == 3
        assert await metric_value(session, url, "ingle_time_to_first_token_seconds_count", labels) == 1
        assert await metric_value(session, url, "ingle_loaded_models") == 1
