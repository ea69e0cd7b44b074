"""Engine benchmark: ingle's batching engine against plain llama-cpp-python, side by side.

Prints, in one run on the default model with 2 threads:
1. tokens/s of one stream: ingle's engine vs `Llama.create_completion`;
2. aggregate tokens/s of 4 concurrent streams through ingle vs the same 4 one after another;
3. time to first token of a repeated ~1,500-token prompt, with prompt reuse vs without.

Machines here are noisy, so each figure is the median of several rounds and
the verdicts use ratios measured in the same run.

    .venv/bin/python bench/engine.py [--rounds 3] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Iterator

from llama_cpp import Llama
from rich.console import Console
from rich.table import Table

from ingle.core.engine import Engine
from ingle.core.errors import ModelNotFound
from ingle.core.generation import GenerationRequest, SamplingOptions
from ingle.core.runtime.llama_model import Batch, ContextShape, LlamaModel, reference_llama
from ingle.core.settings import load_settings

MODEL = "qwen2.5-coder:0.5b"
THREADS = 2
STORY = "<|im_start|>user\nWrite a long, detailed story about {topic}.<|im_end|>\n<|im_start|>assistant\n"
TOPICS = ["a lighthouse keeper", "a dragon who bakes bread", "a robot gardener", "a lost city under the sea"]


def generation_rate(stamps: list[float]) -> float:
    """Tokens per second between the first and the last streamed token."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def reference_stream(llm: Llama, prompt: str, tokens: int) -> list[float]:
    """Timestamps of each token streamed by plain llama-cpp-python."""
    stamps = []
    for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=0, repeat_penalty=1.0, stream=True):
        stamps.append(time.perf_counter())
    return stamps


async def ingle_stream(engine: Engine, prompt: str, tokens: int, stamps: list[float] | None = None) -> list[float]:
    """Timestamps of each token chunk streamed by ingle's engine."""
    stamps = [] if stamps is None else stamps
    options = SamplingOptions(temperature=0, repeat_penalty=1.0, max_tokens=tokens)
    async for chunk in engine.generate(GenerationRequest(model=MODEL, prompt=prompt, raw=True, options=options)):
        if chunk.text:
            stamps.append(time.perf_counter())
    return stamps


async def first_token_seconds(engine: Engine, prompt: str) -> float:
    """Seconds until the first generated token of a one-token generation."""
    started = time.perf_counter()
    options = SamplingOptions(temperature=0, max_tokens=1)
    async for _ in engine.generate(GenerationRequest(model=MODEL, prompt=prompt, raw=True, options=options)):
        break
    return time.perf_counter() - started


def raw_decode_ratio(model: LlamaModel, steps: int = 40) -> float:
    """Tokens/s of bare `llama_decode` with 4 sequences per step over 1: the batching ceiling on this CPU."""
    context = model.new_context(ContextShape(sequences=4, tokens_per_sequence=1024, batch_tokens=512, threads=THREADS))
    batch = Batch(512)
    rates = []
    try:
        for width in (1, 4):
            context.clear()
            started = time.perf_counter()
            for step in range(steps):
                batch.clear()
                for sequence in range(width):
                    batch.add(1000 + step, step, sequence, True)
                context.decode(batch)
            rates.append(width * steps / (time.perf_counter() - started))
    finally:
        batch.free()
        context.free()
    return rates[1] / rates[0]


def long_prompt(seed: int, words: int = 680) -> str:
    """About 1,500 tokens of varied text; `seed` changes its very first token."""
    lines = (f"Item {n}: the {['red', 'blue', 'green'][n % 3]} box holds {n * 7 % 13} marbles." for n in range(words))
    return f"Inventory {seed}.\n" + "\n".join(lines)[: words * 6] + "\nSummary:"


def rounds(count: int) -> Iterator[int]:
    """Round numbers, printed so that a long run shows it is alive."""
    for number in range(1, count + 1):
        print(f"  round {number}/{count}", flush=True)
        yield number


async def main(arguments: argparse.Namespace) -> None:
    console = Console()
    settings = load_settings(num_threads=THREADS, num_ctx=4096, num_parallel=4, keep_alive=-1)
    async with Engine(settings) as engine:
        try:
            manifest = engine.show(MODEL)
        except ModelNotFound:
            console.print("Pulling the default model first (ingle pull default)…")
            manifest = await engine.pull("default")
        await engine.load(MODEL)
        path = engine.store.blob_path(manifest.digest)
        reference = reference_llama(path, n_ctx=4096, n_threads=THREADS, n_batch=512, verbose=False)
        tokens = arguments.tokens

        console.print("[bold]1. One stream[/]")
        ours, theirs, counts = [], [], []
        for number in rounds(arguments.rounds):
            prompt = STORY.format(topic=TOPICS[number % len(TOPICS)])
            reference.reset()
            stamps = reference_stream(reference, prompt, tokens)
            theirs.append(generation_rate(stamps))
            stamps = await ingle_stream(engine, prompt, tokens)
            ours.append(generation_rate(stamps))
            counts.append(len(stamps))
        single_ours, single_theirs = statistics.median(ours), statistics.median(theirs)

        console.print("[bold]2. Four streams at once vs one after another[/]")
        together, one_by_one = [], []
        for _ in rounds(arguments.rounds):
            prompts = [STORY.format(topic=topic) for topic in TOPICS]
            started = time.perf_counter()
            results = await asyncio.gather(*(ingle_stream(engine, prompt, tokens) for prompt in prompts))
            together.append(sum(map(len, results)) / (time.perf_counter() - started))
            started = time.perf_counter()
            produced = 0
            for prompt in prompts:
                produced += len(await ingle_stream(engine, prompt, tokens))
            one_by_one.append(produced / (time.perf_counter() - started))
        batched, serial = statistics.median(together), statistics.median(one_by_one)
        ceiling_model = LlamaModel(path)
        ceiling = statistics.median(raw_decode_ratio(ceiling_model) for _ in range(arguments.rounds))
        ceiling_model.free()

        console.print("[bold]3. Time to first token, ~1,500-token prompt[/]")
        cold, warm, prompt_tokens = [], [], 0
        for number in rounds(arguments.rounds):
            prompt = long_prompt(seed=number)
            prompt_tokens = len(reference.tokenize(prompt.encode()))
            cold.append(await first_token_seconds(engine, prompt))
            warm.append(await first_token_seconds(engine, prompt))
        ttft_cold, ttft_warm = statistics.median(cold), statistics.median(warm)

    table = Table(title=f"ingle engine vs llama-cpp-python — {MODEL}, {THREADS} threads, median of {arguments.rounds}")
    for column in ("measure", "ingle", "reference", "ratio", "target", "verdict"):
        table.add_column(column)

    def row(measure: str, ours_value: str, ref_value: str, ratio: float, target: str, passed: bool) -> None:
        table.add_row(measure, ours_value, ref_value, f"{ratio:.2f}x", target, "OK" if passed else "MISS")

    ratio = single_ours / single_theirs
    row(
        "1 stream, tok/s",
        f"{single_ours:.1f}",
        f"{single_theirs:.1f} (Llama.create_completion)",
        ratio,
        ">= 0.95x",
        ratio >= 0.95,
    )
    ratio = batched / single_ours
    row(
        "4 streams, aggregate tok/s",
        f"{batched:.1f}",
        f"{serial:.1f} (same 4, one by one)",
        batched / serial,
        ">= 1.4x one stream",
        ratio >= 1.4,
    )
    ratio = ttft_cold / ttft_warm
    row(
        f"first token, {prompt_tokens}-token prompt",
        f"{ttft_warm * 1000:.0f} ms (reused)",
        f"{ttft_cold * 1000:.0f} ms (not reused)",
        ratio,
        ">= 10x sooner",
        ratio >= 10,
    )
    console.print(table)
    console.print(
        f"4 streams vs 1 stream through ingle: {batched / single_ours:.2f}x. Ceiling on this CPU, bare llama_decode "
        f"of 4 tokens per step vs 1: {ceiling:.2f}x, so ingle reaches {batched / single_ours / ceiling:.0%} of it. "
        f"Tokens per stream: {min(counts)}."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measure (median is reported)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per stream")
    asyncio.run(main(parser.parse_args()))
