"""One stream beside idle conversations in a shared KV pool: their caches parked in RAM, or left in the pool.

A shared pool (`kv_reuse_min_tokens` > 0) is one llama.cpp KV buffer for all
sequences, and every decode reads it up to its last cell in use, other
sequences' cells too (masked out). ingle copies idle sequences' caches out of
the pool while others decode (BatchScheduler._park_idle) and puts a copy back
when its conversation's next turn reuses it.

Two engines with the default model (8 sequences, 2 threads), one parking and
one not (its budget set to 0), each first given `--idle` conversations that
read a prompt of real code (click's source, about 700 tokens) and answer. Then,
in turns, both answer the same 128-token stories; printed side by side: the
stories' generation tokens/s, the ratio, and the time the latest idle
conversation, asked again, takes to its first token (its cache put back, or
read in place).

    .venv/bin/python bench/idle_caches.py [--idle 7] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import sys
import time
from contextlib import AsyncExitStack

import click.core
from kv_cache import default_model
from rich.console import Console
from rich.table import Table

from ingle.core.engine import Engine
from ingle.core.generation import GenerationRequest, SamplingOptions
from ingle.core.settings import load_settings

MODEL = "qwen2.5-coder:0.5b"
STORY = "<|im_start|>user\nWrite a long, detailed story about {topic}.<|im_end|>\n<|im_start|>assistant\n"
TOPICS = ["a lighthouse keeper", "a city under the sea", "the last train of the night"]


def code_prompts(count: int) -> list[str]:
    """`count` prompts of about 700 tokens of click's source (not ingle's), each a different stretch."""
    source = inspect.getsource(click.core)
    return [f"```python\n{source[index * 2500 : (index + 1) * 2500]}```\nExplain this code." for index in range(count)]


async def answer(engine: Engine, prompt: str, max_tokens: int) -> tuple[float, float]:
    """Seconds to the first token, and generation tokens/s after it, of one greedy answer."""
    request = GenerationRequest(
        model=MODEL, prompt=prompt, raw=True, options=SamplingOptions(temperature=0, max_tokens=max_tokens)
    )
    started = time.perf_counter()
    first = ended = 0.0
    tokens = 0
    async for chunk in engine.generate(request):
        if chunk.text and not first:
            first = time.perf_counter()
        if chunk.done and chunk.stats:
            ended, tokens = time.perf_counter(), chunk.stats.completion_tokens
    return first - started, (tokens - 1) / (ended - first) if tokens > 1 and ended > first else 0.0


async def main(arguments: argparse.Namespace) -> None:
    console = Console(width=None if sys.stdout.isatty() else 140)
    settings = load_settings().model_copy(
        update={"num_threads": 2, "num_parallel": 8, "num_ctx": 4096, "kv_reuse_min_tokens": 16, "keep_alive": -1}
    )
    await default_model(console)
    prompts = code_prompts(arguments.idle)
    rates: dict[str, list[float]] = {"parked": [], "in the pool": []}
    next_turn: dict[str, float] = {}
    async with AsyncExitStack() as stack:
        engines = {label: await stack.enter_async_context(Engine(settings)) for label in rates}
        for label, engine in engines.items():
            await engine.load(MODEL)
            if label == "in the pool":  # the one switch this measurement needs, inside the engine
                engine._loaded[engine.show(MODEL).digest].scheduler._park_bytes = 0
            for number, prompt in enumerate(prompts):
                print(f"  {label}: idle conversation {number + 1}/{len(prompts)}", flush=True)
                await answer(engine, prompt, 16)
        for number in range(arguments.rounds):
            for label in rates if number % 2 == 0 else reversed(rates):
                rates[label].append((await answer(engines[label], STORY.format(topic=TOPICS[number % 3]), 128))[1])
        # The latest idle conversation asked again (the stories took the least recently used slots): answered
        # from its cache.
        for label, engine in engines.items():
            next_turn[label] = (await answer(engine, prompts[-1], 16))[0]

    table = Table(
        title=f"One stream beside {len(prompts)} idle conversations (shared pool), median of {arguments.rounds}"
    )
    for column in ("measure", "parked", "in the pool", "ratio"):
        table.add_column(column)
    parked, in_pool = statistics.median(rates["parked"]), statistics.median(rates["in the pool"])
    table.add_row("story, generation tok/s", f"{parked:.1f}", f"{in_pool:.1f}", f"{parked / in_pool:.2f}x")
    table.add_row(
        "the latest idle conversation asked again, first token, ms",
        f"{next_turn['parked'] * 1000:.0f}",
        f"{next_turn['in the pool'] * 1000:.0f}",
        "",
    )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=7, help="idle conversations beside the stream (at most 7)")
    parser.add_argument("--rounds", type=int, default=3, help="stories per engine (the median is printed)")
    arguments = parser.parse_args()
    if not 0 <= arguments.idle <= 7:
        parser.error("--idle takes 0 to 7: the engines have 8 sequences, one for the stream")
    if arguments.rounds < 1:
        parser.error("--rounds takes 1 or more: each round is one story per engine")
    asyncio.run(main(arguments))
