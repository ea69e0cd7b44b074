"""The shared conversation core: formatting and splitting, memory, access, commands, schedules, errors."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from ingle.bots.access import AccessPolicy
from ingle.bots.commands import ScheduleSpec, parse_command, parse_schedule
from ingle.bots.conversation import (
    RESTARTED,
    ConversationCore,
    IncomingMessage,
    PlatformStyle,
    estimate_tokens,
    fit_history,
    strip_reasoning,
)
from ingle.bots.errors import BUSY, error_sentence
from ingle.bots.formatting import (
    as_markdown,
    preview,
    split_markdown,
    to_slack_mrkdwn,
    to_telegram_html,
)
from ingle.bots.ratelimit import RateLimiter
from ingle.bots.schedules import BotScheduler, ScheduledPrompt
from ingle.bots.settings import TelegramSettings
from ingle.bots.store import BotStore, ConversationKey, StoredMessage
from ingle.bots.tasks import AnswerTasks
from ingle.core.errors import InvalidRequest, QueueFull
from ingle.core.settings import Settings

from .bot_helpers import BusyBackend, ScriptedBackend
from .fakes import poll_until
from .fakes.telegram_api import visible_html

# --- formatting -------------------------------------------------------------------------


def test_telegram_html_escapes_text_and_uses_only_telegram_tags() -> None:
    rendered = to_telegram_html(
        "# Plan\nUse **bold**, *it*, ~~old~~, `a<b && c>d` and [docs](https://x.io/?a=1&b=2) <script>\n\n"
        "> quoted\n\n- one\n- two\n\n```python\nif a < b: pass\n```"
    )
    assert "<b>Plan</b>" in rendered
    assert "<code>a&lt;b &amp;&amp; c&gt;d</code>" in rendered
    assert '<a href="https://x.io/?a=1&amp;b=2">docs</a>' in rendered
    assert "&lt;script&gt;" in rendered
    assert "<blockquote>quoted</blockquote>" in rendered
    assert "• one\n• two" in rendered
    assert '<pre><code class="language-python">if a &lt; b: pass</code></pre>' in rendered
    visible_html(rendered)  # what Telegram accepts


def test_slack_mrkdwn_and_mattermost_markdown() -> None:
    markdown = "**bold** and *it* & <x> [site](https://example.com)\n\n```\ncode <here>\n```"
    slack = to_slack_mrkdwn(markdown)
    assert slack.startswith("*bold* and _it_ &amp; &lt;x&gt; <https://example.com|site>")
    assert "```\ncode &lt;here&gt;\n```" in slack
    assert as_markdown(markdown) == markdown


@pytest.mark.parametrize("render", [to_telegram_html, to_slack_mrkdwn, as_markdown])
def test_splitting_keeps_code_blocks_whole_and_parts_within_the_limit(render) -> None:
    code_lines = [f"value_{i} = compute({i}) < limit & flag  # <{i}>" for i in range(80)]
    markdown = (
        "Intro with **bold** & <tags>.\n\n```python\n"
        + "\n".join(code_lines)
        + "\n```\n\n"
        + " ".join(["Closing words with *emphasis* & stuff."] * 30)
    )
    parts = split_markdown(markdown, 400, render)
    assert len(parts) > 5
    assert all(len(part) <= 400 for part in parts)
    for part in parts:
        assert (
            part.count("```") % 2 == 0
            if render is not to_telegram_html
            else part.count("<pre>") == part.count("</pre>")
        )
        if render is to_telegram_html:
            visible_html(part)
    joined = "\n".join(visible_html(part) if render is to_telegram_html else part for part in parts)
    for line in code_lines:
        shown = (
            line
            if render is not to_slack_mrkdwn
            else line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        )
        assert joined.count(shown) == 1, line


def test_a_single_overlong_word_or_line_is_still_cut_to_fit() -> None:
    parts = split_markdown("x" * 1000 + "\n\n```\n" + "&" * 900 + "\n```", 200, to_telegram_html)
    assert all(len(part) <= 200 for part in parts)
    for part in parts:
        visible_html(part)
    assert sum(visible_html(part).count("&") for part in parts) == 900


def test_preview_shows_the_head_of_a_long_answer() -> None:
    text = "Start. " + "word " * 2000
    shown = preview(text, 300, to_telegram_html)
    assert shown.startswith("Start.") and shown.endswith("…") and len(shown) <= 300


# --- reasoning and history -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "visible"),
    [
        ("<think>plan</think>Answer.", "Answer."),
        ("Before <think>x</think>after", "Before after"),
        ("<think>still thinking", ""),
        ("Answer so far <think>partial", "Answer so far "),
        ("lone close</think>Answer.", "Answer."),
        ("<THINK>a</THINK>\n\nB", "B"),
        ("No reasoning at all.", "No reasoning at all."),
    ],
)
def test_reasoning_is_stripped_even_mid_stream(raw: str, visible: str) -> None:
    assert strip_reasoning(raw) == visible


def test_history_is_trimmed_oldest_first_and_keeps_the_system_prompt() -> None:
    history = [
        StoredMessage(i, "user" if i % 2 == 0 else "assistant", f"message {i} " + "x" * 300, None) for i in range(20)
    ]
    budget = estimate_tokens("sys") + 5 * estimate_tokens(history[0].content)
    messages = fit_history("sys", history, budget)
    assert messages[0].role == "system" and messages[0].content == "sys"
    assert messages[-1].content == history[-1].content
    assert messages[1].role == "user", "the kept turns start with the user"
    assert 2 <= len(messages) - 1 <= 5
    kept = [message.content for message in messages[1:]]
    assert kept == [message.content for message in history[-len(kept) :]], "the newest, in order"


def test_the_last_message_is_kept_even_if_alone_it_is_too_long() -> None:
    messages = fit_history("sys", [StoredMessage(1, "user", "y" * 10_000, None)], budget=50)
    assert [message.role for message in messages] == ["system", "user"]


# --- commands ---------------------------------------------------------------------------


def test_commands_are_parsed_with_and_without_the_bot_name() -> None:
    assert parse_command("/reset").name == "reset"
    assert parse_command("/model@ingle_bot  qwen:1b ").argument == "qwen:1b"
    assert parse_command("!system Be terse.").argument == "Be terse."
    assert parse_command("/start").name == "help"
    assert parse_command("/unknown thing") is None
    assert parse_command("hello /reset") is None


@pytest.mark.parametrize(
    ("text", "cron", "seconds", "prompt"),
    [
        ("every weekday at 9:00 Summarise the plan", "0 9 * * mon-fri", 0, "Summarise the plan"),
        ("every day at 17:30: Wrap up", "30 17 * * *", 0, "Wrap up"),
        ("every monday, friday at 5pm Weekly digest", "0 17 * * mon,fri", 0, "Weekly digest"),
        ("every weekend at 10am Relax", "0 10 * * sat,sun", 0, "Relax"),
        ("daily at 8 Morning", "0 8 * * *", 0, "Morning"),
        ("cron 0 9 * * 1-5 Standup", "0 9 * * 1-5", 0, "Standup"),
        ("*/15 9-17 * * mon-fri Ping", "*/15 9-17 * * mon-fri", 0, "Ping"),
        ("every 30 minutes Check the build", "", 1800, "Check the build"),
        ("every hour — Status", "", 3600, "Status"),
        ("every 2 days Digest", "", 172800, "Digest"),
    ],
)
def test_schedule_syntax(text: str, cron: str, seconds: float, prompt: str) -> None:
    spec, parsed_prompt = parse_schedule(text, min_interval=60)
    assert parsed_prompt == prompt
    assert spec.cron == cron
    assert spec.seconds == seconds


@pytest.mark.parametrize(
    "text",
    [
        "every 10 seconds too often",
        "sometime soon do it",
        "every weekday at 25:00 x",
        "every 30 minutes",
        "every funday at 9 x",
    ],
)
def test_schedule_syntax_errors_are_sentences(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_schedule(text, min_interval=60)
    assert caught.value.message.endswith((".", "`."))


async def test_schedules_run_in_the_configured_time_zone(tmp_path: Path) -> None:
    async def fire(scheduled: ScheduledPrompt) -> None:
        raise AssertionError("not due in this test")

    berlin = ZoneInfo("Europe/Berlin")
    scheduler = BotScheduler(tmp_path / "s.db", berlin, fire)
    scheduler.start()
    try:
        key = ConversationKey("telegram", "5")
        spec, prompt = parse_schedule("every weekday at 9:00 Plan", 60)
        added = scheduler.add(key, spec, prompt)
        assert added.next_run is not None
        local = added.next_run.astimezone(berlin)
        assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5
        assert [item.id for item in scheduler.list(key)] == [added.id]
        assert scheduler.list(ConversationKey("telegram", "6")) == []
        assert not scheduler.remove(ConversationKey("telegram", "6"), added.id), "only from its own channel"
        with pytest.raises(InvalidRequest):
            scheduler.add(key, ScheduleSpec(kind="cron", description="bad", cron="99 9 * * *"), "x")
        assert scheduler.remove(key, added.id)
        assert scheduler.list(key) == []
    finally:
        scheduler.shutdown()


# --- access and rate limits ------------------------------------------------------------


def test_access_is_denied_by_default() -> None:
    assert not AccessPolicy.of([], []).allows("1", "2")
    assert AccessPolicy.of([], []).answers_nobody
    assert AccessPolicy.of(["1"], []).allows("1", "anywhere")
    assert not AccessPolicy.of(["1"], []).allows("2", "anywhere")
    assert AccessPolicy.of([], ["C1"]).allows("anyone", "C1")
    assert AccessPolicy.of(["*"], []).allows("anyone", "anywhere")


def test_rate_limit_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=6, burst=2, clock=lambda: now[0])
    assert limiter.try_acquire("u") == 0 and limiter.try_acquire("u") == 0
    wait = limiter.try_acquire("u")
    assert 9 < wait <= 10
    assert limiter.try_acquire("other") == 0, "per user"
    now[0] += 10
    assert limiter.try_acquire("u") == 0


# --- errors and settings ----------------------------------------------------------------


def test_errors_become_one_sentence_and_details_go_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    assert error_sentence(QueueFull("full", retry_after=2)) == BUSY
    assert "busy" in BUSY and "try again" in BUSY
    with caplog.at_level(logging.ERROR, logger="ingle.bots"):
        sentence = error_sentence(KeyError("internal detail"))
    assert "internal detail" not in sentence and sentence.count(".") == 1
    assert any(record.exc_info for record in caplog.records)


def test_tokens_are_secret_and_the_environment_outranks_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(bots={"telegram": {"token": "123:file-token", "allowed_users": ["1"]}})
    telegram = TelegramSettings.from_settings(settings)
    assert "file-token" not in repr(telegram) and "file-token" not in str(telegram)
    assert telegram.allowed_users == ["1"] and telegram.timezone == "UTC"
    monkeypatch.setenv("INGLE_TELEGRAM_TOKEN", "123:env-token")
    assert TelegramSettings.from_settings(settings).token.get_secret_value() == "123:env-token"
    with pytest.raises(InvalidRequest) as caught:
        TelegramSettings.from_settings(Settings(bots={"telegram": {"token": "123:x", "timezone": "Mars/Olympus"}}))
    assert "timezone" in caught.value.message and "123:x" not in caught.value.message


# --- the store --------------------------------------------------------------------------


async def test_store_migrates_once_runs_in_wal_and_drops_redeliveries(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with BotStore(path) as store:
        conversation = await store.conversation(ConversationKey("slack", "C1", "171.5"))
        first = await store.add_user_message(conversation.id, "slack", "ev1", "hi", "U1")
        again = await store.add_user_message(conversation.id, "slack", "ev1", "hi", "U1")
        assert first is not None and again is None
        await store.set_model(conversation.id, "other:1b")
    async with BotStore(path) as store:
        reopened = await store.conversation(ConversationKey("slack", "C1", "171.5"))
        assert reopened.id == conversation.id and reopened.model == "other:1b"
        assert [message.content for message in await store.history(reopened.id)] == ["hi"]
        assert await store.forget(reopened.id) == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [
        "m001_conversations_and_messages",
        "m002_seen_events",
        "m003_strangers_told",
        "m004_owed_answers",
        "m005_channel_cursors",
        "m006_answers_by_question",
    ]


KILLED_WRITER = """
import asyncio, sys
from pathlib import Path
from ingle.bots.store import BotStore, ConversationKey

async def main():
    store = await BotStore(Path(sys.argv[1])).__aenter__()
    conversation = await store.conversation(ConversationKey("telegram", "1"))
    for index in range(1000):
        await store.add_user_message(conversation.id, "telegram", f"e{index}", f"message {index}", "1")
        print(index, flush=True)  # the acknowledgement: only after the commit returned
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_killed_process_loses_no_acknowledged_message(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    assert writer.stdout is not None
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged == 50:
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    with sqlite3.connect(path) as db:
        stored = {row[0] for row in db.execute("SELECT content FROM messages")}
    assert {f"message {index}" for index in range(acknowledged + 1)} <= stored


# --- the core with a platform double ---------------------------------------------------------


class RecordedReply:
    """A ReplyStream that records what it was asked to show."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    async def begin(self) -> None:
        self.log.append(("begin", None))

    async def update(self, text: str) -> None:
        self.log.append(("update", text))

    async def finish(self, parts: Sequence[str]) -> None:
        self.log.append(("finish", list(parts)))

    def state(self) -> dict[str, object]:
        return {}


def plain_style(limit: int = 4000, interval: float = 0.0) -> PlatformStyle:
    return PlatformStyle(name="test", message_limit=limit, edit_interval=interval, render=as_markdown)


def core_for(tmp_path: Path, backend, log, **section: Any) -> ConversationCore:
    settings = TelegramSettings(token=SecretStr("1:x"), allowed_users=["u"], **{"rate_limit_burst": 100, **section})
    return ConversationCore(
        style=plain_style(interval=float(section.get("edit_interval") or 0.01)),
        settings=settings,
        backend=backend,
        database=tmp_path / "core.db",
        default_model="qwen2.5-coder:0.5b",
        open_reply=lambda key, state: RecordedReply(log),
    )


def said(key: ConversationKey, text: str, event: str, user: str = "u") -> IncomingMessage:
    return IncomingMessage(key=key, user_id=user, text=text, event_id=event)


async def test_the_core_sends_history_and_throttles_updates(tmp_path: Path) -> None:
    log: list[tuple[str, Any]] = []
    backend = ScriptedBackend([f"w{i} " for i in range(30)], delay=0.02)
    key = ConversationKey("test", "c")
    async with core_for(tmp_path, backend, log, edit_interval=0.25) as core:
        await core.handle(said(key, "first", "1"), RecordedReply(log))
        await core.handle(said(key, "second", "2"), RecordedReply(log))
    sent = [(message.role, message.content) for message in backend.requests[1].messages]
    assert sent[1:] == [("user", "first"), ("assistant", " ".join(f"w{i}" for i in range(30))), ("user", "second")]
    updates = [entry for entry in log[: log.index(("finish", [sent[2][1]])) + 1] if entry[0] == "update"]
    assert 1 <= len(updates) <= 5, "about one update per interval over ~0.6 s of streaming"


async def test_turns_of_one_conversation_run_in_order(tmp_path: Path) -> None:
    log: list[tuple[str, Any]] = []
    backend = ScriptedBackend(["a", "b", "c"], delay=0.05)
    key = ConversationKey("test", "c")
    async with core_for(tmp_path, backend, log) as core:
        first = await core.receive(said(key, "one", "1"), RecordedReply(log))
        second = await core.receive(said(key, "two", "2"), RecordedReply(log))
        assert first is not None and second is not None
        await asyncio.gather(second.run(), first.run())
    assert [request.messages[-1].content for request in backend.requests] == ["one", "two"]
    assert [m.content for m in backend.requests[1].messages[1:]] == ["one", "abc", "two"]


async def test_commands_reset_model_and_system(tmp_path: Path) -> None:
    log: list[tuple[str, Any]] = []
    backend = ScriptedBackend(["ok"])
    key = ConversationKey("test", "c", "t1")
    async with core_for(tmp_path, backend, log) as core:
        for index, text in enumerate(
            ["hello", "/system Answer like a pirate.", "/model qwen2.5-coder:1.5b", "/reset", "again"]
        ):
            await core.handle(said(key, text, f"e{index}"), RecordedReply(log))
        await core.handle(said(key, "/model ../../etc", "e9"), RecordedReply(log))
    last = backend.requests[-1]
    assert last.model == "qwen2.5-coder:1.5b"
    assert [(m.role, m.content) for m in last.messages] == [("system", "Answer like a pirate."), ("user", "again")]
    finals = [entry[1][0] for entry in log if entry[0] == "finish"]
    assert any("Forgotten: 2 messages" in text for text in finals)
    assert "not a valid model name" in finals[-1]


async def test_a_busy_backend_is_one_sentence_and_the_message_is_kept(tmp_path: Path) -> None:
    log: list[tuple[str, Any]] = []
    key = ConversationKey("test", "c")
    async with core_for(tmp_path, BusyBackend(), log) as core:
        await core.handle(said(key, "are you there?", "1"), RecordedReply(log))
        history = await core.store.history((await core.store.conversation(key)).id)
    assert log[-1] == ("finish", [BUSY])
    assert [message.content for message in history] == ["are you there?"]


async def test_rate_limited_users_are_told_to_slow_down(tmp_path: Path) -> None:
    log: list[tuple[str, Any]] = []
    key = ConversationKey("test", "c")
    async with core_for(tmp_path, ScriptedBackend(["ok"]), log, rate_limit_burst=1, rate_limit_per_minute=1) as core:
        await core.handle(said(key, "/help", "1"), RecordedReply(log))
        await core.handle(said(key, "/help", "2"), RecordedReply(log))
    assert "faster than I can answer" in log[-1][1][0]


async def test_a_scheduled_prompt_posts_into_its_channel(tmp_path: Path) -> None:
    log: list[tuple[str, Any]] = []
    backend = ScriptedBackend(["Good ", "morning!"])
    key = ConversationKey("test", "c")
    async with core_for(tmp_path, backend, log) as core:
        await core.run_scheduled(key, "Greet the team.")
    assert backend.requests[0].messages[-1].content == "Greet the team."
    assert log[0] == ("begin", None) and log[-1] == ("finish", ["Good morning!"])


async def test_answers_a_crash_left_owed_are_given_once_at_the_next_start(tmp_path: Path) -> None:
    key = ConversationKey("test", "c")
    # What a killed process left behind: four questions stored and acknowledged, none of their answers delivered.
    async with BotStore(tmp_path / "core.db") as store:
        conversation = await store.conversation(key)
        unseen = await store.add_user_message(conversation.id, "test", "e0", "an old one, nothing shown", "u", {})
        old = await store.add_user_message(conversation.id, "test", "e1", "an old question", "u", {})
        await store.note_progress(old or 0, {}, "Half an ans")
        done = await store.add_user_message(conversation.id, "test", "e2", "a finished one", "u", {})
        await store.add_answer(conversation.id, done or 0, "The finished answer.")
        await store.add_user_message(conversation.id, "test", "e3", "a fresh one", "u", {})
    with sqlite3.connect(tmp_path / "core.db") as db:
        db.executemany("UPDATE messages SET created_at = created_at - 3600 WHERE id = ?", [(unseen,), (old,)])

    log: list[tuple[str, Any]] = []
    backend = ScriptedBackend(["A fresh ", "answer."])
    async with core_for(tmp_path, backend, log, resume_within=600) as core:
        await poll_until(lambda: len(core.answering) == 0, 30, "the owed answers")
    async with core_for(tmp_path, backend, log, resume_within=600):
        pass  # a second start finds nothing owed

    finals = [entry[1][0] for entry in log if entry[0] == "finish"]
    assert finals[0] == RESTARTED, "too old and nothing shown: one line asking to repeat"
    assert finals[1].startswith("Half an ans …") and "cut off" in finals[1], "too old: marked, and asked to repeat"
    assert finals[2:] == ["The finished answer.", "A fresh answer."], "in order, each once"
    assert [request.messages[-1].content for request in backend.requests] == ["a fresh one"], "generated once"


def test_tokens_come_from_systemd_credential_files(tmp_path, monkeypatch) -> None:
    from ingle.bots.settings import SlackSettings, bot_settings
    from ingle.core.settings import Settings

    token = tmp_path / "slack-token"
    token.write_text("xoxb-from-file\n")
    app_token = tmp_path / "slack-app-token"
    app_token.write_text("xapp-from-file\n")
    monkeypatch.setenv("INGLE_BOT_TOKEN_FILE", str(token))
    monkeypatch.setenv("INGLE_BOT_APP_TOKEN_FILE", str(app_token))
    slack = bot_settings(Settings(home=tmp_path), "slack")
    assert isinstance(slack, SlackSettings) and slack.app_token is not None
    assert slack.bot_token.get_secret_value() == "xoxb-from-file"
    assert slack.app_token.get_secret_value() == "xapp-from-file"
    assert "xoxb" not in repr(slack)


async def test_a_stopping_bot_lets_an_answer_being_delivered_finish_and_cuts_the_others_off() -> None:
    # Cut off between showing its answer and recording that it did, an answer stayed owed, and the next start
    # showed it a second time in the thread.
    answering = AnswerTasks()
    recorded: list[str] = []
    release = asyncio.Event()

    async def delivering() -> None:
        answering.delivering()
        await release.wait()  # the platform is slow to confirm the final message
        recorded.append("delivered")

    async def generating() -> None:
        await asyncio.sleep(60)
        recorded.append("generated")

    answering.spawn(delivering())
    answering.spawn(generating())
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(answering.cancel_all())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "the bot waits for the answer being delivered"
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert recorded == ["delivered"]
