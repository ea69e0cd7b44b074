"""Bot answers from knowledge bases: which ones a channel reaches, grounding a turn, and `/sources`.

A channel reaches only the knowledge bases configured for it
(`channel_knowledge`, else the bot's `knowledge`); nothing a user types can
name another one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ingle.core.generation import ChatMessage
from ingle.core.knowledge import KnowledgeLibrary
from ingle.core.knowledge.attribution import mark_citations
from ingle.core.knowledge.grounding import (
    RETRIEVED_CHUNKS,
    CitedSource,
    cited_sources,
    grounded_messages,
    last_question,
    listed_sources,
    nothing_found,
)

from .settings import BotSettings
from .store import ConversationKey

REMEMBERED_CONVERSATIONS = 1000
"""Conversations whose last sources `/sources` can show; the oldest are forgotten first."""


@dataclass
class GroundedTurn:
    """A turn ready to generate: the messages to send, and what to say instead or to append."""

    messages: list[ChatMessage]
    sources: list[CitedSource] = field(default_factory=list)
    answer: str | None = None
    """The whole answer when the knowledge bases have nothing on the question (no model call)."""

    def with_sources(self, answer: str) -> str:
        """`answer` with its citation marks (ingle's where the model wrote none), then the sources it cites
        (all given ones if it cites none)."""
        if not self.sources:
            return answer
        marked, cited = mark_citations(answer, [source.text for source in self.sources])
        return f"{marked}\n\n{listed_sources(self.sources, cited)}"


class ChannelKnowledge:
    """The knowledge bases of each channel, and the sources of each conversation's last answer."""

    def __init__(self, library: KnowledgeLibrary | None, settings: BotSettings) -> None:
        self.library = library
        self.settings = settings
        self._last: OrderedDict[ConversationKey, list[CitedSource]] = OrderedDict()

    def names_for(self, channel: str) -> list[str]:
        """The knowledge bases answers in `channel` come from (none: the model alone)."""
        return self.settings.channel_knowledge.get(channel, self.settings.knowledge)

    async def ground(self, key: ConversationKey, messages: list[ChatMessage]) -> GroundedTurn:
        """The turn grounded in the channel's knowledge bases (unchanged if it has none)."""
        names = self.names_for(key.channel)
        if self.library is None or not names:
            return GroundedTurn(messages)
        result = await self.library.search(names, last_question(messages), RETRIEVED_CHUNKS)
        sources = cited_sources(result.hits)
        self._remember(key, sources)
        if not sources:
            return GroundedTurn(messages, answer=nothing_found(names))
        return GroundedTurn(grounded_messages(messages, sources), sources)

    def _remember(self, key: ConversationKey, sources: list[CitedSource]) -> None:
        self._last[key] = sources
        self._last.move_to_end(key)
        while len(self._last) > REMEMBERED_CONVERSATIONS:
            self._last.popitem(last=False)

    def describe_last(self, key: ConversationKey) -> str:
        """The `/sources` answer: the excerpts the last answer here was given, with a line of each."""
        if not self.names_for(key.channel):
            return "This channel answers without a knowledge base."
        sources = self._last.get(key)
        if sources is None:
            return "No answer here has used the knowledge base yet."
        if not sources:
            return "The last answer found nothing in the knowledge base."
        lines = []
        for source in sources:
            first = source.text.strip().splitlines()[0][:160] if source.text.strip() else ""
            lines.append(f"[{source.number}] {source.label}\n> {first}")
        return "The last answer used:\n" + "\n".join(lines)
