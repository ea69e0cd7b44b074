"""Turns a GenerationRequest into the token ids a loaded model decodes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from ..chat_template import ChatTemplate
from ..errors import ContextOverflow, InvalidRequest
from ..generation import ChatMessage, GenerationRequest
from ..manifest import Manifest
from ..tool_calls import ToolCallFormat, require_tool_format
from .control_text import ControlTextShield
from .fim import FimTokens, build_file_prompt, build_fim_prompt
from .grammar import LazyGrammar, grammar_for_format, grammar_for_tool_calls
from .indentation import heal_indentation
from .llama_model import LlamaModel
from .worker_thread import run_to_the_end


@dataclass(frozen=True)
class PreparedPrompt:
    """Token ids to decode, plus tokens that end the generation for this kind of prompt."""

    tokens: list[int]
    stop_tokens: frozenset[int] = frozenset()
    tool_grammar: LazyGrammar | None = None
    """Constrains a tool call once the model starts one; None when no tools were offered."""
    format_grammar: str | None = None
    """Constrains the whole output to the request's format (JSON, a JSON schema); None when it has none."""
    indentation: str = ""
    """Whitespace the answer to a raw or fill-in-the-middle prompt must open with, taken off the prompt
    (see indentation.py)."""


class PromptBuilder:
    """Knows a loaded model's chat template and FIM tokens."""

    def __init__(self, model: LlamaModel, manifest: Manifest, context_tokens: int) -> None:
        self.model = model
        self.manifest = manifest
        self.context_tokens = context_tokens
        self.fim = FimTokens.of(model)

    @cached_property
    def template(self) -> ChatTemplate:
        """The compiled chat template."""
        return ChatTemplate(self.template_source)

    @cached_property
    def template_source(self) -> str | None:
        """The chat template's text: the manifest's override, else the GGUF's."""
        return self.manifest.template or self.model.chat_template()

    @cached_property
    def tool_format(self) -> ToolCallFormat:
        """How this model writes tool calls; UnsupportedFeature when its template has no tool support."""
        return require_tool_format(self.template_source)

    async def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        """build() in a worker thread: tokenizing takes time in proportion to the text (a second for a few MiB).

        The thread reads the model, so a cancelled caller still waits for it to
        end before passing the cancellation on (and releasing the model).
        """
        return await run_to_the_end(self.build, request)

    def build(self, request: GenerationRequest) -> PreparedPrompt:
        """Tokens for a chat, a templated or raw completion, or a fill-in-the-middle, and the output's grammar.

        Text that cannot fit is refused by its size before any of it is tokenized.
        """
        format_grammar = grammar_for_format(request.format)
        self._check_size(request)
        if request.suffix is not None:
            prefix, indentation = heal_indentation(self.model, request.prompt or "")
            tokens = build_fim_prompt(
                self.model, self.fim, prefix, request.suffix, request.extra_context, request.filename
            )
            # build_fim_prompt has refused a model without FIM tokens, so self.fim is set here.
            stop_tokens = self.fim.stop_tokens() if self.fim else frozenset()
            prepared = PreparedPrompt(tokens, stop_tokens, indentation=indentation)
        elif request.messages is not None:
            tool_grammar = (
                grammar_for_tool_calls(self.tool_format, request.tools, eager=request.require_tool_call)
                if request.tools
                else None
            )
            prepared = PreparedPrompt(self._chat_tokens(request.messages, request), tool_grammar=tool_grammar)
        elif request.raw:
            text, indentation = heal_indentation(self.model, request.prompt or "")
            if request.extra_context or request.filename:
                # A file continued with other files ahead of it: the FIM prompt's head, no markers after it.
                tokens = build_file_prompt(self.model, self.fim, text, request.extra_context, request.filename)
                stop_tokens = self.fim.stop_tokens() if self.fim else frozenset()
            else:
                tokens, stop_tokens = self.model.tokenize(text, add_special=self.model.add_bos), frozenset()
            prepared = PreparedPrompt(tokens, stop_tokens, indentation=indentation)
        else:
            messages = [ChatMessage("user", request.prompt or "")]
            prepared = PreparedPrompt(self._chat_tokens(messages, request))
        self._check_fits(prepared.tokens)
        return replace(prepared, format_grammar=format_grammar)

    def _chat_tokens(self, messages: list[ChatMessage], request: GenerationRequest) -> list[int]:
        system = request.system if request.system is not None else self.manifest.system
        if system and not any(message.role == "system" for message in messages):
            messages = [ChatMessage("system", system), *messages]
        bos_text = self.model.token_text(self.model.bos) if self.model.bos >= 0 else ""
        eos_text = self.model.token_text(self.model.eos) if self.model.eos >= 0 else ""
        shield = ControlTextShield(self.model.control_texts)
        text = self.template.render(
            [shield.hide_message(message) for message in messages],
            shield.hide(request.tools),
            bos_token=bos_text,
            eos_token=eos_text,
        )
        # Templates that write the BOS token themselves must not get a second one.
        add_bos = self.model.add_bos and not (bos_text and text.startswith(bos_text))
        return shield.tokenize(self.model, text, add_bos)

    def _check_size(self, request: GenerationRequest) -> None:
        most_bytes = self.context_tokens * self.model.most_bytes_per_token
        size = _text_bytes(
            [request.prompt, request.suffix, request.system, request.tools, request.filename]
            + [[chunk.text, chunk.filename] for chunk in request.extra_context]
            + [[message.role, message.content, message.name, message.tool_calls] for message in request.messages or []]
        )
        if size > most_bytes:
            raise ContextOverflow(
                f"The prompt is {size} bytes, more than the {self.context_tokens} tokens of the context can hold "
                f"(at most {most_bytes} bytes): shorten it or raise num_ctx."
            )

    def _check_fits(self, tokens: list[int]) -> None:
        if not tokens:
            raise InvalidRequest("prompt: is empty; give the model some text to continue.")
        if len(tokens) >= self.context_tokens:
            raise ContextOverflow(
                f"The prompt is {len(tokens)} tokens but the context holds {self.context_tokens}: "
                "shorten it or raise num_ctx."
            )


def _text_bytes(value: object) -> int:
    """The UTF-8 size of every string in `value` (strings, and lists and dicts of them, however deep)."""
    size, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            size += len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
    return size
