"""The one bot error handler: every failure becomes one plain sentence for the user and details for the log.

Platforms call `error_sentence` wherever an answer cannot be given and send
the sentence back; nothing else decides what a user reads about a failure.
Errors are matched by class, never by message text.
"""

from __future__ import annotations

import logging

from ingle.adapters.client import DaemonUnavailable
from ingle.core.errors import (
    ContextOverflow,
    IngleError,
    InsufficientMemory,
    InvalidRequest,
    ModelLoadTimeout,
    ModelNotFound,
    QueueFull,
)

log = logging.getLogger("ingle.bots")

BUSY = "I'm busy answering others right now; please try again in a minute."


def error_sentence(error: BaseException, where: str = "") -> str:
    """One plain sentence for the user about `error`; the details (and traceback, if unexpected) go to the log."""
    context = f" ({where})" if where else ""
    if isinstance(error, DaemonUnavailable):
        log.error("daemon unavailable%s: %s", context, error)
        return "I can't reach the model right now; please try again later."
    if isinstance(error, QueueFull):
        log.warning("model busy%s: %s", context, error)
        return BUSY
    if isinstance(error, ContextOverflow):
        log.info("context overflow%s: %s", context, error)
        return "That message is too long for the model; please shorten it or send /reset."
    if isinstance(error, ModelNotFound):
        log.warning("model not found%s: %s", context, error)
        return f"{error.message} Send /model to pick another."
    if isinstance(error, (InsufficientMemory, ModelLoadTimeout)):
        log.error("model unavailable%s: %s", context, error)
        return "The model cannot be loaded right now; please tell the administrator."
    if isinstance(error, InvalidRequest):
        log.info("invalid request%s: %s", context, error)
        return error.message
    if isinstance(error, IngleError):
        log.error("engine error%s: %s", context, error)
        return "Something went wrong while answering; please try again."
    if isinstance(error, (ConnectionError, TimeoutError, OSError)):
        log.error("backend unreachable%s: %s", context, error, exc_info=error)
        return "I can't reach the model right now; please try again later."
    log.error("unexpected error%s", context, exc_info=error)
    return "Something went wrong while answering; please try again."
