"""Chat templates from GGUF metadata, rendered in a sandboxed Jinja2 environment.

A chat template inside a downloaded GGUF is untrusted input: the immutable
sandbox refuses attribute tricks and mutation, so a hostile template can do
no more than produce a strange prompt.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidRequest, UnsupportedFeature
from .generation import ChatMessage


class ChatTemplate:
    """A compiled chat template, ready to render conversations."""

    def __init__(self, source: str | None) -> None:
        if not source:
            raise UnsupportedFeature(
                "This model has no chat template: send a raw prompt instead (`raw: true`, `ingle run --raw`)."
            )
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        # Hugging Face templates call these; they are not Jinja built-ins.
        environment.filters["tojson"] = _to_json
        environment.globals["raise_exception"] = _raise_template_error
        environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = environment.from_string(source)
        except TemplateError as error:
            raise UnsupportedFeature(f"The model's chat template is broken ({error}).") from error

    def render(
        self,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]] | None = None,
        bos_token: str = "",
        eos_token: str = "",
    ) -> str:
        """The prompt text for `messages`, ending where the assistant's answer begins."""
        try:
            return self._template.render(
                messages=[_message_dict(message) for message in messages],
                tools=tools or None,
                add_generation_prompt=True,
                bos_token=bos_token,
                eos_token=eos_token,
            )
        except TemplateError as error:
            raise InvalidRequest(
                f"messages: the model's chat template rejected this conversation ({error})."
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
