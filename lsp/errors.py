"""The engine's typed errors as JSON-RPC errors: the language server's one mapping."""

from __future__ import annotations

from lsprotocol.types import LSPErrorCodes
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams

from ingle.core.errors import IngleError, InvalidRequest, QueueFull


def jsonrpc_error(error: IngleError) -> JsonRpcException:
    """The JSON-RPC error an editor gets for an engine error; the message stays the engine's sentence."""
    if isinstance(error, InvalidRequest):
        return JsonRpcInvalidParams(error.message)
    if isinstance(error, QueueFull):
        # The editor may retry: the server was busy, the request itself was fine.
        return JsonRpcException(error.message, code=LSPErrorCodes.ServerCancelled.value)
    return JsonRpcException(error.message, code=LSPErrorCodes.RequestFailed.value)
