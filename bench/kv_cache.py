"""What each kv_cache_type costs and buys on this CPU, measured with bare decodes of the default model.

For f16 (the reference, llama.cpp's and llama-server's default), q8_0 and q4_0,
each with flash attention on (the quantized types need it) and 2 threads, and
for two depths (a prompt of about 450 and of about 1,350 tokens of click's
source), it prints side by side:
- the seconds to read the prompt (512-token chunks);
- a one-token decode step after it, as plain generation makes;
- a 17-token step, as prompt lookup's 16 guesses make, in ms;
- whether the 17 rows' logits equal those of the same tokens decoded one at a
  time (a speculative answer's tokens computed as a plain one's would be);
- the cache's size per token.
Then the ratios to f16 for each figure. The three types are measured in turns,
`--rounds` times, medians kept.

    .venv/bin/python bench/kv_cache.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import sys
import time
from pathlib import Path

import click.core
import numpy as np
from rich.console import Console
from rich.table import Table

from ingle.core.engine import Engine
from ingle.core.errors import ModelNotFound
from ingle.core.manifest import Manifest
from ingle.core.memory import kv_bytes_per_token
from ingle.core.runtime.llama_model import Batch, ContextShape, LlamaContext, LlamaModel
from ingle.core.settings import load_settings

MODEL = "qwen2.5-coder:0.5b"
THREADS = 2
TYPES = ("f16", "q8_0", "q4_0")
PROMPT_CHARACTERS = {"~450 tokens": 2_000, "~1,350 tokens": 6_000}
GUESS_ROWS = 17
CHUNK = 512


def read_prompt(context: LlamaContext, batch: Batch, prompt: list[int]) -> float:
    """Decode `prompt` afresh in CHUNK-token steps; seconds taken."""
    context.clear()
    started = time.perf_counter()
    for start in range(0, len(prompt), CHUNK):
        batch.clear()
        for offset, token in enumerate(prompt[start : start + CHUNK]):
            batch.add(token, start + offset, 0, start + offset == len(prompt) - 1)
        context.decode(batch)
    return time.perf_counter() - started


def measure(model: LlamaModel, cache_type: str, prompt: list[int]) -> dict[str, float]:
    """One round of every figure for one cache type and prompt."""
    shape = ContextShape(
        sequences=1,
        tokens_per_sequence=4096,
        batch_tokens=CHUNK,
        threads=THREADS,
        flash_attention=True,
        kv_cache_type=cache_type,
    )
    context = model.new_context(shape)
    batch = Batch(CHUNK)
    try:
        read = read_prompt(context, batch, prompt)
        # The answer's tokens, one at a time: each step's logits are the reference rows.
        tokens = [int(np.argmax(context.logits(len(batch) - 1)))]
        alone: list[np.ndarray] = []
        lone_steps = []
        for offset in range(GUESS_ROWS):
            batch.clear()
            batch.add(tokens[-1], len(prompt) + offset, 0, True)
            started = time.perf_counter()
            context.decode(batch)
            lone_steps.append(time.perf_counter() - started)
            alone.append(context.logits(0).copy())
            tokens.append(int(np.argmax(alone[-1])))
        # The same tokens again in one step, as if all had been guessed.
        read_prompt(context, batch, prompt)
        batch.clear()
        for offset in range(GUESS_ROWS):
            batch.add(tokens[offset], len(prompt) + offset, 0, True)
        started = time.perf_counter()
        context.decode(batch)
        guess_step = time.perf_counter() - started
        same = all(np.array_equal(context.logits(row), alone[row]) for row in range(GUESS_ROWS))
    finally:
        batch.free()
        context.free()
    return {
        "read": read,
        "lone": statistics.median(lone_steps) * 1000,
        "guesses": guess_step * 1000,
        "same": float(same),  # the median of rounds is 1 only if most rounds were equal
    }


async def default_model(console: Console) -> tuple[Manifest, Path]:
    """The default model's manifest and weights file, pulled first if the store lacks it."""
    async with Engine(load_settings()) as engine:
        try:
            manifest = engine.show(MODEL)
        except ModelNotFound:
            console.print("Pulling the default model first (ingle pull default)…")
            manifest = await engine.pull("default")
        return manifest, engine.store.blob_path(manifest.digest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="turns of the three types (medians kept)")
    arguments = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 140)
    manifest, weights = asyncio.run(default_model(console))
    model = LlamaModel(weights)
    source = inspect.getsource(click.core)
    try:
        for depth, characters in PROMPT_CHARACTERS.items():
            prompt = model.tokenize("Rewrite with type hints:\n" + source[:characters])
            rounds: dict[str, list[dict[str, float]]] = {cache_type: [] for cache_type in TYPES}
            for _ in range(arguments.rounds):
                for cache_type in TYPES:
                    rounds[cache_type].append(measure(model, cache_type, prompt))
            figures = {
                cache_type: {key: statistics.median(result[key] for result in results) for key in results[0]}
                for cache_type, results in rounds.items()
            }
            table = Table(title=f"kv_cache_type, a prompt of {len(prompt)} tokens ({depth}), {THREADS} threads")
            table.add_column("measure")
            for cache_type in TYPES:
                table.add_column(cache_type, justify="right")
            table.add_column("q8_0 / f16", justify="right")
            table.add_column("q4_0 / f16", justify="right")
            rows = (
                ("prompt read, s (lower is better)", "read", "{:.2f}"),
                ("one-token step, ms (lower is better)", "lone", "{:.1f}"),
                (f"{GUESS_ROWS}-token step (guesses), ms (lower is better)", "guesses", "{:.1f}"),
            )
            for label, key, form in rows:
                base = figures["f16"][key]
                table.add_row(
                    label,
                    *(form.format(figures[cache_type][key]) for cache_type in TYPES),
                    *(f"{figures[cache_type][key] / base:.2f}x" for cache_type in TYPES[1:]),
                )
            table.add_row(
                f"{GUESS_ROWS} guessed rows equal to the same tokens decoded alone",
                *("yes" if figures[cache_type]["same"] == 1 else "no" for cache_type in TYPES),
                "",
                "",
            )
            table.add_row(
                "cache per token, KiB",
                *(f"{kv_bytes_per_token(manifest, cache_type) / 1024:.1f}" for cache_type in TYPES),
                "",
                "",
            )
            console.print(table)
    finally:
        model.free()


if __name__ == "__main__":
    main()
