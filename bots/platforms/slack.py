"""Slack, with slack-bolt (async): convert events in, call the conversation core, convert replies out.

- Socket Mode by default (an outbound websocket: no public URL on-prem); HTTP
  mode serves Slack's Events API on aiohttp, and Bolt checks every request's
  signature (a bad one gets 401 before any listener runs).
- Answers direct messages, mentions, and replies in threads it takes part in;
  one conversation per thread (a top-level message starts a thread).
- Acknowledges an event only once the message is committed to SQLite (Bolt's
  `process_before_response`: the listener returns within milliseconds and
  the answer runs in a task of its own), well inside Slack's 3 seconds.
- Slack redelivers slow events (`retry_attempt` in Socket Mode,
  `X-Slack-Retry-Num` over HTTP) and sends a mention in a channel twice, as
  `message` and `app_mention`; the core's event id here is the message's
  own identity (channel and ts), so each message is answered once, even
  across a restart.
- Streams with Slack's chat streaming methods (chat.startStream /
  appendStream / stopStream, Markdown) where the client and workspace have
  them; otherwise it posts and edits with chat.postMessage / chat.update in
  mrkdwn. Either way at most one edit a second per message, and previews
  across all answers stay within the method's workspace tier (a skipped
  preview is folded into the next); a 429 is waited out (`Retry-After`) by
  slack_sdk's retry handler.
- The assistant panel (Bolt's `AsyncAssistant`): a new assistant thread is
  greeted and offered suggested prompts, its first message titles it, and
  while the model thinks the thread shows a status ("is thinking…") until
  the first words appear. Messages there are answered like any DM.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncAssistant, AsyncSay, AsyncSetSuggestedPrompts, AsyncSetTitle
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from ingle.core.backend import GenerationBackend
from ingle.core.errors import InvalidRequest
from ingle.core.settings import Settings

from ..conversation import ConversationCore, IncomingMessage, PlatformStyle
from ..formatting import as_markdown, split_markdown, to_slack_mrkdwn, utf16_length
from ..settings import SlackSettings
from ..store import ConversationKey, ReplyState
from .bookkeeping import KnownThreads

log = logging.getLogger("ingle.bots.slack")

SLACK_MESSAGE_LIMIT = 12_000
"""Characters of Markdown in one message: the limit of `markdown_text` in Slack's streaming methods."""

SLACK_TEXT_LIMIT = 40_000
"""Characters Slack keeps of a message's `text` (it truncates the rest)."""

SLACK_STYLE = PlatformStyle(
    name="slack",
    message_limit=SLACK_MESSAGE_LIMIT,
    # chat.update is Tier 3: about one edit a second per message stays well inside it.
    edit_interval=1.0,
    # The core hands over Markdown; each reply renders it for the method it calls
    # (the streaming methods take Markdown, chat.postMessage/update take mrkdwn).
    render=as_markdown,
    # Slack does not say what a "character" is; UTF-16 code units are never fewer than code points, so parts
    # measured this way fit whichever of the two it counts.
    measure=utf16_length,
)

EDIT_BUDGETS = {"chat.appendStream": (90.0, 10), "chat.update": (40.0, 10)}
"""Preview edits a minute, and burst, across the workspace: burst plus a minute's worth stays within Slack's
Tier 4 (100/min, chat.appendStream) and Tier 3 (50/min, chat.update) in any minute. Beyond it previews are skipped
(the next one carries the newer text)."""

EVENTS_PATH = "/slack/events"
THINKING = "is thinking…"
TITLE_LIMIT = 80
"""Characters of a user's first message that title an assistant thread."""
RATE_LIMIT_RETRIES = 5
KNOWN_THREADS = 10_000
"""Threads whose bot participation is remembered in memory (the rest are asked of Slack again)."""

# Message subtypes that are a person writing; the rest (edits, joins, bot posts) are ignored.
_PERSON_SUBTYPES = {None, "file_share", "thread_broadcast"}


# --- replies out ---------------------------------------------------------------------


class EditBudget:
    """A token bucket of edits shared by every answer in the workspace.

    Previews take an edit only when one is free; a final edit always goes out
    and may overdraw the bucket, which then holds previews back until it has
    refilled, so over any minute the calls stay near the method's tier.
    """

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self._updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
        self._updated = now

    def preview(self) -> bool:
        """Take an edit for a preview if one is free."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def final(self) -> None:
        """Take an edit for a final answer, free or not."""
        self._refill()
        self.tokens -= 1.0


class SlackReplyPolicy:
    """How replies are written, shared by all of them: whether the chat streaming methods are used (switched
    off for good the first time Slack refuses them) and the workspace-wide budget of preview edits."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.available = hasattr(client, "chat_startStream")
        self.edits = {method: EditBudget(rate, burst) for method, (rate, burst) in EDIT_BUDGETS.items()}

    def may_edit(self, method: str) -> bool:
        """Whether one more preview edit fits the workspace's rate limit now (answers in progress share it)."""
        return self.edits[method].preview()

    def refused(self, error: SlackApiError) -> None:
        """Slack refused chat.startStream: fall back to chat.update from now on."""
        if self.available:
            log.warning("slack refused chat.startStream (%s); streaming by chat.update instead", _code(error))
        self.available = False


@dataclass(frozen=True)
class SlackThread:
    """Where a reply goes: a channel, the thread in it (None: top level) and whom it answers."""

    channel: str
    thread_ts: str | None
    user_id: str | None = None
    team_id: str | None = None

    @property
    def direct(self) -> bool:
        """A direct message channel (ids start with D)."""
        return self.channel.startswith("D")


def mrkdwn_parts(markdown: str) -> list[str]:
    """Markdown as mrkdwn texts that Slack keeps whole (escaping can lengthen a part)."""
    rendered = to_slack_mrkdwn(markdown)
    if utf16_length(rendered) <= SLACK_TEXT_LIMIT:
        return [rendered]
    return split_markdown(markdown, SLACK_TEXT_LIMIT, to_slack_mrkdwn, utf16_length)


class SlackReply:
    """A ReplyStream into one Slack thread: a chat stream where possible, else a message edited in place."""

    def __init__(self, client: AsyncWebClient, thread: SlackThread, policy: SlackReplyPolicy) -> None:
        self._client = client
        self._thread = thread
        self._policy = policy
        self._ts: str | None = None
        self._streaming = False
        """The message is an open chat stream (else a plain message, edited with chat.update)."""
        self._markdown = False
        """Parts are sent as Markdown (after a stream), else as mrkdwn."""
        self._shown = ""
        """The Markdown the message shows now."""
        self._shown_unsure = False
        """The message may show more than `_shown` (a stream a crash left open)."""

    @classmethod
    def from_state(cls, client: AsyncWebClient, policy: SlackReplyPolicy, state: ReplyState) -> SlackReply:
        """The reply `state()` described, going on in the message it had placed (if any)."""
        thread = SlackThread(state["channel"], state.get("thread_ts"), state.get("user_id"), state.get("team_id"))
        reply = cls(client, thread, policy)
        reply._ts = state.get("ts")
        reply._streaming = bool(state.get("streaming"))
        reply._markdown = bool(state.get("markdown"))
        reply._shown = str(state.get("shown", ""))
        # An open stream may show more than was recorded (an append in flight at the crash may have landed), so
        # it is never extended: it is closed and the whole text written with chat.update.
        reply._shown_unsure = reply._streaming
        return reply

    def state(self) -> dict[str, Any]:
        """The thread, and the message placed in it (and whether it is an open stream) once there is one."""
        thread = self._thread
        return {
            "channel": thread.channel,
            "thread_ts": thread.thread_ts,
            "user_id": thread.user_id,
            "team_id": thread.team_id,
            "ts": self._ts,
            "streaming": self._streaming,
            "markdown": self._markdown,
            "shown": self._shown,
        }

    async def begin(self) -> None:
        """Set the assistant thread status; Slack clears it when the answer is posted."""
        if self._streaming:
            # A stream left open by a crash: the answer starts again, so close it and edit the message instead.
            await self._stop_stream()
            self._streaming = self._shown_unsure = False
            self._shown = ""  # whatever it shows, the next edit replaces it whole
        if self._thread.thread_ts is None:
            return
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=self._thread.channel, thread_ts=self._thread.thread_ts, status=THINKING
            )
        except SlackApiError as error:
            # Only assistant threads have a status; elsewhere the answer's first words have to do.
            log.debug("slack assistant status not set: %s", _code(error))

    async def update(self, text: str) -> None:
        """Show the answer so far: start or extend the stream, or post or edit the message."""
        # The core marks a preview cut at the message limit with " …"; a stream only grows, so leave it out.
        text = text.removesuffix(" …") if self._streaming or self._ts is None else text
        try:
            if self._ts is None:
                if not await self._start_stream(text):
                    await self._post_first(text)
            elif self._streaming:
                grows = text.startswith(self._shown) and len(text) > len(self._shown)
                if grows and self._policy.may_edit("chat.appendStream"):
                    await self._client.chat_appendStream(
                        channel=self._thread.channel, ts=self._ts, markdown_text=text[len(self._shown) :]
                    )
                    self._shown = text
                # A preview that no longer extends what is shown is put right by finish().
            elif text != self._shown and self._policy.may_edit("chat.update"):
                await self._client.chat_update(channel=self._thread.channel, ts=self._ts, text=to_slack_mrkdwn(text))
                self._shown = text
        except SlackApiError as error:
            # A preview is not worth failing over (the SDK already waited out 429s); the next one carries newer text.
            log.info("slack preview skipped: %s", _code(error))

    async def finish(self, parts: Sequence[str]) -> None:
        """Close the stream or edit the message to the first part, then post the rest in the thread."""
        first, rest = (parts[0], list(parts[1:])) if parts else ("", [])
        if self._streaming and self._ts is not None:
            extends = first.startswith(self._shown) and not self._shown_unsure
            if not await self._stop_stream(first[len(self._shown) :] if extends else None) or not extends:
                # The stream showed a preview the final text does not extend (or had been closed): replace it.
                await self._client.chat_update(channel=self._thread.channel, ts=self._ts, text=to_slack_mrkdwn(first))
            self._streaming = False
        elif self._ts is not None:
            if first != self._shown:
                # The final edit is never skipped, but it spends the budget so that other previews make room.
                self._policy.edits["chat.update"].final()
                await self._client.chat_update(channel=self._thread.channel, ts=self._ts, text=to_slack_mrkdwn(first))
        elif first:
            await self._post(first)
        for part in rest:
            await self._post(part)

    async def _start_stream(self, text: str) -> bool:
        """Open a chat stream with the first words; False where streaming is not possible here."""
        thread = self._thread
        if not self._policy.available or thread.thread_ts is None:
            return False
        if not thread.direct and thread.user_id is None:
            return False  # in channels Slack streams to one recipient; unprompted posts have none
        try:
            response = await self._client.chat_startStream(
                channel=thread.channel,
                thread_ts=thread.thread_ts,
                markdown_text=text,
                recipient_user_id=thread.user_id,
                recipient_team_id=thread.team_id,
            )
        except SlackApiError as error:
            if error.response.status_code == 429:
                raise
            self._policy.refused(error)
            return False
        self._ts = str(response["ts"])
        self._streaming = self._markdown = True
        self._shown = text
        return True

    async def _stop_stream(self, tail: str | None = None) -> bool:
        """Close the open stream, adding `tail`; False if Slack had closed it already (after a crash, it may)."""
        if self._ts is None:
            return False
        try:
            await self._client.chat_stopStream(channel=self._thread.channel, ts=self._ts, markdown_text=tail or None)
        except SlackApiError as error:
            if error.response.status_code == 429:
                raise
            log.info("slack stream already closed: %s", _code(error))
            return False
        return True

    async def _post_first(self, text: str) -> None:
        response = await self._client.chat_postMessage(
            channel=self._thread.channel, thread_ts=self._thread.thread_ts, text=to_slack_mrkdwn(text)
        )
        self._ts = str(response["ts"])
        self._shown = text

    async def _post(self, markdown: str) -> None:
        """Post one more message into the thread, in the same format as the first."""
        if self._markdown:
            await self._client.chat_postMessage(
                channel=self._thread.channel, thread_ts=self._thread.thread_ts, markdown_text=markdown
            )
            return
        for text in mrkdwn_parts(markdown):
            await self._client.chat_postMessage(
                channel=self._thread.channel, thread_ts=self._thread.thread_ts, text=text
            )


# --- events in -------------------------------------------------------------------------


def clean_text(text: str, bot_user_id: str) -> str:
    """A message's text for the model: the bot's mention removed, Slack's three escapes undone."""
    text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text.strip()


class SlackBot:
    """The Slack bot: a Bolt app (Socket Mode or HTTP) in front of the conversation core. Use `async with`."""

    def __init__(
        self,
        settings: Settings,
        slack: SlackSettings,
        backend: GenerationBackend,
        *,
        message_limit: int = SLACK_MESSAGE_LIMIT,
    ) -> None:
        self.settings = slack
        self.client = _web_client(slack, slack.bot_token.get_secret_value())
        self._authorization: AuthorizeResult | None = None
        """Who the bot is, from the auth.test at start; every event is authorized with it."""

        async def authorize() -> AuthorizeResult:
            # Left to itself Bolt calls auth.test for each event until one call has returned: right after a
            # restart several events arrive at once, their answers return in any order, and so would the messages.
            if self._authorization is None:
                raise RuntimeError("the Slack bot got an event before it started")  # events come only after
            return self._authorization

        http = slack.mode == "http"
        self.app = AsyncApp(
            # Bolt's client carries no token: `authorize` hands each event the bot token with the identity.
            client=_web_client(slack, None),
            authorize=authorize,
            signing_secret=slack.signing_secret.get_secret_value() if slack.signing_secret else "",
            request_verification_enabled=http,
            # The listener only records the message; Slack gets its ack once that is on disk.
            process_before_response=True,
        )
        # The assistant panel first: it takes the messages in DM threads, the rest fall through to `message`.
        assistant = AsyncAssistant()
        assistant.thread_started(self._on_assistant_thread_started)
        assistant.user_message(self._on_assistant_message)
        self.app.assistant(assistant)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.error(self._on_error)
        self.policy = SlackReplyPolicy(self.client)
        self.core = ConversationCore.of(
            settings, slack, replace(SLACK_STYLE, message_limit=message_limit), backend, self.open_reply
        )
        self.bot_user_id = ""
        self._known_threads = KnownThreads(KNOWN_THREADS)
        self._lookups: dict[tuple[str, str], asyncio.Future[bool]] = {}
        """Threads being looked up now, and the answer the messages that came meanwhile wait for."""
        self._socket: AsyncSocketModeHandler | None = None
        self._http: web.AppRunner | None = None

    async def __aenter__(self) -> SlackBot:
        try:
            identity = await self.client.auth_test()
        except SlackApiError as error:
            raise InvalidRequest(
                f"Slack refused the bot token ({_code(error)}); check bot_token in [bots.slack]."
            ) from None
        self.bot_user_id = str(identity["user_id"])
        self._authorization = AuthorizeResult.from_auth_test_response(
            auth_test_response=identity, bot_token=self.settings.bot_token.get_secret_value()
        )
        await self.core.__aenter__()
        try:
            if self.settings.mode == "http":
                await self._start_http()
            else:
                assert self.settings.app_token is not None  # SlackSettings requires it in socket mode
                self._socket = AsyncSocketModeHandler(
                    self.app, self.settings.app_token.get_secret_value(), web_client=self.client
                )
                await self._socket.connect_async()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        log.info("slack bot %s is running (%s mode)", self.bot_user_id, self.settings.mode)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        await self.core.__aexit__(None, None, None)

    async def serve(self) -> None:
        """Run until cancelled (Bolt's socket client reconnects by itself)."""
        await asyncio.Event().wait()

    @property
    def answering(self) -> int:
        """Answers being written right now."""
        return len(self.core.answering)

    @property
    def http_port(self) -> int | None:
        """The port the HTTP-mode receiver listens on, once started."""
        return self._http.addresses[0][1] if self._http and self._http.addresses else None

    def open_reply(self, key: ConversationKey, state: ReplyState | None = None) -> SlackReply:
        """A reply posted into a channel or thread unprompted (scheduled prompts), or one rebuilt from its state."""
        if state:
            return SlackReply.from_state(self.client, self.policy, state)
        return SlackReply(self.client, SlackThread(key.channel, key.thread or None), self.policy)

    # --- HTTP mode ----------------------------------------------------------------------

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_post(EVENTS_PATH, self._on_http)
        self._http = web.AppRunner(app)
        await self._http.setup()
        await web.TCPSite(self._http, self.settings.http_listen, self.settings.http_port).start()

    async def _on_http(self, request: web.Request) -> web.Response:
        """One Events API request: Bolt verifies the signature, dispatches, and answers."""
        response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    # --- listeners ------------------------------------------------------------------------

    async def _on_mention(self, event: dict[str, Any]) -> None:
        """The bot was mentioned in a channel: answer in the message's thread."""
        await self._accept(event)

    async def _on_message(self, event: dict[str, Any]) -> None:
        """A direct message, or a reply in a thread the bot takes part in."""
        if event.get("subtype") not in _PERSON_SUBTYPES or event.get("bot_id") or not event.get("user"):
            return
        if event.get("channel_type") == "im":
            await self._accept(event)
            return
        if f"<@{self.bot_user_id}" in event.get("text", ""):
            return  # the app_mention event for this message answers it
        thread = event.get("thread_ts")
        if thread and thread != event.get("ts") and await self._takes_part(event["channel"], thread):
            await self._accept(event)

    async def _on_assistant_thread_started(
        self, payload: dict[str, Any], say: AsyncSay, set_suggested_prompts: AsyncSetSuggestedPrompts
    ) -> None:
        """A user opened a thread in the assistant panel: greet them and suggest prompts (once per thread)."""
        thread = payload["assistant_thread"]
        if not await self.core.store.mark_seen("slack", f"assistant:{thread['channel_id']}:{thread['thread_ts']}"):
            return
        await say(self.settings.assistant_greeting)
        if self.settings.assistant_prompts:
            await set_suggested_prompts(prompts=self.settings.assistant_prompts)

    async def _on_assistant_message(self, payload: dict[str, Any], set_title: AsyncSetTitle) -> None:
        """A message in a DM thread (the assistant panel's or another): answer it; the thread's first titles it."""
        if payload.get("subtype") not in _PERSON_SUBTYPES or not payload.get("user"):
            return
        await self._accept(payload)
        channel, thread = str(payload["channel"]), str(payload["thread_ts"])
        if await self.core.store.mark_seen("slack", f"title:{channel}:{thread}"):
            text = clean_text(payload.get("text", ""), self.bot_user_id).split("\n", 1)[0]
            title = text if len(text) <= TITLE_LIMIT else text[: TITLE_LIMIT - 1] + "…"
            try:
                await set_title(title or "New chat")
            except SlackApiError as error:
                # Only assistant threads have a title; a plain DM thread does without.
                log.debug("slack assistant title not set: %s", _code(error))

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        """A listener failed before the answer's task started: log it (the user hears nothing twice)."""
        log.error("slack event handling failed: %s", error, exc_info=error)

    async def _accept(self, event: dict[str, Any]) -> None:
        """Record the message with the core (so the ack means it is stored), then answer in a task."""
        if not event.get("user"):
            return
        channel, ts = str(event["channel"]), str(event["ts"])
        thread = str(event.get("thread_ts") or ts)
        self._known_threads.remember((channel, thread), True)
        incoming = IncomingMessage(
            key=ConversationKey("slack", channel, thread),
            user_id=str(event["user"]),
            text=clean_text(event.get("text", ""), self.bot_user_id),
            # The message's identity, not the event's: retries and the message/app_mention pair share it.
            event_id=f"{channel}:{ts}",
        )
        target = SlackThread(channel, thread, str(event["user"]), event.get("team"))
        await self.core.accept(incoming, SlackReply(self.client, target, self.policy))

    async def _takes_part(self, channel: str, thread: str) -> bool:
        """Whether the bot has posted in this thread (remembered, else asked of Slack once).

        Messages that come while the thread is looked up wait for that one lookup and go on in the order they
        came: each asking on its own let a later message's lookup return first, and that message be answered first.
        """
        key = (channel, thread)
        known = self._known_threads.get(key)
        if known is not None:
            return known
        if (pending := self._lookups.get(key)) is not None:
            return await pending
        pending = self._lookups[key] = asyncio.get_running_loop().create_future()
        found = False
        try:
            response = await self.client.conversations_replies(channel=channel, ts=thread, limit=200)
            messages = response.get("messages") or []
            found = any(message.get("user") == self.bot_user_id for message in messages)
            self._known_threads.remember(key, found)
        except SlackApiError as error:
            log.info("slack thread lookup failed: %s", _code(error))
        finally:
            del self._lookups[key]
            pending.set_result(found)
        return found


def _web_client(slack: SlackSettings, token: str | None) -> AsyncWebClient:
    """A Web API client for the configured workspace that waits out rate limits and retries dropped connections."""
    return AsyncWebClient(
        token=token,
        base_url=slack.base_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )


def _code(error: SlackApiError) -> str:
    """Slack's error code from a failed call (or the HTTP status when the body was not Slack's JSON)."""
    data = error.response.data
    return str(data.get("error")) if isinstance(data, dict) else f"HTTP {error.response.status_code}"


async def run_slack(settings: Settings, backend: GenerationBackend, ready: Callable[[], None] | None = None) -> None:
    """Run the `[bots.slack]` bot against `backend` until cancelled; `ready()` once it is connected."""
    async with SlackBot(settings, SlackSettings.from_settings(settings), backend) as running:
        if ready is not None:
            ready()
        await running.serve()
