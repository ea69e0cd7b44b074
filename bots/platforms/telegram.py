"""Telegram, with python-telegram-bot v22: convert updates in, call the conversation core, convert replies out.

- Long polling by default (no public URL needed), a webhook when configured
  (the secret token header is checked on every request).
- Answers private chats; in groups only messages that mention the bot, reply
  to it, or name it in a command (`/help@this_bot`).
- The application runs without PTB's Updater (`updater(None)`), inside
  whatever event loop it is given (`ingle serve`'s, or `ingle bot`'s): this
  module fetches updates itself so that each message is committed to SQLite
  *before* the next getUpdates acknowledges it. The answer then runs in a task
  of its own, so one slow answer never holds up other chats.
- Streams into private chats with sendMessageDraft (Bot API 9.3+), elsewhere
  by editing a placeholder, throttled; a flood limit (429 with retry_after)
  is waited out and the edits it held back collapse into one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from aiohttp import web
from telegram import Bot, BotCommand, Chat, Message, MessageEntity, ReplyParameters, Update
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ContextTypes, MessageHandler, filters
from telegram.warnings import PTBDeprecationWarning

from ingle.core.backend import GenerationBackend
from ingle.core.errors import InvalidRequest
from ingle.core.settings import Settings

from ..conversation import ConversationCore, IncomingMessage, PlatformStyle
from ..errors import error_sentence
from ..formatting import to_telegram_html, utf16_length
from ..settings import TelegramSettings
from ..store import ConversationKey, ReplyState

log = logging.getLogger("ingle.bots.telegram")

T = TypeVar("T")

TELEGRAM_STYLE = PlatformStyle(
    name="telegram",
    # 4096 UTF-16 code units after entity parsing (an emoji is two); the rendered HTML is never shorter.
    message_limit=4096,
    measure=utf16_length,
    # Telegram allows about one message a second per chat.
    edit_interval=1.0,
    render=to_telegram_html,
)

# sendMessageDraft arrived in python-telegram-bot 22.6; older 22.x releases stream by edits only.
DRAFTS_AVAILABLE = hasattr(Bot, "send_message_draft")

# Groups allow 20 messages a minute: edits there are spaced further apart.
GROUP_EDIT_INTERVAL = 3.0

# How often one call is retried after a flood limit before giving up.
FLOOD_ATTEMPTS = 5

BOT_COMMANDS = [
    BotCommand("help", "What I can do"),
    BotCommand("reset", "Forget this conversation"),
    BotCommand("model", "Show or switch the model"),
    BotCommand("system", "Show or set my instructions here"),
    BotCommand("schedule", "Post an answer on a schedule"),
    BotCommand("schedules", "List this chat's schedules"),
    BotCommand("unschedule", "Remove a schedule"),
]

# Loggers that may print a request URL, which carries the token (httpx logs every request at INFO).
URL_LOGGERS = (
    "httpx",
    "httpcore",
    "telegram",
    "telegram.Bot",
    "telegram.ext.ExtBot",
    "telegram.ext.Application",
    "ingle.bots.telegram",
)

WEBHOOK_PATH = "/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def retry_seconds(error: RetryAfter) -> float:
    """The wait a flood limit asks for, in seconds (PTB 22 gives an int, with a warning, or a timedelta)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def flood_safe(call: Callable[[], Awaitable[T]], attempts: int = FLOOD_ATTEMPTS) -> T:
    """Run a Bot API call, waiting out flood limits (429 retry_after) between attempts."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except RetryAfter as error:
            wait = retry_seconds(error)
            log.info("telegram flood limit: waiting %.1f s", wait)
            await asyncio.sleep(wait)
    return await call()


class TokenRedactor(logging.Filter):
    """Replaces the bot token in log records, so a URL in a log line never reveals it."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message if it contains the token; never drop a record."""
        message = record.getMessage()
        if self._token in message:
            record.msg = message.replace(self._token, "<telegram-token>")
            record.args = ()
        return True


class TelegramReply:
    """A ReplyStream into one Telegram chat: a draft (private chats) or an edited placeholder message."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
        draft_id: int | None = None,
        min_interval: float = 0.0,
    ) -> None:
        self._bot = bot
        self._chat_id = chat_id
        self._thread_id = thread_id
        self._reply_to = reply_to
        self._draft_id = draft_id
        self._min_interval = min_interval
        self._message_id: int | None = None
        self._shown = ""
        self._next_edit = 0.0

    @classmethod
    def from_state(cls, bot: Bot, state: ReplyState) -> TelegramReply:
        """The reply `state()` described, editing the message it had placed (if any)."""
        reply = cls(
            bot,
            int(state["chat_id"]),
            thread_id=state.get("thread_id"),
            reply_to=state.get("reply_to"),
            draft_id=state.get("draft_id"),
            min_interval=float(state.get("min_interval", 0.0)),
        )
        reply._message_id = state.get("message_id")
        reply._shown = str(state.get("shown", ""))
        return reply

    def state(self) -> dict[str, Any]:
        """The chat, how to reply there, and the placeholder message and its text once sent."""
        return {
            "chat_id": self._chat_id,
            "thread_id": self._thread_id,
            "reply_to": self._reply_to,
            "draft_id": self._draft_id,
            "min_interval": self._min_interval,
            "message_id": self._message_id,
            "shown": self._shown,
        }

    async def begin(self) -> None:
        """Typing indicator, and an empty draft (a 'thinking' bubble) or a placeholder message (unless one exists)."""
        try:
            await self._bot.send_chat_action(self._chat_id, ChatAction.TYPING, message_thread_id=self._thread_id)
        except RetryAfter:
            pass  # only cosmetic
        if self._message_id is not None:
            return  # an answer resumed after a restart goes on in the message already placed
        if (draft_id := self._draft_id) is not None:
            try:
                await flood_safe(lambda: self._bot.send_message_draft(self._chat_id, draft_id, ""))
                return
            except BadRequest as error:
                # A Bot API server without drafts: fall back to editing a placeholder.
                log.info("telegram drafts unavailable (%s); editing a placeholder instead", error)
                self._draft_id = None
        message = await flood_safe(lambda: self._send("…"))
        self._message_id = message.message_id
        self._shown = "…"

    async def update(self, text: str) -> None:
        """Show the partial answer, no more often than the chat allows; a flood limit is waited out, not retried."""
        if time.monotonic() < self._next_edit or text == self._shown:
            return
        try:
            if self._draft_id is not None:
                await self._bot.send_message_draft(
                    self._chat_id, self._draft_id, text, message_thread_id=self._thread_id, parse_mode=ParseMode.HTML
                )
            elif self._message_id is not None:
                await self._bot.edit_message_text(
                    text, chat_id=self._chat_id, message_id=self._message_id, parse_mode=ParseMode.HTML
                )
            else:
                return
            self._shown = text
            self._next_edit = time.monotonic() + self._min_interval
        except RetryAfter as error:
            # Wait here: the core calls again with the newest text afterwards, so the held-back edits coalesce.
            await asyncio.sleep(retry_seconds(error))

    async def finish(self, parts: Sequence[str]) -> None:
        """Replace the placeholder with the first part (or send it), then send the rest; flood limits are waited out."""
        first, rest = (parts[0], list(parts[1:])) if parts else ("…", [])
        if self._message_id is not None:
            if first != self._shown:
                await flood_safe(
                    lambda: self._bot.edit_message_text(
                        first, chat_id=self._chat_id, message_id=self._message_id, parse_mode=ParseMode.HTML
                    )
                )
        else:
            # Drafts are ephemeral previews: the answer itself is a real message.
            await flood_safe(lambda: self._send(first))
        for part in rest:
            await flood_safe(lambda part=part: self._send(part))

    def _send(self, text: str) -> Awaitable[Message]:
        reply = ReplyParameters(self._reply_to, allow_sending_without_reply=True) if self._reply_to else None
        return self._bot.send_message(
            self._chat_id,
            text,
            parse_mode=ParseMode.HTML,
            message_thread_id=self._thread_id,
            reply_parameters=reply,
        )


class TelegramBot:
    """The Telegram bot: a PTB application without Updater, the conversation core, and an update source."""

    def __init__(self, settings: Settings, bot: TelegramSettings, backend: GenerationBackend) -> None:
        self.settings = bot
        # Installed before PTB builds its Bot, which logs its URL (token included) at once; removed on exit.
        self._redactor = TokenRedactor(bot.token.get_secret_value())
        for name in URL_LOGGERS:
            logging.getLogger(name).addFilter(self._redactor)
        self.application = (
            Application.builder()
            .token(bot.token.get_secret_value())
            .base_url(bot.base_url)
            .updater(None)
            # Updates that arrive through update_queue are handled concurrently; those fetched here go
            # through process_update and hand their slow half to a task, which is concurrent as well.
            .concurrent_updates(True)
            .job_queue(None)  # schedules live in the core's persistent scheduler
            .get_updates_read_timeout(bot.poll_timeout + 10)
            .build()
        )
        self.application.add_handler(MessageHandler(filters.TEXT & filters.UpdateType.MESSAGE, self._on_text))
        self.application.add_error_handler(self._on_error)
        self.core = ConversationCore.of(settings, bot, TELEGRAM_STYLE, backend, self.open_reply)
        self._poller: asyncio.Task[None] | None = None
        self._webhook: web.AppRunner | None = None

    @property
    def bot(self) -> Bot:
        """The PTB Bot object (the HTTP client of the Bot API)."""
        return self.application.bot

    async def __aenter__(self) -> TelegramBot:
        try:
            try:
                await self.application.initialize()  # getMe: checks the token
            except InvalidToken:
                raise InvalidRequest("Telegram refused the bot token; check the token in [bots.telegram].") from None
            await self.core.__aenter__()
            await self.application.start()
            await self._announce_commands()
            if self.settings.mode == "webhook":
                await self._start_webhook()
            else:
                await self.bot.delete_webhook()
                self._poller = asyncio.get_running_loop().create_task(self._poll())
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        log.info("telegram bot @%s is running (%s)", self.bot.username, self.settings.mode)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        if self._webhook is not None:
            await self._webhook.cleanup()
            self._webhook = None
        await self.core.__aexit__(None, None, None)
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()
        for name in URL_LOGGERS:
            logging.getLogger(name).removeFilter(self._redactor)

    async def serve(self) -> None:
        """Run until cancelled; if the update source dies, its error ends this too."""
        if self._poller is not None:
            await self._poller
        else:
            await asyncio.Event().wait()

    def open_reply(self, key: ConversationKey, state: ReplyState | None = None) -> TelegramReply:
        """A reply posted into a chat unprompted (scheduled prompts), or one rebuilt from its state."""
        if state:
            return TelegramReply.from_state(self.bot, state)
        chat_id = int(key.channel)
        return TelegramReply(
            self.bot,
            chat_id,
            thread_id=int(key.thread) if key.thread else None,
            min_interval=GROUP_EDIT_INTERVAL if chat_id < 0 else 0.0,
        )

    # --- updates in -----------------------------------------------------------------

    async def _poll(self) -> None:
        """Long-poll getUpdates; each update is recorded before the next call acknowledges it."""
        offset: int | None = None
        backoff = 1.0
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=offset, timeout=int(self.settings.poll_timeout), allowed_updates=[Update.MESSAGE]
                )
            except RetryAfter as error:
                await asyncio.sleep(retry_seconds(error))
                continue
            except (InvalidToken, Forbidden):
                raise
            except NetworkError as error:  # includes TimedOut
                log.warning("telegram getUpdates failed: %s; retrying in %.0f s", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            for update in updates:
                await self.application.process_update(update)
                offset = update.update_id + 1

    async def _start_webhook(self) -> None:
        app = web.Application()
        app.router.add_post(WEBHOOK_PATH, self._on_webhook)
        self._webhook = web.AppRunner(app)
        await self._webhook.setup()
        site = web.TCPSite(self._webhook, self.settings.webhook_listen, self.settings.webhook_port)
        await site.start()
        secret = self.settings.webhook_secret.get_secret_value() if self.settings.webhook_secret else ""
        await self.bot.set_webhook(
            self.settings.webhook_url or "", secret_token=secret, allowed_updates=[Update.MESSAGE]
        )

    @property
    def webhook_port(self) -> int | None:
        """The port the webhook receiver listens on, once started."""
        return self._webhook.addresses[0][1] if self._webhook and self._webhook.addresses else None

    async def _on_webhook(self, request: web.Request) -> web.Response:
        """One update from Telegram; refused unless it carries the secret token."""
        expected = self.settings.webhook_secret.get_secret_value() if self.settings.webhook_secret else ""
        given = request.headers.get(SECRET_HEADER, "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("refused a webhook request without the right secret token from %s", request.remote)
            return web.Response(status=403)
        try:
            update = Update.de_json(await request.json(), self.bot)
        except (ValueError, TypeError, KeyError):
            return web.Response(status=400)
        await self.application.process_update(update)
        return web.Response()  # 200 only now: the message is on disk

    async def _announce_commands(self) -> None:
        try:
            await self.bot.set_my_commands(BOT_COMMANDS)
        except TelegramError as error:  # the menu is a nicety; the bot works without it
            log.warning("could not set the telegram command menu: %s", error)

    # --- handlers ---------------------------------------------------------------------

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A text message: record it if it is addressed to the bot, then answer in a task of its own."""
        message, chat, user = update.effective_message, update.effective_chat, update.effective_user
        if message is None or chat is None or user is None or message.text is None or user.is_bot:
            return
        text = self._addressed_text(message, chat)
        if text is None:
            return
        thread = message.message_thread_id if message.is_topic_message else None
        private = chat.type == ChatType.PRIVATE
        reply = TelegramReply(
            self.bot,
            chat.id,
            thread_id=thread,
            reply_to=None if private else message.message_id,
            draft_id=message.message_id if private and self.settings.use_drafts and DRAFTS_AVAILABLE else None,
            min_interval=0.0 if private else GROUP_EDIT_INTERVAL,
        )
        incoming = IncomingMessage(
            key=ConversationKey("telegram", str(chat.id), str(thread) if thread else ""),
            user_id=str(user.id),
            text=text,
            event_id=f"{chat.id}:{message.message_id}",
        )
        await self.core.accept(incoming, reply)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """PTB's error handler: one sentence to the chat, the details to the log."""
        sentence = error_sentence(context.error or RuntimeError("unknown error"), where="telegram update")
        if isinstance(update, Update) and (chat := update.effective_chat) is not None:
            try:
                await flood_safe(lambda: self.bot.send_message(chat.id, sentence))
            except TelegramError as error:
                log.warning("could not tell the chat about an error: %s", error)

    def _addressed_text(self, message: Message, chat: Chat) -> str | None:
        """The text meant for the bot without its mention, or None if the bot is not addressed."""
        text = message.text or ""
        if chat.type == ChatType.PRIVATE:
            return text
        if chat.type not in (ChatType.GROUP, ChatType.SUPERGROUP):
            return None
        me = self.bot
        handle = f"@{me.username}".lower()
        addressed = (
            message.reply_to_message is not None
            and message.reply_to_message.from_user is not None
            and message.reply_to_message.from_user.id == me.id
        )
        cut: list[tuple[int, int]] = []
        for entity, value in message.parse_entities().items():
            mentioned = (entity.type == MessageEntity.MENTION and value.lower() == handle) or (
                entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == me.id
            )
            named_command = entity.type == MessageEntity.BOT_COMMAND and value.lower().endswith(handle)
            if mentioned:
                addressed = True
                cut.append((entity.offset, entity.offset + entity.length))
            elif named_command:
                addressed = True
        if not addressed:
            return None
        # Entity offsets count UTF-16 code units; parse_entities gave us the text, so cut by that.
        for start, end in sorted(cut, reverse=True):
            text = _cut_utf16(text, start, end)
        return text.strip()


def _cut_utf16(text: str, start: int, end: int) -> str:
    encoded = text.encode("utf-16-le")
    return (encoded[: start * 2] + encoded[end * 2 :]).decode("utf-16-le")


async def run_telegram(settings: Settings, backend: GenerationBackend, ready: Callable[[], None] | None = None) -> None:
    """Run the `[bots.telegram]` bot against `backend` until cancelled; `ready()` once it is connected."""
    async with TelegramBot(settings, TelegramSettings.from_settings(settings), backend) as running:
        if ready is not None:
            ready()
        await running.serve()
