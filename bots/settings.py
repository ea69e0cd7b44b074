"""The `[bots.telegram]`, `[bots.slack]` and `[bots.mattermost]` config sections.

The core settings keep each `[bots.*]` table as raw data (`Settings.bots`);
this module validates them. For each platform, `INGLE_<PLATFORM>_<FIELD>`
environment variables override the file (e.g. `INGLE_TELEGRAM_TOKEN`), which
is where tokens belong if not in a root-only config file. Secrets are
`SecretStr`: they print as `**********`, so they never reach a log. There is
deliberately no command-line flag for any of them (a flag shows in `ps`).

Example:

    [bots.telegram]
    token = "123456:ABC..."
    allowed_users = ["123456789"]
    timezone = "Europe/Berlin"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ingle.core.errors import InvalidRequest
from ingle.core.settings import Settings

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant in a team chat. Answer briefly and clearly; use Markdown for code."


B = TypeVar("B", bound="BotSettings")


class BotSettings(BaseSettings):
    """What every platform's bot shares: who may talk to it, how it answers, its clock."""

    model_config = SettingsConfigDict(extra="forbid")
    platform: ClassVar[str] = ""
    """The `[bots.<platform>]` table this class reads."""
    token_field: ClassVar[str] = "token"
    """The field a credential file given by INGLE_BOT_TOKEN_FILE fills."""

    enabled: bool = True
    """Run this bot inside `ingle serve`."""

    allowed_users: list[str] = Field(default_factory=list)
    """User ids that may talk to the bot anywhere; empty means nobody (deny by default). `"*"` allows everyone."""

    allowed_channels: list[str] = Field(default_factory=list)
    """Channel or chat ids in which everyone may talk to the bot. `"*"` allows every channel."""

    model: str | None = None
    """Model to answer with; default: the engine's `default_model`. `model` switches it per conversation."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """Instructions given to the model; `system` replaces them per conversation."""

    timezone: str = "UTC"
    """IANA time zone that schedules such as "every weekday at 9:00" are read in."""

    context_tokens: int = Field(default=4096, ge=256)
    """Tokens of history plus answer sent to the model; older messages are dropped first to fit."""

    max_answer_tokens: int = Field(default=1024, ge=1)
    """Longest answer, in tokens."""

    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    """Sampling temperature of answers."""

    rate_limit_per_minute: float = Field(default=10.0, gt=0)
    """Messages one user may send per minute (bursts up to `rate_limit_burst`)."""

    rate_limit_burst: int = Field(default=5, ge=1)
    """Messages one user may send at once before the per-minute rate applies."""

    min_schedule_interval: float = Field(default=60.0, gt=0)
    """Shortest interval, in seconds, a schedule may repeat at (a cron expression's closest two runs included)."""

    max_schedules: int = Field(default=10, ge=1, le=1000)
    """Most schedules one channel may hold, and one person may set up; each runs the model when it fires."""

    edit_interval: float | None = Field(default=None, gt=0)
    """Seconds between two edits of a streaming answer; default: the platform's own safe value."""

    resume_within: float = Field(default=600.0, gt=0)
    """Seconds after which an answer a crash interrupted is no longer given after restart; the user is asked to
    repeat instead (a Mattermost bot also catches up on posts missed while offline only this far back)."""

    database: Path | None = None
    """SQLite file for conversations and schedules; default: `<home>/bots/<platform>.db`."""

    knowledge: list[str] = Field(default_factory=list, max_length=8)
    """Knowledge bases (`ingle kb`) the bot answers from, citing numbered sources; none: the model alone."""

    channel_knowledge: dict[str, list[str]] = Field(default_factory=dict)
    """Per channel id, the knowledge bases answers there come from instead of `knowledge` ([] for none)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The config file's table arrives as init values; the environment outranks it, as for the core settings.
        return (env_settings, init_settings)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The configured time zone."""
        return ZoneInfo(self.timezone)

    @classmethod
    def _credential_files(cls) -> dict[str, str]:
        """Tokens from files named by INGLE_BOT_TOKEN_FILE / INGLE_BOT_APP_TOKEN_FILE.

        That is how ingle-bot@.service hands them over: systemd's LoadCredential=
        puts each in $CREDENTIALS_DIRECTORY, readable by this service only, so a
        token is never in the unit, the environment or the command line.
        """
        values: dict[str, str] = {}
        for variable, field in (("INGLE_BOT_TOKEN_FILE", cls.token_field), ("INGLE_BOT_APP_TOKEN_FILE", "app_token")):
            path = os.environ.get(variable)
            if not path or field not in cls.model_fields:
                continue
            try:
                values[field] = Path(path).read_text().strip()
            except OSError as error:
                raise InvalidRequest(
                    f"Cannot read the bot token file named by {variable} ({error.strerror})."
                ) from None
        return values

    @classmethod
    def from_settings(cls: type[B], settings: Settings) -> B:
        """The validated `[bots.<platform>]` section plus `INGLE_<PLATFORM>_*`; one-sentence InvalidRequest if wrong."""
        try:
            return cls(**{**settings.bots.get(cls.platform, {}), **cls._credential_files()})
        except ValidationError as error:
            # Name the field, never echo the value: it may be a secret.
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "section"
            if first["type"] == "missing":
                variable = f"INGLE_{cls.platform.upper()}_{field.upper()}"
                raise InvalidRequest(f"The [bots.{cls.platform}] section needs '{field}' (or {variable}).") from None
            raise InvalidRequest(f"The [bots.{cls.platform}] setting '{field}' is invalid: {first['msg']}.") from None


class TelegramSettings(BotSettings):
    """`[bots.telegram]`; environment: `INGLE_TELEGRAM_*`."""

    model_config = SettingsConfigDict(env_prefix="INGLE_TELEGRAM_", extra="forbid")

    platform: ClassVar[str] = "telegram"
    token_field: ClassVar[str] = "token"

    token: SecretStr
    """The bot token from @BotFather."""

    base_url: str = "https://api.telegram.org/bot"
    """Bot API endpoint; point it at a local Bot API server if you run one."""

    mode: Literal["polling", "webhook"] = "polling"
    """Long polling needs no public URL; a webhook needs `webhook_url` and `webhook_secret`."""

    poll_timeout: float = Field(default=30.0, gt=0)
    """Seconds one getUpdates long poll waits for news."""

    webhook_url: str | None = None
    """Public HTTPS URL Telegram posts updates to (webhook mode)."""

    webhook_listen: str = "127.0.0.1"
    """Address the webhook receiver binds to (put a TLS proxy in front)."""

    webhook_port: int = Field(default=8443, ge=0, le=65535)
    """Port the webhook receiver listens on (0 picks a free one)."""

    webhook_secret: SecretStr | None = None
    """Secret Telegram sends in X-Telegram-Bot-Api-Secret-Token; requests without it are refused."""

    use_drafts: bool = True
    """Stream into private chats with sendMessageDraft instead of editing a placeholder."""

    @model_validator(mode="after")
    def _webhook_complete(self) -> TelegramSettings:
        if self.mode == "webhook" and (not self.webhook_url or self.webhook_secret is None):
            raise ValueError("webhook mode needs webhook_url and webhook_secret")
        return self


class SlackSettings(BotSettings):
    """`[bots.slack]`; environment: `INGLE_SLACK_*`."""

    model_config = SettingsConfigDict(env_prefix="INGLE_SLACK_", extra="forbid")

    platform: ClassVar[str] = "slack"
    token_field: ClassVar[str] = "bot_token"

    bot_token: SecretStr
    """The bot's xoxb- token."""

    app_token: SecretStr | None = None
    """The app-level xapp- token Socket Mode connects with."""

    signing_secret: SecretStr | None = None
    """Verifies request signatures in HTTP mode."""

    mode: Literal["socket", "http"] = "socket"
    """Socket Mode needs no public URL; HTTP mode needs `signing_secret`."""

    base_url: str = "https://slack.com/api/"
    """Web API endpoint."""

    http_listen: str = "127.0.0.1"
    """Address the HTTP-mode receiver binds to."""

    http_port: int = Field(default=3000, ge=0, le=65535)
    """Port the HTTP-mode receiver listens on (0 picks a free one)."""

    assistant_greeting: str = Field(default="Hi! Ask me anything; I run on our own servers.", min_length=1)
    """What the bot says when someone opens a new thread in Slack's assistant panel."""

    assistant_prompts: list[str] = Field(
        default_factory=lambda: ["Explain this error message", "Review a piece of code", "Summarise a text"],
        max_length=4,
    )
    """Suggested prompts offered in a new assistant thread (Slack shows at most four)."""

    @model_validator(mode="after")
    def _mode_complete(self) -> SlackSettings:
        if self.mode == "socket" and self.app_token is None:
            raise ValueError("socket mode needs app_token")
        if self.mode == "http" and self.signing_secret is None:
            raise ValueError("http mode needs signing_secret")
        return self


class MattermostSettings(BotSettings):
    """`[bots.mattermost]`; environment: `INGLE_MATTERMOST_*`."""

    model_config = SettingsConfigDict(env_prefix="INGLE_MATTERMOST_", extra="forbid")

    platform: ClassVar[str] = "mattermost"
    token_field: ClassVar[str] = "token"

    url: str = Field(pattern=r"^https?://[^\s/]+")
    """The Mattermost server, e.g. `https://chat.example.com`."""

    token: SecretStr
    """The bot account's access token."""


PLATFORM_SETTINGS: dict[str, type[BotSettings]] = {
    "telegram": TelegramSettings,
    "slack": SlackSettings,
    "mattermost": MattermostSettings,
}


def bot_settings(settings: Settings, platform: str) -> BotSettings:
    """The validated settings of the bot called `platform`; InvalidRequest in one sentence if unknown or wrong."""
    kind = PLATFORM_SETTINGS.get(platform)
    if kind is None:
        raise InvalidRequest(f"There is no {platform!r} bot; choose one of {', '.join(PLATFORM_SETTINGS)}.")
    return kind.from_settings(settings)


def database_path(settings: Settings, bot: BotSettings, platform: str) -> Path:
    """Where a bot keeps its conversations and schedules."""
    return bot.database or settings.home / "bots" / f"{platform}.db"
