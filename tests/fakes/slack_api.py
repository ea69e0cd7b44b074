"""A fake Slack workspace on an ephemeral loopback port, driven by the real slack-bolt and slack_sdk.

It speaks Slack's own protocols, so nothing in the bot knows it is a fake:

- the Web API at `base_url` (`POST /api/<method>`, Bearer token, JSON or form
  bodies): auth.test, apps.connections.open, chat.postMessage, chat.update,
  chat.startStream / appendStream / stopStream, assistant.threads.setStatus /
  setSuggestedPrompts / setTitle, conversations.replies / history and users.info;
- Socket Mode: apps.connections.open hands out `ws://127.0.0.1:<port>/link`,
  which says `hello` and then delivers `events_api` envelopes that the client
  must ack with their `envelope_id`; an envelope left unacked for
  `redeliver_after` seconds is sent again with `retry_attempt` + 1 and
  `retry_reason: "timeout"`, like Slack does;
- the Events API over HTTP: `deliver_http` POSTs a signed `event_callback`
  to the bot's URL, with `X-Slack-Retry-Num` / `X-Slack-Retry-Reason` on retries.

Tests inject events with `user_says` and `opens_assistant_thread` (the
`assistant_thread_started` event of Slack's assistant panel), read what the bot did in `calls` (every
Web API call with a monotonic timestamp) and `messages` (the channel's state
after posts, edits and streams), `special_mentions` (every `<!here>`, `<!channel>`,
`<!everyone>` or `<!subteam^…>` a bot message held when posted, edited or streamed: Slack
would notify a whole channel or group), make a method answer 429 with `ratelimit` (or late, with `slow_down`),
and wait with `wait_until`, which polls instead of sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from . import ApiCall, poll_until, start_on_loopback

TEAM_ID = "T0FAKE0001"
APP_ID = "A0FAKE0001"
BOT_USER_ID = "U0BOT00001"
BOT_ID = "B0BOT00001"
SPECIAL_MENTION = re.compile(r"<!(here|channel|everyone|subteam\^[^>|]+)(?:\|[^>]*)?>")


@dataclass
class SlackMessage:
    """A message as the workspace shows it now."""

    channel: str
    ts: str
    text: str
    user: str
    thread_ts: str | None = None
    bot: bool = False
    streaming: bool = False
    """True while a chat.startStream message has not been stopped."""
    updates: list[float] = field(default_factory=list)
    """Monotonic times of every edit: chat.update or chat.appendStream."""
    posted_at: float = 0.0
    stopped_at: float | None = None
    """Monotonic time chat.stopStream closed it."""

    @property
    def thread(self) -> str:
        """The thread this message belongs to (its own ts when top-level)."""
        return self.thread_ts or self.ts


@dataclass
class Envelope:
    """A Socket Mode envelope sent to the app, and when (if ever) it was acked."""

    envelope_id: str
    payload: dict[str, Any]
    retry_attempt: int
    sent_at: float
    acked_at: float | None = None


class FakeSlack:
    """A one-workspace Slack; `async with FakeSlack() as slack:` then point the app at `slack.base_url`."""

    def __init__(
        self,
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-fake-app-token",
        signing_secret: str = "fake-signing-secret",
        streaming: bool = True,
        redeliver_after: float | None = None,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.streaming = streaming
        """Whether chat.startStream and friends exist; False answers `unknown_method` like an old workspace."""
        self.redeliver_after = redeliver_after
        """Seconds after which an unacked envelope is sent again (at most 3 retries); None never."""
        self.calls: list[ApiCall] = []
        self.messages: list[SlackMessage] = []
        self.envelopes: list[Envelope] = []
        self.statuses: list[tuple[str, str, str, float]] = []
        """(channel, thread_ts, status, at) of every assistant.threads.setStatus."""
        self.suggested_prompts: dict[tuple[str, str], list[dict[str, str]]] = {}
        """(channel, thread_ts) -> the prompts assistant.threads.setSuggestedPrompts set there last."""
        self.titles: dict[tuple[str, str], str] = {}
        """(channel, thread_ts) -> the assistant thread's title."""
        self.assistant_threads: set[tuple[str, str]] = set()
        """(channel, thread_ts) of the threads opened in the assistant panel."""
        self.users: dict[str, dict[str, Any]] = {}
        self.special_mentions: list[tuple[str, str, str]] = []
        """(channel, ts, mention) for each special mention in a bot message's text after a post, edit or append."""
        self.base_url = ""
        self.url = ""
        self.hold_appends = 0
        """The next this many chat.appendStream calls are applied (and shown) but never answered: the bot is
        caught mid-answer."""
        self.held_appends = 0
        """chat.appendStream calls applied and left unanswered so far."""
        self._limits: dict[str, list[float]] = {}
        self._delays: dict[str, list[float]] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._clock = itertools.count(1)
        self._epoch = int(time.time())
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._web_api)
        app.router.add_get("/api/{method}", self._web_api)  # slack_sdk reads some methods with GET
        app.router.add_get("/link", self._link)
        self._runner, self.url = await start_on_loopback(app)
        self.base_url = f"{self.url}/api/"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        for socket in list(self._sockets):
            await socket.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what tests set up -------------------------------------------------------

    def add_user(self, user_id: str, name: str, tz: str = "Europe/Berlin") -> None:
        """Make users.info know this person."""
        self.users[user_id] = {"id": user_id, "name": name, "real_name": name.title(), "tz": tz, "is_bot": False}

    def slow_down(self, method: str, delays: list[float]) -> None:
        """Answer the next calls of `method` after these delays, one each (a later call may be answered first)."""
        self._delays.setdefault(method, []).extend(delays)

    def ratelimit(self, method: str, times: int = 1, retry_after: float = 1.0) -> None:
        """Answer the next `times` calls of `method` with 429 and `Retry-After`."""
        self._limits[method] = [retry_after] * times

    # --- what tests read ---------------------------------------------------------

    def calls_of(self, *methods: str) -> list[ApiCall]:
        """The successful calls of these methods, in order."""
        return [call for call in self.calls if call.method in methods and call.status == 200]

    def bot_messages(self, channel: str | None = None, thread: str | None = None) -> list[SlackMessage]:
        """Messages the bot posted, optionally in one channel and thread, oldest first."""
        return [
            message
            for message in self.messages
            if message.bot
            and (channel is None or message.channel == channel)
            and (thread is None or message.thread == thread)
        ]

    def finished_replies(self, channel: str, thread: str) -> list[SlackMessage]:
        """The bot's messages in a thread whose streams (if any) are over."""
        return [message for message in self.bot_messages(channel, thread) if not message.streaming]

    def connected(self) -> bool:
        """Whether a Socket Mode client is connected now."""
        return any(not socket.closed for socket in self._sockets)

    def acked(self, envelope_id: str) -> bool:
        """Whether the app acked this envelope."""
        return any(e.envelope_id == envelope_id and e.acked_at is not None for e in self.envelopes)

    async def wait_until(self, condition: Callable[[], Any], timeout: float = 180.0, what: str = "condition") -> Any:
        """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
        return await poll_until(condition, timeout, f"fake Slack: {what}")

    # --- events the workspace sends ---------------------------------------------

    def next_ts(self) -> str:
        """A fresh, increasing Slack timestamp."""
        return f"{self._epoch}.{next(self._clock):06d}"

    def message_event(
        self,
        user: str,
        text: str,
        channel: str,
        channel_type: str = "im",
        thread_ts: str | None = None,
        ts: str | None = None,
    ) -> dict[str, Any]:
        """A `message` event as Slack sends it for a person's message (and records the message)."""
        ts = ts or self.next_ts()
        event: dict[str, Any] = {
            "type": "message",
            "user": user,
            "text": text,
            "ts": ts,
            "channel": channel,
            "channel_type": channel_type,
            "event_ts": ts,
            "team": TEAM_ID,
            "client_msg_id": str(uuid.uuid4()),
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        self.messages.append(
            SlackMessage(channel=channel, ts=ts, text=text, user=user, thread_ts=thread_ts, posted_at=time.monotonic())
        )
        return event

    def mention_event(self, message: dict[str, Any]) -> dict[str, Any]:
        """The `app_mention` event Slack sends alongside a channel message that mentions the bot."""
        event = {key: message[key] for key in ("user", "text", "ts", "channel", "event_ts", "team", "client_msg_id")}
        event["type"] = "app_mention"
        if "thread_ts" in message:
            event["thread_ts"] = message["thread_ts"]
        return event

    def callback(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """The `event_callback` body that wraps an event, as the Events API delivers it."""
        return {
            "token": "fake-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": uuid.uuid4().hex,
        }

    async def user_says(
        self,
        user: str,
        text: str,
        channel: str = "D0DM000001",
        thread_ts: str | None = None,
        channel_type: str | None = None,
    ) -> tuple[str, list[str]]:
        """A person posts; Slack sends the events an app subscribed to message.* and app_mention gets.

        Returns the message's ts and the event_ids sent. In a channel a mention
        produces both a `message` and an `app_mention` event, as on Slack.
        """
        channel_type = channel_type or ("im" if channel.startswith("D") else "channel")
        message = self.message_event(user, text, channel, channel_type, thread_ts)
        callbacks = [self.callback(message)]
        if channel_type != "im" and f"<@{BOT_USER_ID}>" in text:
            callbacks.append(self.callback(self.mention_event(message)))
        for body in callbacks:
            await self.send_envelope(body)
        return message["ts"], [body["event_id"] for body in callbacks]

    async def opens_assistant_thread(self, user: str, channel: str = "D0DM000001") -> str:
        """A person opens a new thread in the app's assistant panel; returns its thread_ts."""
        thread_ts = self.next_ts()
        self.assistant_threads.add((channel, thread_ts))
        event = {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": user,
                "context": {"channel_id": "C0GENERAL1", "team_id": TEAM_ID, "enterprise_id": None},
                "channel_id": channel,
                "thread_ts": thread_ts,
            },
            "event_ts": self.next_ts(),
        }
        await self.send_envelope(self.callback(event))
        return thread_ts

    async def send_envelope(self, payload: dict[str, Any], retry_attempt: int = 0, retry_reason: str = "") -> str:
        """Deliver an `events_api` envelope over the Socket Mode link; returns its envelope_id."""
        await self.wait_until(self.connected, timeout=30, what="a Socket Mode connection")
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        record = Envelope(envelope_id, payload, retry_attempt, time.monotonic())
        self.envelopes.append(record)
        socket = next(socket for socket in self._sockets if not socket.closed)
        await socket.send_str(json.dumps(envelope))
        if self.redeliver_after is not None and retry_attempt < 3:
            self._spawn(self._redeliver_unless_acked(record))
        return envelope_id

    async def _redeliver_unless_acked(self, record: Envelope) -> None:
        assert self.redeliver_after is not None
        await asyncio.sleep(self.redeliver_after)
        if record.acked_at is None:
            await self.send_envelope(record.payload, record.retry_attempt + 1, "timeout")

    def sign(self, body: bytes, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        """The X-Slack-Signature headers for a request body, as Slack computes them."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        base = f"v0:{timestamp}:".encode() + body
        digest = hmac.new((secret or self.signing_secret).encode(), base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}

    async def deliver_http(
        self,
        url: str,
        payload: dict[str, Any],
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        secret: str | None = None,
    ) -> int:
        """POST an event callback to an HTTP-mode app; returns the status it answered."""
        assert self._session is not None
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **self.sign(body, secret=secret)}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        async with self._session.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status

    # --- Socket Mode link --------------------------------------------------------

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.append(socket)
        hello = {
            "type": "hello",
            "num_connections": len(self._sockets),
            "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        }
        await socket.send_str(json.dumps(hello))
        try:
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                envelope_id = json.loads(message.data).get("envelope_id")
                for record in self.envelopes:
                    if record.envelope_id == envelope_id and record.acked_at is None:
                        record.acked_at = time.monotonic()
        finally:
            self._sockets.remove(socket)
        return socket

    # --- Web API -----------------------------------------------------------------

    async def _web_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or args.pop("token", "")
        call = ApiCall(method, args, time.monotonic())
        self.calls.append(call)
        if self._delays.get(method):
            await asyncio.sleep(self._delays[method].pop(0))
        pending = self._limits.get(method)
        if pending:
            retry_after = pending.pop(0)
            call.status = 429
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": f"{retry_after:g}"}
            )
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None or (method.startswith("chat.") and "Stream" in method and not self.streaming):
            return web.json_response({"ok": False, "error": "unknown_method"})
        try:
            result = handler(args)
        except LookupError as error:
            return web.json_response({"ok": False, "error": str(error.args[0])})
        if method == "chat.appendStream" and self.hold_appends > 0:
            self.hold_appends -= 1
            self.held_appends += 1
            await asyncio.Event().wait()  # until the client goes away (its handler is cancelled) or the server stops
        return web.json_response({"ok": True, **result})

    def _find(self, channel: str, ts: str) -> SlackMessage:
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                return message
        raise LookupError("message_not_found")

    def _api_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "ingle",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _api_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"ws{self.url.removeprefix('http')}/link?ticket={uuid.uuid4()}&app_id={APP_ID}"}

    def _post(self, channel: str, text: str, thread_ts: str | None, streaming: bool = False) -> SlackMessage:
        if not channel:
            raise LookupError("channel_not_found")
        if not text:
            raise LookupError("no_text")
        if len(text) > 40000:
            raise LookupError("msg_too_long")
        message = SlackMessage(
            channel=channel,
            ts=self.next_ts(),
            text=text,
            user=BOT_USER_ID,
            thread_ts=thread_ts or None,
            bot=True,
            streaming=streaming,
            posted_at=time.monotonic(),
        )
        self.messages.append(message)
        self._notify_mentions(message)
        return message

    def _notify_mentions(self, message: SlackMessage) -> None:
        """Record the special mentions the message's text holds now (Slack would notify for them)."""
        for mention in SPECIAL_MENTION.findall(message.text):
            self.special_mentions.append((message.channel, message.ts, mention))

    def _api_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._post(args.get("channel", ""), _text(args), args.get("thread_ts"))
        return {"channel": message.channel, "ts": message.ts, "message": _wire(message)}

    def _api_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args.get("channel", ""), args.get("ts", ""))
        text = _text(args)
        if not text:
            raise LookupError("no_text")
        if len(text) > 40000:
            raise LookupError("msg_too_long")
        message.text = text
        message.updates.append(time.monotonic())
        self._notify_mentions(message)
        return {"channel": message.channel, "ts": message.ts, "text": message.text, "message": _wire(message)}

    def _api_chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("thread_ts"):
            raise LookupError("invalid_arguments")
        if not args.get("channel", "").startswith("D") and not args.get("recipient_user_id"):
            raise LookupError("missing_recipient_user_id")
        text = args.get("markdown_text", "")
        if len(text) > 12000:
            raise LookupError("msg_too_long")
        message = self._post(args["channel"], text, args["thread_ts"], streaming=True)
        return {"channel": message.channel, "ts": message.ts}

    def _api_chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args.get("channel", ""), args.get("ts", ""))
        text = args.get("markdown_text", "")
        if not message.streaming:
            raise LookupError("message_not_in_streaming_state")
        if not text or len(text) > 12000:
            raise LookupError("invalid_arguments")
        message.text += text
        message.updates.append(time.monotonic())
        self._notify_mentions(message)
        return {"channel": message.channel, "ts": message.ts}

    def _api_chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args.get("channel", ""), args.get("ts", ""))
        if not message.streaming:
            raise LookupError("message_not_in_streaming_state")
        message.text += args.get("markdown_text", "") or ""
        self._notify_mentions(message)
        message.streaming = False
        message.stopped_at = time.monotonic()
        return {"channel": message.channel, "ts": message.ts, "message": _wire(message)}

    def _api_assistant_threads_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(
            (args.get("channel_id", ""), args.get("thread_ts", ""), args.get("status", ""), time.monotonic())
        )
        return {}

    def _assistant_thread(self, args: dict[str, Any]) -> tuple[str, str]:
        thread = (str(args.get("channel_id", "")), str(args.get("thread_ts", "")))
        if not all(thread):
            raise LookupError("invalid_arguments")
        if thread not in self.assistant_threads:
            raise LookupError("invalid_thread_ts")  # only threads of the assistant panel have prompts and titles
        return thread

    def _api_assistant_threads_setSuggestedPrompts(self, args: dict[str, Any]) -> dict[str, Any]:
        thread = self._assistant_thread(args)
        prompts = args.get("prompts")
        if isinstance(prompts, str):  # a form body carries it as JSON
            prompts = json.loads(prompts)
        if not prompts or len(prompts) > 4 or not all({"title", "message"} <= set(prompt) for prompt in prompts):
            raise LookupError("invalid_arguments")
        self.suggested_prompts[thread] = prompts
        return {}

    def _api_assistant_threads_setTitle(self, args: dict[str, Any]) -> dict[str, Any]:
        thread = self._assistant_thread(args)
        if not args.get("title"):
            raise LookupError("invalid_arguments")
        self.titles[thread] = str(args["title"])
        return {}

    def _api_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        thread = args.get("ts", "")
        found = [_wire(m) for m in self.messages if m.channel == args.get("channel") and m.thread == thread]
        return {"messages": found, "has_more": False}

    def _api_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        found = [_wire(m) for m in self.messages if m.channel == args.get("channel") and m.thread_ts is None]
        return {"messages": list(reversed(found)), "has_more": False}

    def _api_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(args.get("user", ""))
        if user is None:
            raise LookupError("user_not_found")
        return {"user": user}

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _text(args: dict[str, Any]) -> str:
    """A message's text from `text` (mrkdwn) or `markdown_text` (Markdown, at most 12,000 characters)."""
    markdown = args.get("markdown_text")
    if markdown is not None:
        if len(markdown) > 12000:
            raise LookupError("markdown_text_too_long")
        return str(markdown)
    return str(args.get("text", ""))


def _wire(message: SlackMessage) -> dict[str, Any]:
    """A message as the Web API returns it."""
    wire: dict[str, Any] = {"type": "message", "ts": message.ts, "text": message.text, "user": message.user}
    if message.thread_ts:
        wire["thread_ts"] = message.thread_ts
    if message.bot:
        wire["bot_id"] = BOT_ID
    return wire
