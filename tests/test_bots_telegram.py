"""The Telegram bot: real python-telegram-bot against a fake Bot API server, the real model, real SQLite."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from ingle.bots.formatting import to_telegram_html
from ingle.bots.platforms import PLATFORMS
from ingle.bots.platforms.telegram import TelegramBot
from ingle.bots.settings import TelegramSettings
from ingle.core.backend import GenerationBackend
from ingle.core.engine import Engine
from ingle.core.settings import Settings

from .bot_helpers import (
    BusyBackend,
    RecordingBackend,
    ScriptedBackend,
    bot_process,
    kill_mid_answer_then_restart,
    stop,
    stored_messages,
)
from .conftest import settings_for
from .fakes.telegram_api import MAX_TEXT, FakeTelegram, visible_html
from .test_cli import ingle_executable

DM = 1001  # a private chat with user 1 (chat id = user id in Telegram; any positive id will do)
GROUP = -100200


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    """A fake Bot API server for one test."""
    async with FakeTelegram() as server:
        yield server


def bot_config(home: Path, fake: FakeTelegram, **section: object) -> Settings:
    """Settings with a `[bots.telegram]` section pointing at the fake; short answers, fast edits."""
    values: dict[str, object] = {
        "token": fake.token,
        "base_url": fake.base_url,
        "allowed_users": ["1"],
        "poll_timeout": 1,
        "temperature": 0.0,
        "max_answer_tokens": 32,
        "edit_interval": 0.05,
        "use_drafts": False,
        "min_schedule_interval": 1,
    }
    values.update(section)
    return settings_for(home, bots={"telegram": values})


@asynccontextmanager
async def telegram_bot(settings: Settings, backend: GenerationBackend) -> AsyncIterator[TelegramBot]:
    """The bot, started and stopped around a block."""
    async with TelegramBot(settings, TelegramSettings.from_settings(settings), backend) as bot:
        yield bot


def database(settings: Settings) -> Path:
    return database_in(settings.home)


def database_in(home: Path) -> Path:
    return home / "bots" / "telegram.db"


async def final_answer(fake: FakeTelegram, settings: Settings, chat_id: int, count: int = 1) -> str:
    """Wait for the `count`-th stored answer and for the chat to show it; return its Markdown."""
    answers = await fake.wait_for(
        lambda: (found := stored_messages(database(settings), "assistant")) and len(found) >= count and found
    )
    answer = answers[count - 1][1]
    await fake.wait_for(lambda: to_telegram_html(answer) in fake.sent_texts(chat_id))
    return answer


async def test_dm_round_trip_streams_a_placeholder_then_edits(
    fake: FakeTelegram, engine: Engine, tmp_path: Path
) -> None:
    settings = bot_config(tmp_path, fake)
    async with telegram_bot(settings, engine):
        await fake.inject_message("Count from 1 to 20, separated by commas.", chat_id=DM)
        answer = await final_answer(fake, settings, DM)

    sends = fake.calls_of("sendMessage", DM)
    edits = [call for call in fake.calls_of("editMessageText", DM) if call.status == 200]
    assert sends[0].params["text"] == "…", "the placeholder comes first"
    assert len(sends) == 1, "one answer, one message"
    assert len(edits) >= 2, "the answer streams in through several edits"
    assert all(edit.params["message_id"] == edits[0].params["message_id"] for edit in edits)
    assert edits[-1].params["text"] == to_telegram_html(answer)
    assert "1, 2, 3" in answer
    assert fake.calls_of("sendChatAction", DM), "typing is shown while the model thinks"


async def test_private_chat_streams_with_message_drafts(fake: FakeTelegram, engine: Engine, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake, use_drafts=True)
    async with telegram_bot(settings, engine):
        await fake.inject_message("Count from 1 to 20, separated by commas.", chat_id=DM)
        answer = await final_answer(fake, settings, DM)

    drafts = fake.calls_of("sendMessageDraft", DM)
    assert len(drafts) >= 2 and all(draft.params["draft_id"] == drafts[0].params["draft_id"] for draft in drafts)
    assert [call.params["text"] for call in fake.calls_of("sendMessage", DM)] == [to_telegram_html(answer)]
    assert not fake.calls_of("editMessageText")


async def test_conversation_remembers_across_a_restart(fake: FakeTelegram, engine: Engine, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake, system_prompt="You are a helpful assistant. Answer in one short sentence.")
    backend = RecordingBackend(engine)

    async def run_once(text: str, count: int) -> str:
        # The real entry point, `run_telegram`, as `ingle bot telegram` and `ingle serve` run it.
        ready = len(fake.calls_of("deleteWebhook")) + 1
        task = asyncio.create_task(PLATFORMS["telegram"](settings, backend))
        try:
            await fake.wait_for(lambda: len(fake.calls_of("deleteWebhook")) >= ready)
            await fake.inject_message(text, chat_id=DM)
            return await final_answer(fake, settings, DM, count)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    await run_once("My name is Zed.", 1)
    answer = await run_once("What is my name?", 2)

    sent = [(message.role, message.content) for message in backend.requests[-1].messages]
    assert sent[0][0] == "system"
    assert ("user", "My name is Zed.") in sent, "the first process's message is in the second one's prompt"
    assert sent[-1] == ("user", "What is my name?")
    assert "Zed" in answer


async def test_a_stranger_is_told_once_then_ignored(fake: FakeTelegram, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake, allowed_users=["1"])
    backend = ScriptedBackend(["never used"])
    stranger = 2002
    async with telegram_bot(settings, backend):
        await fake.inject_message("hello?", chat_id=stranger, user_id=stranger)
        await fake.inject_message("anyone there?", chat_id=stranger, user_id=stranger)
        # A later message from a member is handled after both: once it is answered, the stranger's were too.
        await fake.inject_message("/help", chat_id=DM, user_id=1)
        await fake.wait_for(lambda: fake.calls_of("sendMessage", DM))

    told = fake.calls_of("sendMessage", stranger)
    assert len(told) == 1
    assert "only answer people my administrator has allowed" in told[0].params["text"]
    assert "2002" in told[0].params["text"]
    assert backend.requests == []
    assert stored_messages(database(settings)) == [], "nothing a stranger says is stored"


async def test_deny_by_default_answers_nobody(fake: FakeTelegram, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake, allowed_users=[])
    async with telegram_bot(settings, ScriptedBackend(["no"])):
        await fake.inject_message("hello", chat_id=DM, user_id=1)
        told = await fake.wait_for(lambda: fake.calls_of("sendMessage", DM))
    assert "only answer people" in told[0].params["text"]


async def test_a_long_answer_is_split_without_breaking_code_or_html(fake: FakeTelegram, tmp_path: Path) -> None:
    code = "\n".join(f"    if a[{i}] < b and c > d: total &= {i}  # <tag> & co" for i in range(160))
    long_answer = (
        "Here is **the whole thing** & more <b>not a tag</b>:\n\n```python\ndef f(a, b, c, d):\n"
        + code
        + "\n```\n\n"
        + " ".join(["A closing sentence with *emphasis* & <angles>."] * 40)
    )
    pieces = [long_answer[index : index + 200] for index in range(0, len(long_answer), 200)]
    settings = bot_config(tmp_path, fake)
    async with telegram_bot(settings, ScriptedBackend(pieces)):
        await fake.inject_message("Write a long function.", chat_id=DM)
        await fake.wait_for(lambda: stored_messages(database(settings), "assistant"))
        await fake.wait_for(lambda: len(fake.sent_texts(DM)) >= 3 and "angles" in fake.sent_texts(DM)[-1])

    assert all(call.status == 200 for call in fake.calls), "no 'can't parse entities', no 'message is too long'"
    parts = fake.sent_texts(DM)
    shown = [visible_html(part) for part in parts]  # raises if any part is not valid Telegram HTML
    assert all(len(text) <= MAX_TEXT for text in shown)
    code_parts = [part for part in parts if "<pre>" in part]
    assert len(code_parts) >= 2, "the code block itself was cut, between lines"
    assert all(part.count("<pre>") == part.count("</pre>") for part in parts)
    joined = "\n".join(shown)
    for i in range(160):
        assert f"    if a[{i}] < b and c > d: total &= {i}  # <tag> & co" in joined


async def test_a_full_queue_answers_busy_try_again(fake: FakeTelegram, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake)
    async with telegram_bot(settings, BusyBackend()):
        await fake.inject_message("Are you there?", chat_id=DM)
        await fake.wait_for(lambda: any("try again" in text for text in fake.sent_texts(DM)))
    [text] = fake.sent_texts(DM)
    assert "busy" in text and "try again" in text
    assert text.count(".") == 1, "one plain sentence"


async def test_flood_limit_retry_after_is_honoured(fake: FakeTelegram, engine: Engine, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake)
    fake.fail_next("editMessageText", retry_after=1)
    async with telegram_bot(settings, engine):
        await fake.inject_message("Count from 1 to 20, separated by commas.", chat_id=DM)
        answer = await final_answer(fake, settings, DM)

    edits = fake.calls_of("editMessageText", DM)
    refused = [index for index, call in enumerate(edits) if call.status == 429]
    assert len(refused) == 1
    after = edits[refused[0] + 1 :]
    assert after, "the edits went on after the flood limit"
    assert after[0].at - edits[refused[0]].at >= 0.95, "nothing was sent before retry_after passed"
    assert after[-1].params["text"] == to_telegram_html(answer)
    assert all(call.status == 200 for call in after)


async def test_groups_answer_only_when_mentioned(fake: FakeTelegram, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake, allowed_users=[], allowed_channels=[str(GROUP)])
    backend = ScriptedBackend(["Hello ", "team."])
    async with telegram_bot(settings, backend):
        await fake.inject_message("just chatting among ourselves", chat_id=GROUP, user_id=5, chat_type="supergroup")
        mention = await fake.inject_message("say hello", chat_id=GROUP, user_id=5, chat_type="supergroup", mention=True)
        await fake.wait_for(lambda: "Hello team." in fake.sent_texts(GROUP))

    assert [request.messages[-1].content for request in backend.requests] == ["say hello"], "the mention is stripped"
    placeholder = fake.calls_of("sendMessage", GROUP)[0]
    assert placeholder.params["reply_parameters"]["message_id"] == mention["message_id"]
    assert stored_messages(database(settings), "user") == [("user", "say hello")]


async def test_reasoning_is_stripped_everywhere(fake: FakeTelegram, tmp_path: Path) -> None:
    pieces = ["<think>", "The user wants ", "a secret plan.", "</think>", "\n\nThe answer ", "is 4."]
    settings = bot_config(tmp_path, fake, use_drafts=True)
    async with telegram_bot(settings, ScriptedBackend(pieces, delay=0.02)):
        await fake.inject_message("What is 2+2?", chat_id=DM)
        await fake.wait_for(lambda: "The answer is 4." in fake.sent_texts(DM))

    assert all("secret" not in str(call.params.get("text", "")) for call in fake.calls)
    assert stored_messages(database(settings), "assistant") == [("assistant", "The answer is 4.")]


async def test_a_schedule_fires_and_survives_a_restart(fake: FakeTelegram, engine: Engine, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake, timezone="Europe/Berlin")

    def scheduled_posts() -> list[str]:
        # Scheduled answers are posted, not replies: placeholders without reply parameters, then edited.
        placeholders = [
            call.result["message_id"] for call in fake.calls_of("sendMessage", DM) if call.params["text"] == "…"
        ]
        return [
            fake.messages[(DM, message_id)] for message_id in placeholders if fake.messages[(DM, message_id)] != "…"
        ]

    async with telegram_bot(settings, engine):
        await fake.inject_message("/schedule every 3 seconds Say hello in one word.", chat_id=DM)
        confirmation = await fake.wait_for(lambda: [t for t in fake.sent_texts(DM) if "Scheduled" in t])
        schedule_id = confirmation[0].split("<code>")[1].split("</code>")[0]
        await fake.wait_for(lambda: len(scheduled_posts()) >= 1)

    before = len(fake.calls_of("sendMessage", DM))
    async with telegram_bot(settings, engine):
        await fake.wait_for(lambda: len(fake.calls_of("sendMessage", DM)) > before and len(scheduled_posts()) >= 2)
        await fake.inject_message("/schedules", chat_id=DM)
        await fake.wait_for(lambda: any(schedule_id in t and "Say hello" in t for t in fake.sent_texts(DM)[-3:]))
        await fake.inject_message(f"/unschedule {schedule_id}", chat_id=DM)
        await fake.wait_for(lambda: any("Removed schedule" in t for t in fake.sent_texts(DM)))

    assert "Europe/Berlin" in confirmation[0]
    assert all(post.strip() for post in scheduled_posts())


async def test_webhook_requires_the_secret_token(fake: FakeTelegram, tmp_path: Path) -> None:
    settings = bot_config(
        tmp_path,
        fake,
        mode="webhook",
        webhook_url="https://bot.example.com/telegram",
        webhook_secret="s3cret-token",
        webhook_port=0,
    )
    update = {
        "update_id": 77,
        "message": {
            "message_id": 5,
            "date": 0,
            "chat": {"id": DM, "type": "private", "first_name": "U"},
            "from": {"id": 1, "is_bot": False, "first_name": "U"},
            "text": "/help",
            "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
        },
    }
    async with telegram_bot(settings, ScriptedBackend(["unused"])) as bot:
        [registered] = fake.calls_of("setWebhook")
        assert registered.params["secret_token"] == "s3cret-token"
        url = f"http://127.0.0.1:{bot.webhook_port}/telegram"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as response:
                assert response.status == 403
            async with session.post(url, json=update) as response:
                assert response.status == 403
            assert not fake.calls_of("sendMessage")
            headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
            async with session.post(url, json=update, headers=headers) as response:
                assert response.status == 200
        await fake.wait_for(lambda: any("Commands" in text for text in fake.sent_texts(DM)))
    assert not fake.calls_of("getUpdates"), "no polling in webhook mode"


async def test_the_token_never_reaches_the_log(
    fake: FakeTelegram, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = bot_config(tmp_path, fake)
    with caplog.at_level(logging.DEBUG):
        async with telegram_bot(settings, ScriptedBackend(["fine"])):
            await fake.inject_message("/help", chat_id=DM)
            await fake.wait_for(lambda: fake.calls_of("sendMessage", DM))
    messages = [record.getMessage() for record in caplog.records]
    assert any("<telegram-token>" in message for message in messages), "httpx logged the URLs, redacted"
    assert not any(fake.token in message for message in messages)


def bot_process_env(fake: FakeTelegram, tmp_path: Path, home: Path, **extra: str) -> dict[str, str]:
    """Environment for an `ingle` subprocess whose config has a [bots.telegram] section aimed at the fake."""
    config = tmp_path / "ingle.toml"
    config.write_text(f'[bots.telegram]\nbase_url = "{fake.base_url}"\nallowed_users = ["1"]\npoll_timeout = 1\n')
    return {
        **os.environ,
        "INGLE_CONFIG": str(config),
        "INGLE_HOME": str(home),
        "INGLE_TELEGRAM_TOKEN": fake.token,  # secrets from the environment, never a flag
        **extra,
    }


def process_section(fake: FakeTelegram, **section: object) -> dict[str, object]:
    """A `[bots.telegram]` for `ingle bot telegram` in a process of its own, aimed at the fake."""
    return {"token": fake.token, "base_url": fake.base_url, "allowed_users": ["1"], "poll_timeout": 1, **section}


async def test_ingle_bot_telegram_runs_standalone_and_stops_on_sigterm(fake: FakeTelegram, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    async with bot_process("telegram", home, process_section(fake)) as process:
        await fake.wait_for(lambda: fake.calls_of("deleteWebhook"), timeout=60)
        await fake.inject_message("/help", chat_id=DM)
        await fake.wait_for(lambda: any("Commands" in text for text in fake.sent_texts(DM)), timeout=60)
        status = await stop(process)
    output = (home / "telegram.log").read_text()
    assert status == 0, output
    assert fake.token not in output
    assert (home / "bots" / "telegram.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("resume_within", [600, 0.001], ids=["answered-after-restart", "asked-to-repeat"])
async def test_an_answer_cut_by_kill_9_is_finished_once_after_restart(
    fake: FakeTelegram, default_model_home: Path, resume_within: float
) -> None:
    # The answer's first edit is shown but never answered, so the kill lands mid-answer however fast or short
    # the answer would have been (one finished before the kill tests nothing); the rest is kept short.
    section = process_section(
        fake, edit_interval=0.05, use_drafts=False, resume_within=resume_within, max_answer_tokens=48
    )
    fake.hold_next("editMessageText")

    def message() -> str:
        [placeholder] = fake.calls_of("sendMessage", DM)  # one message: a second answer fails here at once
        return fake.messages[(DM, placeholder.result["message_id"])]

    at_kill, answer = await kill_mid_answer_then_restart(
        "telegram",
        default_model_home,
        section,
        ready=lambda: fake.calls_of("deleteWebhook"),
        ask=lambda: fake.inject_message("Count from 1 to 200, one number per line.", chat_id=DM),
        half_shown=lambda: fake.held.get("editMessageText"),
        shown=message,
        render=to_telegram_html,
    )

    assert len(fake.calls_of("sendMessage", DM)) == 1, "no second answer: the one message was finished in place"
    stored = stored_messages(database_in(default_model_home), "assistant")
    if answer is not None:
        assert len(stored) == 1
    else:
        shown = visible_html(message())
        assert shown.startswith(visible_html(at_kill).rstrip(" …")[:10]), "the half answer stays"
        assert "cut off" in shown, "and is marked cut off"
        assert stored == []


@pytest.mark.slow
async def test_ingle_serve_runs_the_configured_bot_and_sigterm_keeps_the_conversation(
    fake: FakeTelegram, default_model_home: Path, tmp_path: Path
) -> None:
    env = bot_process_env(fake, tmp_path, home=default_model_home, INGLE_PORT="0", INGLE_NUM_THREADS="2")
    process = await asyncio.create_subprocess_exec(
        ingle_executable(), "serve", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await fake.wait_for(lambda: fake.calls_of("deleteWebhook"), timeout=60)
        await fake.inject_message("Write a long story about a lighthouse.", chat_id=DM)
        # SIGTERM while the answer streams: the daemon stops cleanly and the question stays stored.
        await fake.wait_for(lambda: fake.calls_of("sendMessage", DM) or fake.calls_of("sendMessageDraft"), timeout=120)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()
    with sqlite3.connect(default_model_home / "bots" / "telegram.db") as db:
        stored = [row[0] for row in db.execute("SELECT content FROM messages WHERE role = 'user'")]
    assert stored == ["Write a long story about a lighthouse."]
