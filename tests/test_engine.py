"""The engine on the real default model: batching, reuse, cancellation, limits."""

from __future__ import annotations

import asyncio
import json
import math
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from ingle.core.engine import Engine
from ingle.core.errors import (
    ContextOverflow,
    InsufficientMemory,
    ModelNotFound,
    QueueFull,
)
from ingle.core.generation import (
    ChatMessage,
    GenerationRequest,
    GenerationStats,
    SamplingOptions,
)
from ingle.core.memory import MIB, estimate_memory

from .conftest import DEFAULT_MODEL, settings_for

pytestmark = pytest.mark.slow


async def collect(engine: Engine, request: GenerationRequest) -> tuple[str, GenerationStats]:
    """Run a generation to the end; return its text and stats."""
    text = ""
    stats = None
    async for chunk in engine.generate(request):
        text += chunk.text
        if chunk.done:
            stats = chunk.stats
    assert stats is not None, "the stream ended without its done chunk"
    return text, stats


def raw(prompt: str, max_tokens: int = 16, **options: Any) -> GenerationRequest:
    """A raw completion request on the default model."""
    sampling = SamplingOptions(temperature=0, repeat_penalty=1.0, max_tokens=max_tokens, **options)
    return GenerationRequest(model=DEFAULT_MODEL, prompt=prompt, raw=True, options=sampling)


async def test_fim_completes_the_return_expression(engine: Engine) -> None:
    options = SamplingOptions(temperature=0, repeat_penalty=1.0, max_tokens=8)
    request = GenerationRequest(model=DEFAULT_MODEL, prompt="def add(a, b):\n    return ", suffix="\n", options=options)
    text, _ = await collect(engine, request)
    assert text.startswith("a + b")


async def test_chat_answers_with_the_template(engine: Engine) -> None:
    request = GenerationRequest(
        model=DEFAULT_MODEL,
        messages=[ChatMessage("user", "What is the capital of France? Answer in one word.")],
        options=SamplingOptions(temperature=0, max_tokens=8),
    )
    text, stats = await collect(engine, request)
    assert "Paris" in text
    assert stats.done_reason == "stop"
    assert "<|im_end|>" not in text


async def test_four_concurrent_streams_each_answer_their_own_prompt(engine: Engine) -> None:
    prompts = {
        "The days of the week: Monday, Tuesday, Wednesday,": "Thursday",
        "The months of the year: January, February, March,": "April",
        "Counting in English: one, two, three, four,": "five",
        "The planets from the sun: Mercury, Venus, Earth,": "Mars",
    }
    arrivals: dict[str, list[float]] = {prompt: [] for prompt in prompts}

    async def stream(prompt: str) -> str:
        text = ""
        async for chunk in engine.generate(raw(prompt, max_tokens=24)):
            text += chunk.text
            arrivals[prompt].append(time.monotonic())
        return text

    answers = await asyncio.gather(*(stream(prompt) for prompt in prompts))
    for (prompt, expected), answer in zip(prompts.items(), answers, strict=True):
        assert expected in answer, f"{prompt!r} got {answer!r}"
        others = [word for word in prompts.values() if word != expected]
        assert not any(other in answer.split(",")[0] for other in others)
    # Nobody starves: every stream had produced text before any stream finished.
    first_finish = min(times[-1] for times in arrivals.values())
    assert all(times[0] < first_finish for times in arrivals.values())


async def test_prompt_reuse_skips_the_shared_prefix(engine: Engine) -> None:
    shared = "Here is a list of fruits: " + ", ".join(f"fruit number {n}" for n in range(60)) + "."
    _, first = await collect(engine, raw(shared + " The first", max_tokens=2))
    _, second = await collect(engine, raw(shared + " The last", max_tokens=2))
    assert second.cached_tokens >= first.prompt_tokens - 4
    assert second.prompt_tokens - second.cached_tokens < 8


async def test_closing_a_stream_frees_its_sequence_at_once(engine: Engine) -> None:
    loaded = next(iter(engine._loaded.values()))
    async with aclosing(engine.generate(raw("Write a very long essay about the sea.", max_tokens=500))) as stream:
        async for chunk in stream:
            if chunk.text:
                break
    # Closing waits for the scheduler, so the sequence is already free.
    assert loaded.scheduler.active == 0


async def test_a_follow_up_after_an_early_close_reuses_the_cache(engine: Engine) -> None:
    prompt = "Numbers: " + ", ".join(str(n) for n in range(200))
    async with aclosing(engine.generate(raw(prompt, max_tokens=50))) as stream:
        async for chunk in stream:
            if chunk.text:
                break
    _, stats = await collect(engine, raw(prompt + ", 200", max_tokens=1))
    assert stats.cached_tokens >= stats.prompt_tokens - 8


async def test_cancelling_the_reading_task_stops_generation(engine: Engine) -> None:
    loaded = next(iter(engine._loaded.values()))
    received = asyncio.Event()

    async def reader() -> None:
        async for _ in engine.generate(raw("Tell me a long story about a fox.", max_tokens=500)):
            received.set()

    task = asyncio.create_task(reader())
    await asyncio.wait_for(received.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 5
    while loaded.scheduler.active and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert loaded.scheduler.active == 0
    _, stats = await collect(engine, raw("1, 2, 3,", max_tokens=3))
    assert stats.completion_tokens == 3


async def test_stop_strings_end_the_answer_before_they_appear(engine: Engine) -> None:
    text, stats = await collect(engine, raw("Counting: one, two, three, four,", max_tokens=30, stop=["seven"]))
    assert "seven" not in text and "six" in text
    assert stats.done_reason == "stop"


async def test_max_tokens_limits_the_answer(engine: Engine) -> None:
    _, stats = await collect(engine, raw("Write a poem about rain.", max_tokens=5))
    assert stats.completion_tokens == 5 and stats.done_reason == "length"


async def test_json_schema_constrains_the_output(engine: Engine) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    request = GenerationRequest(
        model=DEFAULT_MODEL,
        messages=[ChatMessage("user", "Invent a person and give their name and age as JSON.")],
        format=schema,
        options=SamplingOptions(temperature=0, max_tokens=60),
    )
    text, _ = await collect(engine, request)
    value = json.loads(text)
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


async def test_embeddings_place_similar_texts_closer(engine: Engine) -> None:
    result = await engine.embed(
        DEFAULT_MODEL, ["The cat sat on the mat.", "A cat was sitting on a mat.", "Quarterly tax filing deadlines."]
    )
    cat, kitten, taxes = result.embeddings
    assert len(cat) == 896
    assert math.isclose(sum(v * v for v in cat), 1.0, rel_tol=1e-3)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(cat, kitten) > cosine(cat, taxes)


async def test_unknown_model_is_a_clear_error(engine: Engine) -> None:
    with pytest.raises(ModelNotFound):
        await collect(engine, GenerationRequest(model="nope:1b", prompt="hi"))


async def test_prompt_longer_than_the_context_is_refused(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home, num_ctx=256)) as small:
        with pytest.raises(ContextOverflow, match="256"):
            await collect(small, raw("word " * 400))


async def test_full_queue_is_refused_at_once(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home, num_parallel=1, queue_size=1)) as busy:
        await busy.load(DEFAULT_MODEL)
        running = [asyncio.create_task(collect(busy, raw("Write a long story.", max_tokens=200))) for _ in range(2)]
        await asyncio.sleep(0)  # let both reach the scheduler: one runs, one waits
        loaded = next(iter(busy._loaded.values()))
        deadline = time.monotonic() + 10
        while loaded.scheduler.active + loaded.scheduler.waiting < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(QueueFull):
            await collect(busy, raw("One more.", max_tokens=2))
        # Queued, it would wait for two 200-token answers (10 s here); 2 s leaves room for a loaded CI machine.
        assert time.monotonic() - started < 2
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def test_a_request_cancelled_while_queued_frees_its_place(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home, num_parallel=1, queue_size=1)) as busy:
        await busy.load(DEFAULT_MODEL)
        loaded = next(iter(busy._loaded.values()))
        running = asyncio.create_task(collect(busy, raw("Write a long story.", max_tokens=200)))
        queued = asyncio.create_task(collect(busy, raw("Write another story.", max_tokens=200)))
        deadline = time.monotonic() + 10
        while loaded.scheduler.waiting < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        assert loaded.scheduler.waiting == 0
        # The place is free again: a new request is queued instead of being refused.
        replacement = asyncio.create_task(collect(busy, raw("1, 2, 3,", max_tokens=2)))
        while loaded.scheduler.waiting < 1 and not replacement.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        running.cancel()
        _, stats = await asyncio.wait_for(replacement, 60)
        assert stats.completion_tokens == 2
        await asyncio.gather(running, return_exceptions=True)


async def test_keep_alive_unloads_an_idle_model(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home)) as short:
        await collect(short, _with_keep_alive(raw("Hi", max_tokens=1), 1))
        assert [model.name for model in short.running()] == [DEFAULT_MODEL]
        assert short.running()[0].expires_at is not None
        deadline = time.monotonic() + 15
        while short.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert short.running() == []
        text, _ = await collect(short, raw("1, 2, 3,", max_tokens=2))  # loads again on demand
        assert text


async def test_keep_alive_zero_unloads_right_after_the_request(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home)) as engine:
        await collect(engine, _with_keep_alive(raw("Hi", max_tokens=1), 0))
        deadline = time.monotonic() + 5
        while engine.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert engine.running() == []


async def test_model_that_does_not_fit_is_refused_with_sizes(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home, memory_limit_mib=300)) as tight:
        with pytest.raises(InsufficientMemory, match=r"needs .* MiB .* only .* free"):
            await tight.load(DEFAULT_MODEL)
        assert tight.running() == []


async def test_idle_model_is_evicted_for_a_new_one(default_model_home: Path, tmp_path: Path) -> None:
    # A second, different model file: the same GGUF with trailing padding, so its digest differs.
    original = default_model_home / "models" / "blobs"
    blob = next(original.iterdir())
    padded = tmp_path / "padded.gguf"
    with blob.open("rb") as source, padded.open("wb") as target:
        while block := source.read(1 << 22):
            target.write(block)
        target.write(b"\0" * 32)
    async with Engine(settings_for(default_model_home, memory_limit_mib=1500)) as engine:
        await engine.pull(f"file:{padded}", name="padded:1")
        await engine.load(DEFAULT_MODEL)
        await engine.load("padded:1")
        assert [model.name for model in engine.running()] == ["padded:1"]


def _with_keep_alive(request: GenerationRequest, seconds: float) -> GenerationRequest:
    request.keep_alive = seconds
    return request


async def test_with_kv_reuse_text_inserted_mid_prompt_decodes_only_the_inserted_tokens(
    default_model_home: Path,
) -> None:
    notes = [f"# note {index}: keep the helpers small and pure" for index in range(30)]

    def request(inserted: list[str]) -> GenerationRequest:
        lines = notes[:15] + inserted + notes[15:] + ["", "def add(a, b):", "    return"]
        options = SamplingOptions(temperature=0.0, top_k=1, max_tokens=4)
        return GenerationRequest(model=DEFAULT_MODEL, prompt="\n".join(lines), raw=True, options=options)

    async with Engine(settings_for(default_model_home, num_parallel=1, kv_reuse_min_tokens=16)) as engine:
        await collect(engine, request([]))
        text, stats = await collect(engine, request(["# an inserted line"]))
    decoded = stats.prompt_tokens - stats.cached_tokens
    assert decoded <= 12, f"{decoded} of {stats.prompt_tokens} prompt tokens decoded again"
    assert text.strip().startswith("a + b")


async def test_with_a_shared_pool_an_idle_conversation_waits_outside_it_and_its_next_turn_still_reuses_it(
    default_model_home: Path,
) -> None:
    # Every decode reads a shared pool up to its last cell in use, other sequences' cells too: an idle
    # conversation's cache waits in RAM while another request runs, and goes back when its next turn comes.
    notes = "\n".join(f"# note {index}: keep the helpers small and pure" for index in range(30))
    first = raw(notes + "\n\ndef add(a, b):\n    return", max_tokens=8)
    follow_up = raw(notes + "\n\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return", max_tokens=8)
    other = raw("Numbers: 1, 2, 3, 4,", max_tokens=24)
    async with Engine(settings_for(default_model_home, num_parallel=1, kv_reuse_min_tokens=16)) as engine:
        await collect(engine, first)
        alone, _ = await collect(engine, follow_up)
    async with Engine(settings_for(default_model_home, num_parallel=2, kv_reuse_min_tokens=16)) as engine:
        await collect(engine, first)
        await collect(engine, other)
        scheduler = engine._loaded[engine.show(DEFAULT_MODEL).digest].scheduler
        waiting = [slot for slot in scheduler._slots if slot.parked is not None]
        assert len(waiting) == 1 and waiting[0].cached, "the first conversation's cache waits"
        memory = llama_cpp.llama_get_memory(scheduler._context.raw)
        assert memory is not None
        assert llama_cpp.llama_memory_seq_pos_max(memory, waiting[0].sequence) == -1, "its cells left the pool"
        text, stats = await collect(engine, follow_up)
    assert stats.cached_tokens >= stats.prompt_tokens - 16, "the next turn reused the cache that waited"
    assert text == alone


async def test_parallelism_follows_the_cores_and_the_memory(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home, num_threads=2)) as engine:
        assert (await engine.load(DEFAULT_MODEL)).parallel == 8  # four sequences per core
        manifest = engine.show(DEFAULT_MODEL)
    # A memory limit with room for the weights and two sequences' worth of context, not three.
    sequence = manifest.gguf.kv_bytes_per_token() * 4096
    limit = estimate_memory(manifest, 0).total + sequence * 5 // 2
    async with Engine(settings_for(default_model_home, num_threads=2, memory_limit_mib=limit // MIB + 1)) as engine:
        assert (await engine.load(DEFAULT_MODEL)).parallel == 2
    # An 8-bit cache takes 34 bytes for every 64 of f16's, so the same limit holds four sequences.
    async with Engine(
        settings_for(default_model_home, num_threads=2, memory_limit_mib=limit // MIB + 1, kv_cache_type="q8_0")
    ) as engine:
        assert (await engine.load(DEFAULT_MODEL)).parallel == 4
