"""Scheduled prompts: "every weekday at 9:00 post the answer to this prompt here".

APScheduler 3.x (python-telegram-bot's JobQueue pins 3.x, so ingle uses it
throughout) with an AsyncIOScheduler on the bot's event loop and a
SQLAlchemyJobStore in the bot's SQLite file, so schedules survive restarts.

A persistent job must name its function by a textual reference, which cannot
point at a live bot. So every stored job names the placeholder
`scheduled_prompt` and carries only plain data (channel, thread, prompt, and
who set it up); `PromptExecutor` runs such jobs by handing that data to the
bot's `fire` callback instead. No module-level registry of bots is needed.

Limits: a cron expression may not fire more often than `min_interval` (its
shortest gap between two runs over the next year is checked, so `* * * * *`
is refused like `every 1 minute`), and a channel, or one person, holds at
most `max_schedules`.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ingle.core.errors import InvalidRequest

from .commands import ScheduleSpec
from .store import ConversationKey

log = logging.getLogger("ingle.bots.schedules")

FireCallback = Callable[["ScheduledPrompt"], Awaitable[None]]
"""Runs a schedule that came due: posts the answer to its prompt into its conversation."""

# A daily 9:00 schedule missed while the bot was down still runs within this many
# seconds of its time; later than that it waits for its next turn.
MISFIRE_GRACE_SECONDS = 3600

# A cron expression's shortest gap is looked for among this many runs, at most a year ahead.
CRON_RUNS_CHECKED = 500
CRON_HORIZON = timedelta(days=366)


async def scheduled_prompt(**job: Any) -> None:
    """The function every stored job names; `PromptExecutor` runs the job instead of calling this."""
    raise RuntimeError("scheduled prompts run through BotScheduler's PromptExecutor")


@dataclass(frozen=True)
class ScheduledPrompt:
    """One schedule, as `/schedules` lists it."""

    id: str
    key: ConversationKey
    prompt: str
    description: str
    next_run: datetime | None
    user: str = ""
    """Who set it up ('' for schedules stored before ingle recorded that)."""


@dataclass
class _RunnableJob:
    """What APScheduler's coroutine runner needs of a job, with the bot's callback as its function."""

    id: str
    func: Callable[..., Awaitable[None]]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    misfire_grace_time: float | None = None

    def __str__(self) -> str:
        return f"scheduled prompt {self.id}"


class PromptExecutor(AsyncIOExecutor):
    """Runs stored prompt jobs on the event loop by calling the bot's `fire` callback with the job's data."""

    def __init__(self, fire: FireCallback) -> None:
        super().__init__()
        self._fire = fire

    async def _run(self, **data: Any) -> None:
        await self._fire(_scheduled(data["schedule_id"], data, None))

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        runnable = _RunnableJob(
            id=job.id,
            func=self._run,
            kwargs={**job.kwargs, "schedule_id": job.id},
            misfire_grace_time=job.misfire_grace_time,
        )
        runnable._jobstore_alias = job._jobstore_alias  # type: ignore[attr-defined]
        super()._do_submit_job(runnable, run_times)


class BotScheduler:
    """A bot's schedules, persisted in `database` and fired on the running event loop."""

    def __init__(
        self, database: Path, zone: ZoneInfo, fire: FireCallback, *, min_interval: float = 0.0, max_schedules: int = 10
    ) -> None:
        self.zone = zone
        self.min_interval = min_interval
        self.max_schedules = max_schedules
        self._scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{database}")},
            executors={"default": PromptExecutor(fire)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS},
            timezone=zone,
        )

    def start(self) -> None:
        """Load the stored schedules and start firing them (call on the running loop)."""
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop firing; the schedules stay stored."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def add(self, key: ConversationKey, spec: ScheduleSpec, prompt: str, user: str = "") -> ScheduledPrompt:
        """Store a new schedule for the conversation at `key`, set up by `user`; InvalidRequest beyond the limits."""
        stored = [job.kwargs for job in self._scheduler.get_jobs()]
        limit = self.max_schedules
        if sum(data.get("platform") == key.platform and data.get("channel") == key.channel for data in stored) >= limit:
            raise InvalidRequest(
                f"This channel already has {limit} schedules, the most allowed; remove one first with `/unschedule ID`."
            )
        if user and sum(data.get("platform") == key.platform and data.get("user") == user for data in stored) >= limit:
            raise InvalidRequest(
                f"You already have {limit} schedules, the most allowed; remove one first with `/unschedule ID`."
            )
        trigger = self._trigger(spec)
        if isinstance(trigger, CronTrigger) and (gap := shortest_gap(trigger, self.zone)) < self.min_interval:
            raise InvalidRequest(
                f"That cron expression runs {gap:g} seconds apart at times; "
                f"schedules may repeat at most every {self.min_interval:g} seconds."
            )
        job = self._scheduler.add_job(
            scheduled_prompt,
            trigger=trigger,
            id=secrets.token_hex(3),
            name=spec.description,
            kwargs={
                "platform": key.platform,
                "channel": key.channel,
                "thread": key.thread,
                "prompt": prompt,
                "description": spec.description,
                "user": user,
            },
        )
        return _listed(job)

    def list(self, key: ConversationKey) -> list[ScheduledPrompt]:
        """The schedules posting into `key`'s channel, soonest first."""
        listed = [
            _listed(job)
            for job in self._scheduler.get_jobs()
            if job.kwargs.get("platform") == key.platform and job.kwargs.get("channel") == key.channel
        ]
        return sorted(
            listed, key=lambda item: (item.next_run is None, item.next_run or datetime.max.replace(tzinfo=self.zone))
        )

    def remove(self, key: ConversationKey, schedule_id: str) -> bool:
        """Remove one of `key`'s channel's schedules; False if it has none of that id."""
        job = self._scheduler.get_job(schedule_id.strip())
        if job is None or job.kwargs.get("platform") != key.platform or job.kwargs.get("channel") != key.channel:
            return False
        self._scheduler.remove_job(job.id)
        return True

    def _trigger(self, spec: ScheduleSpec) -> BaseTrigger:
        if spec.kind == "interval":
            # apscheduler builds a timedelta from it, so fractions of a second are fine despite its int hint.
            return IntervalTrigger(seconds=spec.seconds, timezone=self.zone)  # pyright: ignore[reportArgumentType]
        try:
            return CronTrigger.from_crontab(spec.cron, timezone=self.zone)
        except ValueError as error:
            raise InvalidRequest(f"That cron expression is not valid: {error}.") from None


def shortest_gap(trigger: CronTrigger, zone: ZoneInfo) -> float:
    """Seconds between the two closest consecutive runs of `trigger` in the next year (inf if it runs once or never).

    A cron expression's gaps repeat with its fields, so the closest pair shows up within the first runs:
    `0,1 9 * * *` has its one-minute gap on the first day.
    """
    now = datetime.now(zone)
    previous = trigger.get_next_fire_time(None, now)
    shortest = math.inf
    for _ in range(CRON_RUNS_CHECKED):
        if previous is None:
            break
        following = trigger.get_next_fire_time(previous, previous + timedelta(seconds=1))
        if following is None or following - now > CRON_HORIZON:
            break
        shortest = min(shortest, (following - previous).total_seconds())
        previous = following
    return shortest


def _listed(job: Any) -> ScheduledPrompt:
    return _scheduled(job.id, job.kwargs, job.next_run_time)


def _scheduled(schedule_id: str, data: dict[str, Any], next_run: datetime | None) -> ScheduledPrompt:
    return ScheduledPrompt(
        id=schedule_id,
        key=ConversationKey(data["platform"], data["channel"], data["thread"]),
        prompt=data["prompt"],
        description=data.get("description", ""),
        next_run=next_run,
        user=data.get("user", ""),
    )
