"""Token log-probabilities, asked for as OpenAI's and Ollama's clients ask, checked against llama-cpp-python's own.

llama-cpp-python's `Llama.create_completion(logprobs=...)` computes them from
the same model in its own context, so ingle's figures must agree with it to
rounding; the rest checks that every API hands them out in its own shape, in
step with the text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import ollama
import openai
import pytest

from ingle.core.engine import Engine
from ingle.core.runtime.llama_model import reference_llama
from ingle.core.settings import Settings
from ingle.core.store import ModelStore

from .conftest import DEFAULT_MODEL, settings_for
from .servers import serving

pytestmark = pytest.mark.slow

PROMPT = "def fibonacci(n):\n    "
# For llama-cpp-python, which does not heal a prompt ending in indentation (core/runtime/indentation.py): one
# whose greedy answer has no near ties, which kernels of other batch shapes could tip either way.
REFERENCE_PROMPT = "def fibonacci(n):\n    if n <= 1:\n        return n\n    return"
GREEDY = {"temperature": 0, "repeat_penalty": 1.0}


@pytest.fixture
async def base_url(engine: Engine, tmp_path: Path) -> AsyncIterator[str]:
    async with serving(settings_for(tmp_path / "home"), engine) as url:
        yield url


@pytest.fixture
def openai_client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


async def test_they_agree_with_llama_cpp_pythons_own(
    default_model_cache: Path, openai_client: openai.AsyncOpenAI
) -> None:
    store = ModelStore(Settings(home=default_model_cache).models_dir)
    reference = reference_llama(
        store.blob_path(store.get(DEFAULT_MODEL).digest), n_ctx=256, n_threads=2, logits_all=True, verbose=False
    )
    try:
        expected = reference.create_completion(REFERENCE_PROMPT, max_tokens=12, logprobs=3, **GREEDY)["choices"][0]  # pyright: ignore[reportIndexIssue, reportArgumentType]
    finally:
        reference.close()
    completion = await openai_client.completions.create(
        model=DEFAULT_MODEL, prompt=REFERENCE_PROMPT, max_tokens=12, logprobs=3, temperature=0, extra_body=GREEDY
    )
    answer = completion.choices[0]

    assert answer.text == expected["text"]
    assert answer.logprobs is not None and answer.logprobs.token_logprobs is not None
    assert answer.logprobs.tokens == expected["logprobs"]["tokens"]
    # To the rounding of a quantized model: llama-cpp-python's own figures move by up to 0.08 when it reads the
    # prompt one token at a time instead of in one batch (other kernels).
    for ours, theirs in zip(answer.logprobs.token_logprobs, expected["logprobs"]["token_logprobs"], strict=True):
        assert ours == pytest.approx(theirs, abs=0.12)
    # Theirs list the picked token beside the 3 most likely; greedy, it is one of them.
    assert answer.logprobs.top_logprobs is not None
    for ours, theirs in zip(answer.logprobs.top_logprobs, expected["logprobs"]["top_logprobs"], strict=True):
        assert theirs is not None and set(ours) <= set(theirs) and len(ours) == 3
    offsets = answer.logprobs.text_offset or []
    assert [offsets[i + 1] - offsets[i] for i in range(len(offsets) - 1)] == [
        len(token) for token in answer.logprobs.tokens[:-1]
    ]


async def test_chat_completions_carry_them_whole_and_streamed(openai_client: openai.AsyncOpenAI) -> None:
    messages: list = [{"role": "user", "content": "Name three colours."}]
    whole = await openai_client.chat.completions.create(
        model=DEFAULT_MODEL, messages=messages, max_tokens=16, temperature=0, logprobs=True, top_logprobs=2
    )
    choice = whole.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert "".join(entry.token for entry in entries) == choice.message.content
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        # Greedy: the picked token is the most likely one, and the alternatives come most likely first.
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert bytes(entry.bytes or []).decode() == entry.token

    streamed: list[str] = []
    text = ""
    stream = await openai_client.chat.completions.create(
        model=DEFAULT_MODEL, messages=messages, max_tokens=16, temperature=0, logprobs=True, stream=True
    )
    async for chunk in stream:
        for part in chunk.choices:
            text += part.delta.content or ""
            if part.logprobs and part.logprobs.content:
                streamed += [entry.token for entry in part.logprobs.content]
                assert all(not entry.top_logprobs for entry in part.logprobs.content)
    assert "".join(streamed) == text == choice.message.content

    plain = await openai_client.chat.completions.create(model=DEFAULT_MODEL, messages=messages, max_tokens=4)
    assert plain.choices[0].logprobs is None


async def test_ollama_lines_carry_them_and_a_stop_string_leaves_its_own_out(base_url: str) -> None:
    client = ollama.AsyncClient(host=base_url)
    options = {"temperature": 0, "num_predict": 24}
    whole = await client.generate(DEFAULT_MODEL, PROMPT, raw=True, options=options, logprobs=True, top_logprobs=1)
    assert whole.logprobs and "".join(entry.token for entry in whole.logprobs) == whole.response
    assert all(entry.top_logprobs and entry.top_logprobs[0].token == entry.token for entry in whole.logprobs)

    stop = "return"
    assert stop in (whole.response or ""), "the prompt is meant to reach a stop string"
    tokens: list[str] = []
    text = ""
    async for line in await client.generate(
        DEFAULT_MODEL, PROMPT, raw=True, options={**options, "stop": [stop]}, logprobs=True, stream=True
    ):
        text += line.response or ""
        tokens += [entry.token for entry in line.logprobs or []]
    # Only tokens whose text is all in the answer: " return", which reaches into the stop string, is left out
    # (its space is the end of the answer).
    assert text == (whole.response or "").split(stop)[0]
    joined = "".join(tokens)
    assert joined and text.startswith(joined) and text[len(joined) :] == " "

    chat = await client.chat(
        DEFAULT_MODEL, [{"role": "user", "content": "Say hi."}], options=options, logprobs=True, stream=False
    )
    assert chat.logprobs and "".join(entry.token for entry in chat.logprobs) == chat.message.content


async def test_counts_past_the_limits_are_refused_with_the_field_named(
    base_url: str, openai_client: openai.AsyncOpenAI
) -> None:
    messages: list = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.BadRequestError) as refused:
        await openai_client.chat.completions.create(
            model=DEFAULT_MODEL, messages=messages, logprobs=True, top_logprobs=21
        )
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        await openai_client.completions.create(model=DEFAULT_MODEL, prompt="Hi", logprobs=6)
    with pytest.raises(ollama.ResponseError, match="top_logprobs") as refused_ollama:
        await ollama.AsyncClient(host=base_url).generate(DEFAULT_MODEL, "Hi", top_logprobs=21)
    assert refused_ollama.value.status_code == 400


async def test_responses_carry_them_when_included(openai_client: openai.AsyncOpenAI) -> None:
    asked = {"include": ["message.output_text.logprobs"], "top_logprobs": 2, "max_output_tokens": 16}
    response = await openai_client.responses.create(
        model=DEFAULT_MODEL, input="Name three colours.", temperature=0, **asked
    )
    part = response.output[0].content[0]  # pyright: ignore[reportAttributeAccessIssue]
    assert part.logprobs and "".join(entry.token for entry in part.logprobs) == response.output_text
    assert all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in part.logprobs)

    tokens: list[str] = []
    stream = await openai_client.responses.create(
        model=DEFAULT_MODEL, input="Name three colours.", temperature=0, stream=True, **asked
    )
    async for event in stream:
        if event.type == "response.output_text.delta":
            tokens += [entry.token for entry in event.logprobs]
    assert "".join(tokens) == response.output_text

    plain = await openai_client.responses.create(model=DEFAULT_MODEL, input="Hi", max_output_tokens=4)
    assert plain.output[0].content[0].logprobs == []  # pyright: ignore[reportAttributeAccessIssue]


async def test_llama_server_routes_give_completion_probabilities_with_the_text_they_keep(
    base_url: str, openai_client: openai.AsyncOpenAI
) -> None:
    reference = await openai_client.completions.create(
        model=DEFAULT_MODEL, prompt=PROMPT, max_tokens=12, logprobs=2, temperature=0, extra_body=GREEDY
    )
    async with aiohttp.ClientSession(base_url) as http:
        body = {"prompt": PROMPT, "n_predict": 12, "temperature": 0, "n_probs": 2}
        async with http.post("/completion", json=body) as response:
            whole = await response.json()
        # The same tokens and figures as the OpenAI route's, in llama-server's shape.
        probabilities = whole["completion_probabilities"]
        assert whole["content"] == reference.choices[0].text
        assert reference.choices[0].logprobs and reference.choices[0].logprobs.token_logprobs
        assert [entry["token"] for entry in probabilities] == reference.choices[0].logprobs.tokens
        for entry, logprob in zip(probabilities, reference.choices[0].logprobs.token_logprobs, strict=True):
            assert entry["logprob"] == pytest.approx(logprob, abs=1e-4)
            assert bytes(entry["bytes"]).decode() == entry["token"] and entry["id"] >= 0
            assert entry["top_logprobs"][0]["id"] == entry["id"]  # greedy: the likeliest
            assert len(entry["top_logprobs"]) == 2

        # Streamed, with n_indent cutting the answer at its first line back at column 0: each event carries the
        # probabilities of its own text, and a token past the cut is not reported.
        infill = {
            "input_prefix": "def add(a, b):\n",
            "prompt": "    ",
            "input_suffix": "\n",
            "n_predict": 40,
            "temperature": 0,
            "n_indent": 4,
            "n_probs": 1,
            "post_sampling_probs": True,
            "stream": True,
        }
        content, tokens = "", b""
        async with http.post("/infill", json=infill) as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    content += event["content"]
                    for entry in event.get("completion_probabilities", []):
                        assert 0 < entry["prob"] <= 1 and "logprob" not in entry and len(entry["top_probs"]) == 1
                        tokens += bytes(entry["bytes"])
        # The last token ran from the kept line break into the cut line ("\n\n" or "\ndef"): left out, as its
        # line break is the end of the answer.
        assert content.endswith("\n") and tokens.decode() == content[:-1]

        async with http.post("/completion", json={"prompt": "Hi", "n_probs": 21}) as refused:
            assert refused.status == 400 and "n_probs" in json.dumps(await refused.json())
        async with http.post("/completion", json={"prompt": "Hi", "n_predict": 2}) as plain:
            assert "completion_probabilities" not in await plain.json()
