"""Slack bot benchmark: 20 people ask at once, each in a thread of their own, on the fake Slack.

The real bot (slack-bolt over Socket Mode, the conversation core, SQLite)
answers with the real default model in-process; the fake Slack from the tests
(tests/fakes/slack_api.py) delivers the events and records every Web API
call. Prints, for the same questions sent straight to the engine (the floor)
and through the bot with each way of streaming (Slack's chat streaming
methods, and the chat.postMessage + chat.update fallback of workspaces
without them):

- p50 / p95 time from the event to the first visible words and to the final answer;
- event acks (Slack wants them within 3 s);
- messages lost (no answer) and duplicated (more than one answer);
- edit calls per message, the most edits of one message within any second,
  and the most edit calls in any minute across the workspace (Slack's tiers).

Run from the repository root (the fake lives in the tests package):

    .venv/bin/python -m bench.bots_slack [--users 20] [--tokens 48] [--home ~/.ingle]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from ingle.bots.platforms.slack import SlackBot
from ingle.bots.settings import DEFAULT_SYSTEM_PROMPT, SlackSettings
from ingle.core.engine import Engine
from ingle.core.errors import ModelNotFound
from ingle.core.generation import ChatMessage, GenerationRequest, SamplingOptions
from ingle.core.settings import load_settings
from tests.fakes.slack_api import BOT_USER_ID, FakeSlack

MODEL = "qwen2.5-coder:0.5b"
THREADS = 2
CHANNEL = "C0BENCH001"
QUESTIONS = [
    "What is a Python generator?",
    "How do I reverse a list in Python?",
    "What does HTTP status 503 mean?",
    "Explain a mutex in one paragraph.",
    "What is the difference between TCP and UDP?",
]
ACK_LIMIT = 3.0
EDIT_LIMIT_PER_SECOND = 1.0
TIER_PER_MINUTE = {"chat.update": 50, "chat.appendStream": 100, "chat.postMessage": 60}
"""Slack's documented floor per method and workspace: Tier 3, Tier 4, and about one post a second per channel."""


@dataclass
class Outcome:
    """What one person saw."""

    first: float | None
    final: float | None
    ack: float | None
    answers: int
    edits: list[int]
    peak_edits: list[int]


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def peak_within(times: list[float], seconds: float) -> int:
    """The most of `times` within any window of `seconds`."""
    return max((sum(1 for other in times if 0 <= other - start < seconds) for start in times), default=0)


async def run_round(
    engine: Engine, home: Path, users: int, tokens: int, streaming: bool
) -> tuple[list[Outcome], dict[str, float]]:
    """Every user asks at once; returns what each saw and each method's calls a minute."""
    async with FakeSlack(streaming=streaming) as slack:
        with tempfile.TemporaryDirectory() as scratch:
            slack_settings = SlackSettings(
                bot_token=SecretStr(slack.bot_token),
                app_token=SecretStr(slack.app_token),
                base_url=slack.base_url,
                allowed_channels=[CHANNEL],
                max_answer_tokens=tokens,
                temperature=0.0,
                database=Path(scratch) / "slack.db",
            )
            async with SlackBot(load_settings(home=home), slack_settings, engine) as bot:
                await slack.wait_until(slack.connected, what="the Socket Mode link")
                asks = await asyncio.gather(
                    *(
                        slack.user_says(f"U0USER{n:04d}", f"<@{BOT_USER_ID}> {QUESTIONS[n % len(QUESTIONS)]}", CHANNEL)
                        for n in range(users)
                    )
                )
                roots = [ts for ts, _ in asks]
                try:
                    await slack.wait_until(
                        lambda: all(slack.bot_messages(CHANNEL, root) for root in roots) and bot.answering == 0,
                        timeout=900,
                        what="every answer",
                    )
                except TimeoutError:
                    pass  # the unanswered count as lost

        asked_at = {m.ts: m.posted_at for m in slack.messages if not m.bot}
        acks = {e.payload["event"]["ts"]: (e.acked_at - e.sent_at) for e in slack.envelopes if e.acked_at is not None}
        outcomes = []
        for root in roots:
            replies = slack.bot_messages(CHANNEL, root)
            if not replies:
                outcomes.append(Outcome(None, None, acks.get(root), 0, [], []))
                continue
            last = replies[-1]
            final = last.stopped_at or max([last.posted_at, *last.updates])
            outcomes.append(
                Outcome(
                    first=replies[0].posted_at - asked_at[root],
                    final=final - asked_at[root],
                    ack=acks.get(root),
                    answers=len(replies),
                    edits=[len(reply.updates) for reply in replies],
                    peak_edits=[peak_within(reply.updates, 1.0) for reply in replies],
                )
            )
        per_minute: dict[str, float] = {
            method: peak_within([call.at for call in slack.calls_of(method)], 60.0)
            for method in (
                "chat.postMessage",
                "chat.update",
                "chat.startStream",
                "chat.appendStream",
                "chat.stopStream",
            )
        }
        return outcomes, per_minute


@dataclass
class Round:
    """One way of answering everybody, measured."""

    name: str
    outcomes: list[Outcome]
    per_minute: dict[str, float]
    edit_method: str = ""


async def direct_round(engine: Engine, users: int, tokens: int) -> Round:
    """The same questions straight to the engine, all at once: the floor the bot's figures stand on."""

    async def ask(n: int) -> Outcome:
        messages = [
            ChatMessage("system", DEFAULT_SYSTEM_PROMPT),
            ChatMessage("user", QUESTIONS[n % len(QUESTIONS)]),
        ]
        request = GenerationRequest(
            MODEL, messages=messages, options=SamplingOptions(temperature=0.0, max_tokens=tokens)
        )
        started, first = time.monotonic(), None
        async for chunk in engine.generate(request):
            if chunk.text and first is None:
                first = time.monotonic() - started
        return Outcome(first, time.monotonic() - started, None, 1, [], [])

    return Round("engine, no Slack", list(await asyncio.gather(*(ask(n) for n in range(users)))), {})


def report(console: Console, title: str, rounds: list[Round]) -> None:
    """One table: a column per round, a verdict over the bot's rounds."""
    table = Table(title=title)
    table.add_column("measure")
    for measured in rounds:
        table.add_column(measured.name)
    table.add_column("target")
    table.add_column("verdict")
    bots = [measured for measured in rounds if measured.edit_method]

    def row(
        measure: str, show: Callable[[Round], str], target: str = "", check: Callable[[Round], bool] | None = None
    ) -> None:
        values = [show(measured) for measured in rounds]
        verdict = "" if check is None else ("OK" if all(check(measured) for measured in bots) else "MISS")
        table.add_row(measure, *values, target, verdict)

    def times(pick: Callable[[Outcome], float | None]) -> Callable[[Round], str]:
        def show(measured: Round) -> str:
            values = [value for value in map(pick, measured.outcomes) if value is not None]
            return f"{statistics.median(values):.1f} s / {percentile(values, 0.95):.1f} s" if values else "—"

        return show

    def acks(measured: Round) -> list[float]:
        return [o.ack for o in measured.outcomes if o.ack is not None]

    def lost(measured: Round) -> int:
        return sum(1 for o in measured.outcomes if o.first is None)

    def duplicated(measured: Round) -> int:
        # Answers this short fit one message, so a second message in a thread is a duplicate.
        return sum(1 for o in measured.outcomes if o.answers > 1)

    def edits(measured: Round) -> list[int]:
        return [count for o in measured.outcomes for count in o.edits]

    def peak(measured: Round) -> int:
        return max((p for o in measured.outcomes for p in o.peak_edits), default=0)

    def rate(measured: Round) -> float:
        return measured.per_minute.get(measured.edit_method, 0.0)

    def bot_only(show: Callable[[Round], str]) -> Callable[[Round], str]:
        return lambda measured: show(measured) if measured.edit_method else "—"

    row("first visible words, p50 / p95", times(lambda o: o.first))
    row("final answer, p50 / p95", times(lambda o: o.final))
    row(
        "event ack, slowest",
        bot_only(lambda m: f"{max(acks(m), default=0) * 1000:.0f} ms"),
        f"< {ACK_LIMIT:.0f} s",
        lambda m: bool(acks(m)) and max(acks(m)) < ACK_LIMIT,
    )
    row("messages lost", lambda m: str(lost(m)), "0", lambda m: lost(m) == 0)
    row("duplicate answers", bot_only(lambda m: str(duplicated(m))), "0", lambda m: duplicated(m) == 0)
    row("edit method", bot_only(lambda m: m.edit_method))
    row(
        "edits per message, mean / max",
        bot_only(lambda m: f"{statistics.mean(edits(m) or [0]):.1f} / {max(edits(m), default=0)}"),
    )
    row(
        "most edits of one message in 1 s",
        bot_only(lambda m: str(peak(m))),
        "<= 2 (1/s, + the final)",
        lambda m: peak(m) <= 2,
    )
    row(
        "edits in any minute, whole workspace",
        bot_only(lambda m: f"{rate(m):.0f} (tier {TIER_PER_MINUTE[m.edit_method]})"),
        "<= the method's tier",
        lambda m: rate(m) <= TIER_PER_MINUTE[m.edit_method],
    )
    console.print(table)


async def main(arguments: argparse.Namespace) -> None:
    console = Console()
    settings = load_settings(
        home=arguments.home, num_threads=THREADS, num_ctx=4096, num_parallel=arguments.parallel, keep_alive=-1
    )
    async with Engine(settings) as engine:
        try:
            engine.show(MODEL)
        except ModelNotFound:
            console.print("Pulling the default model first (ingle pull default)…")
            await engine.pull("default")
        await engine.load(MODEL)
        console.print(f"[bold]{arguments.users} questions at once, straight to the engine[/]")
        rounds = [await direct_round(engine, arguments.users, arguments.tokens)]
        for streaming, name, method in (
            (True, "bot, chat streaming", "chat.appendStream"),
            (False, "bot, chat.update", "chat.update"),
        ):
            console.print(f"[bold]{arguments.users} users at once through the Slack bot: {name}[/]")
            outcomes, per_minute = await run_round(engine, settings.home, arguments.users, arguments.tokens, streaming)
            rounds.append(Round(name, outcomes, per_minute, method))
        title = (
            f"Slack bot on the fake Slack (Socket Mode): {arguments.users} users in {arguments.users} threads "
            "at once — "
            f"{MODEL}, {THREADS} threads, {arguments.parallel} sequences, answers ≤ {arguments.tokens} tokens"
        )
        report(console, title, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20, help="people asking at once, one thread each")
    parser.add_argument("--tokens", type=int, default=48, help="longest answer, in tokens")
    parser.add_argument("--parallel", type=int, default=4, help="sequences the engine decodes at once")
    parser.add_argument("--home", type=Path, default=None, help="ingle home holding the model (default: settings)")
    asyncio.run(main(parser.parse_args()))
