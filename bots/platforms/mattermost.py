"""Mattermost, the self-hosted chat: its websocket in, the conversation core, its REST API v4 out (aiohttp).

- A bot account's access token authenticates both: `Authorization: Bearer`
  on REST, an `authentication_challenge` on the websocket.
- Events come from `/api/v4/websocket` (`posted`, with the post as a JSON
  string). A dropped connection is reopened with exponential backoff, and
  on every connection the bot asks REST for the posts it missed in each
  channel it has seen (`GET /channels/{id}/posts?since=`, from the newest
  post seen there, at most `resume_within` back); each is answered once.
- Answers direct messages (one conversation per DM, replies in place; a DM
  thread is a conversation of its own), mentions in channels (answered in
  the post's thread, one conversation per thread), and replies in threads it
  takes part in.
- Streams by creating a post with the first words and patching it, at most
  once a second; a 429 is waited out (`X-Ratelimit-Reset`); answers are
  split at Mattermost's 16,383-character post limit. Mattermost renders
  Markdown itself, so the model's Markdown goes out as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from ingle.core.backend import GenerationBackend
from ingle.core.errors import InvalidRequest
from ingle.core.settings import Settings

from ..conversation import ConversationCore, IncomingMessage, PlatformStyle
from ..formatting import as_markdown
from ..settings import MattermostSettings
from ..store import ConversationKey, ReplyState
from .bookkeeping import KnownThreads

log = logging.getLogger("ingle.bots.mattermost")

MATTERMOST_STYLE = PlatformStyle(
    name="mattermost",
    # The server refuses a post's message beyond 16,383 characters.
    message_limit=16383,
    # Mattermost limits each user to about 10 requests a second; one edit a second per post leaves room.
    edit_interval=1.0,
    render=as_markdown,
)

RATE_LIMIT_RETRIES = 5
KNOWN_THREADS = 10_000
HEARTBEAT = 30.0


class MattermostError(Exception):
    """The server answered a REST call with an error (its AppError id and message)."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(f"{status} {error_id}: {message}")
        self.status = status
        self.error_id = error_id


class MattermostApi:
    """The few REST v4 calls the bot makes, on one aiohttp session; 429s are waited out and retried."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self._session = session
        self._base = url.rstrip("/") + "/api/v4"
        self._headers = {"Authorization": f"Bearer {token}"}

    async def me(self) -> dict[str, Any]:
        """The bot's own user."""
        return await self._call("GET", "/users/me")

    async def create_post(self, channel_id: str, message: str, root_id: str = "") -> dict[str, Any]:
        """Post `message` in a channel, in the thread of `root_id` if given."""
        return await self._call("POST", "/posts", {"channel_id": channel_id, "message": message, "root_id": root_id})

    async def patch_post(self, post_id: str, message: str) -> dict[str, Any]:
        """Replace a post's message."""
        return await self._call("PUT", f"/posts/{post_id}/patch", {"message": message})

    async def thread(self, post_id: str) -> dict[str, Any]:
        """The posts of the thread `post_id` belongs to."""
        return await self._call("GET", f"/posts/{post_id}/thread")

    async def channel(self, channel_id: str) -> dict[str, Any]:
        """A channel (its `type` is "D" for a direct message)."""
        return await self._call("GET", f"/channels/{channel_id}")

    async def posts_since(self, channel_id: str, since_ms: int) -> list[dict[str, Any]]:
        """The channel's posts created or changed after `since_ms` (Unix milliseconds), oldest first."""
        found = await self._call("GET", f"/channels/{channel_id}/posts?since={since_ms}")
        posts = list((found.get("posts") or {}).values())
        return sorted(posts, key=lambda post: int(post.get("create_at") or 0))

    async def typing(self, user_id: str, channel_id: str, parent_id: str = "") -> None:
        """Show "… is typing" in a channel or thread for a few seconds."""
        await self._call("POST", f"/users/{user_id}/typing", {"channel_id": channel_id, "parent_id": parent_id})

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            async with self._session.request(method, self._base + path, json=body, headers=self._headers) as response:
                if response.status == 429 and attempt < RATE_LIMIT_RETRIES:
                    wait = _seconds(response.headers.get("Retry-After") or response.headers.get("X-Ratelimit-Reset"))
                    log.info("mattermost rate limit on %s: waiting %.1f s", path, wait)
                    await asyncio.sleep(wait)
                    continue
                data = await response.json(content_type=None)
                if response.status >= 400:
                    data = data if isinstance(data, dict) else {}
                    raise MattermostError(response.status, str(data.get("id", "")), str(data.get("message", "")))
                return data
        raise AssertionError("unreachable: the last attempt returns or raises")


def _seconds(value: str | None) -> float:
    """A wait in seconds from a rate-limit header, at least a little and never absurdly long."""
    try:
        return min(max(float(value or 1), 0.1), 60.0)
    except ValueError:
        return 1.0


class MattermostReply:
    """A ReplyStream into one Mattermost channel or thread: a post created with the first words, then patched."""

    def __init__(self, api: MattermostApi, bot_user_id: str, channel_id: str, root_id: str = "") -> None:
        self._api = api
        self._bot_user_id = bot_user_id
        self._channel_id = channel_id
        self._root_id = root_id
        self._post_id: str | None = None
        self._shown = ""

    @classmethod
    def from_state(cls, api: MattermostApi, bot_user_id: str, state: ReplyState) -> MattermostReply:
        """The reply `state()` described, patching the post it had created (if any)."""
        reply = cls(api, bot_user_id, state["channel_id"], state.get("root_id", ""))
        reply._post_id = state.get("post_id")
        reply._shown = str(state.get("shown", ""))
        return reply

    def state(self) -> dict[str, Any]:
        """The channel and thread, and the answer's post and its text once created."""
        return {
            "channel_id": self._channel_id,
            "root_id": self._root_id,
            "post_id": self._post_id,
            "shown": self._shown,
        }

    async def begin(self) -> None:
        """Show the bot typing until the first words arrive."""
        try:
            await self._api.typing(self._bot_user_id, self._channel_id, self._root_id)
        except MattermostError as error:
            log.debug("mattermost typing indicator not shown: %s", error)

    async def update(self, text: str) -> None:
        """Create the answer's post, or patch it to the newest text."""
        if text == self._shown:
            return
        try:
            if self._post_id is None:
                post = await self._api.create_post(self._channel_id, text, self._root_id)
                self._post_id = str(post["id"])
            else:
                await self._api.patch_post(self._post_id, text)
            self._shown = text
        except MattermostError as error:
            log.info("mattermost preview skipped: %s", error)

    async def finish(self, parts: Sequence[str]) -> None:
        """Patch the post to the first part (or create it), then post the rest in the same thread."""
        first, rest = (parts[0], list(parts[1:])) if parts else ("", [])
        if self._post_id is not None:
            if first != self._shown:
                await self._api.patch_post(self._post_id, first)
        elif first:
            await self._api.create_post(self._channel_id, first, self._root_id)
        for part in rest:
            await self._api.create_post(self._channel_id, part, self._root_id)


def clean_text(text: str, username: str) -> str:
    """A post's text for the model, with the bot's @mention removed."""
    return re.sub(rf"(?<![\w@])@{re.escape(username)}\b", "", text, flags=re.IGNORECASE).strip()


class MattermostBot:
    """The Mattermost bot: a websocket listener and a REST client around the conversation core. Use `async with`."""

    def __init__(
        self,
        settings: Settings,
        mattermost: MattermostSettings,
        backend: GenerationBackend,
        *,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
    ) -> None:
        self.settings = mattermost
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.core = ConversationCore.of(settings, mattermost, MATTERMOST_STYLE, backend, self.open_reply)
        self.bot_user_id = ""
        self.username = ""
        self.connections = 0
        """Websocket sessions authenticated so far (the first plus every reconnect)."""
        self._session: aiohttp.ClientSession | None = None
        self._api: MattermostApi | None = None
        self._listener: asyncio.Task[None] | None = None
        self._known_threads = KnownThreads(KNOWN_THREADS)

    @property
    def api(self) -> MattermostApi:
        """The REST client (once started)."""
        if self._api is None:
            raise RuntimeError("the Mattermost bot is not started")
        return self._api

    async def __aenter__(self) -> MattermostBot:
        self._session = aiohttp.ClientSession()
        self._api = MattermostApi(self._session, self.settings.url, self.settings.token.get_secret_value())
        try:
            me = await self._api.me()
        except MattermostError as error:
            await self._session.close()
            raise InvalidRequest(
                f"Mattermost refused the bot token ({error.status}); check token in [bots.mattermost]."
            ) from None
        except aiohttp.ClientError as error:
            await self._session.close()
            raise InvalidRequest(f"Cannot reach the Mattermost server at {self.settings.url}: {error}.") from None
        self.bot_user_id, self.username = str(me["id"]), str(me["username"])
        await self.core.__aenter__()
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        log.info("mattermost bot @%s is running", self.username)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        await self.core.__aexit__(None, None, None)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def serve(self) -> None:
        """Run until cancelled."""
        assert self._listener is not None
        await self._listener

    def open_reply(self, key: ConversationKey, state: ReplyState | None = None) -> MattermostReply:
        """A reply posted into a channel or thread unprompted (scheduled prompts), or one rebuilt from its state."""
        if state:
            return MattermostReply.from_state(self.api, self.bot_user_id, state)
        return MattermostReply(self.api, self.bot_user_id, key.channel, key.thread)

    # --- the websocket ------------------------------------------------------------------

    async def _listen(self) -> None:
        """Keep a websocket open, reconnecting with exponential backoff; hand each event on."""
        assert self._session is not None
        url = re.sub(r"^http", "ws", self.settings.url.rstrip("/")) + "/api/v4/websocket"
        delay = self.reconnect_delay
        while True:
            try:
                async with self._session.ws_connect(url, heartbeat=HEARTBEAT) as socket:
                    token = self.settings.token.get_secret_value()
                    await socket.send_json({"seq": 1, "action": "authentication_challenge", "data": {"token": token}})
                    async for message in socket:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue
                        event = json.loads(message.data)
                        if event.get("event") == "hello":
                            self.connections += 1
                            delay = self.reconnect_delay
                            # Events that follow wait in the socket until the missed posts are handled.
                            await self._catch_up()
                        elif event.get("status") == "FAIL":
                            log.error("mattermost refused the websocket authentication; check the token")
                        else:
                            await self._on_event(event)
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("mattermost websocket failed: %s", error)
            log.info("mattermost websocket closed; reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay)

    async def _on_event(self, event: dict[str, Any]) -> None:
        """One websocket event; only new posts matter here."""
        if event.get("event") != "posted":
            return
        try:
            data = event["data"]
            post = json.loads(data["post"])
            mentions = json.loads(data.get("mentions") or "[]")
        except (KeyError, TypeError, ValueError) as error:
            log.warning("ignoring a malformed mattermost posted event: %s", error)
            return
        await self._on_post(post, str(data.get("channel_type", "")), self.bot_user_id in mentions)

    async def _catch_up(self) -> None:
        """Handle the posts made while the websocket was down, in each channel the bot has seen a post in."""
        oldest = int((time.time() - self.settings.resume_within) * 1000)
        for channel_id, seen in (await self.core.store.cursors(MATTERMOST_STYLE.name)).items():
            try:
                channel = await self.api.channel(channel_id)
                missed = await self.api.posts_since(channel_id, max(seen, oldest))
            except (MattermostError, aiohttp.ClientError) as error:
                log.warning("could not catch up on mattermost channel %s: %s", channel_id, error)
                continue
            for post in missed:
                if int(post.get("create_at") or 0) > seen:  # `since` also lists posts edited since
                    await self._on_post(post, str(channel.get("type", "")), self._mentioned(post))

    def _mentioned(self, post: dict[str, Any]) -> bool:
        """Whether a post fetched over REST (which lists no mentions) mentions the bot."""
        return clean_text(str(post.get("message", "")), self.username) != str(post.get("message", "")).strip()

    async def _on_post(self, post: dict[str, Any], channel_type: str, mentioned: bool) -> None:
        """A new post, handled, then remembered as the channel's newest seen (so a catch-up starts after it)."""
        try:
            await self._answer_post(post, channel_type, mentioned)
            await self.core.store.advance_cursor(
                MATTERMOST_STYLE.name, str(post["channel_id"]), int(post.get("create_at") or 0)
            )
        except Exception as error:  # one bad post must not close the websocket
            log.error("mattermost post handling failed: %s", error, exc_info=error)

    async def _answer_post(self, post: dict[str, Any], channel_type: str, mentioned: bool) -> None:
        """Answer DMs, mentions and replies in the bot's threads; ignore the rest."""
        channel, root = str(post["channel_id"]), str(post.get("root_id") or "")
        if post.get("user_id") == self.bot_user_id or post.get("type"):
            return  # its own posts, and system messages (joins, header changes)
        if channel_type == "D":
            thread = root
        elif mentioned:
            thread = root or str(post["id"])
        elif root and await self._takes_part(root):
            thread = root
        else:
            return
        if thread:
            self._known_threads.remember(thread, True)
        incoming = IncomingMessage(
            key=ConversationKey("mattermost", channel, thread),
            user_id=str(post["user_id"]),
            text=clean_text(str(post.get("message", "")), self.username),
            event_id=str(post["id"]),
        )
        await self.core.accept(incoming, MattermostReply(self.api, self.bot_user_id, channel, thread))

    async def _takes_part(self, root: str) -> bool:
        """Whether the bot has posted in the thread of `root` (remembered, else asked of the server once)."""
        known = self._known_threads.get(root)
        if known is not None:
            return known
        try:
            thread = await self.api.thread(root)
        except MattermostError as error:
            log.info("mattermost thread lookup failed: %s", error)
            return False
        found = any(post.get("user_id") == self.bot_user_id for post in (thread.get("posts") or {}).values())
        self._known_threads.remember(root, found)
        return found


async def run_mattermost(
    settings: Settings, backend: GenerationBackend, ready: Callable[[], None] | None = None
) -> None:
    """Run the `[bots.mattermost]` bot against `backend` until cancelled; `ready()` once it is connected."""
    async with MattermostBot(settings, MattermostSettings.from_settings(settings), backend) as running:
        if ready is not None:
            ready()
        await running.serve()
