"""Schedule limits hold however a schedule is written, and a schedule stops with its owner's access."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ingle.bots.commands import parse_schedule
from ingle.bots.schedules import BotScheduler, ScheduledPrompt
from ingle.bots.store import ConversationKey
from ingle.core.errors import InvalidRequest

from .bot_helpers import ScriptedBackend
from .fakes.telegram_api import FakeTelegram
from .test_bots_telegram import DM, bot_config, telegram_bot

HOUR = 3600.0


@contextmanager
def scheduler(tmp_path: Path, **limits: float) -> Iterator[BotScheduler]:
    """A started scheduler whose schedules never come due in a test."""

    async def fire(scheduled: ScheduledPrompt) -> None:
        raise AssertionError("not due in this test")

    schedules = BotScheduler(tmp_path / "schedules.db", ZoneInfo("Europe/Berlin"), fire, **limits)  # pyright: ignore[reportArgumentType]
    schedules.start()
    try:
        yield schedules
    finally:
        schedules.shutdown()


@pytest.mark.parametrize("cron", ["* * * * *", "*/5 * * * *", "0,1 9 * * mon-fri", "0,59 0,23 * * *", "0 0-23 * * *"])
async def test_a_cron_expression_cannot_repeat_faster_than_the_minimum(tmp_path: Path, cron: str) -> None:
    spec, prompt = parse_schedule(f"cron {cron} Status", HOUR)
    with scheduler(tmp_path, min_interval=HOUR * 2) as schedules:
        with pytest.raises(InvalidRequest) as refused:
            schedules.add(ConversationKey("telegram", "5"), spec, prompt, "1")
        assert schedules.list(ConversationKey("telegram", "5")) == []
    assert "may repeat at most every 7200 seconds" in refused.value.message


@pytest.mark.parametrize("cron", ["0 9 * * mon-fri", "0 */2 * * *", "30 8 1 * *"])
async def test_a_cron_expression_within_the_minimum_is_accepted(tmp_path: Path, cron: str) -> None:
    spec, prompt = parse_schedule(f"cron {cron} Status", HOUR)
    with scheduler(tmp_path, min_interval=HOUR * 2) as schedules:
        added = schedules.add(ConversationKey("telegram", "5"), spec, prompt, "1")
        assert [item.id for item in schedules.list(ConversationKey("telegram", "5"))] == [added.id]


async def test_schedules_are_capped_per_channel_and_per_person(tmp_path: Path) -> None:
    spec, prompt = parse_schedule("every day at 9:00 Plan", 60)
    with scheduler(tmp_path, max_schedules=2) as schedules:
        for user in ("1", "2"):
            schedules.add(ConversationKey("telegram", "5"), spec, prompt, user)
        with pytest.raises(InvalidRequest) as full_channel:
            schedules.add(ConversationKey("telegram", "5"), spec, prompt, "3")
        schedules.add(ConversationKey("telegram", "6"), spec, prompt, "1")
        with pytest.raises(InvalidRequest) as full_person:
            schedules.add(ConversationKey("telegram", "7"), spec, prompt, "1")
        assert len(schedules.list(ConversationKey("telegram", "7"))) == 0
    assert "This channel already has 2 schedules" in full_channel.value.message
    assert "You already have 2 schedules" in full_person.value.message


@pytest.mark.parametrize(
    "text", ["every 99999999999 weeks Digest", "every 53 weeks Digest", "every " + "9" * 400 + " days x"]
)
def test_an_absurd_interval_is_one_sentence(text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_schedule(text, 60)
    assert refused.value.message == "Schedules repeat at least every 52 weeks; for a yearly date use `cron`."


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    """A fake Bot API server for one test."""
    async with FakeTelegram() as server:
        yield server


async def test_a_schedule_stops_when_its_owner_loses_access(fake: FakeTelegram, tmp_path: Path) -> None:
    async with telegram_bot(bot_config(tmp_path, fake, allowed_users=["1"]), ScriptedBackend(["Hello."])):
        await fake.inject_message("/schedule every 2 seconds Greet me", chat_id=DM, user_id=1)
        await fake.wait_for(lambda: any("Scheduled <code>" in text for text in fake.sent_texts(DM)))
    [listed] = [text for text in fake.sent_texts(DM) if "Scheduled <code>" in text]
    schedule_id = listed.split("<code>")[1].split("</code>")[0]

    # The administrator removes user 1 from allowed_users; the stored schedule comes due while the bot runs.
    backend = ScriptedBackend(["Hello."])
    async with telegram_bot(bot_config(tmp_path, fake, allowed_users=["2"]), backend) as bot:
        await fake.wait_for(lambda: any("I removed the schedule" in text for text in fake.sent_texts(DM)), timeout=30)
        assert bot.core.schedules.list(ConversationKey("telegram", str(DM))) == []

    assert backend.requests == [], "the model never ran for a person no longer allowed"
    [told] = [text for text in fake.sent_texts(DM) if "I removed the schedule" in text]
    assert schedule_id in told and "may no longer use me" in told
