"""The conversation core every chat platform shares.

The platform contract — what a platform module (telegram.py, slack.py,
mattermost.py) writes; everything else lives here, once:

1. Describe the platform with a `PlatformStyle`: its `name`, `message_limit`
   (characters of one rendered message), `edit_interval` (least seconds
   between two edits of one message) and `render` (Markdown -> its markup,
   from `bots.formatting`).

2. Implement `ReplyStream` for one answer being written:
   - `begin()`   show that an answer is coming (placeholder message, typing, status);
   - `update(text)` show the partial answer (already rendered, within the limit).
     Called at most once per edit interval with the newest text; on a flood
     limit it may wait and return without showing — the next call carries
     newer text, so edits coalesce;
   - `finish(parts)` show the final answer: `parts[0]` replaces the
     placeholder (or is posted if `begin` was never called — commands,
     refusals and errors come that way), the other parts follow as new
     messages. It must deliver, waiting out flood limits.
   - `state()`   where it writes and the message it has placed so far, as
     JSON values; the core records it as the answer streams, and after a
     crash `open_reply(key, state)` rebuilds the reply from it, so the
     answer finishes in the message the user already sees.
   Constructing a ReplyStream must not touch the network; an ignored message
   never calls it.

3. For each event addressed to the bot (a DM, a mention, a reply to it — the
   platform decides that, and strips the mention from the text), build an
   `IncomingMessage` (conversation key = platform + channel + thread, the
   sender's id, the text, and the platform's event id, used to drop
   redeliveries) and call:
   `await core.accept(message, reply)`: access check, rate limit, duplicate
   check, the message and the answer it is owed committed to SQLite; when it
   returns the platform may acknowledge the event. The answer runs in a task
   the core owns (cancelled when it closes). Turns of one conversation run
   one at a time and in order; different conversations run concurrently.

4. Give the core an `open_reply(key, state=None) -> ReplyStream` for posting
   into a conversation unprompted (scheduled prompts; `state` None) or
   finishing an interrupted answer (`state` from `ReplyStream.state`), and
   run it as `async with ConversationCore.of(...) as core:` (opens the SQLite
   store, starts the schedules, and resumes the answers a crash interrupted:
   answered in place if younger than `resume_within`, else the user is asked
   to repeat and a half-shown answer is marked as cut off).

The core keeps conversations keyed by platform, channel and thread; sends the
model the system prompt plus as much recent history as fits its context
(oldest dropped first, by a cheap token estimate); streams the answer through
throttled updates; strips `<think>…</think>` reasoning; splits the final
answer at the platform's limit without breaking code blocks or markup; and
turns every failure into one plain sentence (`bots.errors`). The backend is
any `GenerationBackend`: the in-process Engine or the daemon's client.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from ingle.core.backend import GenerationBackend
from ingle.core.errors import InvalidRequest
from ingle.core.generation import ChatMessage, GenerationRequest, SamplingOptions
from ingle.core.knowledge import KnowledgeLibrary
from ingle.core.names import ModelName
from ingle.core.settings import Settings

from .access import AccessPolicy, refusal
from .commands import HELP, Command, parse_command, parse_schedule
from .errors import error_sentence
from .formatting import Measure, Render, preview, split_markdown
from .knowledge import ChannelKnowledge
from .ratelimit import RateLimiter, too_fast
from .schedules import BotScheduler, ScheduledPrompt
from .settings import BotSettings, database_path
from .store import BotStore, ConversationKey, OwedAnswer, ReplyState, StoredMessage
from .tasks import AnswerTasks

log = logging.getLogger("ingle.bots")

T = TypeVar("T")

__all__ = [
    "ConversationCore",
    "ConversationKey",
    "IncomingMessage",
    "PlatformStyle",
    "ReplyStream",
    "Turn",
    "strip_reasoning",
]


@dataclass(frozen=True)
class PlatformStyle:
    """How a platform shows text: its markup and its limits."""

    name: str
    """The platform's name, also the first part of every conversation key ("telegram")."""
    message_limit: int
    """Most characters one rendered message may have, as `measure` counts them."""
    edit_interval: float
    """Least seconds between two updates of one streaming message (its rate limit)."""
    render: Render
    """Markdown in, the platform's markup out."""
    measure: Measure = len
    """How the platform counts a message's length (Telegram: UTF-16 code units); default: characters."""


@dataclass(frozen=True)
class IncomingMessage:
    """A message addressed to the bot, already converted from the platform's event."""

    key: ConversationKey
    user_id: str
    text: str
    """The text, with the mention of the bot removed."""
    event_id: str
    """Unique per event on the platform; a second delivery of the same id is ignored."""


class ReplyStream(Protocol):
    """One answer being written into a conversation; implemented by each platform."""

    async def begin(self) -> None:
        """Show that an answer is coming (a placeholder message, a typing indicator)."""
        ...

    async def update(self, text: str) -> None:
        """Show the partial answer `text` (rendered, within the limit); may skip it on a flood limit."""
        ...

    async def finish(self, parts: Sequence[str]) -> None:
        """Show the final answer: the first part replaces the placeholder, the rest follow; must deliver."""
        ...

    def state(self) -> ReplyState:
        """Where this reply writes and the message it has placed so far, as JSON values (rebuilds it after a crash)."""
        ...


OpenReply = Callable[[ConversationKey, ReplyState | None], ReplyStream]
"""Opens a reply into a conversation: a new one (state None, for scheduled prompts) or one rebuilt from its state."""

NO_ANSWER = "(The model gave no answer.)"
RESTARTED = "Sorry, I restarted before I could answer this. Please send your message again."
CUT_OFF = "*(cut off: I restarted before finishing. Please send your message again.)*"


def cut_off(partial: str) -> str:
    """What a half-shown answer becomes when it will not be finished: visibly marked, never looking complete."""
    if not partial.strip():
        return RESTARTED
    if partial.count("```") % 2:
        partial += "\n```"  # close the open code block, so the mark is not read as code
    return f"{partial} …\n\n{CUT_OFF}"


# --- reasoning -------------------------------------------------------------------

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"\A.*?</think>", re.DOTALL | re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """The answer without `<think>…</think>` reasoning, also while it streams.

    An unclosed `<think>` hides everything after it (the model is still
    thinking); a lone `</think>` hides everything before it (templates that
    open the think block in the prompt).
    """
    if "</think>" in text.lower() and "<think>" not in text.lower().split("</think>", 1)[0]:
        text = _THINK_CLOSE.sub("", text, count=1)
    text = _THINK_BLOCK.sub("", text)
    return _THINK_OPEN.sub("", text).lstrip()


# --- history -----------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A cheap, deliberately high token estimate: ~3 UTF-8 bytes a token plus a message's framing."""
    return len(text.encode("utf-8")) // 3 + 4


def fit_history(system: str, history: Sequence[StoredMessage], budget: int) -> list[ChatMessage]:
    """The system prompt plus the newest messages that fit `budget` tokens; the last message always stays."""
    left = budget - estimate_tokens(system)
    kept: list[ChatMessage] = []
    for message in reversed(history):
        cost = estimate_tokens(message.content)
        if kept and cost > left:
            break
        kept.append(ChatMessage(role=message.role, content=message.content))
        left -= cost
    kept.reverse()
    # A chat template expects the turns to start with the user.
    while len(kept) > 1 and kept[0].role != "user":
        kept.pop(0)
    return [ChatMessage(role="system", content=system), *kept]


# --- streaming ---------------------------------------------------------------------


class _Preview:
    """Shows the growing answer through `reply.update`, at most once per interval, always the newest text."""

    def __init__(
        self, reply: ReplyStream, style: PlatformStyle, interval: float, progress: Callable[[str], Awaitable[None]]
    ) -> None:
        self._reply = reply
        self._style = style
        self._interval = interval
        self._progress = progress
        self._raw = ""
        self._shown = ""
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._pump())

    def push(self, raw: str) -> None:
        """The answer so far (raw model output)."""
        self._raw = raw
        self._changed.set()

    async def close(self) -> None:
        """Stop updating; an update in flight completes first (it is never cut mid-request)."""
        self._closing.set()
        self._changed.set()
        await self._task

    async def _pump(self) -> None:
        while not self._closing.is_set():
            await self._changed.wait()
            self._changed.clear()
            if self._closing.is_set():
                return
            visible = strip_reasoning(self._raw)
            if not visible.strip():
                continue
            text = preview(visible, self._style.message_limit, self._style.render, self._style.measure)
            if text and text != self._shown:
                # Recorded before it is shown, so that a crash never leaves words on screen the store does not
                # know of; and again after, when showing it placed a message.
                await self._progress(visible)
                try:
                    await self._reply.update(text)
                    self._shown = text
                except Exception as error:  # a failed preview is not worth the answer; the final text follows
                    log.warning("a streaming update failed on %s: %s", self._style.name, error)
                await self._progress(visible)
            try:
                await asyncio.wait_for(self._closing.wait(), self._interval)
            except TimeoutError:
                pass


# --- the core ----------------------------------------------------------------------


class Turn:
    """The slow half of handling a message: answering it. Run it in a task of its own.

    Every turn `receive` returns must be run (or cancelled while running): the
    conversation's next turn waits for it.
    """

    def __init__(self, run: Callable[[], Awaitable[None]]) -> None:
        self._run = run

    async def run(self) -> None:
        """Answer (or run the command); failures become one sentence in the reply, never an exception."""
        await self._run()


class ConversationCore:
    """One bot's brain, platform-neutral: memory, access, commands, schedules, streaming. Use `async with`."""

    @classmethod
    def of(
        cls,
        settings: Settings,
        bot: BotSettings,
        style: PlatformStyle,
        backend: GenerationBackend,
        open_reply: OpenReply,
    ) -> ConversationCore:
        """The core of the `bot` section's platform, with its database where the settings put it."""
        return cls(
            style=style,
            settings=bot,
            backend=backend,
            database=database_path(settings, bot, style.name),
            default_model=settings.default_model,
            open_reply=open_reply,
            knowledge=KnowledgeLibrary(settings, backend),
        )

    def __init__(
        self,
        *,
        style: PlatformStyle,
        settings: BotSettings,
        backend: GenerationBackend,
        database: Path,
        default_model: str,
        open_reply: OpenReply,
        knowledge: KnowledgeLibrary | None = None,
    ) -> None:
        self.style = style
        self.settings = settings
        self.backend = backend
        self.default_model = settings.model or default_model
        self.store = BotStore(database)
        self.access = AccessPolicy.of(settings.allowed_users, settings.allowed_channels)
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.schedules = BotScheduler(
            database,
            settings.zone,
            self.fire_schedule,
            min_interval=settings.min_schedule_interval,
            max_schedules=settings.max_schedules,
        )
        self._open_reply = open_reply
        self.knowledge = ChannelKnowledge(knowledge, settings)
        """The knowledge bases each channel answers from, and the sources of the last answers."""
        self._tails: dict[ConversationKey, asyncio.Future[None]] = {}
        """The last turn of each conversation with turns pending, which the next one waits for."""
        self._receiving = asyncio.Lock()
        """Taken by `receive` (FIFO): messages are stored and queued in the order they reached the core, though
        each waits for the disk in between. The store runs one statement at a time anyway, so nothing is lost."""
        self.edit_interval = settings.edit_interval or style.edit_interval
        self.answering = AnswerTasks()
        """The turns running now, each a task of its own."""

    async def __aenter__(self) -> ConversationCore:
        await self.store.__aenter__()
        self.schedules.start()
        if self.access.answers_nobody:
            log.warning(
                "the %s bot answers nobody until allowed_users or allowed_channels is configured", self.style.name
            )
        for owed in await self.store.owed_answers():
            self.answering.spawn(self._resume(owed).run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Answers cut short here stay owed in the store and are resumed at the next start.
        await self.answering.cancel_all()
        self.schedules.shutdown()
        await self.store.close()

    # --- receiving --------------------------------------------------------------

    async def handle(self, message: IncomingMessage, reply: ReplyStream) -> None:
        """Receive a message and answer it (both halves, in this task)."""
        turn = await self.receive(message, reply)
        if turn is not None:
            await turn.run()

    async def accept(self, message: IncomingMessage, reply: ReplyStream) -> None:
        """Receive a message, then answer it in a task of its own; on return the platform may acknowledge it."""
        turn = await self.receive(message, reply)
        if turn is not None:
            self.answering.spawn(turn.run())

    async def receive(self, message: IncomingMessage, reply: ReplyStream) -> Turn | None:
        """The fast half: decide whether to answer and commit the message; None means stay silent.

        When this returns, the message is on disk, so the platform may acknowledge the event. A conversation's
        turns run in the order their messages reached this method, however its awaits interleave.
        """
        async with self._receiving:
            return await self._receive(message, reply)

    async def _receive(self, message: IncomingMessage, reply: ReplyStream) -> Turn | None:
        platform = self.style.name
        if not self.access.allows(message.user_id, message.key.channel):
            if await self.store.first_refusal(platform, message.user_id):
                log.info("refused %s user %s in %s (told once)", platform, message.user_id, message.key.channel)
                return self._reply_turn(reply, refusal(message.user_id))
            return None
        wait = self.limiter.try_acquire(message.user_id)
        if wait > 0:
            if not await self.store.mark_seen(platform, message.event_id):
                return None
            return self._reply_turn(reply, too_fast(wait))
        command = parse_command(message.text) if message.text.strip() else Command("help", "")
        conversation = await self.store.conversation(message.key)
        if command is not None:
            if not await self.store.mark_seen(platform, message.event_id):
                return None
            return self._in_order(message.key, reply, lambda: self._command(command, message))
        message_id = await self.store.add_user_message(
            conversation.id, platform, message.event_id, message.text, message.user_id, reply.state()
        )
        if message_id is None:
            log.info("ignoring a redelivered %s event %s", platform, message.event_id)
            return None
        return self._in_order(message.key, reply, lambda: self._answer(message.key, message_id, reply), message_id)

    def _resume(self, owed: OwedAnswer) -> Turn:
        """The turn that pays an answer a crash interrupted: deliver it, answer anew, or ask to repeat."""
        reply = self._open_reply(owed.key, owed.reply)
        age = time.time() - owed.asked_at
        if owed.answer is not None:
            answer = owed.answer
            log.info("delivering a %s answer the bot had finished before it stopped", self.style.name)
            return self._in_order(owed.key, reply, lambda: _value(answer), owed.question_id)
        if age <= self.settings.resume_within:
            log.info("answering a %s message left unanswered when the bot stopped", self.style.name)
            return self._in_order(
                owed.key, reply, lambda: self._answer(owed.key, owed.question_id, reply), owed.question_id
            )
        log.info("a %s message left unanswered is %.0f s old: asking the user to repeat it", self.style.name, age)
        return self._in_order(owed.key, reply, lambda: _value(cut_off(owed.partial)), owed.question_id)

    def _reply_turn(self, reply: ReplyStream, text: str) -> Turn:
        async def send() -> None:
            await self._deliver(reply, text)

        return Turn(send)

    def _in_order(
        self,
        key: ConversationKey,
        reply: ReplyStream,
        work: Callable[[], Awaitable[str | None]],
        question_id: int | None = None,
    ) -> Turn:
        """A turn that starts once the conversation's previous turn (by arrival) has finished.

        With `question_id`, the answer owed to that message is marked delivered when the turn completes
        (not when it is cancelled or the process dies: then it stays owed).
        """
        previous = self._tails.get(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = done

        async def run() -> None:
            try:
                if previous is not None:
                    await asyncio.wait([previous])
                try:
                    text = await work()
                except Exception as error:
                    text = error_sentence(error, where=f"{key.platform} {key.channel}")
                self.answering.delivering()
                if text is not None:
                    await self._deliver(reply, text)
                if question_id is not None:
                    await self.store.mark_delivered(question_id)
            finally:
                done.set_result(None)
                if self._tails.get(key) is done:
                    del self._tails[key]

        return Turn(run)

    async def _deliver(self, reply: ReplyStream, markdown: str) -> None:
        try:
            await reply.finish(self._parts(markdown))
        except Exception as error:
            log.error("could not deliver a reply on %s: %s", self.style.name, error, exc_info=error)

    def _parts(self, markdown: str) -> list[str]:
        """`markdown` as the platform's messages; a text that shows nothing becomes a sentence saying so."""
        style = self.style
        return split_markdown(markdown, style.message_limit, style.render, style.measure) or split_markdown(
            NO_ANSWER, style.message_limit, style.render, style.measure
        )

    # --- answering --------------------------------------------------------------------

    async def _answer(self, key: ConversationKey, message_id: int, reply: ReplyStream) -> None:
        conversation = await self.store.conversation(key)
        history = await self.store.history_for(conversation.id, message_id)
        budget = self.settings.context_tokens - self.settings.max_answer_tokens
        messages = fit_history(conversation.system or self.settings.system_prompt, history, budget)

        recorded: list[object] = []

        async def progress(partial: str) -> None:
            state = reply.state()
            if recorded != [state, partial]:
                recorded[:] = [state, partial]
                await self.store.note_progress(message_id, state, partial)

        turn = await self.knowledge.ground(key, messages)
        if turn.answer is not None:
            answer = turn.answer
        else:
            answer = await self._generate(conversation.model or self.default_model, turn.messages, reply, progress)
            answer = turn.with_sources(answer)
        # Committed before it is shown: what the user sees is what the next turn remembers.
        self.answering.delivering()
        answer_id = await self.store.add_answer(conversation.id, message_id, answer)
        try:
            await reply.finish(self._parts(answer))
        except Exception:
            # The platform refused it: the user never saw it, so no later turn may remember it as said.
            await self.store.withdraw_answer(answer_id)
            raise

    async def _generate(
        self,
        model: str,
        messages: list[ChatMessage],
        reply: ReplyStream,
        progress: Callable[[str], Awaitable[None]] = lambda partial: _value(None),
    ) -> str:
        """The model's answer, streamed into `reply`; `progress` hears of the placeholder and each preview shown."""
        request = GenerationRequest(
            model=model,
            messages=messages,
            options=SamplingOptions(temperature=self.settings.temperature, max_tokens=self.settings.max_answer_tokens),
        )
        await reply.begin()
        await progress("")  # the placeholder (if any) is placed: a restart edits it rather than posting anew
        raw = ""
        shown = _Preview(reply, self.style, self.edit_interval, progress)
        try:
            async with aclosing(self.backend.generate(request)) as chunks:
                async for chunk in chunks:
                    raw += chunk.text
                    shown.push(raw)
        finally:
            await shown.close()
        return strip_reasoning(raw).strip() or NO_ANSWER

    async def fire_schedule(self, scheduled: ScheduledPrompt) -> None:
        """Run a schedule that came due, unless whoever set it up may no longer talk to the bot there: then remove it
        and say so in the channel."""
        if self.access.allows(scheduled.user, scheduled.key.channel):
            await self.run_scheduled(scheduled.key, scheduled.prompt)
            return
        self.schedules.remove(scheduled.key, scheduled.id)
        log.info("removed %s schedule %s: its owner is no longer allowed", self.style.name, scheduled.id)
        await self._deliver(
            self._open_reply(scheduled.key, None),
            f"I removed the schedule `{scheduled.id}` ({scheduled.description}): "
            "the person who set it up may no longer use me here.",
        )

    async def run_scheduled(self, key: ConversationKey, prompt: str) -> None:
        """Post the answer to a scheduled prompt into the conversation at `key` (a one-off; history untouched)."""
        reply = self._open_reply(key, None)
        try:
            conversation = await self.store.conversation(key)
            messages = [
                ChatMessage(role="system", content=conversation.system or self.settings.system_prompt),
                ChatMessage(role="user", content=prompt),
            ]
            answer = await self._generate(conversation.model or self.default_model, messages, reply)
        except Exception as error:
            answer = error_sentence(error, where=f"schedule in {key.platform} {key.channel}")
        await self._deliver(reply, answer)

    # --- commands ---------------------------------------------------------------------

    async def _command(self, command: Command, message: IncomingMessage) -> str:
        key = message.key
        conversation = await self.store.conversation(key)
        if command.name == "help":
            return HELP
        if command.name == "sources":
            return self.knowledge.describe_last(key)
        if command.name == "reset":
            count = await self.store.forget(conversation.id)
            return f"Forgotten: {count} message{'s' if count != 1 else ''}. Let's start afresh."
        if command.name == "model":
            if not command.argument:
                current = conversation.model or self.default_model
                return f"This conversation uses `{current}`. Switch with `/model NAME` (or `/model default`)."
            if command.argument.lower() == "default":
                await self.store.set_model(conversation.id, None)
                return f"Back to the default model, `{self.default_model}`."
            name = str(ModelName.parse(command.argument))
            await self.store.set_model(conversation.id, name)
            return f"This conversation now uses `{name}`."
        if command.name == "system":
            if not command.argument:
                current = conversation.system or self.settings.system_prompt
                return (
                    f"The instructions here are:\n\n> {current}\n\n"
                    "Change them with `/system TEXT` (or `/system default`)."
                )
            if command.argument.lower() == "default":
                await self.store.set_system(conversation.id, None)
                return "Back to the default instructions."
            await self.store.set_system(conversation.id, command.argument)
            return "Understood; I'll follow those instructions in this conversation."
        if command.name == "schedule":
            if not command.argument:
                raise InvalidRequest("Say when and what, e.g. `/schedule every weekday at 9:00 Summarise the plan`.")
            spec, prompt = parse_schedule(command.argument, self.settings.min_schedule_interval)
            scheduled = self.schedules.add(key, spec, prompt, message.user_id)
            when = scheduled.next_run.strftime("%Y-%m-%d %H:%M %Z") if scheduled.next_run else "never"
            return f"Scheduled `{scheduled.id}`: {spec.description} ({self.settings.timezone}); first run {when}."
        if command.name == "schedules":
            listed = self.schedules.list(key)
            if not listed:
                return "There are no schedules in this channel."
            lines = [f"- `{item.id}` {item.description}: {item.prompt}" for item in listed]
            return "Schedules here:\n" + "\n".join(lines)
        if command.name == "unschedule":
            if not command.argument:
                raise InvalidRequest("Say which schedule to remove, e.g. `/unschedule a1b2c3` (see `/schedules`).")
            if self.schedules.remove(key, command.argument):
                return f"Removed schedule `{command.argument}`."
            return f"There is no schedule `{command.argument}` in this channel."
        raise InvalidRequest(f"I don't know the command /{command.name}; send /help.")


async def _value(value: T) -> T:
    """`value`, as an awaitable (for turns whose text is already known)."""
    return value
