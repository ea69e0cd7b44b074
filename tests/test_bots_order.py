"""Messages sent while the bot is busy: answered in the order they were sent, remembered as question-answer pairs.

The real slack-bolt and the Mattermost bot's own aiohttp client talk to the fakes; the model is a stand-in that
answers "A:<question>" after a pause, so that the questions pile up behind the first answer and each answer shows
which question it belongs to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

from ingle.core.generation import EmbeddingResult, GenerationChunk, GenerationRequest, GenerationStats
from tests.bot_helpers import stored_messages
from tests.fakes.slack_api import BOT_USER_ID, FakeSlack, SlackMessage
from tests.test_bots_mattermost import ALICE as MATTERMOST_ALICE
from tests.test_bots_mattermost import DM as MATTERMOST_DM
from tests.test_bots_mattermost import fake_server, mattermost_bot
from tests.test_bots_slack import ALICE as SLACK_ALICE
from tests.test_bots_slack import CHANNEL as SLACK_CHANNEL
from tests.test_bots_slack import DM as SLACK_DM
from tests.test_bots_slack import slack_bot


class EchoBackend:
    """Answers each question with "A:" and the question, after `pause` seconds; remembers what it was sent."""

    def __init__(self, pause: float = 0.3) -> None:
        self.pause = pause
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """One chunk with the answer, then the done chunk."""
        self.requests.append(request)
        await asyncio.sleep(self.pause)
        yield GenerationChunk(text=f"A:{(request.messages or [])[-1].content}")
        yield GenerationChunk(text="", done=True, stats=GenerationStats(completion_tokens=1))

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """Not used by bots."""
        raise NotImplementedError

    def seen(self) -> list[list[str]]:
        """For each request, the contents of the conversation it was sent (the system prompt left out)."""
        return [[message.content for message in (request.messages or [])[1:]] for request in self.requests]


def replies_when_all_in(slack: FakeSlack, channel: str, root: str, count: int) -> list[SlackMessage] | None:
    """The thread's finished bot replies once there are `count` of them, else None (for `wait_until`)."""
    found = slack.finished_replies(channel, root)
    return found if len(found) == count else None


async def test_a_threads_quick_messages_are_answered_in_the_order_sent(tmp_path: Path) -> None:
    backend = EchoBackend(pause=0.05)
    questions = [f"m{index}" for index in range(1, 7)]
    async with FakeSlack() as slack, slack_bot(slack, tmp_path, backend, rate_limit_burst=100):
        root, _ = await slack.user_says(SLACK_ALICE, "start", channel=SLACK_DM)
        await slack.wait_until(lambda: slack.finished_replies(SLACK_DM, root), what="the first answer")
        for question in questions:  # sent one after another, faster than the bot stores them
            await slack.user_says(SLACK_ALICE, question, channel=SLACK_DM, thread_ts=root)
        replies = await slack.wait_until(
            lambda: replies_when_all_in(slack, SLACK_DM, root, 1 + len(questions)), what="every answer"
        )

    assert [reply.text for reply in replies] == ["A:start", *(f"A:{question}" for question in questions)]


async def test_messages_waiting_at_start_keep_their_order(tmp_path: Path) -> None:
    backend = EchoBackend(pause=0.05)
    questions = [f"m{index}" for index in range(1, 5)]
    async with FakeSlack() as slack:
        # Each auth.test after the bot's own answers sooner than the one before, as any may on a busy network.
        slack.slow_down("auth.test", [0.0, 0.4, 0.3, 0.2, 0.1])
        async with slack_bot(slack, tmp_path, backend, rate_limit_burst=100):
            root = slack.next_ts()
            for question in questions:  # what Slack held while the bot was down arrives at once
                await slack.user_says(SLACK_ALICE, question, channel=SLACK_DM, thread_ts=root)
            replies = await slack.wait_until(
                lambda: replies_when_all_in(slack, SLACK_DM, root, len(questions)), what="every answer"
            )

    assert [reply.text for reply in replies] == [f"A:{question}" for question in questions]


async def test_replies_in_a_channel_thread_keep_their_order_while_the_bot_looks_the_thread_up(tmp_path: Path) -> None:
    backend = EchoBackend(pause=0.05)
    questions = [f"m{index}" for index in range(1, 5)]
    async with FakeSlack() as slack:
        async with slack_bot(slack, tmp_path, backend, rate_limit_burst=100):
            root, _ = await slack.user_says(SLACK_ALICE, f"<@{BOT_USER_ID}> start", channel=SLACK_CHANNEL)
            await slack.wait_until(lambda: slack.finished_replies(SLACK_CHANNEL, root), what="the first answer")
        # A new process does not know the thread is the bot's: it asks Slack, and a later question's lookup may
        # come back first.
        async with slack_bot(slack, tmp_path, backend, rate_limit_burst=100):
            slack.slow_down("conversations.replies", [0.4, 0.3, 0.2, 0.1])
            for question in questions:
                await slack.user_says(SLACK_ALICE, question, channel=SLACK_CHANNEL, thread_ts=root)
            replies = await slack.wait_until(
                lambda: replies_when_all_in(slack, SLACK_CHANNEL, root, 1 + len(questions)), what="every answer"
            )

    assert [reply.text for reply in replies] == ["A:start", *(f"A:{question}" for question in questions)]


async def test_questions_sent_while_busy_are_remembered_as_question_answer_pairs(tmp_path: Path) -> None:
    backend = EchoBackend()
    database = tmp_path / "mattermost.db"
    async with fake_server() as server, mattermost_bot(server, tmp_path, backend):
        for question in ("q1", "q2", "q3"):  # all three arrive while q1 is being answered
            await server.user_posts(MATTERMOST_ALICE, MATTERMOST_DM, question)
        await server.wait_until(lambda: len(stored_messages(database, "assistant")) == 3, what="three answers")
        await server.user_posts(MATTERMOST_ALICE, MATTERMOST_DM, "q4")
        await server.wait_until(lambda: len(stored_messages(database, "assistant")) == 4, what="the fourth answer")

    assert backend.seen() == [
        ["q1"],
        ["q1", "A:q1", "q2"],
        ["q1", "A:q1", "q2", "A:q2", "q3"],
        ["q1", "A:q1", "q2", "A:q2", "q3", "A:q3", "q4"],
    ]
