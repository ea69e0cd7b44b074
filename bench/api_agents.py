"""Agent API benchmark: the APIs coding agents speak, and whether their tool calls hold, in one run.

Runs `ingle serve` (bench/api.py's daemon helper: 2 threads, 4 sequences) on
the default model and prints, side by side:
1. time to first token and tokens/s of one streamed answer, same prompt,
   through OpenAI chat completions (the reference), Anthropic Messages and
   OpenAI Responses, each through its official client; the three alternate
   within a round and each figure is the median over the rounds;
2. over the hand-written tool-use prompts in bench/data/tool_prompts.json
   (>= 50, one to three tools each), the share of answers that are a tool call
   which parses, and which validates against the tool's JSON schema, with the
   tool-call grammar on and off (a second daemon with INGLE_TOOL_CALL_GRAMMAR=false).

    .venv/bin/python bench/api_agents.py [--rounds 5] [--tokens 128] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import jsonschema_rs
import openai
from api import MODEL, PARALLEL, daemon, model_home
from rich.console import Console
from rich.table import Table

PROMPTS = Path(__file__).parent / "data" / "tool_prompts.json"
# Speculative decoding off: these comparisons are between APIs and grammars, not decoding strategies.
# One thread: on a shared, oversubscribed machine two threads wait on each other in every decode.
SETTINGS = {"INGLE_DRAFT_TOKENS": "0", "INGLE_NUM_THREADS": "1"}
DAEMONS = 2
QUESTION = "Explain in detail how a hash map works, with its costs and how collisions are handled."


@dataclass
class Timing:
    """One streamed answer: seconds to the first text, and tokens per second after it."""

    first_token: float
    rate: float


StreamFn = Callable[[int], Awaitable[Timing]]


def timing(started: float, first: float | None, tokens: int) -> Timing:
    """A Timing from the clock readings of one stream and its generated token count."""
    end = time.perf_counter()
    first = first or end
    return Timing(first - started, max(tokens - 1, 0) / max(end - first, 1e-9))


def chat_stream(client: openai.AsyncOpenAI) -> StreamFn:
    """One streamed chat completion (the reference)."""

    async def run(tokens: int) -> Timing:
        started, first, usage = time.perf_counter(), None, 0
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
        return timing(started, first, usage)

    return run


def messages_stream(client: anthropic.AsyncAnthropic) -> StreamFn:
    """One streamed Anthropic message."""

    async def run(tokens: int) -> Timing:
        started, first = time.perf_counter(), None
        async with client.messages.stream(
            model=MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=tokens,
            extra_body={"temperature": 0},
        ) as stream:
            async for _ in stream.text_stream:
                first = first or time.perf_counter()
            final = await stream.get_final_message()
        return timing(started, first, final.usage.output_tokens)

    return run


def responses_stream(client: openai.AsyncOpenAI) -> StreamFn:
    """One streamed OpenAI response."""

    async def run(tokens: int) -> Timing:
        started, first, usage = time.perf_counter(), None, 0
        stream = await client.responses.create(
            model=MODEL, input=QUESTION, max_output_tokens=tokens, temperature=0, stream=True, store=False
        )
        async for event in stream:
            if first is None and event.type == "response.output_text.delta":
                first = time.perf_counter()
            if event.type == "response.completed" and event.response.usage is not None:
                usage = event.response.usage.output_tokens
        return timing(started, first, usage)

    return run


@dataclass
class ToolScore:
    """How the answers to the tool prompts came out."""

    prompts: int = 0
    called: int = 0
    """Answers with a tool call whose arguments parse as JSON."""
    valid: int = 0
    """Calls of an offered tool whose arguments validate against its schema."""


async def tool_score(clients: list[openai.AsyncOpenAI], data: dict, limit: int | None, label: str) -> ToolScore:
    """Ask every prompt through chat completions (greedy, spread over the daemons of `clients`, PARALLEL at a
    time each) and check each answer's first call."""
    score = ToolScore()
    slots = asyncio.Semaphore(PARALLEL * len(clients))

    async def ask(number: int, item: dict) -> None:
        tools = {name: data["tools"][name] for name in item["tools"]}
        offered: list[Any] = [{"type": "function", "function": {"name": name, **tool}} for name, tool in tools.items()]
        async with slots:
            answer = await clients[number % len(clients)].chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": item["prompt"]}],
                tools=offered,
                temperature=0,
                max_tokens=96,
            )
        score.prompts += 1
        calls = answer.choices[0].message.tool_calls or []
        if not calls or calls[0].type != "function":
            print(f"  {label}: prompt {number}: no call", flush=True)
            return
        call = calls[0].function
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            print(f"  {label}: prompt {number}: arguments do not parse", flush=True)
            return
        score.called += 1
        tool = tools.get(call.name)
        valid = tool is not None and jsonschema_rs.validator_for(tool["parameters"]).is_valid(arguments)
        score.valid += valid
        print(f"  {label}: prompt {number}: {call.name} {'valid' if valid else 'INVALID'} {arguments}", flush=True)

    await asyncio.gather(*(ask(number, item) for number, item in enumerate(data["prompts"][:limit], 1)))
    return score


async def main(arguments: argparse.Namespace) -> None:
    console = Console(width=None if sys.stdout.isatty() else 150)
    home = model_home()
    console.print(f"Model store: {home}")
    data = json.loads(PROMPTS.read_text())
    plain_settings = {**SETTINGS, "INGLE_TOOL_CALL_GRAMMAR": "false"}
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(daemon(home, 16, SETTINGS))
        # The tool prompts run through DAEMONS daemons with the grammar and as many without, all at once.
        grammar_on = [url] + [await stack.enter_async_context(daemon(home, 16, SETTINGS)) for _ in range(DAEMONS - 1)]
        grammar_off = [await stack.enter_async_context(daemon(home, 16, plain_settings)) for _ in range(DAEMONS)]
        chat_client = client_for(url)
        claude = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0, timeout=1800)
        streams = {
            "chat completions": chat_stream(chat_client),
            "messages": messages_stream(claude),
            "responses": responses_stream(chat_client),
        }
        await streams["chat completions"](4)  # loads the model
        console.print("[bold]1. One streamed answer per API[/]")
        results: dict[str, list[Timing]] = {name: [] for name in streams}
        for number in range(arguments.rounds if not arguments.tools_only else 0):
            print(f"  round {number + 1}/{arguments.rounds}", flush=True)
            order = list(streams.items())
            shift = number % len(order)
            for name, stream in order[shift:] + order[:shift]:
                results[name].append(await stream(arguments.tokens))
        if not arguments.tools_only:
            print_streams(console, results, arguments)
        console.print("[bold]2. Tool calls, grammar on and off[/]")
        with_grammar, without_grammar = await asyncio.gather(
            tool_score([client_for(u) for u in grammar_on], data, arguments.limit, "grammar on"),
            tool_score([client_for(u) for u in grammar_off], data, arguments.limit, "grammar off"),
        )
    tools = Table(title=f"Tool calls over {with_grammar.prompts} prompts (chat completions, greedy)")
    for column in ("grammar", "answered with a call that parses", "call validates against its schema"):
        tools.add_column(column)
    for label, score in (("on", with_grammar), ("off", without_grammar)):
        tools.add_row(
            label,
            f"{score.called}/{score.prompts} ({score.called / score.prompts:.0%})",
            f"{score.valid}/{score.prompts} ({score.valid / score.prompts:.0%})",
        )
    console.print(tools)


def client_for(url: str) -> openai.AsyncOpenAI:
    """An OpenAI client for a daemon."""
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=1800)


def print_streams(console: Console, results: dict[str, list[Timing]], arguments: argparse.Namespace) -> None:
    """The table of streamed answers, each API beside chat completions."""
    table = Table(title=f"Agent APIs on {MODEL} ({arguments.rounds} rounds, {arguments.tokens} tokens, medians)")
    for column in ("API", "first token (ms)", "tok/s", "tok/s vs chat completions", "first token vs chat"):
        table.add_column(column)
    reference = results["chat completions"]
    ref_rate = statistics.median(t.rate for t in reference)
    ref_first = statistics.median(t.first_token for t in reference)
    for name, timings in results.items():
        rate = statistics.median(t.rate for t in timings)
        first = statistics.median(t.first_token for t in timings)
        table.add_row(name, f"{first * 1000:.0f}", f"{rate:.1f}", f"{rate / ref_rate:.3f}", f"{first / ref_first:.3f}")
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the streamed answers (median is reported)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per streamed answer")
    parser.add_argument("--limit", type=int, default=None, help="only the first N tool prompts")
    parser.add_argument("--tools-only", action="store_true", help="skip the streamed answers")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main(parser.parse_args()))
