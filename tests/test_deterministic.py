"""`deterministic = true`: a greedy answer comes out token for token the same with and without speculative
guesses, and alone or beside other users' requests, its prompt read afresh or taken from the cache.

The edit is one of the benchmark's (bench/vs_llama_server.py) whose answer, with llama.cpp's fastest
kernels everywhere, parted from the unspeculated one and from the one given beside three other streams:
its answer reaches a near tie that the order of additions in a batched decode decides.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path

import click.termui
import openai
import pytest

from .conftest import DEFAULT_MODEL, link_home
from .servers import Daemon, start_daemon

EDIT = (
    "Rewrite this function with type hints and a docstring; keep its body as it is. "
    "Answer with the whole function in one Python code block.\n\n```python\n{source}```"
)
STORIES = ["a lighthouse keeper", "a lost violin", "the first snow on Mars"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(default_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Daemon]]:
    """Two deterministic servers, one guessing ahead (the default) and one not, each with 4 sequences."""
    daemons: dict[str, Daemon] = {}
    try:
        for label, draft_tokens in (("guessing", "16"), ("plain", "0")):
            home = link_home(default_model_cache, tmp_path_factory.mktemp(label) / "home")
            daemons[label] = start_daemon(
                home,
                "--socket",
                "",
                INGLE_DETERMINISTIC="true",
                INGLE_DRAFT_TOKENS=draft_tokens,
                INGLE_NUM_PARALLEL="8",
                INGLE_NUM_CTX="4096",
                INGLE_KEEP_ALIVE="-1",
            )
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.stop()


async def answer(daemon: Daemon, prompt: str, max_tokens: int) -> str:
    async with openai.AsyncOpenAI(base_url=f"{daemon.url}/v1", api_key="unused", max_retries=0) as client:
        reply = await client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0,
        )
    return reply.choices[0].message.content or ""


async def test_a_greedy_edit_is_the_same_with_guesses_and_beside_other_streams(servers: dict[str, Daemon]) -> None:
    prompt = EDIT.format(source=inspect.getsource(click.termui._format_default))  # pyright: ignore[reportPrivateUsage]
    alone = await answer(servers["plain"], prompt, 320)
    assert "def _format_default" in alone
    guessed = await answer(servers["guessing"], prompt, 320)
    crowded, *_ = await asyncio.gather(
        answer(servers["plain"], prompt, 320),
        *(answer(servers["plain"], f"Write a long story about {topic}.", 200) for topic in STORIES),
    )
    assert guessed == alone  # with guesses
    assert crowded == alone  # beside three other streams, its prompt now cached
    assert "deterministic" not in servers["plain"].log  # no warning, no error about the setting
