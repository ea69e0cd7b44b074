"""The llama-server-compatible routes, with requests shaped as llama.vim and llama.vscode send them."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingle.adapters.http.llama_server import StopRules
from ingle.core.engine import Engine

from . import servers
from .conftest import settings_for

pytestmark = pytest.mark.slow

# The timing fields llama.vim asks for (autoload/llama.vim, `llama#fim`).
LLAMA_VIM_RESPONSE_FIELDS = [
    "content",
    "timings/prompt_n",
    "timings/prompt_ms",
    "timings/prompt_per_token_ms",
    "timings/prompt_per_second",
    "timings/predicted_n",
    "timings/predicted_ms",
    "timings/predicted_per_token_ms",
    "timings/predicted_per_second",
    "truncated",
    "tokens_cached",
]

EXTRA_CHUNK = {
    "text": "def subtract(a, b):\n    return a - b\n\n\ndef multiply(a, b):\n    return a * b\n",
    "time": 1732000000.5,
    "filename": "arith.py",
}


def llama_vim_fim(prefix: str, middle: str, suffix: str, **overrides: Any) -> dict[str, Any]:
    """The body llama.vim's `llama#fim` posts to /infill."""
    body = {
        "id_slot": 0,
        "input_prefix": prefix,
        "input_suffix": suffix,
        "input_extra": [EXTRA_CHUNK],
        "prompt": middle,
        "n_predict": 16,
        "stop": [],
        "n_indent": 4,
        "top_k": 40,
        "top_p": 0.90,
        "samplers": ["top_k", "top_p", "infill"],
        "stream": False,
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "response_fields": LLAMA_VIM_RESPONSE_FIELDS,
    }
    body.update(overrides)
    return body


def llama_vscode_fim(prefix: str, middle: str, suffix: str, n_predict: int = 16) -> dict[str, Any]:
    """The body llama.vscode's `getFIMCompletion` posts to /infill (`n_predict: 0` is its cache warm-up)."""
    if n_predict == 0:
        return {
            "input_prefix": prefix,
            "input_suffix": suffix,
            "input_extra": [EXTRA_CHUNK],
            "prompt": middle,
            "n_predict": 0,
            "samplers": [],
            "cache_prompt": True,
            "t_max_prompt_ms": 500,
            "t_max_predict_ms": 1,
        }
    return {
        "input_prefix": prefix,
        "input_suffix": suffix,
        "input_extra": [EXTRA_CHUNK],
        "prompt": middle,
        "n_predict": n_predict,
        "top_k": 40,
        "top_p": 0.99,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "n_indent": 4,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 2500,
    }


@pytest.fixture
async def base_url(engine: Engine, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh ingle app on an ephemeral loopback port."""
    async with serving(engine, tmp_path) as url:
        yield url


def serving(engine: Engine, tmp_path: Path, **settings: Any) -> AbstractAsyncContextManager[str]:
    """Serve a fresh app over the shared engine until the block ends; the block gets its base URL."""
    return servers.serving(settings_for(tmp_path / "home", **settings), engine)


async def post(base_url: str, path: str, body: dict[str, Any]) -> tuple[int, str]:
    """POST a JSON body; the status and the raw text of the answer."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}{path}", json=body) as response:
            return response.status, await response.text()


async def test_llama_vim_infill_completes_the_return_expression(base_url: str) -> None:
    status, raw = await post(base_url, "/infill", llama_vim_fim("def add(a, b):\n", "    return ", "\n"))
    assert status == 200, raw
    # llama.vim checks the raw text with this pattern before it parses it.
    assert re.search(r'"content"\s*:"', raw)
    answer = json.loads(raw)
    assert answer["content"].startswith("a + b")
    assert set(answer) <= set(LLAMA_VIM_RESPONSE_FIELDS)
    assert answer["timings/prompt_n"] > 0 and answer["timings/predicted_n"] > 0
    assert answer["truncated"] is False


async def test_llama_vim_ring_buffer_update_answers_nothing(base_url: str) -> None:
    body = {
        "id_slot": 0,
        "input_prefix": "",
        "input_suffix": "",
        "input_extra": [EXTRA_CHUNK],
        "prompt": "",
        "n_predict": 0,
        "temperature": 0.0,
        "samplers": [],
        "stream": False,
        "cache_prompt": True,
        "t_max_prompt_ms": 1,
        "t_max_predict_ms": 1,
        "response_fields": [""],
    }
    status, raw = await post(base_url, "/infill", body)
    assert status == 200 and json.loads(raw) == {}


async def test_llama_vscode_infill_and_its_cache_warm_up(base_url: str) -> None:
    status, raw = await post(
        base_url, "/infill", llama_vscode_fim("def add(a, b):\n", "    return ", "\n", n_predict=0)
    )
    assert status == 200, raw
    warm = json.loads(raw)
    assert warm["content"] == "" and warm["tokens_predicted"] == 0 and warm["tokens_evaluated"] > 0
    status, raw = await post(base_url, "/infill", llama_vscode_fim("def add(a, b):\n", "    return ", "\n"))
    assert status == 200, raw
    answer = json.loads(raw)
    assert answer["content"].startswith("a + b")
    assert answer["stop"] is True and answer["stop_type"] in ("eos", "limit")
    assert answer["timings"]["predicted_n"] == answer["tokens_predicted"] > 0
    # The warm-up left the prompt in the cache.
    assert answer["tokens_cached"] >= answer["tokens_evaluated"] - 2


async def test_identical_infill_reuses_the_cached_prompt(base_url: str) -> None:
    body = llama_vim_fim("import os\n\n\ndef add(a, b):\n", "    return ", "\n", n_predict=4, response_fields=None)
    status, raw = await post(base_url, "/infill", body)
    assert status == 200, raw
    first = json.loads(raw)
    status, raw = await post(base_url, "/infill", body)
    second = json.loads(raw)
    assert second["tokens_evaluated"] == first["tokens_evaluated"] > 40
    assert second["tokens_cached"] >= second["tokens_evaluated"] - 2
    assert second["timings"]["prompt_n"] <= 2 and second["timings"]["cache_n"] == second["tokens_cached"]


async def test_completion_streams_llama_server_events(base_url: str) -> None:
    body = {
        "prompt": "Counting: one, two, three,",
        "n_predict": 6,
        "temperature": 0,
        "stream": True,
        "cache_prompt": True,
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/completion", json=body) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            raw = await response.text()
    assert "[DONE]" not in raw
    events = [json.loads(line.removeprefix("data: ")) for line in raw.splitlines() if line.startswith("data: ")]
    assert all(event["stop"] is False for event in events[:-1]) and events[-1]["stop"] is True
    text = "".join(event["content"] for event in events)
    assert "four" in text
    assert events[-1]["stop_type"] == "limit" and events[-1]["tokens_predicted"] == 6


async def test_completion_with_other_files_continues_the_file_after_them(base_url: str) -> None:
    # ingle's addition to /completion: `input_extra` and `filename`, laid out as /infill lays them out, so an
    # /infill warm-up of the same files leaves them cached for it.
    files = {"input_extra": [EXTRA_CHUNK], "filename": "rooms.py", "temperature": 0}
    status, raw = await post(base_url, "/infill", {**files, "n_predict": 0})
    assert status == 200, raw
    warmed = json.loads(raw)["tokens_evaluated"]
    prompt = "import arith\n\n\ndef difference(x, y):\n    "
    status, raw = await post(base_url, "/completion", {**files, "prompt": prompt, "n_predict": 8})
    assert status == 200, raw
    answer = json.loads(raw)
    assert answer["content"].startswith("return arith.subtract(x, y)"), "the other file's function, called"
    assert answer["tokens_cached"] >= warmed - 3, "only the FIM markers differ from the warmed prompt"
    status, raw = await post(base_url, "/completion", {"prompt": prompt, "n_predict": 1, "temperature": 0})
    alone = json.loads(raw)
    assert answer["tokens_evaluated"] > alone["tokens_evaluated"] + 20, "the other file is part of the prompt"


async def test_completion_alias_answers_whole(base_url: str) -> None:
    status, raw = await post(
        base_url, "/completions", {"prompt": ["The capital of France is"], "n_predict": 3, "temperature": 0}
    )
    assert status == 200, raw
    assert "Paris" in json.loads(raw)["content"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/metrics") as response:
            assert 'ingle_generated_tokens_total{model="qwen2.5-coder:0.5b"} 3.0' in await response.text()


async def test_unknown_fields_and_models_are_refused(base_url: str) -> None:
    status, raw = await post(base_url, "/infill", llama_vim_fim("x = ", "", "\n", surprise=True))
    assert status == 400 and "surprise" in json.loads(raw)["error"]
    status, raw = await post(base_url, "/infill", llama_vim_fim("x = ", "", "\n", model="nope:1b"))
    assert status == 404


async def test_health_needs_no_api_key(engine: Engine, tmp_path: Path) -> None:
    async with serving(engine, tmp_path, api_key="secret") as url:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/health") as response:
                assert response.status == 200 and await response.json() == {"status": "ok"}
            async with session.post(f"{url}/infill", json={"input_prefix": "x"}) as response:
                assert response.status == 401


def test_n_indent_cuts_the_first_line_indented_less() -> None:
    rules = StopRules(n_indent=4, t_max_predict_ms=None)
    released = []
    for piece in ["a + b", "\n", "    ", "c = 1", "\n", "  ", "\n"]:
        text, stop = rules.feed(piece, now=0.0)
        released.append(text)
        if stop:
            break
    assert stop and "".join(released) == rules.text == "a + b\n    c = 1\n"
    # The cursor's own line is never checked, and a line's indentation is held back until decided.
    rules = StopRules(n_indent=4, t_max_predict_ms=None)
    assert rules.feed("b\n", 0.0) == ("b\n", False)
    assert rules.feed("  ", 0.0) == ("", False)
    assert rules.feed("    x", 0.0) == ("      x", False)


def test_t_max_predict_ms_stops_only_after_a_new_line() -> None:
    rules = StopRules(n_indent=0, t_max_predict_ms=100)
    assert rules.feed("a", now=10.0) == ("a", False)
    assert rules.feed("b", now=10.5) == ("b", False)
    assert rules.feed("\n", now=10.6) == ("\n", True)
