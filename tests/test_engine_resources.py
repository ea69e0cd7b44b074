"""The engine's resources under clients that leave, odd settings and long work (issue 18: 2, 5, 6)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ingle.core import engine as engine_module
from ingle.core.engine import Engine
from ingle.core.errors import ModelLoadTimeout, RuntimeFailure
from ingle.core.generation import GenerationChunk
from ingle.core.runtime import llama_model
from ingle.core.runtime.llama_model import Batch, LlamaContext
from ingle.core.runtime.scheduler import BatchScheduler
from ingle.core.sources.embed_model import EMBED_MODEL_NAME

from .conftest import DEFAULT_MODEL, link_home, settings_for
from .knowledge_support import embed_model_cache  # noqa: F401 (a fixture)
from .servers import poll
from .test_engine import collect, raw

pytestmark = pytest.mark.slow

# About a hundred tokens of ordinary text: one embedding step of the default model each.
PARAGRAPH = " ".join(f"Line {number} of the report says the shipment left the harbour on time." for number in range(6))


def loads_started(caplog: pytest.LogCaptureFixture) -> int:
    """How many model loads the engine began, by its own log."""
    return sum(1 for record in caplog.records if record.name == "ingle.engine" and record.msg.startswith("loading "))


def running_names(engine: Engine) -> list[str]:
    """The models `ingle ps` (and /api/ps) would show."""
    return [model.name for model in engine.running()]


async def test_a_client_that_leaves_while_its_model_loads_leaves_one_loaded_copy(
    default_model_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingle.engine")
    async with Engine(settings_for(default_model_home)) as engine:
        leaving = asyncio.create_task(collect(engine, raw("1, 2, 3,", max_tokens=2)))
        assert await poll(lambda: loads_started(caplog) == 1, timeout=60)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        # The load goes on without its client, and the model it makes is the engine's: ps shows it.
        assert await poll(lambda: running_names(engine) == [DEFAULT_MODEL], timeout=120)
        assert engine.running()[0].expires_at is not None  # idle: it counts down its keep_alive

        text, stats = await collect(engine, raw("1, 2, 3,", max_tokens=2))
        assert stats.completion_tokens == 2 and text
        assert loads_started(caplog) == 1


async def test_a_load_past_load_timeout_fails_its_request_and_keeps_the_model(
    default_model_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingle.engine")
    # No load of a 470 MiB model ends within a millisecond, so the wait always times out.
    async with Engine(settings_for(default_model_home, load_timeout=0.001)) as engine:
        with pytest.raises(ModelLoadTimeout, match="load_timeout"):
            await collect(engine, raw("1, 2, 3,", max_tokens=2))
        assert await poll(lambda: running_names(engine) == [DEFAULT_MODEL], timeout=120)
        _, stats = await collect(engine, raw("1, 2, 3,", max_tokens=2))
        assert stats.completion_tokens == 2
        assert loads_started(caplog) == 1


# More sequences than num_batch used to abort the process in llama.cpp (GGML_ASSERT n_outputs_max), so the
# engine runs in a child process: the test sees an abort as a return code instead of dying with it.
MANY_SEQUENCES_SMALL_BATCH = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from ingle.core.engine import Engine
    from ingle.core.generation import GenerationRequest, SamplingOptions
    from ingle.core.settings import Settings

    async def main() -> None:
        settings = Settings(home=Path(sys.argv[1]), num_threads=2, num_ctx=256, num_parallel=24, num_batch=16)
        async with Engine(settings) as engine:
            async def answer(number: int) -> str:
                options = SamplingOptions(temperature=0, max_tokens=3)
                prompt = f"{number}, {number + 1},"
                request = GenerationRequest(model=sys.argv[2], prompt=prompt, raw=True, options=options)
                return "".join([chunk.text async for chunk in engine.generate(request)])
            answers = await asyncio.gather(*(answer(number) for number in range(24)))
            print(json.dumps({"answers": answers, "parallel": engine.running()[0].parallel}))

    asyncio.run(main())
    """
)


def test_more_parallel_sequences_than_num_batch_answer_every_request(default_model_home: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", MANY_SEQUENCES_SMALL_BATCH, str(default_model_home), DEFAULT_MODEL],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout)
    assert result["parallel"] == 24
    assert len(result["answers"]) == 24 and all(result["answers"])


async def test_a_generation_behind_a_long_embedding_finishes_first(engine: Engine) -> None:
    order: list[str] = []

    async def embed() -> None:
        await engine.embed(DEFAULT_MODEL, [PARAGRAPH] * 6)
        order.append("embedding done")

    async def generate() -> None:
        await collect(engine, raw("1, 2, 3,", max_tokens=3))
        order.append("generation done")

    embedding = asyncio.create_task(embed())
    await asyncio.sleep(0)  # the embedding reaches the compute thread first
    await asyncio.wait_for(asyncio.gather(embedding, generate()), timeout=300)
    assert order == ["generation done", "embedding done"]


async def test_a_cancelled_embedding_stops_embedding(engine: Engine) -> None:
    def embedded() -> int:
        return sum(stats.embedded_inputs for stats in engine.queue_stats())

    before = embedded()
    count = 12
    embedding = asyncio.create_task(engine.embed(DEFAULT_MODEL, [PARAGRAPH] * count))
    assert await poll(lambda: embedded() > before, timeout=120)
    embedding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await embedding
    # Once a request queued after the cancel is answered, the compute thread has moved past the embedding.
    await asyncio.wait_for(collect(engine, raw("1, 2, 3,", max_tokens=1)), timeout=300)
    assert embedded() - before < count


async def test_every_loaded_model_decodes_on_the_one_compute_thread(
    default_model_home: Path,
    embed_model_cache: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libgomp keeps an OpenMP team for each thread that ran llama.cpp, and once their threads outnumber the
    # CPUs it sleeps at every barrier: an embedding model decoding on a thread of its own made the chat
    # model's answers 14% slower for as long as both were loaded.
    link_home(embed_model_cache, default_model_home)
    decoding_threads: set[str] = set()
    decode = LlamaContext.decode

    def watched_decode(context: LlamaContext, batch: Batch, generated_only: bool = False) -> None:
        decoding_threads.add(threading.current_thread().name)
        decode(context, batch, generated_only)

    monkeypatch.setattr(LlamaContext, "decode", watched_decode)
    async with Engine(settings_for(default_model_home)) as engine:
        result = await engine.embed(EMBED_MODEL_NAME, [PARAGRAPH])
        text, stats = await collect(engine, raw("1, 2, 3,", max_tokens=3))
        assert sorted(running_names(engine)) == sorted([DEFAULT_MODEL, EMBED_MODEL_NAME])
    assert len(result.embeddings) == 1 and stats.completion_tokens == 3 and text
    assert decoding_threads == {"ingle-compute"}


async def test_a_step_that_fails_ends_its_requests_and_the_next_ones_are_answered(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Every model's steps run on the one compute thread: a bug in one must not leave every stream hanging.
    step = BatchScheduler._step
    bugs = [ZeroDivisionError("division by zero")]

    def failing_step(scheduler: BatchScheduler) -> None:
        if bugs:
            raise bugs.pop()
        step(scheduler)

    monkeypatch.setattr(BatchScheduler, "_step", failing_step)
    with pytest.raises(RuntimeFailure, match="division by zero"):
        await asyncio.wait_for(collect(engine, raw("1, 2, 3,", max_tokens=3)), timeout=120)
    text, stats = await asyncio.wait_for(collect(engine, raw("1, 2, 3,", max_tokens=3)), timeout=120)
    assert stats.completion_tokens == 3 and text
    assert "a step of" in caplog.text


async def test_a_request_sent_again_at_once_after_a_failed_step_is_answered(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client told of the failure may ask again before the compute thread has finished cleaning up: that new
    # request is queued meanwhile and must be answered, not failed with the old ones (CI caught this race once).
    step, fail_batch, submit = BatchScheduler._step, BatchScheduler._fail_batch, BatchScheduler.submit
    bugs = [ZeroDivisionError("division by zero")]
    asked_again = threading.Event()

    def failing_step(scheduler: BatchScheduler) -> None:
        if bugs:
            raise bugs.pop()
        step(scheduler)

    def slow_cleanup(scheduler: BatchScheduler, slots: list, error: BaseException) -> None:
        fail_batch(scheduler, slots, error)
        if slots:
            asked_again.wait(30)  # hold the clean-up until the client's new request is queued

    def noted_submit(scheduler: BatchScheduler, job: object) -> None:
        submit(scheduler, job)  # pyright: ignore[reportArgumentType]
        if not bugs:
            asked_again.set()

    monkeypatch.setattr(BatchScheduler, "_step", failing_step)
    monkeypatch.setattr(BatchScheduler, "_fail_batch", slow_cleanup)
    monkeypatch.setattr(BatchScheduler, "submit", noted_submit)
    with pytest.raises(RuntimeFailure, match="division by zero"):
        await asyncio.wait_for(collect(engine, raw("1, 2, 3,", max_tokens=3)), timeout=120)
    text, stats = await asyncio.wait_for(collect(engine, raw("1, 2, 3,", max_tokens=3)), timeout=120)
    assert stats.completion_tokens == 3 and text


def test_on_an_amx_cpu_the_weights_stay_out_of_llama_cpps_extra_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    # llama.cpp's AMX matrix product segfaults on the default model's first decode; its AMX buffer is one of
    # the extra buffers, so a model loaded without them never reaches it.
    monkeypatch.setattr(llama_model, "runs_amx", lambda: True)
    assert not llama_model.model_params().use_extra_bufts
    monkeypatch.setattr(llama_model, "runs_amx", lambda: False)
    assert llama_model.model_params().use_extra_bufts
    assert not llama_model.model_params(repack=False).use_extra_bufts  # deterministic answers drop them too


async def test_a_fast_streams_tokens_reach_the_reader_a_few_at_a_time_and_a_line_end_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each hand-over wakes the event loop (and, through it, the client) mid-decode; a finished line is what
    # the language server waits for, so it never waits for the next token.
    monkeypatch.setattr(engine_module, "HAND_OVER_SECONDS", 60.0)  # every token here comes "fast"
    queue: asyncio.Queue[object] = asyncio.Queue()
    put = engine_module._thread_safe_put(queue)

    async def arrived() -> list[str]:
        await asyncio.sleep(0.05)  # call_soon_threadsafe's callbacks run
        texts = []
        while not queue.empty():
            item = queue.get_nowait()
            assert isinstance(item, GenerationChunk)
            texts.append(item.text)
        return texts

    put(GenerationChunk("def"))
    assert await arrived() == ["def"], "the first token goes at once"
    put(GenerationChunk(" add"))
    put(GenerationChunk("(a, b):"))
    assert await arrived() == [], "the next ones wait for company"
    put(GenerationChunk("\n"))
    assert await arrived() == [" add(a, b):\n"], "a line end takes them along at once, in one chunk"
    put(GenerationChunk("    return"))
    put(GenerationChunk("", done=True))
    assert await arrived() == ["    return", ""], "the last one goes at once"


async def memory_and_llama_log(home: Path, caplog: pytest.LogCaptureFixture, **setting: str) -> tuple[int, list[str]]:
    """Load the default model with `setting` (and two sequences), check that it answers right, and give back
    what `ingle ps` shows as its memory and what llama.cpp logged meanwhile."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="ingle.llama"):
        async with Engine(settings_for(home, num_parallel=2, **setting)) as engine:
            text, _ = await collect(engine, raw("def add(a, b):\n    return", max_tokens=6))
            assert "a + b" in text
            memory = engine.running()[0].memory
    return memory, [record.getMessage() for record in caplog.records]


async def test_flash_attention_off_reaches_llama_cpp_answers_and_counts_its_attention_scores_in_memory(
    default_model_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory: dict[str, int] = {}
    for choice in ("auto", "off"):
        memory[choice], log = await memory_and_llama_log(default_model_home, caplog, flash_attention=choice)
        turned_off = any(re.search(r"flash_attn\s+= disabled", line) for line in log)
        assert turned_off == (choice == "off")
    # `ingle ps` counts a score per cached token of a sequence, per batch token and head (the default model's 14):
    # what llama.cpp grew by over a long prompt without flash attention.
    assert memory["off"] - memory["auto"] == 512 * 4096 * 14 * 4


async def test_an_8_bit_kv_cache_reaches_llama_cpp_answers_and_ingle_counts_the_memory_llama_cpp_reports(
    default_model_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    estimated: dict[str, int] = {}
    reported: dict[str, float] = {}
    for choice in ("f16", "q8_0"):
        estimated[choice], log = await memory_and_llama_log(default_model_home, caplog, kv_cache_type=choice)
        # llama.cpp logs each sequence's buffer: "size = 48.00 MiB (...), K (q8_0): 24.00 MiB, V (q8_0): ..."
        found = [match for line in log if (match := re.search(r"size = +([\d.]+) MiB.*K \((\w+)\)", line))]
        assert found and all(match.group(2) == choice for match in found)
        reported[choice] = sum(float(match.group(1)) for match in found) * 1024 * 1024
    # What `ingle ps` shows shrinks by exactly what llama.cpp's cache did: 34 bytes for 32 values, against 64.
    assert estimated["f16"] - estimated["q8_0"] == pytest.approx(reported["f16"] - reported["q8_0"], rel=0.01)
    assert reported["q8_0"] == pytest.approx(reported["f16"] * 34 / 64, rel=0.01)
