"""Chat templates from GGUF metadata, rendered in a sandboxed Jinja2 environment.

A chat template inside a downloaded GGUF is untrusted input: the immutable
sandbox refuses attribute tricks and mutation, and its rendering is bounded
in time and in the size of what it writes, so a hostile template can do no
more than produce a strange prompt or a refusal.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from types import FrameType
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidRequest, UnsupportedFeature
from .generation import ChatMessage

# A real template renders a conversation in milliseconds; a loop that runs for seconds is hostile (nested
# `range` loops: the sandbox bounds each range, not their product). Generous, as the decode threads share
# the cores with the rendering.
RENDER_SECONDS = 2.0
# Far more than any context holds (a 128k-token context is about 0.5 MB of text), far less than memory.
MAX_RENDERED_CHARS = 32 * 1024 * 1024
# Above this a power is a huge number, computed in one step no deadline can interrupt (`9 ** 999999999`).
_MAX_EXPONENT = 256
# A field width of eight digits or more (`"%999999999d"`, `"{:>999999999}"`) is a giant string in one step.
_HUGE_PRINTF_WIDTH = re.compile(r"%[-#0 +]*[0-9]{8,}|%[-#0 +]*[0-9]*\.[0-9]{8,}")
_HUGE_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*[0-9]{8,}[^{}]*\}")


class _RuntimeOnlyCodeGenerator(CodeGenerator):
    """Jinja's code generator, without computing filters and calls while compiling.

    It computes an output's constant expressions as it compiles
    (`{{ 'ab'|center(10**10) }}`), where no limit applies; here they are left
    for rendering, which `_Limits` bounds. Only plain constants are written in.
    """

    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> str:
        if not isinstance(node, nodes.Const | nodes.TemplateData):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with the operations that build a giant string or number in one step refused.

    Everything a template does in Python (filters, `~`, macros, namespace
    assignments) is checked by `_Limits` as it is called; these are the
    operators and formats that run in C, where no check can interrupt them.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _RuntimeOnlyCodeGenerator

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and right > _MAX_EXPONENT and left not in (0, 1, -1):
            raise SecurityError(f"a power above {_MAX_EXPONENT}")
        if operator == "%" and isinstance(left, str) and _HUGE_PRINTF_WIDTH.search(left):
            raise SecurityError("a field width of tens of millions")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                    _check_size(len(sequence) * count)
        if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _check_size(len(left) + len(right))
        return super().call_binop(context, operator, left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # A method of a string or list runs in C, out of the trace's sight (`'ab'.center(10**10)`).
        for value in (*args, *kwargs.values()):
            _check_argument(value)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        text = getattr(value, "__self__", None)
        if isinstance(text, str) and _HUGE_FORMAT_WIDTH.search(text):
            raise SecurityError("a field width of tens of millions")
        return super().wrap_str_format(value)


def _check_size(size: int) -> None:
    if size > MAX_RENDERED_CHARS:
        raise SecurityError("a text or list larger than any prompt can hold")


def _check_argument(value: Any) -> None:
    """Refuse a giant number (a width, a count) or text given to a call, before the call makes something of it."""
    if isinstance(value, int) and not isinstance(value, bool):
        _check_size(abs(value))
    elif isinstance(value, str | list | tuple):
        items = value if isinstance(value, list | tuple) else ()
        _check_size(len(value) + sum(len(item) for item in items if isinstance(item, str)))


# Where a template's own values are passed as arguments: its compiled code (no module name), Jinja's runtime
# (macros, `~`, namespaces), filters and tests, and markupsafe. Other code (the sandbox's checks, the
# compiler, an import) is neither traced nor checked: its numbers (a file's timestamp) are not the template's.
_CHECKED_MODULES = frozenset({None, "jinja2.runtime", "jinja2.filters", "jinja2.utils", "jinja2.tests", "markupsafe"})


class _RenderTimeout(TemplateError):
    pass


class _Limits:
    """Bounds the Python code a template runs in this thread: its time, and the size of what each call gets.

    A trace function sees every line and every call the compiled template
    makes (in this thread only, only while rendering): a loop that never
    ends is stopped at its next line, and a call given a giant number or text
    (`center(10**10)`, joining two halves of a doubling string) is refused
    before it runs.
    """

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds
        self.previous = sys.gettrace()

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > self.ends:
            raise _RenderTimeout("the chat template ran out of time")
        if event == "call":
            if frame.f_globals.get("__name__") not in _CHECKED_MODULES:
                return None
            for value in frame.f_locals.values():
                _check_argument(value)
        return self.trace

    def __enter__(self) -> None:
        sys.settrace(self.trace)

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self.previous)


class ChatTemplate:
    """A compiled chat template, ready to render conversations."""

    def __init__(self, source: str | None) -> None:
        if not source:
            raise UnsupportedFeature(
                "This model has no chat template: send a raw prompt instead (`raw: true`, `ingle run --raw`)."
            )
        # Not `optimized`: the optimizer, too, computes constant expressions while compiling (see above).
        environment = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, optimized=False)
        # Hugging Face templates call these; they are not Jinja built-ins.
        environment.filters["tojson"] = _to_json
        environment.globals["raise_exception"] = _raise_template_error
        environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = environment.from_string(source)
        except (TemplateError, ValueError, RecursionError, MemoryError) as error:
            # Compiling untrusted text can fail in more ways than TemplateError (a nesting too deep for Python).
            raise UnsupportedFeature(f"The model's chat template is broken ({error}).") from error

    def render(
        self,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]] | None = None,
        bos_token: str = "",
        eos_token: str = "",
    ) -> str:
        """The prompt text for `messages`, ending where the assistant's answer begins."""
        variables = {
            "messages": [_message_dict(message) for message in messages],
            "tools": tools or None,
            "add_generation_prompt": True,
            "bos_token": bos_token,
            "eos_token": eos_token,
        }
        try:
            with _Limits(RENDER_SECONDS):
                pieces, size = [], 0
                for piece in self._template.generate(variables):
                    size += len(piece)
                    if size > MAX_RENDERED_CHARS:
                        raise SecurityError("a prompt larger than any context holds")
                    pieces.append(piece)
                return "".join(pieces)
        except _RenderTimeout as error:
            raise UnsupportedFeature(
                f"The model's chat template did not finish within {RENDER_SECONDS:.0f} s, so it is hostile or "
                "broken: send a raw prompt instead (`raw: true`, `ingle run --raw`) or use another model."
            ) from error
        except SecurityError as error:
            raise UnsupportedFeature(
                f"The model's chat template tried to build {error}: send a raw prompt "
                "instead (`raw: true`, `ingle run --raw`) or use another model."
            ) from error
        except TemplateError as error:
            raise InvalidRequest(
                f"messages: the model's chat template rejected this conversation ({error})."
            ) from error
        except RecursionError as error:  # a macro that calls itself
            raise UnsupportedFeature(
                "The model's chat template recurses without end: send a raw prompt instead (`raw: true`, "
                "`ingle run --raw`) or use another model."
            ) from error


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = message.tool_calls
    if message.name:
        data["name"] = message.name
    return data


def _to_json(value: Any, indent: int | None = None, ensure_ascii: bool = False, **_: Any) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def _raise_template_error(message: str) -> None:
    raise TemplateError(message)
