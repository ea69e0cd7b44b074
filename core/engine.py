"""The engine: the one object adapters talk to.

It owns the model store, the loaded models and their schedulers, and the
keep-alive timers. Nothing here blocks the event loop for long: hashing and
model loading run in worker threads, decoding runs on each model's
scheduler thread, and tokens come back through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import psutil
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .errors import (
    CorruptModel,
    InsufficientMemory,
    ModelLoadTimeout,
    ModelNotFound,
    ModelUnloaded,
    UnsupportedFeature,
)
from .generation import EmbeddingResult, GenerationChunk, GenerationRequest, SamplingOptions, TokenLogprob
from .manifest import Manifest
from .memory import (
    MIB,
    MemoryEstimate,
    attention_span,
    default_parallel,
    estimate_memory,
    format_bytes,
    memory_available,
    parked_bytes,
)
from .names import ModelName
from .settings import Settings
from .sources import PullProgress
from .store import ModelStore

if TYPE_CHECKING:
    # The runtime (llama.cpp, numpy, jinja2) and the sources (httpx, gguf) are imported where a model
    # is loaded, run or pulled: together they take most of a second, and the engine of `ingle list`
    # or `ingle rm` in a shell only reads the store.
    from .runtime.draft_model import DraftModel
    from .runtime.embeddings import EmbeddingContext
    from .runtime.grammar import LazyGrammar
    from .runtime.llama_model import ContextShape, LlamaModel
    from .runtime.prompt import PreparedPrompt, PromptBuilder
    from .runtime.sampler import Sampler
    from .runtime.scheduler import BatchScheduler

log = logging.getLogger("ingle.engine")

T = TypeVar("T")

# Longest input an embedding request reads, in tokens.
EMBEDDING_CONTEXT = 2048
# The compute thread takes the GIL back after every ctypes call; with Python's
# default 5 ms switch interval a busy event loop (streaming chunks to clients)
# makes each of those waits up to 5 ms, several times per decode step. Measured
# with 4 HTTP clients: 0.82x of in-process throughput at 5 ms, 0.98x at 0.5 ms.
DECODE_FRIENDLY_SWITCH_INTERVAL = 0.0005
# Longest wait for the scheduler to confirm a cancellation (one decode step, with slack for a loaded CPU).
CANCEL_CONFIRM_SECONDS = 10.0
# Longest wait, when the engine closes, for the requests on a model to let go of it once their answers were cut
# (a prompt being tokenized takes a second or two for a few MiB); a model still held then is left to the
# ending process rather than freed under a thread that reads it.
DRAIN_SECONDS = 30.0


@dataclass
class RunningModel:
    """A loaded model, as `ingle ps` shows it."""

    name: str
    digest: str
    size: int
    """Bytes of the model file."""
    memory: int
    """Bytes the loaded model is estimated to occupy (weights + KV cache + buffers)."""
    context_length: int
    """Context window of one sequence."""
    parallel: int
    expires_at: float | None
    """Unix time at which it unloads; None while in use or if it stays loaded. While an unload waits for the
    requests in flight, the time it was asked for, already past (Ollama's `ps` shows such a model as stopping)."""
    active_requests: int


@dataclass
class QueueStats:
    """How busy one loaded model's scheduler is right now (for metrics)."""

    name: str
    active: int
    """Requests holding a sequence (prefilling or generating)."""
    waiting: int
    """Requests queued for a free sequence."""
    parallel: int
    """Sequences the model has."""
    embedded_inputs: int = 0
    """Inputs embedded since the model was loaded."""


@dataclass
class LoadedModel:
    """A model in memory with its scheduler and bookkeeping."""

    name: str
    manifest: Manifest
    model: LlamaModel
    scheduler: BatchScheduler
    prompts: PromptBuilder
    memory: MemoryEstimate
    shape: ContextShape
    keep_alive: float
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float | None = None
    embedder: EmbeddingContext | None = None
    retired: bool = False
    """Out of the engine's hands: no request may start on it any more; its memory goes once none uses it."""
    drained: asyncio.Future[None] | None = None
    """Resolved when the last user of a retired model lets go."""

    def embedding_context(self) -> EmbeddingContext:
        """The embedding context, created on first use (call on the compute thread)."""
        if self.embedder is None:
            from .runtime.embeddings import EmbeddingContext

            tokens = min(EMBEDDING_CONTEXT, self.model.n_ctx_train or EMBEDDING_CONTEXT)
            self.embedder = EmbeddingContext(self.model, self.shape.threads, tokens)
        return self.embedder

    def stop(self) -> None:
        """Close the scheduler (jobs and calls still in it fail with ModelUnloaded) and free its context;
        blocks until the compute thread has let go of the model. Requests may still hold the model."""
        self.scheduler.close()

    def free(self) -> None:
        """Free the embedding context and the weights: call after stop(), once no request uses the model
        (a prompt being tokenized in a worker thread reads the vocabulary until its request lets go)."""
        if self.embedder is not None:
            self.embedder.free()  # only the compute thread used it, and it runs no more steps of this model
            self.embedder = None
        self.model.free()


def default_threads() -> int:
    """llama.cpp runs fastest with one thread per physical core."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class Engine:
    """Model management and generation, in-process. Use as `async with Engine(settings)`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.models_dir)
        self._loaded: dict[str, LoadedModel] = {}
        # Loads in flight by digest: each is a task of its own that outlives the requests waiting for it.
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        # Requests waiting for a load, by digest: the model they wait for is not idle once it arrives.
        self._waiters: Counter[str] = Counter()
        # Unloads asked for, by digest: a request that waited for a load while one was asked leaves it standing.
        self._unloads_asked: Counter[str] = Counter()
        self._load_lock = asyncio.Lock()
        self._timers = AsyncIOScheduler()

    async def __aenter__(self) -> Engine:
        sys.setswitchinterval(DECODE_FRIENDLY_SWITCH_INTERVAL)
        self._timers.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Unload every model and stop the timers; requests still running get ModelUnloaded."""
        # A load cannot be stopped midway (it runs in a thread): let it finish, so that its model is freed below.
        if self._loading:
            await asyncio.wait(list(self._loading.values()))
        for digest in list(self._loaded):
            await self._unload(digest)
        if self._timers.running:
            self._timers.shutdown(wait=False)

    # --- the store ------------------------------------------------------------

    async def pull(
        self,
        spec: str,
        name: str | None = None,
        sha256: str | None = None,
        progress: Callable[[PullProgress], None] | None = None,
        remote_caller: bool = False,
    ) -> Manifest:
        """Fetch a model from a source into the store (see core.sources for the specs); a remote caller's
        pull reaches only the sources the settings open to the API."""
        from . import pull as pulling

        return await pulling.pull(
            self.store, self.settings, spec, name=name, sha256=sha256, progress=progress, remote_caller=remote_caller
        )

    def list_models(self) -> list[Manifest]:
        """Every model in the store, by name."""
        return self.store.list()

    def show(self, name: str) -> Manifest:
        """One model's manifest; ModelNotFound if it is not in the store."""
        return self.store.get(ModelName.parse(name))

    async def remove(self, name: str) -> None:
        """Delete a model's name; delete its file and unload it once no name refers to it.

        The loaded copy goes when the requests in flight on it are done (they finish their
        answers from the memory-mapped file). A damaged or dangling manifest is removed too:
        it is what `ingle rm` is for, and while a damaged one exists the store cannot
        collect unreferenced files.
        """
        try:
            digest: str | None = self.show(name).digest
        except (CorruptModel, ModelNotFound):
            digest = None  # the store still says so if there is no such name at all
        self.store.remove(ModelName.parse(name))
        if digest is not None and not self.store.manifests_for(digest):
            await self._unload_when_idle(digest)

    def copy(self, source: str, destination: str) -> Manifest:
        """Give a model a second name (the file is shared)."""
        return self.store.copy(ModelName.parse(source), ModelName.parse(destination))

    # --- loading --------------------------------------------------------------

    def running(self) -> list[RunningModel]:
        """The models in memory now."""
        return [
            RunningModel(
                name=loaded.name,
                digest=loaded.manifest.digest,
                size=loaded.manifest.size,
                memory=loaded.memory.total,
                context_length=loaded.shape.tokens_per_sequence,
                parallel=loaded.shape.sequences,
                expires_at=loaded.expires_at,
                active_requests=loaded.users,
            )
            for loaded in self._loaded.values()
        ]

    def queue_stats(self) -> list[QueueStats]:
        """Active and waiting requests of each loaded model (cheap; safe to call from the event loop)."""
        return [
            QueueStats(
                name=loaded.name,
                active=loaded.scheduler.active,
                waiting=loaded.scheduler.waiting,
                parallel=loaded.shape.sequences,
                embedded_inputs=loaded.embedder.inputs_embedded if loaded.embedder is not None else 0,
            )
            for loaded in self._loaded.values()
        ]

    async def load(self, model: str, keep_alive: float | None = None) -> RunningModel:
        """Load a model (if it is not loaded) and start its keep-alive timer."""
        loaded = await self._acquire(model, keep_alive)
        self._release(loaded)
        return next(running for running in self.running() if running.digest == loaded.manifest.digest)

    async def unload(self, model: str) -> None:
        """Unload a model once the requests in flight on it are done (at once when there are none), as
        Ollama's keep_alive 0 does: they answer in full, and a request after this one loads it again."""
        await self._unload_when_idle(self.show(model).digest)

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """How many tokens `request`'s prompt is, as the model would decode it (loading the model if needed)."""
        loaded = await self._acquire(request.model, request.keep_alive)
        try:
            return len((await loaded.prompts.prepare(request)).tokens)
        finally:
            self._release(loaded)

    async def _acquire(self, name: str, keep_alive: float | None) -> LoadedModel:
        """The loaded model for `name`, loading it if needed; the caller must _release it."""
        manifest = self.show(name)
        unloads_asked = self._unloads_asked[manifest.digest]
        loaded = self._loaded.get(manifest.digest)
        if loaded is None:
            loaded = await self._wait_for_load(manifest, keep_alive)
        if loaded.retired:  # the engine closed while this request waited for the load
            raise ModelUnloaded(f"{manifest.name} was unloaded before the request could start; try again.")
        loaded.users += 1
        # An unload asked for while this request waited for the load came later, so it stands.
        if self._unloads_asked[manifest.digest] == unloads_asked:
            loaded.keep_alive = self.settings.keep_alive if keep_alive is None else keep_alive
        loaded.expires_at = None
        self._cancel_timer(manifest.digest)
        return loaded

    async def _wait_for_load(self, manifest: Manifest, keep_alive: float | None) -> LoadedModel:
        """Join the model's load (starting it if none is in flight) and wait at most load_timeout for it.

        The load outlives its waiters: a client that leaves, or whose wait times
        out, leaves it running, and the model is adopted when it arrives (shown
        by `ps`, kept for keep_alive, used by the next request). Freeing a late
        model instead would make the next request load a second copy while the
        first still loads, which is how abandoned loads used to pile up.
        """
        digest = manifest.digest
        task = self._loading.get(digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_and_adopt(manifest, keep_alive))
            task.add_done_callback(partial(_log_failed_load, manifest.name))
            self._loading[digest] = task
        deadline = asyncio.timeout(self.settings.load_timeout)
        self._waiters[digest] += 1
        try:
            async with deadline:
                loaded = await asyncio.shield(task)
        except BaseException as error:
            self._waiters[digest] -= 1
            # This waiter may have been the last: the adopted model then counts down its keep_alive like any idle one.
            self._expire_if_idle(digest)
            if isinstance(error, TimeoutError) and deadline.expired():
                raise ModelLoadTimeout(
                    f"Loading {manifest.name} took longer than {self.settings.load_timeout:g} s; it goes on and the "
                    "model is kept once loaded: try again shortly, check the disk and memory, or raise load_timeout."
                ) from error
            raise
        self._waiters[digest] -= 1
        return loaded

    async def _load_and_adopt(self, manifest: Manifest, keep_alive: float | None) -> LoadedModel:
        """Load a model and make it the engine's, whether or not anyone still waits for it."""
        try:
            # One load at a time keeps the memory accounting honest; loaded models skip the lock.
            async with self._load_lock:
                loaded = await self._load(manifest)
                loaded.keep_alive = self.settings.keep_alive if keep_alive is None else keep_alive
                self._loaded[manifest.digest] = loaded
        finally:
            del self._loading[manifest.digest]
        self._expire_if_idle(manifest.digest)
        return loaded

    def _idle(self, loaded: LoadedModel) -> bool:
        """True when no request uses the model nor waits for it to arrive."""
        return loaded.users == 0 and not self._waiters[loaded.manifest.digest]

    def _expire_if_idle(self, digest: str) -> None:
        """Start the keep-alive countdown of a loaded model nobody uses or waits for."""
        loaded = self._loaded.get(digest)
        if loaded is not None and self._idle(loaded):
            self._expire(loaded)

    def _release(self, loaded: LoadedModel) -> None:
        loaded.users -= 1
        loaded.last_used = time.monotonic()
        if loaded.users > 0:
            return
        if loaded.retired:  # no longer the engine's: its timers (by digest) would be another copy's
            if loaded.drained is not None and not loaded.drained.done():
                loaded.drained.set_result(None)
            return
        self._expire(loaded)

    def _expire(self, loaded: LoadedModel) -> None:
        """Unload an idle model after its keep_alive (at once for 0, never for a negative one)."""
        if loaded.keep_alive < 0:
            return
        digest = loaded.manifest.digest
        if loaded.keep_alive == 0:
            asyncio.get_running_loop().create_task(self._unload_if_idle(digest))
            return
        loaded.expires_at = time.time() + loaded.keep_alive
        self._timers.add_job(
            self._unload_if_idle,
            "date",
            run_date=_as_datetime(loaded.expires_at),
            args=[digest],
            id=digest,
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _cancel_timer(self, digest: str) -> None:
        if self._timers.get_job(digest) is not None:
            self._timers.remove_job(digest)

    async def _unload_if_idle(self, digest: str) -> None:
        loaded = self._loaded.get(digest)
        if loaded is not None and self._idle(loaded):
            log.info("unloading %s: idle for its keep_alive (%gs)", loaded.name, loaded.keep_alive)
            await self._unload(digest)

    async def _unload_when_idle(self, digest: str) -> None:
        """Unload a model now if nobody uses it, else as soon as its last request in flight is done."""
        self._unloads_asked[digest] += 1
        loading = self._loading.get(digest)
        if loading is not None:  # let it arrive (those waiting for it use it), then treat it as any loaded model
            await asyncio.wait([loading])
        loaded = self._loaded.get(digest)
        if loaded is None:
            return
        loaded.keep_alive = 0  # its last user's release unloads it (_release, _expire)
        # Due now, as Ollama's expireRunner marks it: `ps` then says it is stopping, not that it stays.
        loaded.expires_at = time.time()
        self._cancel_timer(digest)
        if self._idle(loaded):
            await self._unload(digest)

    async def _unload(self, digest: str) -> None:
        """Take a model out of the engine and free it: at once when idle; when the engine closes, after
        ending its requests with ModelUnloaded and waiting for them to let go."""
        loaded = self._loaded.pop(digest, None)
        self._cancel_timer(digest)
        if loaded is None:
            return
        loaded.retired = True  # before any await: no request starts on it from here on (_acquire)
        loaded.expires_at = None
        await asyncio.to_thread(loaded.stop)
        if loaded.users > 0:
            loaded.drained = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(DRAIN_SECONDS):
                    await asyncio.shield(loaded.drained)
            except TimeoutError:
                # Freeing it now could crash the process under a thread that still reads the vocabulary.
                log.warning("%s stays in memory: %d requests still hold it", loaded.name, loaded.users)
                return
        await asyncio.to_thread(loaded.free)

    def _shape_for(self, manifest: Manifest) -> ContextShape:
        from .runtime.llama_model import ContextShape

        settings = self.settings
        trained = manifest.gguf.context_length or settings.num_ctx
        tokens = min(settings.num_ctx, trained)
        threads = settings.num_threads or default_threads()
        sequences = settings.num_parallel
        if sequences is None:
            limit = settings.memory_limit_mib * MIB if settings.memory_limit_mib else None
            in_use = sum(loaded.memory.total for loaded in self._loaded.values())
            free = memory_available(settings.memory_headroom_mib * MIB, limit, in_use)
            sequences = default_parallel(
                manifest, tokens, threads, free, settings.kv_cache_type_in_use, settings.kv_reuse_min_tokens > 0
            )
        # llama.cpp keeps an output row in n_batch for each sequence of a context (ours, plus the scratch one
        # of LlamaContext.decode_inside) and aborts the process on a context with more: raise the batch to fit.
        batch_tokens = max(settings.num_batch, sequences + 1)
        if batch_tokens > settings.num_batch:
            log.info(
                "num_batch raised from %d to %d to fit num_parallel %d", settings.num_batch, batch_tokens, sequences
            )
        return ContextShape(
            sequences=sequences,
            tokens_per_sequence=tokens,
            batch_tokens=batch_tokens,
            threads=threads,
            # Moved runs of cached tokens leave holes that only a shared pool can fill (decode_inside).
            shared_cache=settings.kv_reuse_min_tokens > 0,
            flash_attention={"auto": None, "on": True, "off": False}[settings.flash_attention],
            kv_cache_type=settings.kv_cache_type_in_use,
            deterministic=settings.deterministic,
        )

    async def _load(self, manifest: Manifest) -> LoadedModel:
        shape = self._shape_for(manifest)
        tokens = shape.sequences * shape.tokens_per_sequence
        span = attention_span(self.settings.flash_attention, shape.tokens_per_sequence, tokens, shape.shared_cache)
        need = estimate_memory(manifest, tokens, shape.batch_tokens, span, shape.kv_cache_type, shape.shared_cache)
        draft = self._draft_manifest()
        if draft is not None:
            need = need.plus(estimate_memory(draft, tokens, shape.batch_tokens, kv_cache_type=shape.kv_cache_type))
        await self._make_room(manifest, need)
        log.info("loading %s (%s)", manifest.name, format_bytes(need.total))
        return await asyncio.to_thread(self._open, manifest, shape, need, draft)

    def _draft_manifest(self) -> Manifest | None:
        """The draft_model's manifest, if one is configured."""
        name = self.settings.draft_model
        if not name:
            return None
        try:
            return self.show(name)
        except ModelNotFound as error:
            raise ModelNotFound(
                f"The draft_model '{name}' is not in the store: pull it, "
                "or unset draft_model to guess by prompt lookup."
            ) from error

    def _open(
        self, manifest: Manifest, shape: ContextShape, need: MemoryEstimate, draft: Manifest | None
    ) -> LoadedModel:
        from .runtime.llama_model import LlamaModel
        from .runtime.prompt import PromptBuilder
        from .runtime.scheduler import BatchScheduler
        from .runtime.speculative import DraftSettings

        model = LlamaModel(self.store.blob_path(manifest.digest), repack=not shape.deterministic)
        draft_model = None
        try:
            if draft is not None:
                draft_model = self._open_draft(draft, model, shape)
            scheduler = BatchScheduler(
                model,
                shape,
                self.settings.queue_size,
                name=manifest.name,
                min_moved_run=self.settings.kv_reuse_min_tokens,
                drafts=DraftSettings(most_tokens=self.settings.draft_tokens),
                draft_model=draft_model,
                park_bytes=parked_bytes(
                    manifest, shape.sequences * shape.tokens_per_sequence, shape.kv_cache_type, shape.shared_cache
                ),
            )
        except Exception:
            if draft_model is not None:
                draft_model.free()
            model.free()
            raise
        return LoadedModel(
            name=manifest.name,
            manifest=manifest,
            model=model,
            scheduler=scheduler,
            prompts=PromptBuilder(model, manifest, shape.tokens_per_sequence),
            memory=need,
            shape=shape,
            keep_alive=self.settings.keep_alive,
        )

    def _open_draft(self, draft: Manifest, target: LlamaModel, shape: ContextShape) -> DraftModel:
        """Load the draft model beside `target`, with a sequence for each of the target's."""
        from .runtime.draft_model import DraftModel
        from .runtime.llama_model import LlamaModel

        model = LlamaModel(self.store.blob_path(draft.digest))
        if model.n_vocab != target.n_vocab:
            model.free()
            raise UnsupportedFeature(
                f"The draft_model {draft.name} has {model.n_vocab} tokens in its vocabulary and the model "
                f"{target.n_vocab}: pick a draft model of the same family, or unset draft_model."
            )
        try:
            return DraftModel(model, shape)
        except Exception:
            model.free()
            raise

    async def _make_room(self, manifest: Manifest, need: MemoryEstimate) -> None:
        """Evict idle models, least recently used first, until `need` fits; else refuse."""
        settings = self.settings
        limit = settings.memory_limit_mib * MIB if settings.memory_limit_mib else None
        while True:
            in_use = sum(loaded.memory.total for loaded in self._loaded.values())
            free = memory_available(settings.memory_headroom_mib * MIB, limit, in_use)
            if need.total <= free:
                return
            idle = [loaded for loaded in self._loaded.values() if self._idle(loaded)]
            if not idle:
                raise InsufficientMemory(
                    f"{manifest.name} needs {format_bytes(need.total)} (weights {format_bytes(need.weights)}, "
                    f"context {format_bytes(need.kv_cache)}) but only {format_bytes(free)} is free: "
                    "unload a model, lower num_ctx, num_parallel or num_batch, or raise memory_limit_mib."
                )
            victim = min(idle, key=lambda loaded: loaded.last_used)
            log.info("unloading %s to make room for %s", victim.name, manifest.name)
            await self._unload(victim.manifest.digest)

    # --- generation -----------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Stream a generation; the last chunk has `done=True` and the stats.

        Closing the iterator early (or cancelling the task reading it) stops the
        work within one decode step and frees the sequence.
        """
        from .runtime.scheduler import GenerationJob

        started = time.perf_counter()
        loaded = await self._acquire(request.model, request.keep_alive)
        load_seconds = time.perf_counter() - started
        try:
            if loaded.manifest.gguf.embeds_only:  # it would answer with random words, as its head was never trained
                raise UnsupportedFeature(
                    f"{loaded.name} is an embedding model: it turns text into vectors (/api/embed, /v1/embeddings) "
                    "and cannot write text; ask a chat or code model instead."
                )
            prepared = await loaded.prompts.prepare(request)
            tool_grammar = prepared.tool_grammar if self.settings.tool_call_grammar else None
            sampler = await _new_sampler(loaded.model, request.options, prepared, tool_grammar)
            room = loaded.shape.tokens_per_sequence - len(prepared.tokens)
            max_tokens = min(request.options.max_tokens or room, room)
            chunks: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
            job = GenerationJob(
                tokens=prepared.tokens,
                sampler=sampler,
                max_tokens=max_tokens,
                emit=_thread_safe_put(chunks),
                stop=list(request.options.stop),
                stop_tokens=prepared.stop_tokens,
                # Completions in the editor are short and guessed poorly from their prompt:
                # measured 10-20% slower with prompt lookup (README, Benchmarks).
                speculate=request.suffix is None,
                logprobs=request.options.logprobs,
            )
            try:
                loaded.scheduler.submit(job)
            except BaseException:
                sampler.free()
                raise
            done = False
            # The client has the held indentation before its cursor already (see runtime/indentation.py).
            unsent_indentation = len(prepared.indentation)
            try:
                while not done:
                    chunk = await chunks.get()
                    if isinstance(chunk, BaseException):
                        done = True
                        raise chunk
                    if chunk.done:
                        done = True
                        if chunk.stats is not None:
                            chunk.stats.load_seconds = load_seconds
                    if unsent_indentation:
                        chunk, unsent_indentation = _without_indentation(chunk, unsent_indentation)
                    yield chunk
            finally:
                if not done:
                    loaded.scheduler.cancel(job)
                    await _until_done(chunks)
        finally:
            self._release(loaded)

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """Embed each input (mean-pooled, L2-normalised).

        One decode at a time, each a call on the compute thread, so generation
        steps run in between; cancelling the caller stops after the current one.
        """
        loaded = await self._acquire(model, keep_alive)
        vectors: list[list[float]] = []
        tokens = 0
        try:
            steps = await _on_compute_thread(loaded, lambda: loaded.embedding_context().steps(inputs, truncate))
            while step := await _on_compute_thread(loaded, partial(next, steps, None)):
                vectors.extend(step[0])
                tokens += step[1]
        finally:
            self._release(loaded)
        return EmbeddingResult(model=loaded.name, embeddings=vectors, prompt_tokens=tokens)


async def _on_compute_thread(loaded: LoadedModel, function: Callable[[], T]) -> T:
    """Run `function` on the compute thread between two steps; cancelling skips it if it has not started."""
    return await asyncio.wrap_future(loaded.scheduler.call(function))


async def _new_sampler(
    model: LlamaModel, options: SamplingOptions, prepared: PreparedPrompt, tool_grammar: LazyGrammar | None
) -> Sampler:
    """A Sampler for a request. One with a grammar is built on a worker thread: llama.cpp takes a moment per
    kilobyte of grammar to parse it (see grammar.MAX_SCHEMA_TOTAL_REPEAT), and meanwhile the event loop goes
    on serving everyone else's streams."""
    from .runtime.indentation import HeldIndentation
    from .runtime.sampler import Sampler
    from .runtime.worker_thread import run_to_the_end

    grammar = prepared.format_grammar
    held = HeldIndentation(model, prepared.indentation, prepared.stop_tokens) if prepared.indentation else None
    if grammar is None and tool_grammar is None:
        return Sampler(model, options, indentation=held)
    return await run_to_the_end(Sampler, model, options, grammar, tool_grammar, held, abandoned=Sampler.free)


def _without_indentation(chunk: GenerationChunk, unsent: int) -> tuple[GenerationChunk, int]:
    """The chunk without the first `unsent` characters of the indentation the answer opened with, and how many
    of them are still to come (0 once the answer has written anything else)."""
    text = chunk.text
    cut = 0
    while cut < len(text) and cut < unsent and text[cut] in " \t":
        cut += 1
    left = unsent - cut if cut == len(text) else 0
    if not cut:
        return chunk, left
    return replace(chunk, text=text[cut:], logprobs=_without_leading(chunk.logprobs, cut)), left


def _without_leading(entries: list[TokenLogprob], count: int) -> list[TokenLogprob]:
    """Token entries without the first `count` characters of their texts (indentation: a byte each), so that
    they spell the text they come with."""
    kept = []
    for entry in entries:
        if count and len(entry.token) <= count:
            count -= len(entry.token)
            continue
        if count:
            entry = _trimmed(entry, entry.token[:count])
            count = 0
        kept.append(entry)
    return kept


def _trimmed(entry: TokenLogprob, dropped: str) -> TokenLogprob:
    """The entry without the text `dropped` it starts with, and so its alternatives that start with it too."""
    top = [_trimmed(other, dropped) if other.token.startswith(dropped) else other for other in entry.top]
    size = len(dropped.encode())
    return replace(entry, token=entry.token[len(dropped) :], data=entry.data[size:], top=top)


async def _until_done(chunks: asyncio.Queue) -> None:
    """Wait (at most one decode step, bounded) for a cancelled job's final chunk.

    Until the scheduler confirms, the job's sequence is still taken, and a
    follow-up request (an editor's next keystroke) would land on another
    sequence and miss the cached prompt.
    """
    try:
        async with asyncio.timeout(CANCEL_CONFIRM_SECONDS):
            while True:
                chunk = await chunks.get()
                if isinstance(chunk, BaseException) or chunk.done:
                    return
    except (TimeoutError, asyncio.CancelledError):
        pass  # the reader is gone either way; the scheduler frees the sequence on its own


HAND_OVER_SECONDS = 0.05
"""Least time between two hand-overs of one stream's tokens to the event loop (the first and the last go at once).

Each hand-over wakes the event loop, whose work on a 2-core machine takes the
core from one of llama.cpp's threads mid-decode, and its events wake the
client, which does the same when it runs on the machine. So a fast stream's
tokens go a few at a time, at most 20 times a second, which reads as smooth:
a single stream through the HTTP API with the openai client ran 2-2.5% faster
handed over every other token (3 runs of 8 answers, a 60 tok/s machine), and
on a 27 tok/s machine 1.0-1.5% faster with 0.05 s than with 0.03 s (every
token there), the client's CPU time per token falling from 0.75 to 0.52 ms
(4 alternating runs of 3 answers). A token reaches the client up to this much
later, except one that ends a line, which goes at once (the language server
shows a suggestion's first line as soon as it is whole). Several streams decode
in steps longer than this, so each token goes at once."""


def _thread_safe_put(queue: asyncio.Queue) -> Callable[[object], None]:
    """A callback for the compute thread that hands items to `queue` on this event loop, a few at a time
    when a stream is fast (HAND_OVER_SECONDS), the pieces of text held meanwhile joined into one chunk."""
    loop = asyncio.get_running_loop()
    held: list[object] = []
    last_hand_over = -HAND_OVER_SECONDS

    def deliver(items: list[object]) -> None:
        for item in items:
            queue.put_nowait(item)

    def put(item: object) -> None:
        nonlocal last_hand_over
        waiting = held[-1] if held else None
        if isinstance(waiting, GenerationChunk) and isinstance(item, GenerationChunk) and not item.done:
            # One chunk for the tokens of one hand-over: each chunk is an event the client parses.
            held[-1] = GenerationChunk(
                waiting.text + item.text, stats=waiting.stats or item.stats, logprobs=waiting.logprobs + item.logprobs
            )
        else:
            held.append(item)
        now = time.perf_counter()
        final = isinstance(item, BaseException) or (isinstance(item, GenerationChunk) and item.done)
        line_end = isinstance(item, GenerationChunk) and "\n" in item.text
        if not final and not line_end and now - last_hand_over < HAND_OVER_SECONDS:
            return  # goes with a later one, within HAND_OVER_SECONDS and a decode step
        last_hand_over = now
        items = held[:]
        held.clear()
        try:
            loop.call_soon_threadsafe(deliver, items)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            pass

    return put


def _log_failed_load(name: str, task: asyncio.Task[LoadedModel]) -> None:
    """Log why a load failed (its waiters got the error too; this also covers a load nobody waits for any more)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("loading %s failed: %s", name, task.exception())


def _as_datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)
