"""Typed errors raised by the engine.

Every edge (CLI, HTTP API, language server, bots) maps these once to its own
vocabulary: an exit code, a status code, a JSON-RPC error, a chat sentence.
The message of each error is one plain sentence meant for the user, saying
what went wrong and, where it helps, what to do next. Nobody matches on the
text; match on the class.
"""

from __future__ import annotations


class IngleError(Exception):
    """Base class of every error the engine raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- the request itself is wrong (HTTP 400) ---------------------------------


class InvalidRequest(IngleError):
    """A request or option is malformed; the message names the field."""


class InvalidModelName(InvalidRequest):
    """A model name that is not `name[:tag]` made of safe characters."""


class InvalidDigest(InvalidRequest):
    """A digest that is not `sha256-<64 lowercase hex>`."""


class ContextOverflow(InvalidRequest):
    """The prompt does not fit in the model's context window."""


# --- something named does not exist (HTTP 404) ------------------------------


class ModelNotFound(IngleError):
    """No model of that name is in the store."""


class KnowledgeBaseNotFound(IngleError):
    """No knowledge base of that name exists under the home."""


# --- a model file or download is bad (HTTP 422 / 502) -----------------------


class CorruptModel(IngleError):
    """A file is not a usable GGUF model (bad magic, truncated, unreadable)."""


class DigestMismatch(IngleError):
    """Downloaded or imported bytes do not hash to the expected sha256."""


class SourceError(IngleError):
    """A model source could not be reached or answered with an error."""


class PullRefused(IngleError):
    """A pull a remote caller asked for would reach a source the settings do not open to the API (HTTP 403)."""


class UnsupportedFeature(IngleError):
    """The model cannot do what was asked (e.g. fill-in-the-middle, embeddings)."""


# --- the machine cannot take it right now (HTTP 503 / 507) ------------------


class StorageFull(IngleError):
    """The disk filled up while writing to the model store."""


class InsufficientMemory(IngleError):
    """A model does not fit in the memory that is free, even after eviction."""


class QueueFull(IngleError):
    """Every sequence is busy and the waiting queue is full; retry later."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelLoadTimeout(IngleError):
    """Loading a model took longer than allowed."""


class RuntimeFailure(IngleError):
    """llama.cpp reported a failure while evaluating a batch."""


class ModelUnloaded(RuntimeFailure):
    """The model was unloaded while a request still needed it (the server is stopping): its answer is cut short."""
