"""JSON text from outside ingle (a request body, a model's answer, an upstream's events), parsed safely.

The standard library parses nested arrays and objects recursively and raises
RecursionError, not a ValueError, on text like `[[[[…` a thousand levels deep:
a 500 or a broken stream where malformed JSON gets a clear answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def parse_json(text: str | bytes, parse_float: Callable[[str], Any] | None = None) -> Any:
    """json.loads; JSON nested deeper than Python's recursion allows is a JSONDecodeError like any other."""
    try:
        return json.loads(text, parse_float=parse_float)
    except RecursionError:
        raise json.JSONDecodeError("the JSON nests too deeply", "", 0) from None
