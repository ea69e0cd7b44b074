"""A GGUF's chat template is untrusted: whatever it does, rendering ends within seconds, in bounded memory.

Each hostile template here once ran for ever, took gigabytes, or was
computed by Jinja while compiling; now each gets one sentence that names
the way out (a raw prompt, or another model), within about the render limit.
"""

from __future__ import annotations

import resource
import sys
import time

import pytest

from ingle.core.chat_template import RENDER_SECONDS, ChatTemplate
from ingle.core.errors import UnsupportedFeature
from ingle.core.generation import ChatMessage

MESSAGES = [ChatMessage("user", "hello"), ChatMessage("assistant", "hi"), ChatMessage("user", "how are you?")]
LOOP = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"

HOSTILE = {
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}" + LOOP,
    "a repeated text": "{{ 'x' * 4000000000 }}" + LOOP,
    "a concatenation": "{{ 'x' * 30000000 + 'y' * 30000000 }}" + LOOP,
    "a huge power": "{{ 9 ** 999999999 }}" + LOOP,
    "a filter's width, a constant Jinja would fold": "{{ 'ab'|center(9999999999) }}" + LOOP,
    "a printf width": "{{ '%999999999d' % 1 }}" + LOOP,
    "a format width": "{{ '{:>999999999}'.format(1) }}" + LOOP,
    "a doubling namespace": (
        "{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}"
        "{{ ns.x|length }}" + LOOP
    ),
    "a doubling macro": "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ f('ab', 60) }}",
    "a macro without end": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "an amplifying replace": "{{ ('x' * 30000000)|replace('x', 'xxxxxxxxxx') }}" + LOOP,
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_template_is_refused_in_seconds_without_taking_the_memory(source: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    with pytest.raises(UnsupportedFeature, match=r"send a raw prompt instead .* or use another model") as refused:
        ChatTemplate(source).render(MESSAGES)
    assert time.monotonic() - started < RENDER_SECONDS + 1.5
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 1024, f"peak memory grew by {grown_mib:.0f} MiB"
    assert "\n" not in refused.value.message
    assert sys.gettrace() is None  # the limits are gone once rendering is


def test_a_real_template_renders_as_before() -> None:
    assert ChatTemplate(LOOP).render(MESSAGES) == "<|user|>hello<|assistant|>hi<|user|>how are you?"
    # Jinja's own tests and filters still work within the limits.
    template = "{{ messages|length }} {{ (messages|last).content|upper }} {{ '%5.1f' % 2.25 }} {{ 'ab' * 3 }}"
    assert ChatTemplate(template).render(MESSAGES) == "3 HOW ARE YOU?   2.2 ababab"


def test_two_hostile_constants_are_both_refused() -> None:
    # A check that fires while Jinja compiles would switch the tracing off for the second one.
    with pytest.raises(UnsupportedFeature):
        ChatTemplate("{{ 'ab'|center(9999999999) }}{{ 'cd'|center(9999999999) }}" + LOOP).render(MESSAGES)
