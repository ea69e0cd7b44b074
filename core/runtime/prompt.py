"""Turns a GenerationRequest into the token ids a loaded model decodes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..chat_template import ChatTemplate
from ..errors import ContextOverflow, InvalidRequest
from ..generation import ChatMessage, GenerationRequest
from ..manifest import Manifest
from ..tool_calls import ToolCallFormat, require_tool_format
from .fim import FimTokens, build_fim_prompt
from .grammar import LazyGrammar, grammar_for_tool_calls
from .llama_model import LlamaModel


@dataclass(frozen=True)
class PreparedPrompt:
    """Token ids to decode, plus tokens that end the generation for this kind of prompt."""

    tokens: list[int]
    stop_tokens: frozenset[int] = frozenset()
    tool_grammar: LazyGrammar | None = None
    """Constrains a tool call once the model starts one; None when no tools were offered."""


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

    def build(self, request: GenerationRequest) -> PreparedPrompt:
        """Tokens for a chat, a templated or raw completion, or a fill-in-the-middle."""
        if request.suffix is not None:
            tokens = build_fim_prompt(
                self.model, self.fim, request.prompt or "", request.suffix, request.extra_context, request.filename
            )
            # build_fim_prompt has refused a model without FIM tokens, so self.fim is set here.
            prepared = PreparedPrompt(tokens, self.fim.stop_tokens() if self.fim else frozenset())
        elif request.messages is not None:
            tool_grammar = (
                grammar_for_tool_calls(self.tool_format, request.tools, eager=request.require_tool_call)
                if request.tools
                else None
            )
            prepared = PreparedPrompt(self._chat_tokens(request.messages, request), tool_grammar=tool_grammar)
        elif request.raw:
            prepared = PreparedPrompt(self.model.tokenize(request.prompt or "", add_special=self.model.add_bos))
        else:
            messages = [ChatMessage("user", request.prompt or "")]
            prepared = PreparedPrompt(self._chat_tokens(messages, request))
        self._check_fits(prepared.tokens)
        return prepared

    def _chat_tokens(self, messages: list[ChatMessage], request: GenerationRequest) -> list[int]:
        system = request.system if request.system is not None else self.manifest.system
        if system and not any(message.role == "system" for message in messages):
            messages = [ChatMessage("system", system), *messages]
        bos_text = self.model.token_text(self.model.bos) if self.model.bos >= 0 else ""
        eos_text = self.model.token_text(self.model.eos) if self.model.eos >= 0 else ""
        text = self.template.render(messages, request.tools, bos_token=bos_text, eos_token=eos_text)
        # Templates that write the BOS token themselves must not get a second one.
        add_bos = self.model.add_bos and not (bos_text and text.startswith(bos_text))
        return self.model.tokenize(text, add_special=add_bos, parse_special=True)

    def _check_fits(self, tokens: list[int]) -> None:
        if not tokens:
            raise InvalidRequest("prompt: is empty; give the model some text to continue.")
        if len(tokens) >= self.context_tokens:
            raise ContextOverflow(
                f"The prompt is {len(tokens)} tokens but the context holds {self.context_tokens}: "
                "shorten it or raise num_ctx."
            )
