"""API benchmark: ingle's HTTP API through the official OpenAI client, against the engine in-process.

Starts `ingle serve` as a subprocess on a free loopback port (2 threads,
num_parallel 4) and prints, side by side in one run on the default model:
1. tokens/s of one stream over HTTP vs the same request to the engine in-process;
2. aggregate tokens/s of 4 and 8 concurrent streaming clients vs the engine's
   own batched figure with the same prompts (with 4 sequences, 8 clients queue half);
3. p50/p95 time to first token under that load;
4. overload: with queue_size 4, 4 x (num_parallel + queue_size) requests at once:
   how many got 503, how fast, and whether every request got an answer.

Streams are raw completions (`/v1/completions`, temperature 0), so the HTTP
and in-process runs decode exactly the same tokens. Machines here are noisy:
each figure is the median of several rounds, HTTP and in-process alternate
within a round, and the verdicts use ratios measured in the same run.

    .venv/bin/python bench/api.py [--rounds 3] [--tokens 128]

The agent APIs (Anthropic Messages and OpenAI Responses beside chat
completions, and tool calls with and without the grammar) are measured by
bench/api_agents.py, which starts its daemons through `daemon()` here.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
from rich.console import Console
from rich.table import Table

from ingle.core.engine import Engine
from ingle.core.errors import ModelNotFound
from ingle.core.generation import GenerationRequest, SamplingOptions
from ingle.core.settings import load_settings
from ingle.core.store import ModelStore

MODEL = "qwen2.5-coder:0.5b"
THREADS = 2
PARALLEL = 4
OVERLOAD_QUEUE = 4
OVERLOAD_TOKENS = 32
REJECT_WITHIN = 0.050
STORY = "<|im_start|>user\nWrite a long, detailed story about {topic}.<|im_end|>\n<|im_start|>assistant\n"
TOPICS = [
    "a lighthouse keeper",
    "a dragon who bakes bread",
    "a robot gardener",
    "a lost city under the sea",
    "a clockmaker's apprentice",
    "a cat who runs a library",
    "the last train of the night",
    "a map that draws itself",
]
TEST_CACHE_HOME = Path("~/.cache/ingle-tests/home").expanduser()


@dataclass
class Stream:
    """One streamed generation as the client saw it."""

    started: float
    stamps: list[float] = field(default_factory=list)
    """Arrival time of each chunk that carried text."""

    @property
    def first_token(self) -> float:
        return self.stamps[0] - self.started

    @property
    def rate(self) -> float:
        """Tokens per second between the first and the last token."""
        if len(self.stamps) < 2:
            return 0.0
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])


StreamFn = Callable[[str, int], Awaitable[Stream]]


def engine_streamer(engine: Engine) -> StreamFn:
    """Stream a raw prompt from the engine in-process, with the sampling the /v1 routes use."""

    async def stream(prompt: str, tokens: int) -> Stream:
        result = Stream(time.perf_counter())
        options = SamplingOptions(temperature=0, repeat_penalty=1.0, max_tokens=tokens)
        async for chunk in engine.generate(GenerationRequest(model=MODEL, prompt=prompt, raw=True, options=options)):
            if chunk.text:
                result.stamps.append(time.perf_counter())
        return result

    return stream


def http_streamer(client: openai.AsyncOpenAI) -> StreamFn:
    """Stream a raw prompt through `/v1/completions` with the official OpenAI client."""

    async def stream(prompt: str, tokens: int) -> Stream:
        result = Stream(time.perf_counter())
        events = await client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=tokens, temperature=0, stream=True
        )
        async for event in events:
            if event.choices and event.choices[0].text:
                result.stamps.append(time.perf_counter())
        return result

    return stream


async def concurrent(stream: StreamFn, clients: int, tokens: int) -> tuple[float, list[Stream]]:
    """Aggregate tokens/s of `clients` streams started together, and the streams."""
    prompts = [STORY.format(topic=TOPICS[n % len(TOPICS)]) for n in range(clients)]
    started = time.perf_counter()
    streams = await asyncio.gather(*(stream(prompt, tokens) for prompt in prompts))
    elapsed = max(s.stamps[-1] for s in streams) - started
    return sum(len(s.stamps) for s in streams) / elapsed, list(streams)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def rounds(count: int) -> range:
    return range(1, count + 1)


# --- the daemon -----------------------------------------------------------------------------


def model_home() -> Path:
    """The user's home if it has the default model, else the test cache's, else the user's (pulled into)."""
    for home in (load_settings().home, TEST_CACHE_HOME):
        try:
            ModelStore(home / "models").get(MODEL)
            return home
        except (ModelNotFound, OSError):
            continue
    return load_settings().home


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command() -> list[str]:
    """`ingle serve` from the same environment as this Python."""
    return [shutil.which("ingle", path=str(Path(sys.executable).parent)) or "ingle", "serve"]


@asynccontextmanager
async def daemon(home: Path, queue_size: int, extra_env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """Run `ingle serve` on a free loopback port until the block ends; yield its base URL once it answers.

    `extra_env` sets more `INGLE_*` settings.
    """
    port = free_port()
    env = dict(
        os.environ,
        INGLE_HOME=str(home),
        INGLE_HOST="127.0.0.1",
        INGLE_PORT=str(port),
        INGLE_NUM_THREADS=str(THREADS),
        INGLE_NUM_PARALLEL=str(PARALLEL),
        INGLE_NUM_CTX="4096",
        INGLE_QUEUE_SIZE=str(queue_size),
        INGLE_KEEP_ALIVE="-1",
        INGLE_SOCKET_PATH="",  # never touch the socket of a daemon the user runs on the same home
    )
    env.update(extra_env or {})
    async with serving("ingle serve", serve_command(), env, port, ready_seconds=120) as url:
        yield url


@asynccontextmanager
async def serving(
    label: str, command: list[str], env: dict[str, str], port: int, ready_seconds: float = 300
) -> AsyncIterator[str]:
    """Run a server (ingle or llama-server) until the block ends; yield its base URL once /health answers 200.

    llama-server answers 503 while it loads its model, so any other status means not yet.
    """
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + ready_seconds
            async with httpx.AsyncClient(timeout=5) as probe:
                while True:
                    if process.poll() is not None:
                        log.seek(0)
                        raise SystemExit(f"{label} exited with {process.returncode}:\n{log.read().decode()[-3000:]}")
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{label} did not answer on {url} within {ready_seconds:.0f} s")
                    try:
                        if (await probe.get(url + "/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
            try:
                yield url
            except BaseException:
                # A request failed: if the server died under it, what it said last is the story.
                if process.poll() is not None:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-3000:]
                    print(f"{label} exited with {process.returncode} while in use:\n{tail}", file=sys.stderr)
                raise
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- overload ----------------------------------------------------------------------------------


@dataclass
class Overload:
    sent: int
    completed: int
    rejected: list[float]
    """Seconds each 503 took to arrive."""
    other: list[str]
    """Requests that got neither an answer nor a 503."""


async def overload(client: openai.AsyncOpenAI, requests: int) -> Overload:
    """Fire `requests` streaming completions at once; sort out what came back."""
    completed, rejected, other = 0, [], []

    async def one(number: int) -> None:
        nonlocal completed
        started = time.perf_counter()
        try:
            events = await client.completions.create(
                model=MODEL,
                prompt=STORY.format(topic=TOPICS[number % len(TOPICS)]),
                max_tokens=OVERLOAD_TOKENS,
                temperature=0,
                stream=True,
            )
            finish = None
            async for event in events:
                if event.choices and event.choices[0].finish_reason:
                    finish = event.choices[0].finish_reason
            if finish is None:
                other.append("stream ended without a finish reason")
            else:
                completed += 1
        except openai.APIStatusError as error:
            if error.status_code == 503:
                rejected.append(time.perf_counter() - started)
            else:
                other.append(f"HTTP {error.status_code}")
        except openai.APIError as error:
            other.append(type(error).__name__)

    await asyncio.gather(*(one(number) for number in range(requests)))
    return Overload(requests, completed, rejected, other)


# --- the run ------------------------------------------------------------------------------------


async def main(arguments: argparse.Namespace) -> None:
    console = Console(width=None if sys.stdout.isatty() else 150)
    tokens = arguments.tokens
    home = model_home()
    settings = load_settings(
        home=home, num_threads=THREADS, num_ctx=4096, num_parallel=PARALLEL, queue_size=16, keep_alive=-1
    )
    async with Engine(settings) as engine:
        try:
            engine.show(MODEL)
        except ModelNotFound:
            console.print("Pulling the default model first (ingle pull default)…")
            await engine.pull("default")
        await engine.load(MODEL)
        in_process = engine_streamer(engine)
        console.print(f"Model store: {home}")

        async with daemon(home, queue_size=16) as url:
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
            over_http = http_streamer(client)
            await over_http(STORY.format(topic="warming up"), 4)  # loads the model in the daemon

            console.print("[bold]1. One stream[/]")
            single: dict[str, list[float]] = {"http": [], "engine": []}
            for number in rounds(arguments.rounds):
                print(f"  round {number}/{arguments.rounds}", flush=True)
                prompt = STORY.format(topic=TOPICS[number % len(TOPICS)])
                order = [("http", over_http), ("engine", in_process)]
                for side, stream in order if number % 2 else reversed(order):
                    single[side].append((await stream(prompt, tokens)).rate)

            load: dict[int, dict[str, tuple[list[float], list[float]]]] = {}
            for clients in (4, 8):
                console.print(f"[bold]2. {clients} concurrent clients[/]")
                load[clients] = {"http": ([], []), "engine": ([], [])}
                for number in rounds(arguments.rounds):
                    print(f"  round {number}/{arguments.rounds}", flush=True)
                    order = [("http", over_http), ("engine", in_process)]
                    for side, stream in order if number % 2 else reversed(order):
                        rate, streams = await concurrent(stream, clients, tokens)
                        load[clients][side][0].append(rate)
                        load[clients][side][1].extend(s.first_token for s in streams)
            await client.close()

    console.print(
        f"[bold]3. Overload: queue_size {OVERLOAD_QUEUE}, {4 * (PARALLEL + OVERLOAD_QUEUE)} requests at once[/]"
    )
    async with daemon(home, queue_size=OVERLOAD_QUEUE) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        await http_streamer(client)(STORY.format(topic="warming up"), 4)
        burst = await overload(client, 4 * (PARALLEL + OVERLOAD_QUEUE))
        await client.close()

    table = Table(
        title=f"ingle HTTP API vs the engine in-process — {MODEL}, {THREADS} threads, "
        f"num_parallel {PARALLEL}, {tokens} tokens, median of {arguments.rounds}"
    )
    for column in ("measure", "HTTP API (openai client)", "engine in-process", "ratio", "target", "verdict"):
        table.add_column(column)

    def ratio_row(measure: str, http: float, local: float, floor: float) -> None:
        ratio = http / local
        table.add_row(
            measure,
            f"{http:.1f}",
            f"{local:.1f}",
            f"{ratio:.2f}x",
            f">= {floor:.2f}x",
            "OK" if ratio >= floor else "MISS",
        )

    ratio_row("1 stream, tok/s", statistics.median(single["http"]), statistics.median(single["engine"]), 0.95)
    for clients, sides in load.items():
        http_rates, http_ttft = sides["http"]
        local_rates, local_ttft = sides["engine"]
        ratio_row(
            f"{clients} clients, aggregate tok/s", statistics.median(http_rates), statistics.median(local_rates), 0.90
        )
        table.add_row(
            f"{clients} clients, first token p50 / p95",
            f"{percentile(http_ttft, 0.5) * 1000:.0f} / {percentile(http_ttft, 0.95) * 1000:.0f} ms",
            f"{percentile(local_ttft, 0.5) * 1000:.0f} / {percentile(local_ttft, 0.95) * 1000:.0f} ms",
            f"{percentile(http_ttft, 0.5) / percentile(local_ttft, 0.5):.2f}x",
            "(reported)",
            "",
        )
    excess = burst.sent - (PARALLEL + OVERLOAD_QUEUE)
    slowest = max(burst.rejected, default=0.0)
    answered = burst.completed + len(burst.rejected) == burst.sent
    quick = len(burst.rejected) >= excess and slowest <= REJECT_WITHIN
    median_reject = statistics.median(burst.rejected) * 1000 if burst.rejected else 0.0
    table.add_row(
        f"overload: {burst.sent} at once, queue {OVERLOAD_QUEUE}",
        f"{len(burst.rejected)} × 503 (p50 {median_reject:.0f} ms, max {slowest * 1000:.0f} ms), "
        f"{burst.completed} completed, {len(burst.other)} other",
        f"{excess} excess",
        "",
        f"every excess 503 <= {REJECT_WITHIN * 1000:.0f} ms, none lost",
        "OK" if quick and answered else "MISS",
    )
    console.print(table)
    if burst.other:
        console.print(f"Requests without an answer or a 503: {', '.join(sorted(set(burst.other)))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measure (median is reported)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per stream")
    # A SIGTERM unwinds like Ctrl-C, so the daemon subprocess is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main(parser.parse_args()))
