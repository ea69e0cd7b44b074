"""Tool calls as model families write them: the format, read from the chat template, and the parser.

Models write tool calls and reasoning as text. Hermes-style templates (Qwen2.5,
the default model's, and Hermes) wrap each call in `<tool_call>…</tool_call>`;
Mistral writes `[TOOL_CALLS]` and a JSON array; Llama 3.x writes a bare
`{"name": …, "parameters": …}` object, sometimes after `<|python_tag|>`. Small
models also answer a tool request with a bare JSON object, sometimes in a
```json fence, whatever their template says. The parser is fed text as it
streams and releases text only once it cannot be the start of such a block, so
a client never sees half a tag.

`call_schema` is the JSON schema of one call to the offered tools, which the
runtime turns into a grammar that constrains a call once the model starts it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from .errors import UnsupportedFeature
from .json_text import parse_json

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_FENCE = "```"


@dataclass(frozen=True)
class ToolCallFormat:
    """How one model family writes a tool call."""

    family: str
    open: str
    """Text that starts a call (or the calls); empty when calls are bare JSON."""
    close: str
    """Text that ends one call; empty when the call runs to the end of the answer."""
    arguments_key: str = "arguments"
    """The key the family writes the arguments under."""
    as_list: bool = False
    """The calls come as one JSON array after `open`."""

    @property
    def framed(self) -> bool:
        """Calls start with `open` and end with `close`, or with the end of the array `open` starts."""
        return bool(self.open and (self.close or self.as_list))


HERMES = ToolCallFormat("hermes", "<tool_call>", "</tool_call>")
MISTRAL = ToolCallFormat("mistral", "[TOOL_CALLS]", "", as_list=True)
LLAMA3 = ToolCallFormat("llama3", "<|python_tag|>", "", arguments_key="parameters")
# A template that renders tools in a way ingle does not know: bare JSON calls are still parsed.
GENERIC = ToolCallFormat("generic", "", "")

_USES_TOOLS = re.compile(r"\btools\b")


def detect_tool_format(template: str | None) -> ToolCallFormat | None:
    """The tool-call format a chat template teaches its model; None when the template never renders tools."""
    if not template or not _USES_TOOLS.search(template):
        return None
    if "<tool_call>" in template:
        return HERMES
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if "<|start_header_id|>" in template or "<|python_tag|>" in template:
        return LLAMA3
    return GENERIC


def require_tool_format(template: str | None) -> ToolCallFormat:
    """The template's tool-call format, or UnsupportedFeature (a 400) when it has no tool support."""
    found = detect_tool_format(template)
    if found is None:
        raise UnsupportedFeature(
            "tools: this model's chat template has no tool support; send the request without tools "
            "or use a model whose template renders them (such as the default qwen2.5-coder)."
        )
    return found


def tool_function(tool: dict[str, Any]) -> dict[str, Any]:
    """The function part of a tool in OpenAI's or Ollama's shape (`{"type": "function", "function": {…}}`)."""
    function = tool.get("function")
    return function if isinstance(function, dict) else tool


def tool_names(tools: list[dict[str, Any]] | None) -> list[str] | None:
    """The names of the offered tools; None when there are none."""
    names = [tool_function(tool).get("name") for tool in tools or []]
    return [name for name in names if isinstance(name, str)] or None


def call_schema(tool_format: ToolCallFormat, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to any of `tools`, with the arguments key the family writes."""
    variants = []
    for tool in tools:
        function = tool_function(tool)
        parameters = function.get("parameters")
        arguments = parameters if isinstance(parameters, dict) and parameters else {"type": "object"}
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": function.get("name")}, tool_format.arguments_key: arguments},
                "required": ["name", tool_format.arguments_key],
                "additionalProperties": False,
            }
        )
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


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
    """`{"name", "arguments"}` (or `"parameters"`) JSON as an Ollama tool call, or None if it is not one.

    With `tool_names`, the name must be one of them (used for bare JSON, which
    may just be an answer that happens to be JSON).
    """
    try:
        value = parse_json(text)
    except ValueError:
        return None
    return _call_from_value(value, tool_names)


def _call_from_value(value: Any, tool_names: Collection[str] | None) -> dict[str, Any] | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = parse_json(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    if tool_names is not None and value["name"] not in tool_names:
        return None
    return {"function": {"name": value["name"], "arguments": arguments}}


def _json_tool_calls(text: str, tool_names: Collection[str] | None) -> list[dict[str, Any]] | None:
    """Tool calls from text that is one JSON call or an array of them, fenced or not; None if it is not."""
    body = text.strip()
    if body.startswith(_FENCE):
        body = body[len(_FENCE) :].removeprefix("json").strip()
        if not body.endswith(_FENCE):
            return None
        body = body[: -len(_FENCE)].strip()
    else:
        body = body.removesuffix(_FENCE).strip()  # a model that wrote the closing fence only
    try:
        value = parse_json(body)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call_from_value(item, tool_names) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return calls  # type: ignore[return-value]


def partial_tag_at_end(text: str, tags: Collection[str]) -> int:
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
    dropped from the answer. `tool_format`: how the model writes calls.
    """

    def __init__(
        self, tool_names: Collection[str] | None, keep_thinking: bool, tool_format: ToolCallFormat = HERMES
    ) -> None:
        self._tool_names = set(tool_names) if tool_names else None
        self._keep_thinking = keep_thinking
        self._format = tool_format
        self._held = ""
        self._mode = "start" if self._tool_names else "text"
        self._trim_next = False
        self._opening = (THINK_OPEN, tool_format.open) if self._tool_names and tool_format.open else (THINK_OPEN,)

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
        calls = _json_tool_calls(self._held, self._tool_names or ())
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
        keep = 0 if final else partial_tag_at_end(self._held, self._opening)
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
        keep = 0 if final else partial_tag_at_end(self._held, (THINK_CLOSE,))
        self._emit_thinking(piece, self._held[: len(self._held) - keep])
        self._held = self._held[len(self._held) - keep :]
        return False

    def _tool(self, piece: AssistantPiece, final: bool) -> bool:
        close = self._format.close
        index = self._held.find(close) if close else -1
        if index == -1 and not final:
            return False
        body = self._held if index == -1 else self._held[:index]
        calls = _json_tool_calls(body, None)
        if calls is not None:
            piece.tool_calls.extend(calls)
        else:
            # Not a call after all: show the model's text as it was rather than lose it.
            closing = "" if index == -1 else close
            self._emit_content(piece, self._format.open + body + closing)
        self._held = "" if index == -1 else self._held[index + len(close) :]
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
