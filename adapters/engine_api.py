"""The one interface the CLI, the language server and the bots use: an engine, near or far.

`core.engine.Engine` runs models in this process; `adapters.client.IngleClient`
asks a running daemon over HTTP. Their management methods differ in one way:
the engine reads its store synchronously (a local file read), while the
client must await the network. Rather than mirror sync and async APIs, every
caller awaits this small protocol; `LocalEngine` lifts the in-process engine's
synchronous methods into it, and `IngleClient` implements it directly.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..core.generation import EmbeddingResult, GenerationChunk, GenerationRequest
from ..core.manifest import Manifest
from ..core.sources import ProgressCallback

if TYPE_CHECKING:
    # For types only: importing the engine loads llama.cpp, which a client of the daemon never needs.
    from ..core.engine import Engine, RunningModel


@runtime_checkable
class EngineApi(Protocol):
    """Model management and generation, awaited the same way in-process and across HTTP."""

    @property
    def daemon_url(self) -> str | None:
        """Where the daemon answering these calls is, or None when the engine runs in this process."""
        ...

    async def pull(
        self, spec: str, name: str | None = None, sha256: str | None = None, progress: ProgressCallback | None = None
    ) -> Manifest:
        """Fetch a model into the store, reporting progress; return its manifest."""
        ...

    async def list_models(self) -> list[Manifest]:
        """Every model in the store."""
        ...

    async def show(self, name: str) -> Manifest:
        """One model's manifest; ModelNotFound if it is not in the store."""
        ...

    async def remove(self, name: str) -> None:
        """Delete a model's name (and its file once unused)."""
        ...

    async def copy(self, source: str, destination: str) -> Manifest:
        """Give a model a second name."""
        ...

    async def running(self) -> list[RunningModel]:
        """The models loaded in memory."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Stream a generation; the last chunk has `done=True`. Closing the iterator cancels it."""
        ...

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """One normalised vector per input."""
        ...

    async def load(self, model: str, keep_alive: float | None = None) -> RunningModel:
        """Load a model and start its keep-alive timer."""
        ...

    async def unload(self, model: str) -> None:
        """Unload a model now."""
        ...


class LocalEngine:
    """An in-process Engine seen through EngineApi; the caller owns the engine's lifetime."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def daemon_url(self) -> str | None:
        """None: this engine runs here."""
        return None

    async def pull(
        self, spec: str, name: str | None = None, sha256: str | None = None, progress: ProgressCallback | None = None
    ) -> Manifest:
        """See Engine.pull."""
        return await self.engine.pull(spec, name=name, sha256=sha256, progress=progress)

    async def list_models(self) -> list[Manifest]:
        """See Engine.list_models."""
        return self.engine.list_models()

    async def show(self, name: str) -> Manifest:
        """See Engine.show."""
        return self.engine.show(name)

    async def remove(self, name: str) -> None:
        """See Engine.remove."""
        await self.engine.remove(name)

    async def copy(self, source: str, destination: str) -> Manifest:
        """See Engine.copy."""
        return self.engine.copy(source, destination)

    async def running(self) -> list[RunningModel]:
        """See Engine.running."""
        return self.engine.running()

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """See Engine.generate."""
        return self.engine.generate(request)

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """See Engine.embed."""
        return await self.engine.embed(model, inputs, keep_alive=keep_alive, truncate=truncate)

    async def load(self, model: str, keep_alive: float | None = None) -> RunningModel:
        """See Engine.load."""
        return await self.engine.load(model, keep_alive)

    async def unload(self, model: str) -> None:
        """See Engine.unload."""
        await self.engine.unload(model)
