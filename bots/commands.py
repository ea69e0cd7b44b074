"""Bot commands: parsing `/help`, `/reset`, `/model`, `/system`, `/schedule`, `/unschedule`, `/schedules`.

Commands start with `/` (or `!`, for platforms such as Slack that take `/`
for their own slash commands); on Telegram a `/cmd@botname` suffix is
dropped. Parsing is pure and raises InvalidRequest with a sentence to show;
running a command is the conversation core's business.

Schedule syntax (`/schedule WHEN PROMPT`), read in the bot's time zone:

    every 30 minutes <prompt>          every 2 hours: <prompt>
    every day at 9:00 <prompt>         every weekday at 9:00 <prompt>
    every monday, friday at 17:30 ...  every weekend at 10am ...
    cron 0 9 * * mon-fri <prompt>      (standard five-field crontab)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ingle.core.errors import InvalidRequest

COMMANDS = ("help", "reset", "model", "system", "schedule", "unschedule", "schedules", "sources")

HELP = """I answer questions with a local model; nothing leaves the building.

Commands:
- `/help` — this text
- `/reset` — forget this conversation
- `/model [name]` — show or switch the model for this conversation
- `/system [text|default]` — show or set this conversation's instructions
- `/schedule WHEN PROMPT` — post the answer to PROMPT here on a schedule, e.g.
  `/schedule every weekday at 9:00 Summarise today's plan`, `/schedule every 30 minutes ...`,
  `/schedule cron 0 9 * * 1-5 ...`
- `/schedules` — list this channel's schedules
- `/unschedule ID` — remove one
- `/sources` — the knowledge base excerpts the last answer used"""


@dataclass(frozen=True)
class Command:
    """A parsed command: its name and the text after it (stripped)."""

    name: str
    argument: str


@dataclass(frozen=True)
class ScheduleSpec:
    """When a schedule fires: cron fields, or a fixed interval in seconds."""

    kind: Literal["cron", "interval"]
    description: str
    """Human-readable, for listings."""
    cron: str = ""
    """Five-field crontab for kind "cron"."""
    seconds: float = 0.0
    """Interval for kind "interval"."""


_COMMAND = re.compile(r"^[/!]([A-Za-z_]+)(?:@\w+)?(?:\s+(.*))?$", re.DOTALL)


def parse_command(text: str) -> Command | None:
    """The command in `text`, or None if it is not one (plain chat, or an unknown /word)."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    name = match.group(1).lower()
    if name == "start":  # Telegram sends /start when a user opens the chat
        name = "help"
    if name not in COMMANDS:
        return None
    return Command(name=name, argument=(match.group(2) or "").strip())


_UNITS = {
    "second": 1,
    "sec": 1,
    "minute": 60,
    "min": 60,
    "hour": 3600,
    "day": 86400,
    "week": 604800,
}
MAX_INTERVAL = 52 * 604800
"""Longest interval `every N UNIT` takes (52 weeks); rarer dates are a cron expression's job."""

_DAYS = {
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}
_DAY_GROUPS = {"day": "*", "weekday": "mon-fri", "weekdays": "mon-fri", "weekend": "sat,sun", "weekends": "sat,sun"}

_INTERVAL = re.compile(
    r"^every\s+(?:(\d+(?:\.\d+)?)\s+)?(second|sec|minute|min|hour|day|week)s?\b[\s:,—-]*(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_DAY_WORD = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*|day|weekdays?|weekends?"
_AT = re.compile(
    rf"^(?:every|on)\s+((?:{_DAY_WORD})(?:\s*(?:,|and)\s*(?:{_DAY_WORD}))*)\s+at\s+"
    r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?\b[\s:,—-]*(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_DAILY = re.compile(r"^daily\s+at\s+(\d{1,2})(?::(\d{2}))?\s*(am|pm)?\b[\s:,—-]*(.*)$", re.IGNORECASE | re.DOTALL)
_CRON_FIELD = r"[0-9A-Za-z*/,\-?]+"
_CRON = re.compile(rf"^(?:cron\s+)?((?:{_CRON_FIELD}\s+){{4}}{_CRON_FIELD})\s+(.*)$", re.DOTALL)


def parse_schedule(argument: str, min_interval: float) -> tuple[ScheduleSpec, str]:
    """Split `/schedule`'s argument into when and what; InvalidRequest with a sentence if it is not understood."""
    text = argument.strip()
    if match := _AT.match(text):
        days = _days(match.group(1))
        hour, minute = _clock(match.group(2), match.group(3), match.group(4))
        described = f"every {match.group(1).lower()} at {hour:02d}:{minute:02d}"
        spec = ScheduleSpec(kind="cron", description=described, cron=f"{minute} {hour} * * {days}")
        return spec, _prompt(match.group(5))
    if match := _INTERVAL.match(text):
        count = float(match.group(1) or 1)
        unit = match.group(2).lower()
        seconds = count * _UNITS[unit]
        if seconds < min_interval:
            raise InvalidRequest(f"Schedules may repeat at most every {min_interval:g} seconds.")
        if seconds > MAX_INTERVAL:
            raise InvalidRequest("Schedules repeat at least every 52 weeks; for a yearly date use `cron`.")
        described = f"every {match.group(1) + ' ' if match.group(1) else ''}{unit}{'s' if count != 1 else ''}"
        return ScheduleSpec(kind="interval", description=described, seconds=seconds), _prompt(match.group(3))
    if match := _DAILY.match(text):
        hour, minute = _clock(match.group(1), match.group(2), match.group(3))
        spec = ScheduleSpec(
            kind="cron", description=f"every day at {hour:02d}:{minute:02d}", cron=f"{minute} {hour} * * *"
        )
        return spec, _prompt(match.group(4))
    if (match := _CRON.match(text)) and (text.lower().startswith("cron") or text[0] in "0123456789*"):
        fields = " ".join(match.group(1).split())
        return ScheduleSpec(kind="cron", description=f"cron {fields}", cron=fields), _prompt(match.group(2))
    raise InvalidRequest(
        "I don't understand when to run that; try `every weekday at 9:00 PROMPT`, "
        "`every 30 minutes PROMPT` or `cron 0 9 * * 1-5 PROMPT`."
    )


def _prompt(text: str) -> str:
    prompt = text.strip()
    if not prompt:
        raise InvalidRequest("Tell me what to post, e.g. `/schedule every weekday at 9:00 Summarise the plan`.")
    return prompt


def _days(text: str) -> str:
    names: list[str] = []
    for word in re.split(r"\s*(?:,|and)\s*", text.lower().strip()):
        if word in _DAY_GROUPS:
            names.append(_DAY_GROUPS[word])
            continue
        day = next((short for full, short in _DAYS.items() if full.startswith(word) and len(word) >= 3), None)
        if day is None:
            raise InvalidRequest(f"I don't know the day {word!r}.")
        names.append(day)
    return "*" if "*" in names else ",".join(names)


def _clock(hour_text: str, minute_text: str | None, meridiem: str | None) -> tuple[int, int]:
    hour, minute = int(hour_text), int(minute_text or 0)
    if meridiem:
        if not 1 <= hour <= 12:
            raise InvalidRequest(f"{hour}{meridiem} is not a time of day.")
        hour = hour % 12 + (12 if meridiem.lower() == "pm" else 0)
    if hour > 23 or minute > 59:
        raise InvalidRequest(f"{hour_text}:{minute_text or '00'} is not a time of day.")
    return hour, minute
