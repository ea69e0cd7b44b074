"""Fuzz every documented route with schemathesis: no input may make the server answer 5xx.

The server is the real HTTP app over the real default model, on a loopback
port of the test's event loop; schemathesis (synchronous, `requests`) runs in
a worker thread against /openapi.json. Both valid and invalid bodies are
generated. About a third of the generated bodies have their `model` replaced
by the real model and their token limits clamped, so the generation paths
run too and not only the 404 for a random name; request_timeout is short, so
a body asking for thousands of tokens ends in a 504, which is allowed, as is
a 503 from a full queue. Any other 5xx fails the test.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from ingle.core.engine import Engine

from .conftest import DEFAULT_MODEL, settings_for
from .test_upstreams import running_app

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 15
TOLERATED = {503, 504}
"""A full queue and request_timeout: the server's answer to load, not a crash."""
NETWORK_PATHS = {"/api/pull", "/api/push"}
"""Routes that reach out to model sources; fuzzing them would send guessed names to real registries."""
TOKEN_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "n_predict", "num_predict")
CLAMP = 8


def with_real_model(body: Any) -> Any:
    """The body naming the real model, with every token limit clamped to a few tokens."""
    if not isinstance(body, dict) or "model" not in body:
        return body
    body = {**body, "model": DEFAULT_MODEL}
    for key in TOKEN_LIMITS:
        if isinstance(body.get(key), int) and not isinstance(body[key], bool):
            body[key] = min(body[key], CLAMP)
    if isinstance(body.get("options"), dict) and isinstance(body["options"].get("num_predict"), int):
        body["options"] = {**body["options"], "num_predict": min(body["options"]["num_predict"], CLAMP)}
    return body


def fuzz(base_url: str, only: set[str] | None = None) -> tuple[list[str], Counter[int]]:
    """Run schemathesis over every operation (or the paths in `only`); return the failures and the statuses."""
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    session = requests.Session()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"an operation of the OpenAPI document cannot be read: {result.err()}")
            continue
        operation = result.ok()
        if operation.path in NETWORK_PATHS or (only is not None and operation.path not in only):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), real_model=st.sampled_from([False, False, True]))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck.__members__.values()),
            )
            def probe(case: schemathesis.Case, real_model: bool) -> None:
                if real_model:
                    case.body = with_real_model(case.body)
                response = case.call(base_url=base_url, session=session, timeout=60)
                statuses[response.status_code] += 1
                if response.status_code in TOLERATED:
                    return
                try:
                    case.validate_response(response, checks=[not_a_server_error])
                except Exception as error:  # schemathesis reports a failed check as an exception group
                    failures.append(
                        f"{case.method} {case.path} -> {response.status_code} {response.text[:300]!r} "
                        f"for body {case.body!r:.300}: {type(error).__name__}"
                    )

            try:
                probe()
            except Unsatisfiable:  # an operation without inputs has no invalid form
                assert mode is GenerationMode.NEGATIVE, operation.label
    return failures, statuses


@pytest.fixture
async def fuzz_engine(default_model_home: Path) -> AsyncIterator[Engine]:
    """An engine of its own: fuzzing may copy or delete models, which other tests must not see."""
    async with Engine(settings_for(default_model_home, request_timeout=3.0, num_parallel=2, keep_alive=-1)) as engine:
        await engine.load(DEFAULT_MODEL)
        yield engine


async def test_no_generated_request_gets_a_server_error(fuzz_engine: Engine) -> None:
    started = time.monotonic()
    async with running_app(fuzz_engine.settings, fuzz_engine) as url:
        failures, statuses = await asyncio.to_thread(fuzz, url)
    print(f"schemathesis: {sum(statuses.values())} requests in {time.monotonic() - started:.0f} s, {dict(statuses)}")
    assert statuses[200] > 0
    assert failures == [], "\n".join(failures)
