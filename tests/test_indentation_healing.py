"""A raw or fill-in-the-middle prompt that ends in a line's indentation: it ends one character short, the model
writes that character in a token that goes on with code, and the answer comes back without it
(core/runtime/indentation.py)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import numpy as np
import ollama
import openai
import pytest

from ingle.core.engine import Engine
from ingle.core.generation import GenerationRequest, SamplingOptions
from ingle.core.runtime.indentation import HeldIndentation, split_indentation

from .conftest import DEFAULT_MODEL, settings_for
from .servers import serving
from .test_api_llama_server import llama_vim_fim


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("def f():\n    ", ("def f():\n   ", " ")),
        ("def f():\n\t\t", ("def f():\n\t", "\t")),
        ("def f():\n\t  ", ("def f():\n\t ", " ")),
        ("    ", ("   ", " ")),
        ("def f():\n    return ", ("def f():\n    return ", "")),  # text on the line: nothing is held
        ("def f():\n", ("def f():\n", "")),  # column 0: the model indents as it likes
    ],
)
def test_the_last_character_of_a_lines_indentation_is_held(prefix: str, expected: tuple[str, str]) -> None:
    assert split_indentation(prefix) == expected


def test_held_indentation_allows_only_tokens_that_keep_to_it(engine: Engine) -> None:
    model = next(iter(engine._loaded.values())).model
    held = HeldIndentation(model, "  ")
    allowed = np.flatnonzero(np.isfinite(held.masked(np.zeros(model.n_vocab, np.float32))))
    texts = {int(token): model.token_bytes(int(token)) for token in allowed}
    for token, text in texts.items():
        if model.is_end_of_generation(token):
            continue
        spaces = len(text) - len(text.lstrip(b" "))
        assert (spaces == len(text) <= 2) or (spaces == 2 and text[2:3] not in b" \t\r\n"), text
    word, newline = model.tokenize(" self")[0], model.tokenize("\n")[0]
    assert newline not in texts and word not in texts
    # One space written, one to go: now a word with its leading space opens the line.
    held.advance(model.tokenize(" ")[0])
    assert np.isfinite(held.masked(np.zeros(model.n_vocab, np.float32))[word])
    held.advance(word)
    assert not held.held


@pytest.mark.slow
async def test_llama_vim_at_a_lines_indentation_gets_the_line_without_a_second_indentation(
    engine: Engine, tmp_path: Path
) -> None:
    # llama.vim sends the cursor line's text before the cursor as `prompt`: here only the indentation.
    body = llama_vim_fim("def add(a, b):\n", "    ", "\n", temperature=0, samplers=[])
    async with serving(settings_for(tmp_path / "home"), engine) as url, aiohttp.ClientSession() as session:
        async with session.post(f"{url}/infill", json=body) as response:
            assert response.status == 200
            answer = json.loads(await response.text())
    assert answer["content"].startswith("return a + b")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prefix", "suffix", "expected"),
    [
        # Ending in the indentation, the prompt had the model write a second one: `    print(...)`.
        ("if __name__ == '__main__':\n    ", "\n", "print("),
        # Ending at the line break, it had the model end the loop's body: `return s` at the loop's column.
        ("def total(items):\n    s = 0\n    for item in items:\n        ", "\n    return s\n", "s += item"),
    ],
)
async def test_an_answer_at_an_indentation_keeps_to_it(engine: Engine, prefix: str, suffix: str, expected: str) -> None:
    request = GenerationRequest(
        model=DEFAULT_MODEL, prompt=prefix, suffix=suffix, options=SamplingOptions(temperature=0, max_tokens=8)
    )
    text = "".join([chunk.text async for chunk in engine.generate(request)])
    assert text.startswith(expected), repr(text)


@pytest.mark.slow
async def test_a_plain_completion_ending_in_indentation_is_not_indented_again(engine: Engine, tmp_path: Path) -> None:
    # Without healing every line of this answer came one space too deep: " return a + b".
    async with serving(settings_for(tmp_path / "home"), engine) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        completion = await client.completions.create(
            model=DEFAULT_MODEL, prompt="def add(a, b):\n    ", max_tokens=6, temperature=0
        )
    assert completion.choices[0].text.startswith("return a + b")


@pytest.mark.slow
async def test_token_probabilities_spell_the_healed_answer(engine: Engine, tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path / "home"), engine) as url:
        client = ollama.AsyncClient(host=url)
        options = {"temperature": 0, "num_predict": 6}
        answer = await client.generate(
            DEFAULT_MODEL, "def add(a, b):\n    ", raw=True, options=options, logprobs=True, top_logprobs=1
        )
    assert answer.response and answer.response.startswith("return")
    assert answer.logprobs and "".join(entry.token for entry in answer.logprobs) == answer.response
    # The held space is gone from the first token and from its likeliest alternative, which is that token.
    assert all(entry.top_logprobs and entry.top_logprobs[0].token == entry.token for entry in answer.logprobs)
