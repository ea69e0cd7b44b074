"""A fake Mattermost server on an ephemeral loopback port: REST API v4 and its websocket.

What a bot account sees of a real server:

- REST under `/api/v4` with `Authorization: Bearer <token>`: `users/me`,
  `users/{id}`, `channels/{id}`, `channels/{id}/posts` (newest first by
  `page`/`per_page`, or everything created or edited after `since`, in Unix
  milliseconds), `posts` (create), `posts/{id}` (get, update),
  `posts/{id}/patch`, `posts/{id}/thread`, `users/{id}/typing`; posts longer than 16,383 characters
  are refused with 400, a bad token with 401, and `ratelimit` makes a route
  answer 429 with `X-Ratelimit-Reset`;
- the websocket `/api/v4/websocket`: the client sends
  `{"seq": 1, "action": "authentication_challenge", "data": {"token": …}}`,
  the server answers `{"status": "OK", "seq_reply": 1}` and a `hello` event,
  then broadcasts `posted` events (with `data.post` a JSON string, `mentions`
  a JSON string list, `channel_type` "D" for direct messages) and
  `post_edited` events, each with an increasing `seq`.

A post created or edited to say `@channel`, `@all` or `@here` as the server's mention
parser reads them (a word split at anything but letters, digits and `:.-_@`,
case-insensitive, trailing `.-:_` dropped) is recorded in `channel_wide`: the
server would notify everyone in the channel. Code is not exempted, so the
fake is, if anything, stricter than the server.

Tests make people post with `user_posts`, read `posts`, `edits` and `channel_wide`, drop the
websocket with `drop_connections` (and keep it down with `refuse_connections`,
as during an outage: posts made then reach nobody's websocket) and wait with
`wait_until` (polls, never sleeps).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from . import poll_until, start_on_loopback

POST_LIMIT = 16383
BOT_USER_ID = "botuser0000000000000000001"
TEAM_ID = "team00000000000000000000001"


_SYSTEM_MENTIONS = {"@here", "@channel", "@all"}


def channel_wide_mentions(message: str) -> list[str]:
    """The `@here`/`@channel`/`@all` mentions that would notify a whole channel, as Mattermost's parser finds them."""
    found: list[str] = []
    for word in re.split(r"[^\w:.\-@]+", message):
        word = word.lstrip(":.-_")
        candidates = [word, word.rstrip(".-:_"), *re.split(r"[.\-:]", word)]
        found.extend(sorted({candidate.lower() for candidate in candidates} & _SYSTEM_MENTIONS))
    return found


def _new_id() -> str:
    """A 26-character id like Mattermost's."""
    return uuid.uuid4().hex[:26]


@dataclass
class MattermostPost:
    """A post as the server stores it."""

    id: str
    channel_id: str
    user_id: str
    message: str
    root_id: str = ""
    create_at: int = 0
    update_at: int = 0
    edits: list[float] = field(default_factory=list)
    """Monotonic times of every update or patch."""
    posted_at: float = 0.0

    def wire(self) -> dict[str, Any]:
        """The post as REST and websocket events carry it."""
        return {
            "id": self.id,
            "create_at": self.create_at,
            "update_at": self.update_at,
            "edit_at": self.update_at if self.edits else 0,
            "delete_at": 0,
            "is_pinned": False,
            "user_id": self.user_id,
            "channel_id": self.channel_id,
            "root_id": self.root_id,
            "original_id": "",
            "message": self.message,
            "type": "",
            "props": {},
            "hashtag": "",
            "pending_post_id": "",
            "reply_count": 0,
            "metadata": {},
        }

    @property
    def thread(self) -> str:
        """The root of the thread this post is in (itself when it is a root)."""
        return self.root_id or self.id


class FakeMattermost:
    """One team of a Mattermost server; `async with FakeMattermost() as mm:` then use `mm.url`."""

    def __init__(
        self, bot_token: str = "fake-mattermost-bot-token", bot_username: str = "ingle", port: int = 0
    ) -> None:
        self.bot_token = bot_token
        self.port = port
        """The loopback port to listen on (0: one the OS picks), e.g. one a bot was already failing to reach."""
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.posts: list[MattermostPost] = []
        self.requests: list[tuple[str, str, float, int]] = []
        """(method, path, monotonic time, status) of every REST request."""
        self.typing: list[tuple[str, str, float]] = []
        self.channel_wide: list[tuple[str, str]] = []
        """(post id, mention) for each post created or edited to notify a whole channel (edits are counted too, to be
        strict: whether an edit notifies depends on the server's version)."""
        self.url = ""
        self.connections_made = 0
        self.refuse_connections = False
        """While True the websocket endpoint answers 503, as a server behind a failing proxy would."""
        self.hold_edits = 0
        """The next this many edits are applied (and shown) but never answered: the bot is caught mid-edit."""
        self.held_edits = 0
        """Edits applied and left unanswered so far."""
        self._sockets: list[web.WebSocketResponse] = []
        self._seq: dict[int, int] = {}
        self._limits: dict[str, list[float]] = {}
        self._runner: web.AppRunner | None = None
        self.add_user(BOT_USER_ID, bot_username, is_bot=True)

    async def __aenter__(self) -> FakeMattermost:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/api/v4/websocket", self._websocket)
        app.router.add_get("/api/v4/users/{user_id}", self._get_user)
        app.router.add_post("/api/v4/users/{user_id}/typing", self._post_typing)
        app.router.add_get("/api/v4/channels/{channel_id}", self._get_channel)
        app.router.add_get("/api/v4/channels/{channel_id}/posts", self._get_channel_posts)
        app.router.add_post("/api/v4/posts", self._create_post)
        app.router.add_get("/api/v4/posts/{post_id}", self._get_post)
        app.router.add_get("/api/v4/posts/{post_id}/thread", self._get_thread)
        app.router.add_put("/api/v4/posts/{post_id}", self._update_post)
        app.router.add_put("/api/v4/posts/{post_id}/patch", self._patch_post)
        self._runner, self.url = await start_on_loopback(app, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what tests set up -------------------------------------------------------

    def add_user(self, user_id: str, username: str, is_bot: bool = False) -> None:
        """A user (or the bot) the server knows."""
        self.users[user_id] = {
            "id": user_id,
            "username": username,
            "first_name": username.title(),
            "last_name": "",
            "nickname": "",
            "is_bot": is_bot,
            "timezone": {"useAutomaticTimezone": "false", "manualTimezone": "Europe/Berlin", "automaticTimezone": ""},
        }

    def add_channel(self, channel_id: str, kind: str = "O", name: str | None = None) -> None:
        """A channel: kind "O" public, "P" private, "D" direct, "G" group."""
        self.channels[channel_id] = {
            "id": channel_id,
            "team_id": "" if kind in "DG" else TEAM_ID,
            "type": kind,
            "name": name or channel_id,
            "display_name": name or channel_id,
        }

    def ratelimit(self, route: str, times: int = 1, reset: float = 1.0) -> None:
        """Answer the next `times` requests whose path ends with `route` with 429."""
        self._limits[route] = [reset] * times

    async def drop_connections(self) -> None:
        """Close every websocket, as a server restart or a proxy timeout would."""
        for socket in list(self._sockets):
            await socket.close()

    # --- what tests read ---------------------------------------------------------

    def bot_posts(self, thread: str | None = None, channel_id: str | None = None) -> list[MattermostPost]:
        """Posts the bot made, optionally in one thread or channel, oldest first."""
        return [
            post
            for post in self.posts
            if post.user_id == BOT_USER_ID
            and (thread is None or post.thread == thread)
            and (channel_id is None or post.channel_id == channel_id)
        ]

    def connected(self) -> int:
        """How many authenticated websockets are open now."""
        return sum(1 for socket in self._sockets if not socket.closed)

    async def wait_until(self, condition: Callable[[], Any], timeout: float = 180.0, what: str = "condition") -> Any:
        """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
        return await poll_until(condition, timeout, f"fake Mattermost: {what}")

    # --- people posting ----------------------------------------------------------

    async def user_posts(
        self, user_id: str, channel_id: str, message: str, root_id: str = "", offline: bool = False
    ) -> MattermostPost:
        """A person posts; every connected websocket gets the `posted` event (with `offline`, none is waited for)."""
        if not offline:
            await self.wait_until(self.connected, timeout=30, what="a websocket connection")
        return await self._store_and_broadcast(user_id, channel_id, message, root_id)

    async def _store_and_broadcast(self, user_id: str, channel_id: str, message: str, root_id: str) -> MattermostPost:
        now = int(time.time() * 1000)
        post = MattermostPost(_new_id(), channel_id, user_id, message, root_id, now, now, posted_at=time.monotonic())
        self.posts.append(post)
        self.channel_wide.extend((post.id, mention) for mention in channel_wide_mentions(message))
        channel = self.channels[channel_id]
        mentioned = [
            user["id"]
            for user in self.users.values()
            if re.search(rf"@{re.escape(user['username'])}\b", message) and user["id"] != user_id
        ]
        if channel["type"] == "D":
            mentioned = [uid for uid in channel["id"].split("__") if uid != user_id]
        data: dict[str, Any] = {
            "channel_display_name": channel["display_name"],
            "channel_name": channel["name"],
            "channel_type": channel["type"],
            "post": json.dumps(post.wire()),
            "sender_name": "@" + self.users[user_id]["username"],
            "set_online": True,
            "team_id": channel["team_id"],
        }
        if mentioned:
            data["mentions"] = json.dumps(mentioned)
        await self._broadcast("posted", data, channel_id)
        return post

    async def _broadcast(self, event: str, data: dict[str, Any], channel_id: str) -> None:
        for socket in list(self._sockets):
            if socket.closed:
                continue
            seq = self._seq[id(socket)]
            self._seq[id(socket)] = seq + 1
            broadcast = {"omit_users": None, "user_id": "", "channel_id": channel_id, "team_id": ""}
            await socket.send_str(json.dumps({"event": event, "data": data, "broadcast": broadcast, "seq": seq}))

    # --- websocket ---------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_connections:
            return _error(503, "api.web_socket.connect.upgrade.app_error", "Failed to upgrade the connection.")
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        authenticated = request.headers.get("Authorization") == f"Bearer {self.bot_token}"
        self._seq[id(socket)] = 0
        if authenticated:
            await self._welcome(socket)
        try:
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                action = json.loads(message.data)
                if action.get("action") == "authentication_challenge":
                    if action.get("data", {}).get("token") != self.bot_token:
                        await socket.send_str(
                            json.dumps(
                                {
                                    "status": "FAIL",
                                    "seq_reply": action.get("seq"),
                                    "error": {"id": "api.web_socket_router.not_authenticated.app_error"},
                                }
                            )
                        )
                        await socket.close()
                        break
                    await socket.send_str(json.dumps({"status": "OK", "seq_reply": action.get("seq")}))
                    if not authenticated:
                        authenticated = True
                        await self._welcome(socket)
                elif authenticated:
                    await socket.send_str(json.dumps({"status": "OK", "seq_reply": action.get("seq")}))
        finally:
            if socket in self._sockets:
                self._sockets.remove(socket)
        return socket

    async def _welcome(self, socket: web.WebSocketResponse) -> None:
        self._sockets.append(socket)
        self.connections_made += 1
        broadcast = {"omit_users": None, "user_id": BOT_USER_ID, "channel_id": "", "team_id": ""}
        hello = {"event": "hello", "data": {"server_version": "9.11.0.fake"}, "broadcast": broadcast, "seq": 0}
        self._seq[id(socket)] = 1
        await socket.send_str(json.dumps(hello))

    # --- REST --------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        status = 200
        try:
            if request.path == "/api/v4/websocket":
                return await handler(request)
            for route, pending in self._limits.items():
                if pending and request.path.endswith(route):
                    reset = pending.pop(0)
                    status = 429
                    headers = {
                        "X-Ratelimit-Limit": "10",
                        "X-Ratelimit-Remaining": "0",
                        "X-Ratelimit-Reset": f"{reset:g}",
                    }
                    return _error(429, "api.context.rate_limit.app_error", "Too many requests.", headers)
            if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
                status = 401
                return _error(
                    401, "api.context.session_expired.app_error", "Invalid or expired session, please login again."
                )
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            self.requests.append((request.method, request.path, time.monotonic(), status))

    async def _get_user(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        user = self.users.get(BOT_USER_ID if user_id == "me" else user_id)
        if user is None:
            return _error(404, "app.user.missing_account.const", "Unable to find the user.")
        return web.json_response(user)

    async def _post_typing(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.typing.append((body.get("channel_id", ""), body.get("parent_id", ""), time.monotonic()))
        return web.json_response({"status": "OK"})

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self.channels.get(request.match_info["channel_id"])
        if channel is None:
            return _error(404, "app.channel.get.existing.app_error", "Unable to find the existing channel.")
        return web.json_response(channel)

    async def _get_channel_posts(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        if channel_id not in self.channels:
            return _error(404, "app.channel.get.existing.app_error", "Unable to find the existing channel.")
        posts = [post for post in self.posts if post.channel_id == channel_id]
        if "since" in request.query:
            try:
                since = int(request.query["since"])
            except ValueError:
                return _error(
                    400, "api.context.invalid_url_param.app_error", "Invalid or missing since in request URL."
                )
            # Like the server: every post created or changed after `since`, however many.
            posts = [post for post in posts if post.update_at > since]
        else:
            page, per_page = int(request.query.get("page", 0)), min(int(request.query.get("per_page", 60)), 200)
            posts = list(reversed(posts))[page * per_page : (page + 1) * per_page][::-1]
        return _post_list(posts)

    async def _create_post(self, request: web.Request) -> web.Response:
        body = await request.json()
        message = body.get("message", "")
        if body.get("channel_id") not in self.channels:
            return _error(
                400, "api.context.invalid_body_param.app_error", "Invalid or missing channel_id in request body."
            )
        if len(message) > POST_LIMIT:
            return _error(400, "model.post.is_valid.msg.app_error", "Invalid Message.")
        post = await self._store_and_broadcast(BOT_USER_ID, body["channel_id"], message, body.get("root_id", ""))
        return web.json_response(post.wire(), status=201)

    def _find(self, post_id: str) -> MattermostPost | None:
        return next((post for post in self.posts if post.id == post_id), None)

    async def _get_post(self, request: web.Request) -> web.Response:
        post = self._find(request.match_info["post_id"])
        if post is None:
            return _error(404, "app.post.get.app_error", "Unable to get the post.")
        return web.json_response(post.wire())

    async def _get_thread(self, request: web.Request) -> web.Response:
        root = self._find(request.match_info["post_id"])
        if root is None:
            return _error(404, "app.post.get.app_error", "Unable to get the post.")
        return _post_list([post for post in self.posts if post.thread == root.thread])

    async def _edit(self, post_id: str, message: str | None) -> web.Response:
        post = self._find(post_id)
        if post is None:
            return _error(404, "app.post.get.app_error", "Unable to get the post.")
        if post.user_id != BOT_USER_ID:
            return _error(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.")
        if message is not None:
            if len(message) > POST_LIMIT:
                return _error(400, "model.post.is_valid.msg.app_error", "Invalid Message.")
            post.message = message
            self.channel_wide.extend((post.id, mention) for mention in channel_wide_mentions(message))
        post.update_at = int(time.time() * 1000)
        post.edits.append(time.monotonic())
        await self._broadcast("post_edited", {"post": json.dumps(post.wire())}, post.channel_id)
        if self.hold_edits > 0:
            self.hold_edits -= 1
            self.held_edits += 1
            await asyncio.Event().wait()  # until the client goes away (its handler is cancelled) or the server stops
        return web.json_response(post.wire())

    async def _update_post(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("id") != request.match_info["post_id"]:
            return _error(400, "api.context.invalid_body_param.app_error", "Invalid or missing id in request body.")
        return await self._edit(request.match_info["post_id"], body.get("message", ""))

    async def _patch_post(self, request: web.Request) -> web.Response:
        body = await request.json()
        return await self._edit(request.match_info["post_id"], body.get("message"))


def _post_list(posts: list[MattermostPost]) -> web.Response:
    """Mattermost's PostList of `posts` (given oldest first): `order` newest first, `posts` by id."""
    return web.json_response(
        {
            "order": [post.id for post in reversed(posts)],
            "posts": {post.id: post.wire() for post in posts},
            "next_post_id": "",
            "prev_post_id": "",
            "has_next": False,
        }
    )


def _error(status: int, error_id: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Mattermost's AppError body."""
    body = {"id": error_id, "message": message, "detailed_error": "", "request_id": _new_id(), "status_code": status}
    return web.json_response(body, status=status, headers=headers)
