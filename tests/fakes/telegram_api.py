"""A fake Telegram Bot API server on an ephemeral loopback port, speaking the real HTTP protocol.

python-telegram-bot is pointed at it with `base_url=fake.base_url`. It serves
getMe, getUpdates (long polling, offsets acknowledge), sendMessage,
editMessageText, sendMessageDraft, sendChatAction, deleteWebhook, setWebhook
and setMyCommands. Like the real server it refuses HTML it cannot parse
("can't parse entities"), texts over 4096 UTF-16 code units as Telegram counts them, so an emoji is two
("message is too long")
and edits that change nothing ("message is not modified"), so those bugs
surface in tests. Tests inject updates with `inject_message`, make a method
answer 429 with `fail_next` (or 400 with `refuse_next`), read `calls`, and wait with `wait_for` (which
wakes on every call; bounded by a timeout, never a sleep).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import ApiCall, start_on_loopback

MAX_TEXT = 4096
ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-spoiler",
    "span",
}
_HTML_TOKEN = re.compile(r"<(/?)([a-zA-Z-]+)((?:\s+[^<>]*)?)>|&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);|[<>&]")


class HtmlError(ValueError):
    """Text Telegram's HTML parser would refuse."""


def visible_html(text: str) -> str:
    """The text Telegram would show for `text` with parse_mode=HTML; HtmlError where Telegram would refuse it."""
    stack: list[str] = []
    out: list[str] = []
    position = 0
    for match in _HTML_TOKEN.finditer(text):
        out.append(text[position : match.start()])
        position = match.end()
        token = match.group(0)
        if match.group(2) is not None:
            name = match.group(2).lower()
            if name not in ALLOWED_TAGS:
                raise HtmlError(f'Unsupported start tag "{name}" at byte offset {match.start()}')
            if match.group(1):
                if not stack or stack[-1] != name:
                    raise HtmlError(f"Unexpected end tag at byte offset {match.start()}")
                stack.pop()
            else:
                stack.append(name)
        elif token in "<>&":
            raise HtmlError(f"Unexpected {token!r} at byte offset {match.start()}")
        else:
            out.append(html.unescape(token))
    out.append(text[position:])
    if stack:
        raise HtmlError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


@dataclass
class FakeTelegram:
    """Configure, then `async with` it; `base_url` goes to PTB's `base_url` once started."""

    token: str = "123456:TEST-TOKEN"
    bot_id: int = 123456
    username: str = "ingle_test_bot"
    calls: list[ApiCall] = field(default_factory=list)
    messages: dict[tuple[int, int], str] = field(default_factory=dict)
    """(chat id, message id) -> current text of every message the bot sent."""
    url: str = ""
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _next_update: int = 1
    _next_message: int = 1000
    _failures: dict[str, list[int]] = field(default_factory=dict)
    _conflicts: dict[str, int] = field(default_factory=dict)
    _refusals: dict[str, list[str]] = field(default_factory=dict)
    _holds: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    """Per method, the calls applied and then left unanswered (see `hold_next`)."""
    _changed: asyncio.Condition | None = None
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """What PTB's `base_url` should be (it appends the token)."""
        return f"{self.url}/bot"

    async def __aenter__(self) -> FakeTelegram:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._dispatch)
        # No access log: its request lines carry the token, and it is the fake's log, not the bot's.
        self._runner, self.url = await start_on_loopback(app, access_log=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- test controls ----------------------------------------------------------------

    def bot_user(self) -> dict[str, Any]:
        """The bot's own User object."""
        return {"id": self.bot_id, "is_bot": True, "first_name": "Ingle", "username": self.username}

    async def inject_message(
        self,
        text: str,
        *,
        chat_id: int = 1001,
        user_id: int = 1,
        chat_type: str = "private",
        mention: bool = False,
        reply_to_bot: bool = False,
    ) -> dict[str, Any]:
        """Queue an update with a text message from a user; with `mention`, '@<bot> ' is prefixed as an entity."""
        entities: list[dict[str, Any]] = []
        if mention:
            handle = f"@{self.username}"
            text = f"{handle} {text}"
            entities.append({"type": "mention", "offset": 0, "length": len(handle)})
        if text.startswith("/"):
            command = text.split()[0]
            entities.append({"type": "bot_command", "offset": 0, "length": len(command.encode("utf-16-le")) // 2})
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = f"User{user_id}"
        else:
            chat["title"] = "Team"
        self._next_message += 1
        message: dict[str, Any] = {
            "message_id": self._next_message,
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"},
            "text": text,
        }
        if entities:
            message["entities"] = entities
        if reply_to_bot:
            message["reply_to_message"] = {
                "message_id": 1,
                "date": int(time.time()),
                "chat": chat,
                "from": self.bot_user(),
                "text": "earlier answer",
            }
        update = {"update_id": self._next_update, "message": message}
        self._next_update += 1
        self._updates.append(update)
        await self._notify()
        return message

    def fail_next(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with 429 Too Many Requests and this retry_after."""
        self._failures.setdefault(method, []).extend([retry_after] * times)

    def refuse_next(self, method: str, description: str = "Bad Request: chat not found") -> None:
        """Answer the next call of `method` with 400 and this description, as Telegram refuses a request."""
        self._refusals.setdefault(method, []).append(description)

    def hold_next(self, method: str) -> None:
        """Apply the next call of `method` (its effect is shown) but never answer it: the bot is caught mid-call."""
        self._holds[method] = self._holds.get(method, 0) + 1

    def conflict_next(self, method: str, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with 409 Conflict, as Telegram answers getUpdates while another
        poll of the same bot is still open (right after a restart)."""
        self._conflicts[method] = self._conflicts.get(method, 0) + times

    def calls_of(self, method: str, chat_id: int | None = None) -> list[ApiCall]:
        """The recorded calls of one method (to one chat)."""
        return [
            call
            for call in self.calls
            if call.method == method and (chat_id is None or call.params.get("chat_id") == chat_id)
        ]

    def sent_texts(self, chat_id: int) -> list[str]:
        """Current texts of the messages the bot sent to a chat, in order."""
        return [text for (chat, _), text in sorted(self.messages.items()) if chat == chat_id]

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 120.0) -> Any:
        """Wait until `condition()` is truthy (re-checked after every call to the fake); return its value."""
        assert self._changed is not None
        async with asyncio.timeout(timeout):
            async with self._changed:
                while not (value := condition()):
                    await self._changed.wait()
                return value

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # --- the protocol -----------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await _params(request)
        call = ApiCall(method=method, params=params, at=time.monotonic())
        self.calls.append(call)
        try:
            if self._conflicts.get(method):
                self._conflicts[method] -= 1
                call.status = 409
                return _error(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                )
            queued = self._failures.get(method)
            if queued:
                retry_after = queued.pop(0)
                call.status = 429
                return _error(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})
            if refused := self._refusals.get(method):
                call.status = 400
                return _error(400, refused.pop(0))
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                call.status = 404
                return _error(404, "Not Found")
            try:
                call.result = result = await handler(params)
            except HtmlError as error:
                call.status = 400
                return _error(400, f"Bad Request: can't parse entities: {error}")
            except _BadRequest as error:
                call.status = 400
                return _error(400, f"Bad Request: {error}")
            if self._holds.get(method):
                self._holds[method] -= 1
                self.held[method] = self.held.get(method, 0) + 1
                await self._notify()
                await asyncio.Event().wait()  # until the client goes away (the handler is cancelled) or the fake stops
            return web.json_response({"ok": True, "result": result})
        finally:
            await self._notify()

    async def _api_getMe(self, params: dict[str, Any]) -> Any:
        return {
            **self.bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _api_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        if offset:
            # An offset acknowledges every update before it: they are gone for good.
            self._updates = [update for update in self._updates if update["update_id"] >= offset]
        timeout = float(params.get("timeout") or 0)
        assert self._changed is not None
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    while not self._updates:
                        await self._changed.wait()
        except TimeoutError:
            pass
        return list(self._updates)

    async def _api_sendMessage(self, params: dict[str, Any]) -> Any:
        text = self._checked_text(params)
        chat_id = int(params["chat_id"])
        self._next_message += 1
        self.messages[(chat_id, self._next_message)] = text
        return self._message(chat_id, self._next_message, text)

    async def _api_editMessageText(self, params: dict[str, Any]) -> Any:
        text = self._checked_text(params)
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        key = (chat_id, message_id)
        if key not in self.messages:
            raise _BadRequest("message to edit not found")
        if self.messages[key] == text:
            raise _BadRequest(
                "message is not modified: specified new message content and reply markup are exactly the same"
            )
        self.messages[key] = text
        return self._message(chat_id, message_id, text)

    async def _api_sendMessageDraft(self, params: dict[str, Any]) -> Any:
        if int(params.get("draft_id") or 0) == 0:
            raise _BadRequest("draft_id must be non-zero")
        if params.get("text"):
            self._checked_text(params)
        return True

    async def _api_sendChatAction(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_setWebhook(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_setMyCommands(self, params: dict[str, Any]) -> Any:
        return True

    def _checked_text(self, params: dict[str, Any]) -> str:
        text = str(params.get("text", ""))
        shown = visible_html(text) if params.get("parse_mode") == "HTML" else text
        if not shown.strip():
            raise _BadRequest("message text is empty")
        if len(shown.encode("utf-16-le")) // 2 > MAX_TEXT:
            raise _BadRequest("message is too long")
        return text

    def _message(self, chat_id: int, message_id: int, text: str) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        if chat_id < 0:
            chat["title"] = "Team"
        return {"message_id": message_id, "date": int(time.time()), "chat": chat, "from": self.bot_user(), "text": text}


class _BadRequest(Exception):
    pass


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


async def _params(request: web.Request) -> dict[str, Any]:
    """PTB posts form fields whose non-string values are JSON; JSON bodies are accepted too."""
    if request.content_type == "application/json":
        return dict(await request.json())
    form = await request.post()
    params: dict[str, Any] = {}
    for key, value in form.items():
        text = str(value)
        if key in ("text", "parse_mode", "url", "secret_token"):
            params[key] = text
            continue
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text
    return params
