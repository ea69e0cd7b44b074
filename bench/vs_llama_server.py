"""ingle against llama-server on the same GGUF: streaming clients, a code-edit workload, one stream's ceiling.

Starts, on free loopback ports, with the default model and 2 threads each:
- `ingle serve` with its defaults (num_parallel chosen from the machine, prompt lookup on);
- `ingle serve` with `draft_tokens = 0` (speculative decoding off);
- llama-server with 8 slots (`-np 8`), and again with its prompt lookup (`--spec-type ngram-simple`).
Then prints, in one run, side by side:
1. a code-edit workload: real functions from a package in this environment (click),
   each to be rewritten with type hints and a docstring, one at a time, greedy:
   generation tokens/s with and without speculation on both servers, the share of
   drafted tokens that were kept, whether ingle's answers with and without
   speculation are identical, and where they are not, how near a tie the first
   difference is (the gap between the two likeliest tokens there, from logprobs);
2. aggregate tokens/s of 1, 4 and 8 clients streaming 128-token chat answers at once
   (the official openai client, temperature 0; one client a different story each
   round), with time to first token;
3. one stream's generation speed against llama-bench, built from the same llama.cpp
   sources by bench/build_llama_server.sh: its tg64 (`-n 64`, from an empty cache) and
   the same work as the engine's chat answer (`-d` the answer's prompt tokens, `-n 128`:
   a token costs more the more are cached), in alternation with ingle's engine
   in-process (neither side has HTTP), without guesses as llama-bench (the per-token
   overhead) and with prompt lookup, and with a bare llama_decode loop on the libllama
   ingle loads (what that library build allows, without ingle's scheduler and sampler);
   and both servers' streams over HTTP from part 2 (there the client and the HTTP layer
   share the machine's cores with the decode).

Machines here are noisy (and often shared): servers alternate within a round, each
figure is the median of the rounds, and the verdicts use ratios from the same run.

    .venv/bin/python bench/vs_llama_server.py [--rounds 3] [--functions 20] [--llama-server PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import click.formatting
import click.parser
import click.termui
import click.utils
import httpx
import openai
from api import TOPICS, free_port, percentile, serving
from lsp_typing import find_llama_server, same_weights_as_ingle
from rich.console import Console
from rich.table import Table

from ingle.core.engine import Engine
from ingle.core.generation import ChatMessage, GenerationRequest, SamplingOptions
from ingle.core.runtime.llama_model import Batch, ContextShape, LlamaModel, runs_amx
from ingle.core.settings import Settings
from ingle.core.store import ModelStore

MODEL = "qwen2.5-coder:0.5b"
THREADS = 2
CONTEXT = 4096
SLOTS = 8
CHAT_TOKENS = 128
EDIT_TOKENS = 320
STORY = "Write a long, detailed story about {topic}."
EDIT = (
    "Rewrite this function with type hints and a docstring; keep its body as it is. "
    "Answer with the whole function in one Python code block.\n\n```python\n{source}```"
)


def edit_functions(count: int) -> list[str]:
    """Sources of `count` plain functions (5-40 lines) from click: real code that ingle did not write."""
    found = []
    for module in (click.formatting, click.parser, click.termui, click.utils):
        for name, function in sorted(inspect.getmembers(module, inspect.isfunction)):
            if function.__module__ != module.__name__ or name.startswith("__"):
                continue
            source = inspect.getsource(function)
            if 5 <= source.count("\n") <= 40 and not source.startswith((" ", "@")):
                found.append(source)
    return found[:count]


# --- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    """A running OpenAI-compatible server and its client."""

    label: str
    client: openai.AsyncOpenAI
    model: str


def ingle_command(home: Path, port: int, draft_tokens: int | None, threads: int) -> tuple[list[str], dict[str, str]]:
    env = dict(
        os.environ,
        INGLE_HOME=str(home),
        INGLE_PORT=str(port),
        INGLE_NUM_THREADS=str(threads),
        INGLE_NUM_CTX=str(CONTEXT),
        INGLE_KEEP_ALIVE="-1",
        INGLE_SOCKET_PATH="",  # never touch the socket of a daemon the user runs on the same home
        INGLE_CONFIG=str(home / "no-config.toml"),
    )
    if draft_tokens is not None:
        env["INGLE_DRAFT_TOKENS"] = str(draft_tokens)
    if threads != THREADS:
        # The default (four sequences per core) is for the machine's cores; match llama-server's slots instead.
        env["INGLE_NUM_PARALLEL"] = str(SLOTS)
    return [str(Path(sys.executable).parent / "ingle"), "serve"], env


def llama_server_command(binary: str, blob: Path, port: int, speculative: bool, threads: int) -> list[str]:
    command = [binary, "-m", str(blob), "-t", str(threads), "-np", str(SLOTS), "-c", str(SLOTS * CONTEXT)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-webui", *same_weights_as_ingle()]
    return command + (["--spec-type", "ngram-simple"] if speculative else [])


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Answer:
    """One streamed chat answer as the client saw it."""

    text: str
    tokens: int
    started: float
    first: float
    ended: float

    @property
    def rate(self) -> float:
        """Generation tokens/s after the first token."""
        return (self.tokens - 1) / (self.ended - self.first) if self.tokens > 1 and self.ended > self.first else 0.0


async def chat(server: Server, prompt: str, max_tokens: int) -> Answer:
    """Stream one greedy chat answer; count tokens by the usage the server reports."""
    started = time.perf_counter()
    first, text, tokens = 0.0, "", 0
    events = await server.client.chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for event in events:
        if event.choices and event.choices[0].delta.content:
            first = first or time.perf_counter()
            text += event.choices[0].delta.content
        if event.usage is not None:
            tokens = event.usage.completion_tokens
    return Answer(text, tokens, started, first, time.perf_counter())


async def tie_gap(server: Server, prompt: str, answer: str, other: str) -> float | None:
    """How near a tie two greedy answers part: `server` (which gave `answer`) is asked again, for its
    log-probabilities, and the gap in nats between its two likeliest tokens is read where its new answer
    first parts from `answer` or `other` (the new answer can itself differ from the first: the prompt may be
    read in other batches)."""
    completion = await server.client.chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=EDIT_TOKENS,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    choice = completion.choices[0]
    again = choice.message.content or ""
    parts = [_first_difference(again, text) for text in (answer, other) if text != again]
    entries = (choice.logprobs.content if choice.logprobs else None) or []
    offset = 0
    for entry in entries:
        offset += len(entry.token)
        if parts and offset > min(parts) and len(entry.top_logprobs) == 2:
            return entry.top_logprobs[0].logprob - entry.top_logprobs[1].logprob
    return None


def _first_difference(text: str, other: str) -> int:
    return next((i for i, (a, b) in enumerate(zip(text, other, strict=False)) if a != b), min(len(text), len(other)))


async def clients_at_once(server: Server, clients: int, first_topic: int = 0) -> tuple[float, list[Answer]]:
    """Aggregate tokens/s of `clients` chat streams started together (stories from TOPICS[first_topic] on),
    and the answers."""
    started = time.perf_counter()
    topics = [TOPICS[(first_topic + n) % len(TOPICS)] for n in range(clients)]
    answers = await asyncio.gather(*(chat(server, STORY.format(topic=topic), CHAT_TOKENS) for topic in topics))
    ended = max(answer.ended for answer in answers)
    return sum(answer.tokens for answer in answers) / (ended - started), list(answers)


async def draft_counts(url: str) -> tuple[float, float]:
    """ingle's drafted and accepted token counters from /metrics."""
    async with httpx.AsyncClient() as client:
        body = (await client.get(url + "/metrics")).text
    values = {"ingle_draft_tokens_total": 0.0, "ingle_draft_tokens_accepted_total": 0.0}
    for line in body.splitlines():
        name = line.split("{", 1)[0]
        if name in values:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values["ingle_draft_tokens_total"], values["ingle_draft_tokens_accepted_total"]


def llama_bench_tg(binary: Path, blob: Path, threads: int, depth: int = 0, tokens: int = 64) -> float:
    """llama-bench's generation tokens/s with the same threads: `tokens` tokens after `depth` cached ones."""
    result = subprocess.run(
        [str(binary), "-m", str(blob), "-t", str(threads), "-p", "0", "-n", str(tokens), "-d", str(depth)]
        + ["-r", "3", "-o", "json"]
        + (["--repack", "0"] if runs_amx() else []),  # the weights as ingle lays them out (model_params)
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(result.stdout)[0]["avg_ts"])


def bare_decode_tg(blob: Path, threads: int) -> float:
    """tg64 measured as llama-bench does it (one token per llama_decode, no sampling), on the same libllama."""
    model = LlamaModel(blob)
    context = model.new_context(ContextShape(sequences=1, tokens_per_sequence=256, batch_tokens=8, threads=threads))
    batch = Batch(8)
    rates = []
    try:
        for _ in range(3):
            context.clear()
            started = time.perf_counter()
            for position in range(64):
                batch.clear()
                batch.add(1000 + position, position, 0, True)
                context.decode(batch)
            rates.append(64 / (time.perf_counter() - started))
    finally:
        batch.free()
        context.free()
        model.free()
    return statistics.median(rates)


async def engine_rate(engine: Engine, prompt: str, max_tokens: int) -> tuple[float, int]:
    """Generation tokens/s (after the first token) of one greedy chat answer from the engine in-process,
    sampled as the /v1 routes sample, and the tokens of its prompt."""
    options = SamplingOptions(temperature=0, repeat_penalty=1.0, max_tokens=max_tokens)
    request = GenerationRequest(model=MODEL, messages=[ChatMessage("user", prompt)], options=options)
    first = ended = 0.0
    tokens = prompt_tokens = 0
    async for chunk in engine.generate(request):
        if chunk.text and not first:
            first = time.perf_counter()
        if chunk.done and chunk.stats:
            ended = time.perf_counter()
            tokens, prompt_tokens = chunk.stats.completion_tokens, chunk.stats.prompt_tokens
    return ((tokens - 1) / (ended - first) if tokens > 1 and ended > first else 0.0), prompt_tokens


async def one_stream_ceilings(
    home: Path, threads: int, rounds: int, ceilings: dict[str, Callable[[int], float]]
) -> tuple[dict[bool, list[float]], dict[str, list[float]]]:
    """One stream's rate from ingle's engine in-process, without guesses and with them (by whether it guesses),
    and each ceiling's, alternating, `rounds` times each. A ceiling is given the tokens the engine's answers
    start after (their prompt's). Both engines' steps run on the one compute thread, in turn."""
    engine_rates: dict[bool, list[float]] = {False: [], True: []}
    measured: dict[str, list[float]] = {name: [] for name in ceilings}
    base = Settings(home=home, num_threads=threads, num_ctx=CONTEXT, keep_alive=-1)
    async with AsyncExitStack() as stack:
        engines = {
            guesses: await stack.enter_async_context(
                Engine(base if guesses else base.model_copy(update={"draft_tokens": 0}))
            )
            for guesses in engine_rates
        }
        depth = 0
        for engine in engines.values():
            _, depth = await engine_rate(engine, STORY.format(topic="warming up"), 4)
        for number in range(rounds):
            for guesses, engine in engines.items():
                topic = TOPICS[number % len(TOPICS)]
                engine_rates[guesses].append((await engine_rate(engine, STORY.format(topic=topic), CHAT_TOKENS))[0])
            for name, ceiling in ceilings.items():
                measured[name].append(ceiling(depth))
    return engine_rates, measured


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# --- the run ----------------------------------------------------------------------------------


async def main(arguments: argparse.Namespace) -> None:
    console = Console(width=None if sys.stdout.isatty() else 160)
    home = Path(os.environ.get("INGLE_HOME") or Path("~/.cache/ingle-tests/home").expanduser())
    store = ModelStore(Settings(home=home).models_dir)
    blob = store.blob_path(store.get(MODEL).digest)
    llama_server = find_llama_server(arguments.llama_server)
    llama_bench = Path(llama_server).with_name("llama-bench")
    functions = edit_functions(arguments.functions)
    threads = arguments.threads
    console.print(f"Model {MODEL} ({blob}), {threads} thread(s); {len(functions)} functions from click to edit.")

    async with AsyncExitStack() as stack:
        servers: dict[str, Server] = {}
        urls: dict[str, str] = {}
        setups = {
            "ingle": ("ingle", None),
            "ingle, speculation off": ("ingle", 0),
            "llama-server": ("llama", False),
            "llama-server, ngram-simple": ("llama", True),
        }
        for label, (kind, option) in setups.items():
            port = free_port()
            if kind == "ingle":
                command, env = ingle_command(home, port, option, threads)
                model = MODEL
            else:
                command, env, model = (
                    llama_server_command(llama_server, blob, port, bool(option), threads),
                    dict(os.environ),
                    MODEL,
                )
            url = await stack.enter_async_context(serving(label, command, env, port))
            # A connection per request, for every server alike: llama-server (cpp-httplib) drops a kept-alive
            # connection after a few requests or seconds, and a request sent on it then fails (1 in 24 here).
            client = openai.AsyncOpenAI(
                base_url=url + "/v1",
                api_key="unused",
                max_retries=0,
                timeout=900,
                default_headers={"Connection": "close"},
            )
            stack.push_async_callback(client.close)
            servers[label], urls[label] = Server(label, client, model), url
            await chat(servers[label], STORY.format(topic="warming up"), 4)  # loads the model
            console.print(f"  {label} is up on {url}")

        # The edits come first, while both ingle servers have answered the same requests: what each has cached
        # decides where it starts reading a prompt, and llama.cpp's prompt kernels round differently from
        # another starting point, which alone can tip a near tie.
        console.print("[bold]1. Code edit, one request at a time[/]")
        edits: dict[str, list[Answer]] = {label: [] for label in servers}
        order = list(servers)
        for number, source in enumerate(functions):
            print(f"  function {number + 1}/{len(functions)}", flush=True)
            for label in order if number % 2 == 0 else reversed(order):
                edits[label].append(await chat(servers[label], EDIT.format(source=source), EDIT_TOKENS))
        drafted, accepted = await draft_counts(urls["ingle"])
        plain = servers["ingle, speculation off"]
        gaps = [
            await tie_gap(plain, EDIT.format(source=source), off.text, on.text)
            for source, on, off in zip(functions, edits["ingle"], edits[plain.label], strict=True)
            if on.text != off.text
        ]

        pair = ["ingle", "llama-server"]
        load: dict[int, dict[str, tuple[list[float], list[float]]]] = {}
        single: dict[str, list[float]] = {label: [] for label in pair}
        for clients in (1, 4, 8):
            console.print(f"[bold]2. {clients} streaming client(s)[/]")
            load[clients] = {label: ([], []) for label in pair}
            for number in range(arguments.rounds):
                for label in pair if number % 2 == 0 else reversed(pair):
                    # One client's speed depends on how much its one story repeats itself (prompt lookup), so
                    # each round asks another story.
                    rate, answers = await clients_at_once(servers[label], clients, number if clients == 1 else 0)
                    load[clients][label][0].append(rate)
                    load[clients][label][1].extend(a.first - a.started for a in answers)
                    if clients == 1:
                        single[label].append(answers[0].rate)

    console.print("[bold]3. One stream against llama-bench[/]")
    # The bare loop runs in a process of its own: a second thread running llama.cpp in this one would give
    # libgomp a second OpenMP team, which slows both (see ComputeThread in core/runtime/scheduler.py).
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as bare_process:
        ceilings: dict[str, Callable[[int], float]] = {
            "bare loop": lambda _: bare_process.submit(bare_decode_tg, blob, threads).result()
        }
        if llama_bench.exists():
            ceilings["tg64"] = lambda _: llama_bench_tg(llama_bench, blob, threads)
            ceilings["same work"] = lambda depth: llama_bench_tg(llama_bench, blob, threads, depth, CHAT_TOKENS)
        engine_rates, ceiling_rates = await one_stream_ceilings(home, threads, arguments.rounds, ceilings)
    bare_loop = median(ceiling_rates["bare loop"])
    ceiling = median(ceiling_rates.get("tg64", []))
    same_work = median(ceiling_rates.get("same work", []))

    table = Table(title=f"ingle vs llama-server — {MODEL}, {threads} thread(s), median of {arguments.rounds} rounds")
    for column in ("measure", "ingle", "llama-server", "ratio", "target", "verdict"):
        table.add_column(column)

    def ratio_row(measure: str, ours: float, theirs: float, floor: float | None, reference: str = "") -> None:
        ratio = ours / theirs if theirs else 0.0
        verdict = "" if floor is None else ("OK" if ratio >= floor else "MISS")
        target = "(reported)" if floor is None else f">= {floor:.2f}x"
        theirs_text = f"{theirs:.1f}" + (f" ({reference})" if reference else "")
        table.add_row(measure, f"{ours:.1f}", theirs_text, f"{ratio:.2f}x", target, verdict)

    for clients, sides in load.items():
        ours, theirs = sides["ingle"], sides["llama-server"]
        ratio_row(
            f"{clients} client(s), aggregate tok/s", median(ours[0]), median(theirs[0]), 1.0 if clients != 4 else None
        )
        ratio_row(
            f"{clients} client(s), first token p50, ms (lower is better)",
            percentile(ours[1], 0.5) * 1000,
            percentile(theirs[1], 0.5) * 1000,
            None,
        )

    def edit_rate(label: str) -> float:
        return median([answer.rate for answer in edits[label]])

    ratio_row(
        "code edit, ingle with vs without speculation, tok/s",
        edit_rate("ingle"),
        edit_rate("ingle, speculation off"),
        1.5,
    )
    ratio_row(
        "code edit with speculation, tok/s (llama-server: ngram-simple)",
        edit_rate("ingle"),
        edit_rate("llama-server, ngram-simple"),
        1.0,
    )
    ratio_row(
        "code edit without speculation, tok/s", edit_rate("ingle, speculation off"), edit_rate("llama-server"), None
    )
    ratio_row(
        "llama-server's own speed-up from ngram-simple, tok/s",
        edit_rate("llama-server, ngram-simple"),
        edit_rate("llama-server"),
        None,
    )
    same = sum(a.text == b.text for a, b in zip(edits["ingle"], edits["ingle, speculation off"], strict=True))
    table.add_row(
        "code edit, ingle's answers identical with and without speculation",
        f"{same} of {len(functions)}",
        "",
        "",
        "all",
        "OK" if same == len(functions) else "MISS",
    )
    table.add_row(
        "code edit, where they differ: gap between the two likeliest tokens, nats",
        ", ".join("?" if gap is None else f"{gap:.3f}" for gap in gaps) or "-",
        "",
        "",
        "(near ties)",
        "",
    )
    table.add_row(
        "code edit, drafted tokens kept (ingle, /metrics)",
        f"{accepted:.0f} of {drafted:.0f} ({accepted / drafted:.0%})" if drafted else "none drafted",
        "",
        "",
        "(reported)",
        "",
    )
    # Per-token overhead is measured as llama-bench measures: without guesses. With them, a story's speed
    # depends on how much of it repeats (from 0.95x to 1.5x here), so that figure is only reported.
    engine, guessing = median(engine_rates[False]), median(engine_rates[True])
    ratio_row("1 stream, tok/s: ingle's engine vs a bare loop on its libllama", engine, bare_loop, None, "bare loop")
    if ceiling:
        ratio_row(
            "1 stream, tok/s: ingle's engine in-process, no guesses (no HTTP either side)",
            engine,
            same_work,
            0.97,
            "llama-bench, the same depth and tokens",
        )
        ratio_row("1 stream, tok/s: the same against tg64 (empty cache)", engine, ceiling, None, "llama-bench")
        ratio_row(
            "1 stream, tok/s: ingle's engine in-process with prompt lookup (stories)",
            guessing,
            same_work,
            None,
            "llama-bench, the same depth and tokens",
        )
        ratio_row(
            "1 stream, tok/s: bare llama_decode loop on ingle's libllama", bare_loop, ceiling, None, "llama-bench"
        )
        for label in ("ingle", "llama-server"):
            ratio_row(
                f"1 stream, tok/s: {label} over HTTP (part 2)", median(single[label]), ceiling, None, "llama-bench"
            )
    console.print(table)
    console.print(
        f"Load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(the ratios are comparable; the absolute figures only on an otherwise idle machine)."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the client measures (median is reported)")
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="threads per server (1 holds up better on a crowded machine)"
    )
    parser.add_argument("--functions", type=int, default=20, help="functions in the code-edit workload")
    parser.add_argument("--llama-server", help="path of a llama-server binary (llama-bench is looked for beside it)")
    # A SIGTERM unwinds like Ctrl-C, so the server subprocesses are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main(parser.parse_args()))
