"""Splits a model's streamed answer into content, reasoning and tool calls.

Models write tool calls and reasoning as text: Qwen-style
`<tool_call>{"name": …, "arguments": …}</tool_call>` blocks and
`<think>…</think>`. Small models also answer a tool request with a bare JSON
object, sometimes in a ```json fence. The parser is fed text as it streams
and releases text only once it cannot be the start of such a block, so a
client never sees half a tag.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
_FENCE = "```"


@dataclass
class AssistantPiece:
    """What a bit of model output turned out to be."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Calls in Ollama's shape: `{"function": {"name": …, "arguments": {…}}}`."""

    def __bool__(self) -> bool:
        return bool(self.content or self.thinking or self.tool_calls)

    def extend(self, other: AssistantPiece) -> None:
        """Append another piece to this one."""
        self.content += other.content
        self.thinking += other.thinking
        self.tool_calls.extend(other.tool_calls)


def parse_tool_call(text: str, tool_names: Collection[str] | None = None) -> dict[str, Any] | None:
    """`{"name", "arguments"}` JSON as an Ollama tool call, or None if it is not one.

    With `tool_names`, the name must be one of them (used for bare JSON, which
    may just be an answer that happens to be JSON).
    """
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    if tool_names is not None and value["name"] not in tool_names:
        return None
    return {"function": {"name": value["name"], "arguments": arguments}}


def _bare_tool_calls(text: str, tool_names: Collection[str]) -> list[dict[str, Any]] | None:
    """Tool calls from a whole answer that is one JSON call (or a list of them), fenced or not."""
    body = text.strip()
    if body.startswith(_FENCE):
        body = body[len(_FENCE) :].removeprefix("json").strip()
        if not body.endswith(_FENCE):
            return None
        body = body[: -len(_FENCE)].strip()
    try:
        value = json.loads(body)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [parse_tool_call(json.dumps(item), tool_names) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return calls  # type: ignore[return-value]


def _partial_tag_at_end(text: str, tags: Collection[str]) -> int:
    """Length of the longest tail of `text` that begins one of `tags`."""
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), longest, -1):
            if text.endswith(tag[:size]):
                longest = size
                break
    return longest


class AssistantOutputParser:
    """Feed it streamed text; it hands back content, reasoning and parsed tool calls.

    `tool_names`: the tools the request offered (None: tool calls are not
    parsed). `keep_thinking`: return reasoning as `thinking`; otherwise it is
    dropped from the answer.
    """

    def __init__(self, tool_names: Collection[str] | None, keep_thinking: bool) -> None:
        self._tool_names = set(tool_names) if tool_names else None
        self._keep_thinking = keep_thinking
        self._held = ""
        self._mode = "start" if self._tool_names else "text"
        self._trim_next = False
        self._opening = (THINK_OPEN, TOOL_OPEN) if self._tool_names else (THINK_OPEN,)

    def feed(self, text: str) -> AssistantPiece:
        """Add streamed text; return what can be released now."""
        self._held += text
        return self._drain(final=False)

    def finish(self) -> AssistantPiece:
        """Release everything held back, at the end of the answer."""
        return self._drain(final=True)

    def _drain(self, final: bool) -> AssistantPiece:
        piece = AssistantPiece()
        while True:
            step = getattr(self, f"_{self._mode}")(piece, final)
            if not step:
                return piece

    # Each state consumes what it can and returns True when the state changed and there may be more to do.

    def _start(self, piece: AssistantPiece, final: bool) -> bool:
        """Before the first visible character: a bare JSON answer may be a tool call."""
        lead = self._held.lstrip()
        if lead.startswith(("{", "[", _FENCE)):
            self._mode = "json"
            return True
        if not final and (not lead or _FENCE.startswith(lead)):
            return False
        self._mode = "text"
        return True

    def _json(self, piece: AssistantPiece, final: bool) -> bool:
        """A bare JSON answer: held to the end, then a tool call if it parses as one."""
        if not final:
            return False
        calls = _bare_tool_calls(self._held, self._tool_names or ())
        if calls is None:
            self._mode = "text"
            return True
        piece.tool_calls.extend(calls)
        self._held = ""
        return False

    def _text(self, piece: AssistantPiece, final: bool) -> bool:
        found = [(self._held.find(tag), tag) for tag in self._opening if tag in self._held]
        if found:
            index, tag = min(found)
            self._emit_content(piece, self._held[:index])
            self._held = self._held[index + len(tag) :]
            self._mode = "think" if tag == THINK_OPEN else "tool"
            return True
        keep = 0 if final else _partial_tag_at_end(self._held, self._opening)
        self._emit_content(piece, self._held[: len(self._held) - keep])
        self._held = self._held[len(self._held) - keep :]
        return False

    def _think(self, piece: AssistantPiece, final: bool) -> bool:
        index = self._held.find(THINK_CLOSE)
        if index != -1:
            self._emit_thinking(piece, self._held[:index])
            self._held = self._held[index + len(THINK_CLOSE) :]
            self._mode = "text"
            self._trim_next = True
            return True
        keep = 0 if final else _partial_tag_at_end(self._held, (THINK_CLOSE,))
        self._emit_thinking(piece, self._held[: len(self._held) - keep])
        self._held = self._held[len(self._held) - keep :]
        return False

    def _tool(self, piece: AssistantPiece, final: bool) -> bool:
        index = self._held.find(TOOL_CLOSE)
        if index == -1 and not final:
            return False
        body = self._held if index == -1 else self._held[:index]
        call = parse_tool_call(body.strip())
        if call is not None:
            piece.tool_calls.append(call)
        else:
            # Not a call after all: show the model's text as it was rather than lose it.
            closing = "" if index == -1 else TOOL_CLOSE
            self._emit_content(piece, TOOL_OPEN + body + closing)
        self._held = "" if index == -1 else self._held[index + len(TOOL_CLOSE) :]
        self._mode = "text"
        self._trim_next = True
        return bool(self._held)

    def _emit_content(self, piece: AssistantPiece, text: str) -> None:
        if self._trim_next and text:
            text = text.lstrip()
            self._trim_next = not text
        piece.content += text

    def _emit_thinking(self, piece: AssistantPiece, text: str) -> None:
        if self._keep_thinking:
            piece.thinking += text
