"""What `deterministic = true` buys and costs: the same greedy answers whatever else the server does.

Starts four `ingle serve` processes on the default model, 2 threads each: the
default kernels and the deterministic ones, each with speculative decoding on
(the default) and off (`draft_tokens = 0`). For each of N real functions from
click (the code-edit workload of bench/vs_llama_server.py), greedy, it asks:
- the speculation-off server, alone (the reference answer);
- the speculation-on server, alone (both servers have then answered the same
  requests, so each reads the prompt from the same point of its cache);
- after all of those, the speculation-off server again, beside three other
  streaming requests, its prompt now cached.
Then prints, per mode, side by side: how many answers equal the reference, the
code edit's generation speed with and without speculation, and the time to the
first token of a prompt read afresh (the edit prompt, about 150 tokens, and a
1,500-token one), where the deterministic kernels cost most. The default mode is
the reference measured in the same run.

    .venv/bin/python bench/deterministic.py [--functions 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import click.core
import openai
from api import TOPICS, free_port, serving
from rich.console import Console
from rich.table import Table
from vs_llama_server import EDIT, EDIT_TOKENS, MODEL, STORY, Answer, Server, chat, edit_functions, ingle_command

MODES = {"default kernels": "false", "deterministic": "true"}
LONG_PROMPT_CHARACTERS = 6_000
"""About 1,500 tokens of click's source."""


@dataclass
class Result:
    """One mode's figures."""

    same_guessing: int
    """Edits answered with speculation exactly as the reference."""
    same_crowded: int
    """Edits answered beside three other streams, the prompt cached, exactly as the reference."""
    rate_on: float
    rate_off: float
    first_short: float
    first_long: float

    @property
    def gain(self) -> float:
        return self.rate_on / self.rate_off


async def start(stack: AsyncExitStack, home: Path, label: str, deterministic: str, draft_tokens: int | None) -> Server:
    port = free_port()
    command, env = ingle_command(home, port, draft_tokens, 2)
    env["INGLE_DETERMINISTIC"] = deterministic
    url = await stack.enter_async_context(serving(label, command, env, port))
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=900)
    stack.push_async_callback(client.close)
    server = Server(label, client, MODEL)
    await chat(server, STORY.format(topic="warming up"), 4)  # loads the model
    return server


async def first_token_seconds(server: Server, prompt: str) -> float:
    """Seconds to a one-token answer: reading the prompt, and one step."""
    answer = await chat(server, prompt, 1)
    return answer.ended - answer.started


async def beside_three_stories(server: Server, prompt: str) -> Answer:
    """The answer to `prompt` asked beside three story requests, its prompt cached from before."""
    others = [chat(server, STORY.format(topic=topic), 200) for topic in TOPICS[:3]]
    return (await asyncio.gather(chat(server, prompt, EDIT_TOKENS), *others))[0]


async def measure(servers: dict[str, Server], functions: list[str], console: Console) -> Result:
    on, off = servers["on"], servers["off"]
    rates: dict[str, list[float]] = {"on": [], "off": []}
    references: list[Answer] = []
    same_guessing = same_crowded = 0
    # Each edit alone on both servers first, in the same order: both have then answered the same requests and
    # start reading each prompt at the same point of their caches (the default kernels read a prompt with
    # other rounding from another starting point), so only the guesses differ.
    for number, source in enumerate(functions):
        console.print(f"  function {number + 1}/{len(functions)}, alone")
        prompt = EDIT.format(source=source)
        reference = await chat(off, prompt, EDIT_TOKENS)
        guessed = await chat(on, prompt, EDIT_TOKENS)
        same_guessing += guessed.text == reference.text
        rates["on"].append(guessed.rate)
        rates["off"].append(reference.rate)
        references.append(reference)
    for number, (source, reference) in enumerate(zip(functions, references, strict=True)):
        console.print(f"  function {number + 1}/{len(functions)}, beside three streams")
        crowded = await beside_three_stories(off, EDIT.format(source=source))
        same_crowded += crowded.text == reference.text
    source = Path(click.core.__file__).read_text()
    short = [await first_token_seconds(off, f"# {n}\n" + EDIT.format(source=functions[0])) for n in range(3)]
    long = [await first_token_seconds(off, f"# {n}\n{source[:LONG_PROMPT_CHARACTERS]}") for n in range(3)]
    return Result(
        same_guessing,
        same_crowded,
        statistics.median(rates["on"]),
        statistics.median(rates["off"]),
        statistics.median(short),
        statistics.median(long),
    )


async def main(arguments: argparse.Namespace) -> None:
    console = Console(width=None if sys.stdout.isatty() else 160)
    home = Path(os.environ.get("INGLE_HOME") or Path("~/.cache/ingle-tests/home").expanduser())
    functions = edit_functions(arguments.functions)
    results: dict[str, Result] = {}
    for mode, flag in MODES.items():
        console.print(f"[bold]{mode}[/]")
        async with AsyncExitStack() as stack:
            servers = {
                "on": await start(stack, home, f"ingle, {mode}", flag, None),
                "off": await start(stack, home, f"ingle, {mode}, speculation off", flag, 0),
            }
            results[mode] = await measure(servers, functions, console)

    default, exact = results["default kernels"], results["deterministic"]
    count = len(functions)
    table = Table(title=f"deterministic = true against the default kernels — {MODEL}, 2 threads, {count} edits")
    for column in ("measure", "deterministic", "default kernels", "ratio"):
        table.add_column(column)

    def counted(measure: str, ours: int, theirs: int) -> None:
        table.add_row(measure, f"{ours} of {count}", f"{theirs} of {count}", "")

    def ratio(measure: str, ours: float, theirs: float, unit: str) -> None:
        table.add_row(measure, f"{ours:.1f} {unit}", f"{theirs:.1f} {unit}", f"{ours / theirs:.2f}x")

    counted("greedy edit with speculation = without", exact.same_guessing, default.same_guessing)
    counted("greedy edit again beside 3 streams, prompt cached = alone", exact.same_crowded, default.same_crowded)
    ratio("code edit with speculation", exact.rate_on, default.rate_on, "tok/s")
    ratio("code edit without speculation", exact.rate_off, default.rate_off, "tok/s")
    table.add_row("speculation's gain", f"{exact.gain:.2f}x", f"{default.gain:.2f}x", "")
    ms = 1000
    ratio(
        "first token, a 150-token prompt read afresh (lower is better)",
        exact.first_short * ms,
        default.first_short * ms,
        "ms",
    )
    ratio(
        "first token, a 1,500-token prompt read afresh (lower is better)",
        exact.first_long * ms,
        default.first_long * ms,
        "ms",
    )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--functions", type=int, default=10, help="code edits per mode (default 10)")
    asyncio.run(main(parser.parse_args()))
