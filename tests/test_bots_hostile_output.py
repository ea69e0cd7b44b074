"""Model output the platforms could refuse or misread: emoji past Telegram's UTF-16 limit, mass mentions, answers
too long for one message or showing nothing. The real client libraries against the fakes, with scripted answers."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from ingle.bots.conversation import NO_ANSWER
from ingle.bots.formatting import (
    ZERO_WIDTH_JOINER,
    Render,
    as_markdown,
    neutralise_mass_mentions,
    split_markdown,
    to_slack_mrkdwn,
    to_telegram_html,
    utf16_length,
)

from .bot_helpers import ScriptedBackend, stored_messages
from .fakes import poll_until
from .fakes.slack_api import FakeSlack
from .fakes.telegram_api import FakeTelegram, visible_html
from .test_bots_mattermost import ALICE as MATTERMOST_ALICE
from .test_bots_mattermost import DM as MATTERMOST_DM
from .test_bots_mattermost import fake_server, mattermost_bot
from .test_bots_slack import ALICE as SLACK_ALICE
from .test_bots_slack import DM as SLACK_DM
from .test_bots_slack import slack_bot
from .test_bots_telegram import DM, bot_config, database, telegram_bot

EMOJI = "😀" * 3000
"""3,000 characters, 6,000 UTF-16 code units: one message by characters, two by Telegram's count."""

HOSTILE = (
    "Heads up @channel and @ALL, also @here. In Slack's words: <!here> <!channel> <!everyone> <!subteam^S0DEVS|devs>."
)


def streamed(answer: str) -> ScriptedBackend:
    """A backend that streams `answer` word by word, slowly enough for previews to show it as it grows."""
    return ScriptedBackend(re.findall(r"\S+\s*", answer), delay=0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    """A fake Bot API server for one test."""
    async with FakeTelegram() as server:
        yield server


def delivered(database_file: Path) -> int:
    """How many answers the bot has delivered (or told the user it could not), read with a connection of its own."""
    if not database_file.exists():
        return 0
    with closing(sqlite3.connect(database_file)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM owed_answers WHERE delivered_at IS NOT NULL").fetchone()[0])
        except sqlite3.OperationalError:  # not migrated yet
            return 0


async def answered(database_file: Path, count: int = 1) -> None:
    """Wait until the bot has delivered `count` answers."""
    await poll_until(lambda: delivered(database_file) >= count, 60, f"{count} answer(s) to be delivered")


# --- limits in the platform's unit ---------------------------------------------------------------


async def test_an_answer_of_emoji_reaches_telegram_whole(fake: FakeTelegram, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake)
    async with telegram_bot(settings, ScriptedBackend([EMOJI[:1500], EMOJI[1500:]])):
        await fake.inject_message("Emoji, please.", chat_id=DM)
        await answered(database(settings))

    refused = [call.result or call.status for call in fake.calls if call.status != 200]
    assert refused == [], "Telegram refused nothing (no 'message is too long')"
    parts = fake.sent_texts(DM)
    assert len(parts) == 2 and all(utf16_length(visible_html(part)) <= 4096 for part in parts)
    assert "".join(parts) == EMOJI, "every emoji arrived, in order, and nothing else"


async def test_an_answer_telegram_refuses_is_not_remembered(fake: FakeTelegram, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake, use_drafts=True)  # drafts preview; the answer itself is one sendMessage
    backend = ScriptedBackend(["The unseen answer."])
    async with telegram_bot(settings, backend):
        fake.refuse_next("sendMessage", "Bad Request: message is too long")
        await fake.inject_message("First question.", chat_id=DM)
        await answered(database(settings))
        await fake.inject_message("Second question.", chat_id=DM)
        await answered(database(settings), 2)

    told, second = fake.sent_texts(DM)
    assert "went wrong" in told and second == "The unseen answer."
    history = [message.content for message in backend.requests[1].messages]
    assert "First question." in history and "The unseen answer." not in history, "the model is not told it was said"
    assert stored_messages(database(settings), "assistant") == [("assistant", "The unseen answer.")], "the second"


# --- answers that show nothing, and long ones -----------------------------------------------------------


async def test_an_answer_that_shows_nothing_replaces_the_placeholder(fake: FakeTelegram, tmp_path: Path) -> None:
    settings = bot_config(tmp_path, fake)  # no drafts: a "…" placeholder is edited
    async with telegram_bot(settings, ScriptedBackend(["[note]: https://example.com/"])):
        await fake.inject_message("Answer with nothing.", chat_id=DM)
        await answered(database(settings))

    assert fake.sent_texts(DM) == [to_telegram_html(NO_ANSWER)], "a sentence, not the placeholder"


def text_of(part: str, render: Render) -> str:
    """What a reader sees of a rendered part, without the fences that frame a piece of code."""
    if render is to_telegram_html:
        return visible_html(part)
    return "\n".join(line for line in part.split("\n") if not line.startswith("```"))


@pytest.mark.parametrize("render", [to_telegram_html, to_slack_mrkdwn, as_markdown])
def test_splitting_cuts_long_words_and_code_lines_without_adding_a_character(render: Render) -> None:
    word = "abcdefghij" * 1000
    code_line = "values = [" + "1,2,3," * 1500 + "]"
    answer = f"Start.\n\n{word} and  the rest\n\n```python\nfirst = 1\n{code_line}\nlast = 2\n```\n\nEnd."
    parts = split_markdown(answer, 4096, render, utf16_length)

    assert len(parts) >= 5 and all(utf16_length(part) <= 4096 for part in parts)
    # Read in order, the parts hold the answer exactly: only whitespace where one message ends and the next begins.
    content = answer.replace("```python\n", "").replace("\n```", "")
    position = 0
    for part in parts:
        shown = text_of(part, render).strip()
        position = len(content) - len(content[position:].lstrip())
        assert content.startswith(shown, position), f"changed at {position}: {shown[:60]!r}"
        position += len(shown)
    assert not content[position:].strip()


# --- mass mentions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("@channel", False),
        ("Ping @Here.", False),
        ("end.@all", False),
        ("<!everyone>", False),
        ("mail me at team@all.example", True),
        ("@alligator and @channels", True),
        ("<!DOCTYPE html>", True),
        ("<@U0ALICE001>", True),
    ],
)
def test_only_mass_mentions_are_neutralised(text: str, kept: bool) -> None:
    neutral = neutralise_mass_mentions(text)
    assert (neutral == text) is kept
    assert neutral.replace(ZERO_WIDTH_JOINER, "") == text, "it reads the same"


async def test_mattermost_never_notifies_a_whole_channel(tmp_path: Path) -> None:
    async with fake_server() as server, mattermost_bot(server, tmp_path, streamed(HOSTILE), edit_interval=0.05):
        await server.user_posts(MATTERMOST_ALICE, MATTERMOST_DM, "Tell everyone.")
        await answered(tmp_path / "mattermost.db")

    assert server.channel_wide == [], "the server would notify nobody"
    (reply,) = server.bot_posts(channel_id=MATTERMOST_DM)
    assert reply.message.replace(ZERO_WIDTH_JOINER, "") == HOSTILE, "the answer reads the same"


@pytest.mark.parametrize("streaming", [True, False], ids=["chat-stream", "mrkdwn"])
async def test_slack_never_notifies_a_whole_channel(tmp_path: Path, streaming: bool) -> None:
    async with (
        FakeSlack(streaming=streaming) as slack,
        slack_bot(slack, tmp_path, streamed(HOSTILE), edit_interval=0.05),
    ):
        ts, _ = await slack.user_says(SLACK_ALICE, "Tell everyone.", channel=SLACK_DM)
        (reply,) = await slack.wait_until(lambda: slack.finished_replies(SLACK_DM, ts), what="the answer")
        await answered(tmp_path / "slack.db")

    assert slack.special_mentions == [], "Slack would notify nobody"
    if streaming:
        assert slack.calls_of("chat.appendStream"), "the answer was streamed"
    shown = reply.text.replace("&lt;", "<").replace("&gt;", ">").replace(ZERO_WIDTH_JOINER, "")
    assert shown == HOSTILE, "the answer reads the same"
