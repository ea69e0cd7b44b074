"""Continuous batching: many requests share one llama context and one decode per step.

Each loaded model has a scheduler; one thread (ComputeThread) runs them all,
a step of each in turn. Each step builds a single
batch holding the next token of every generating sequence plus a chunk of a
new prompt, decodes it with one `llama_decode` (ctypes releases the GIL), and
samples one token for every sequence whose logits came out. Requests that
arrive mid-generation join at the next step instead of waiting for the others
to finish; a finished or cancelled request frees its sequence at once.

Each sequence ("slot") keeps the tokens its KV cache holds. A new request is
placed on the free slot that can reuse the most of its prompt: the shared
prefix, plus runs of cached tokens moved to new positions (kv_reuse.py); only
the rest of the prompt is decoded. When every sequence has a KV buffer of its
own, the slot is first chosen to keep the busy sequences consecutive (see
choose_slot).

Speculative decoding rides in the same batch: a generating sequence whose
history suggests how it goes on (speculative.py) adds its pending token plus
the drafted tokens, all with logits. The job's own sampler then picks a token
at each position in turn; while it picks the drafted token, the next position's
logits are valid too, so one decode yields several tokens. The first miss ends
the run and the drafts after it leave the cache (llama_memory_seq_rm).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ..errors import ContextOverflow, IngleError, ModelUnloaded, QueueFull, RuntimeFailure
from ..generation import DoneReason, GenerationChunk, GenerationStats, TokenLogprob
from .draft_model import DraftModel, DraftRequest
from .kv_reuse import ReusePlan, plan_reuse
from .llama_model import Batch, ContextShape, LlamaContext, LlamaModel
from .logprobs import token_logprob
from .sampler import Sampler
from .speculative import DraftSettings, Guesses, PromptLookup, StepCost, StepPlan
from .text_output import TextOutput

log = logging.getLogger("ingle.scheduler")

T = TypeVar("T")
Emit = Callable[[GenerationChunk | BaseException], None]

# While other sequences are streaming, a new prompt is fed in chunks of this
# many tokens so that the streams stall for a fraction of a second per step
# rather than for the whole prompt (about 1 s per 128 tokens on 2 CPU cores).
PREFILL_CHUNK_WHILE_STREAMING = 128
# Holes between moved runs of cached tokens are decoded when a request is
# placed, in one go; a plan needing more than this is cut short, and the rest
# of its prompt is fed in chunks like any other.
MOST_HOLE_TOKENS = 256
# With a KV buffer per sequence, a slot off the busy sequences' run costs every step an extra pass over the
# weights (choose_slot); a slot elsewhere is still taken when it reuses at least this many more prompt tokens.
# Measured on the 2-core machine: reading 256 prompt tokens takes about 1 s, what the extra pass costs two
# streams (38 ms a step) in about 25 steps, a short answer's length (a completion in the editor, which
# reuses most of the previous one's prompt).
REUSE_WORTH_A_SPLIT = 256


@dataclass(eq=False)  # jobs are compared by identity: two requests are never "equal"
class GenerationJob:
    """One request inside the scheduler: its prompt, sampler, limits and progress."""

    tokens: list[int]
    sampler: Sampler
    max_tokens: int
    emit: Emit
    """Called on the compute thread with each chunk, the final chunk, or an error."""
    stop: list[str] = field(default_factory=list)
    stop_tokens: frozenset[int] = frozenset()
    speculate: bool = True
    """Whether drafted tokens may be verified for this job (when the scheduler drafts at all)."""
    logprobs: int | None = None
    """Report each token's log-probability with this many alternatives (SamplingOptions.logprobs)."""
    cancelled: bool = False
    # progress, owned by the compute thread
    n_past: int = 0
    pending_token: int | None = None
    generated: int = 0
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    reported_prompt: bool = False
    stats: GenerationStats = field(default_factory=GenerationStats)
    output: TextOutput = field(init=False)
    drafter: Guesses | None = None
    picked: TokenLogprob | None = None
    """The log-probability of the token just picked, when asked for."""
    unsent_logprobs: list[tuple[int, TokenLogprob]] = field(default_factory=list)
    """Log-probabilities of tokens whose text is not all shown yet (it may begin a stop string), each with
    where its text ends among the characters decoded."""

    def __post_init__(self) -> None:
        self.output = TextOutput(self.stop)

    def shown_logprobs(self) -> list[TokenLogprob]:
        """Take the log-probabilities of the tokens whose text is now all shown. After a stop string, those of
        tokens that reach into it never are: their text is not all in the answer."""
        shown = len(self.output.text)
        ready = 0
        while ready < len(self.unsent_logprobs) and self.unsent_logprobs[ready][0] <= shown:
            ready += 1
        taken = [entry for _, entry in self.unsent_logprobs[:ready]]
        del self.unsent_logprobs[:ready]
        return taken

    def cancel(self) -> None:
        """Ask the scheduler to stop this job at its next step (thread-safe)."""
        self.cancelled = True

    @property
    def prefilling(self) -> bool:
        """True while prompt tokens remain to be decoded."""
        return self.pending_token is None


@dataclass(eq=False)
class Slot:
    """A sequence of the llama context and the tokens cached in it."""

    sequence: int
    cached: list[int] = field(default_factory=list)
    """The token at each position of the sequence's cache."""
    job: GenerationJob | None = None
    last_used: float = 0.0
    parked: ctypes.Array[ctypes.c_ubyte] | None = None
    """The cache, copied out of a shared pool while the slot is idle (BatchScheduler._park_idle); `cached`
    still says what it holds."""

    def busy(self) -> GenerationJob:
        """The job holding this slot, for code that only visits busy slots."""
        if self.job is None:  # a scheduler bug, never a client's doing
            raise RuntimeError(f"sequence {self.sequence} has no job")
        return self.job


def choose_slot(free: list[Slot], reused: dict[int, int], busy: set[int] | None, prompt_length: int) -> Slot:
    """The free slot a new job takes, given how many prompt tokens each would reuse.

    Reuse only counts where the prompt keeps at least half of a slot's cache
    (a conversation's next turn, a completion in the same file) or half of the
    prompt is in it (the same question again): a new conversation shares its
    first tokens (a chat template's, a system prompt) with every cached one,
    and taking the slot of one for them would throw away that conversation's
    cache, which its next turn needs, while an empty or long unused slot is
    there.

    `busy` holds the sequences of the running jobs when every sequence has a KV
    buffer of its own (None for one shared pool). llama.cpp then decodes a
    batch a run of consecutive sequences at a time: busy sequences 0 and 7
    cost a step two passes over the weights, 0 and 1 one (75 against 47 ms
    here; 0, 2, 5 and 7 took 150 ms, 0 to 3 62 ms). So the slot that keeps
    the fewest runs wins, one that joins two runs first, unless another reuses
    REUSE_WORTH_A_SPLIT more tokens of the prompt. Ties go to the slot that
    reuses most, then to the least recently used, whose cache is likeliest
    stale. (The caller passes None when the jobs waiting fill every slot:
    then each takes the slot that reuses most.)
    """
    gain = {
        slot.sequence: reused[slot.sequence] if 2 * reused[slot.sequence] >= min(len(slot.cached), prompt_length) else 0
        for slot in free
    }
    by_reuse = max(free, key=lambda slot: (gain[slot.sequence], -slot.last_used))
    if busy is None:
        return by_reuse

    def runs_added(slot: Slot) -> int:
        return 1 - (slot.sequence - 1 in busy) - (slot.sequence + 1 in busy)

    compact = min(free, key=lambda slot: (runs_added(slot), -gain[slot.sequence], slot.last_used))
    if gain[by_reuse.sequence] - gain[compact.sequence] >= REUSE_WORTH_A_SPLIT:
        return by_reuse
    return compact


def single_pass(drafts: dict[int, list[int]]) -> bool:
    """Whether llama.cpp decodes a generation step in one pass over the weights when every sequence has a KV
    buffer of its own: it splits a batch into passes of consecutive sequences with as many tokens each
    (llama_batch_allocr::split_equal). `drafts` holds each generating sequence's guesses, after its one
    pending token."""
    sequences = sorted(drafts)
    return not sequences or (
        sequences[-1] - sequences[0] + 1 == len(sequences) and len({len(draft) for draft in drafts.values()}) == 1
    )


class ComputeThread:
    """The one thread that runs the steps of every loaded model's scheduler, in turn.

    llama.cpp's CPU backend runs each decode on an OpenMP team of the calling
    thread, and libgomp keeps a team for every thread that ever ran one. Once
    the threads of all teams outnumber the CPUs, libgomp stops spinning at its
    barriers (hundreds per decode) and sleeps and wakes at each instead: with
    an embedding model's thread beside the chat model's, chat answers streamed
    14% slower on 2 cores for as long as both stayed loaded. One thread for all
    models keeps one team; the models take turns a step each, as they would
    for the cores anyway. The thread ends when the last scheduler closes.
    """

    def __init__(self) -> None:
        self.wake = threading.Condition()
        """Guards every scheduler's queues; notified whenever one of them has work."""
        self._schedulers: list[BatchScheduler] = []
        self._thread: threading.Thread | None = None

    def attach(self, scheduler: BatchScheduler) -> None:
        """Start running `scheduler`'s steps (and the thread, if none is running)."""
        with self.wake:
            self._schedulers.append(scheduler)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ingle-compute", daemon=True)
                self._thread.start()

    def detach(self, scheduler: BatchScheduler) -> None:
        """Stop running `scheduler`'s steps; call with `wake` held."""
        self._schedulers.remove(scheduler)

    def _run(self) -> None:
        while True:
            with self.wake:
                while not (ready := [scheduler for scheduler in self._schedulers if scheduler.has_work()]):
                    if not self._schedulers:
                        self._thread = None
                        return
                    self.wake.wait()
            for scheduler in ready:
                try:
                    scheduler.take_turn()
                except Exception as error:  # a bug in one model's step must not stop the others
                    log.exception("a step of %s failed", scheduler.name)
                    scheduler.fail_everything(error)


COMPUTE = ComputeThread()


class BatchScheduler:
    """Runs continuous batching for one loaded model, on the ComputeThread."""

    def __init__(
        self,
        model: LlamaModel,
        shape: ContextShape,
        queue_size: int,
        name: str = "model",
        min_moved_run: int = 0,
        drafts: DraftSettings | None = None,
        draft_model: DraftModel | None = None,
        park_bytes: int = 0,
    ) -> None:
        if shape.batch_tokens <= shape.sequences:
            # A step holds a token of every generating sequence, and llama.cpp aborts the process on a context
            # whose batch has no output row for each of its sequences (ours and a scratch one).
            raise ValueError(f"a batch of {shape.batch_tokens} tokens cannot serve {shape.sequences} sequences")
        self.model = model
        self.shape = shape
        self.queue_size = queue_size
        self.name = name
        # None or most_tokens 0: no speculative decoding.
        self._drafts = drafts if drafts is not None and drafts.most_tokens > 0 else None
        # Guesses come from this model when given (the scheduler frees it), else by prompt lookup.
        self._draft_model = draft_model
        self._step_cost = StepCost()
        # Most bytes of idle caches kept in RAM out of a shared pool; 0 leaves them in the pool.
        self._park_bytes = park_bytes if shape.shared_cache else 0
        self._context: LlamaContext = model.new_context(shape)
        # Cached runs shorter than this are decoded again rather than moved; 0 (or a model whose
        # cache cannot shift) reuses the common prefix only.
        self._min_moved_run = min_moved_run if self._context.can_shift else 0
        self._batch = Batch(shape.batch_tokens)
        self._slots = [Slot(sequence) for sequence in range(shape.sequences)]
        self._waiting: deque[GenerationJob] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._compute = COMPUTE
        self._wake = self._compute.wake
        self._stopping = False
        self._closed = threading.Event()
        self._compute.attach(self)

    # --- called from any thread ------------------------------------------------

    def submit(self, job: GenerationJob) -> None:
        """Queue a job; raise QueueFull when every slot is busy and the queue is full, ModelUnloaded once closed."""
        with self._wake:
            if self._stopping:
                raise self._unloaded()
            free = sum(1 for slot in self._slots if slot.job is None)
            if len(self._waiting) >= free + self.queue_size:
                raise QueueFull(
                    f"The model is busy: {len(self._slots)} requests are running and "
                    f"{len(self._waiting)} are waiting; try again shortly.",
                    retry_after=1.0,
                )
            self._waiting.append(job)
            self._wake.notify()

    def cancel(self, job: GenerationJob) -> None:
        """Stop a job within one decode step and free its sequence (or its place in the queue)."""
        job.cancel()
        with self._wake:
            if job in self._waiting:
                # Leave the queue at once, so a cancelled request never counts against queue_size.
                self._waiting.remove(job)
                self._finish_unplaced(job)
            self._wake.notify()

    def call(self, function: Callable[[], T]) -> Future[T]:
        """Run `function` on the compute thread between two steps (e.g. embeddings).

        Once the scheduler is closing, the future fails at once with ModelUnloaded: the compute thread
        runs no more calls of this scheduler, and a call queued anyway would wait for ever.
        """
        future: Future[T] = Future()
        with self._wake:
            if self._stopping:
                future.set_exception(self._unloaded())
                return future
            self._calls.append((function, future))
            self._wake.notify()
        return future

    @property
    def active(self) -> int:
        """Jobs holding a sequence."""
        return sum(1 for slot in self._slots if slot.job is not None)

    @property
    def waiting(self) -> int:
        """Jobs waiting for a sequence."""
        return len(self._waiting)

    def close(self) -> None:
        """End every job and call still here with ModelUnloaded, leave the compute thread and free the context.

        The engine closes a scheduler only when no request uses its model, or when the daemon stops:
        a request cut short then gets an error, never an answer that looks complete.
        """
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._closed.wait()
        self._batch.free()
        self._context.free()
        if self._draft_model is not None:
            self._draft_model.free()

    # --- the compute thread -------------------------------------------------

    def has_work(self) -> bool:
        """Whether a turn would do anything (call with the compute thread's `wake` held)."""
        if self._stopping or self._calls or any(slot.job for slot in self._slots):
            return True
        return bool(self._waiting)

    def take_turn(self) -> None:
        """One round of the loop: a pending call, new jobs placed, one decode step; or the shutdown."""
        call = None
        with self._wake:
            if self._stopping:
                self._compute.detach(self)
                placed = None
            else:
                # One call per turn: each step of an embedding request is a call, and several in a row would
                # stall the streams for as long as all of them take.
                call = self._calls.popleft() if self._calls else None
                # Cancelled jobs leave first: an editor cancels a request and sends the next keystroke's at
                # once, and that one should find the sequence (and the cached prompt) the old one held.
                self._drop_cancelled()
                placed = self._admit()
        if placed is None:
            try:
                self._shut_down()
            finally:
                self._closed.set()
            return
        if call is not None:
            self._run_call(*call)
        for slot, plan in placed:
            self._place(slot, plan)
        if any(slot.job for slot in self._slots):
            self._park_idle()
            self._step()

    def fail_everything(self, error: Exception) -> None:
        """End every running and waiting job with `error`, a failed turn of this scheduler (an ingle bug):
        whatever caused it is gone with them, so the next turn cannot fail the same way again and again."""
        failure = RuntimeFailure(f"Generating failed inside ingle ({error}); try the request again.")
        # The waiting jobs are taken first: once a running job hears of the failure its client may ask again
        # at once, and that new request, queued while this runs, must not be failed with the old ones.
        with self._wake:
            waiting = list(self._waiting)
            self._waiting.clear()
        self._fail_batch([slot for slot in self._slots if slot.job is not None], failure)
        for job in waiting:
            job.sampler.free()
            job.emit(failure)

    @staticmethod
    def _run_call(function: Callable[[], Any], future: Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function())
        except BaseException as error:  # handed to the caller, who translates it
            future.set_exception(error)

    def _admit(self) -> list[tuple[Slot, ReusePlan]]:
        """Give waiting jobs the free slots that can reuse the most of their prompts; return the plans."""
        placed = []
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                self._finish_unplaced(job)
                continue
            free = [slot for slot in self._slots if slot.job is None]
            if not free:
                break
            self._waiting.popleft()
            plans = {slot.sequence: plan_reuse(slot.cached, job.tokens, self._min_moved_run) for slot in free}
            busy = {slot.sequence for slot in self._slots if slot.job is not None}
            reused = {sequence: plan.reused for sequence, plan in plans.items()}
            # Once the jobs waiting now fill every slot, the busy ones are one run whatever their order.
            fills_all = len(busy) + 1 + len(self._waiting) >= len(self._slots)
            slot = choose_slot(free, reused, None if self.shape.shared_cache or fills_all else busy, len(job.tokens))
            slot.job = job
            placed.append((slot, plans[slot.sequence].with_holes_up_to(MOST_HOLE_TOKENS)))
        return placed

    def _place(self, slot: Slot, plan: ReusePlan) -> None:
        """Arrange a slot's cache for its new job: drop what it cannot use, move runs, fill the holes."""
        job = slot.busy()
        if slot.parked is not None:
            saved, slot.parked = slot.parked, None
            if not (plan.reused and self._context.restore_sequence(slot.sequence, saved)):
                slot.cached = []
                plan = ReusePlan(0, (), plan.prompt_length)
        for start, end in plan.removals():
            self._context.forget(slot.sequence, start, end)
        for move in plan.ordered_moves():
            self._context.shift(slot.sequence, move.source, move.source + move.length, move.delta)
        for start, end in plan.holes():
            try:
                self._context.decode_inside(slot.sequence, job.tokens[start:end], start, self._batch)
            except IngleError as error:
                log.warning("decoding between reused tokens failed (%s); decoding the prompt from there", error)
                self._context.forget(slot.sequence, start)
                plan = plan.before(start)
                break
        slot.cached = job.tokens[: plan.resume_at]
        job.n_past = plan.resume_at
        job.stats.cached_tokens = plan.reused
        job.stats.prompt_tokens = len(job.tokens)
        if self._drafts is not None and job.speculate:
            kind = PromptLookup if self._draft_model is None else Guesses
            job.drafter = kind(job.tokens, self._drafts)

    def _park_idle(self) -> None:
        """Copy the caches of idle slots out of a shared pool into RAM while other sequences decode.

        llama.cpp reads every cell of the pool up to the last one in use at
        each decode, other sequences' too (masked out): with seven idle
        caches of 700 tokens, a lone token took 40.8 ms instead of 38.4 on
        the 2-core machine. A copy is put back when the slot's next request
        reuses it (a 500-token cache: 6 MB, 4 ms out and 1 ms back). Beyond
        `park_bytes`, the least recently used copies are dropped.
        """
        if not self._park_bytes:
            return
        parked_now = False
        for slot in self._slots:
            if slot.job is None and slot.cached and slot.parked is None:
                try:
                    slot.parked = self._context.save_sequence(slot.sequence)
                except RuntimeFailure as error:
                    log.warning("an idle cache stays in the pool: %s", error)
                    continue
                self._context.forget(slot.sequence)
                parked_now = True
        if not parked_now:
            return
        kept = 0
        for slot in sorted(self._slots, key=lambda slot: slot.last_used, reverse=True):
            if slot.parked is not None:
                kept += len(slot.parked)
                if kept > self._park_bytes:
                    slot.parked, slot.cached = None, []

    def _drop_cancelled(self) -> None:
        for slot in self._slots:
            if slot.job is not None and slot.job.cancelled:
                self._finish(slot, "cancel")

    def _step(self) -> None:
        """Build one batch over every active sequence, decode it, sample."""
        drafts = self._draft_all()
        sampled: list[tuple[Slot, int]] = []
        fed: list[tuple[Slot, int]] = []
        try:
            sampled, fed = self._fill_batch(drafts)
            try:
                started = time.perf_counter()
                self._context.decode(self._batch, generated_only=not fed)
                # Generation only: the steps whose size guessing changes, each one pass over the weights.
                if not fed and (self.shape.shared_cache or single_pass(drafts)):
                    self._step_cost.record(len(self._batch), time.perf_counter() - started)
            except ContextOverflow:
                if not any(drafts.values()):
                    raise
                # The shared KV pool has no room for the guesses: decode the same step without them.
                drafts = {sequence: [] for sequence in drafts}
                sampled, fed = self._fill_batch(drafts)
                self._context.decode(self._batch, generated_only=not fed)
        except IngleError as error:
            self._fail_batch([slot for slot, _ in sampled] + [slot for slot, _ in fed], error)
            return

        for slot, take in fed:
            job = slot.busy()
            slot.cached.extend(job.tokens[job.n_past : job.n_past + take])
            job.n_past += take
        for slot, index in sampled:
            job = slot.busy()
            if job.pending_token is None:  # its prompt is done: the first token
                self._accept(slot, self._pick(job, index))
            else:
                self._verify(slot, job.pending_token, index, drafts.get(slot.sequence, []))

    def _draft_all(self) -> dict[int, list[int]]:
        """Each generating sequence's pending token comes first; these are the guesses after it, by sequence."""
        streaming = [slot for slot in self._slots if slot.job and not slot.busy().prefilling]
        drafts: dict[int, list[int]] = {slot.sequence: [] for slot in streaming}
        own_passes = len(streaming) > 1 and not self.shape.shared_cache
        plan = StepPlan(self._step_cost, len(streaming), self._batch.capacity, guesses_in_own_pass=own_passes)
        asks: dict[int, DraftRequest] = {}
        for slot in streaming:
            job = slot.busy()
            if job.drafter is None or plan.room <= 0:
                continue
            # Never guess past the job's token limit or the end of its context.
            limit = min(plan.room, job.max_tokens - job.generated - 1, self.shape.tokens_per_sequence - job.n_past - 2)
            if limit <= 0:
                continue
            if isinstance(job.drafter, PromptLookup):
                drafts[slot.sequence] = job.drafter.draft(limit, plan)
            else:
                # A draft model is there because its guesses are good (its hit rate still gates them),
                # so they may try step sizes not measured yet, as prompt lookup's longest matches do.
                depth = job.drafter.depth(plan, limit, explore=True)
                if depth:
                    asks[slot.sequence] = DraftRequest(job.drafter.history, depth)
        if asks and self._draft_model is not None:
            try:
                drafts.update(self._draft_model.draft(asks))
            except IngleError as error:
                # Guesses are optional: the step goes on without them.
                log.warning("the draft model failed (%s); decoding this step without guesses", error)
                self._draft_model.reset()
        return drafts

    def _fill_batch(self, drafts: dict[int, list[int]]) -> tuple[list[tuple[Slot, int]], list[tuple[Slot, int]]]:
        """Fill the batch: pending tokens with their drafts, then a chunk of prompt; return what to sample and feed."""
        batch = self._batch
        batch.clear()
        sampled: list[tuple[Slot, int]] = []
        for slot in self._slots:
            job = slot.job
            if job is None or job.pending_token is None:
                continue
            sampled.append((slot, batch.add(job.pending_token, job.n_past, slot.sequence, True)))
            for offset, token in enumerate(drafts[slot.sequence], start=1):
                batch.add(token, job.n_past + offset, slot.sequence, True)
        budget = batch.capacity - len(batch)
        if sampled:
            budget = min(budget, PREFILL_CHUNK_WHILE_STREAMING)
        fed: list[tuple[Slot, int]] = []
        for slot in self._slots:
            job = slot.job
            if job is None or not job.prefilling or budget <= 0:
                continue
            take = min(budget, len(job.tokens) - job.n_past)
            last = len(job.tokens) - 1
            for position in range(job.n_past, job.n_past + take):
                batch.add(job.tokens[position], position, slot.sequence, position == last)
            if job.n_past + take == len(job.tokens):
                sampled.append((slot, len(batch) - 1))
            fed.append((slot, take))
            budget -= take
        return sampled, fed

    def _verify(self, slot: Slot, pending: int, index: int, draft: list[int]) -> None:
        """Sample after the pending token and after each drafted token, while the sampler agrees with the draft.

        The sampler runs exactly as without speculation: one call per token,
        in order, each on logits computed after the tokens it already picked
        (a drafted token is only followed further once it was picked). So the
        output follows the target distribution at any temperature, and with
        greedy sampling it is the same token for token: steps of answer tokens
        run on llama.cpp's reference kernels (LlamaContext.decode), which give
        each row the logits of a one-token decode (except where llama.cpp
        repacks the weights, whose kernels have no reference version, or runs
        attention without flash attention).

        A draft is deterministic (prompt lookup, or a draft model's argmax): its
        "draft distribution" puts all mass on one token, and for such a draft
        standard speculative sampling's rule, accept with probability
        min(1, p/q), reduces to: accept when the target sampler picks that
        token. Grammars and repetition penalties stay exact too: the chain sees
        precisely the tokens that are kept.
        """
        job = slot.busy()
        slot.cached.append(pending)
        job.n_past += 1
        first_guess = job.n_past
        # Counted before any token is accepted: accepting the last one sends the final stats.
        job.stats.draft_tokens += len(draft)
        accepted = 0
        for offset, drafted in enumerate([*draft, None]):
            token = self._pick(job, index + offset)
            confirmed = token == drafted
            if confirmed:
                accepted += 1
                job.stats.accepted_draft_tokens += 1
            if not self._accept(slot, token) or not confirmed:
                break
            # The drafted token is already in the cache, so it is not pending any more.
            slot.cached.append(token)
            job.n_past += 1
        # Drop the cache entries of the guesses that were not kept (and of a confirmed one that ended the job).
        if len(slot.cached) < first_guess + len(draft):
            self._context.forget(slot.sequence, len(slot.cached))
        if job.drafter is not None:
            job.drafter.feedback(len(draft), accepted)

    def _pick(self, job: GenerationJob, index: int) -> int:
        """The job's next token from the logits at `index` (and its log-probability, when asked for)."""
        token = self._context.argmax(index) if job.sampler.argmax_only else job.sampler.sample(self._context.raw, index)
        if job.logprobs is not None:
            job.picked = token_logprob(self._context.logits(index), token, job.logprobs, self.model.token_bytes)
        return token

    def _accept(self, slot: Slot, token: int) -> bool:
        """Handle one sampled token: stream its text or finish the job; True while the job goes on."""
        job = slot.busy()
        now = time.perf_counter()
        if job.first_token_at is None:
            job.first_token_at = now
            job.stats.prompt_seconds = now - job.submitted_at
        if self.model.is_end_of_generation(token) or token in job.stop_tokens:
            self._finish(slot, "stop")
            return False
        job.generated += 1
        text = job.output.feed(self.model.token_bytes(token))
        if job.picked is not None:
            job.unsent_logprobs.append((job.output.decoded, job.picked))
        if text:
            # The first piece carries the prompt's counts, for readers that stop early.
            stats = None if job.reported_prompt else replace(job.stats)
            job.reported_prompt = True
            job.emit(GenerationChunk(text, stats=stats, logprobs=job.shown_logprobs()))
        if job.output.stopped:
            self._finish(slot, "stop")
        elif job.generated >= job.max_tokens or job.n_past + 1 >= self.shape.tokens_per_sequence:
            self._finish(slot, "length")
        else:
            job.pending_token = token
            if job.drafter is not None:
                job.drafter.append(token)
            return True
        return False

    def _finish(self, slot: Slot, reason: DoneReason) -> None:
        """Send the final chunk, free the sampler and the slot (its cache stays for reuse)."""
        job = slot.busy()
        slot.job = None
        slot.last_used = time.monotonic()
        tail = job.output.finish()
        now = time.perf_counter()
        stats = job.stats
        stats.completion_tokens = job.generated
        stats.done_reason = reason
        stats.total_seconds = now - job.submitted_at
        stats.generate_seconds = now - job.first_token_at if job.first_token_at else 0.0
        job.sampler.free()
        job.emit(GenerationChunk(tail, done=True, stats=stats, logprobs=job.shown_logprobs()))

    def _finish_unplaced(self, job: GenerationJob) -> None:
        job.sampler.free()
        job.stats.done_reason = "cancel"
        job.emit(GenerationChunk("", done=True, stats=job.stats))

    def _fail_batch(self, slots: list[Slot], error: BaseException) -> None:
        for slot in {s.sequence: s for s in slots}.values():
            job = slot.busy()
            slot.job = None
            slot.cached = []
            self._context.forget(slot.sequence)
            job.sampler.free()
            job.emit(error)

    def _unloaded(self) -> ModelUnloaded:
        return ModelUnloaded(
            f"{self.name} was unloaded before the request was done (the server is stopping); try again."
        )

    def _shut_down(self) -> None:
        """End what is left (called once `_stopping` is set, so nothing new arrives) with ModelUnloaded."""
        error = self._unloaded()
        for slot in self._slots:
            job = slot.job
            if job is not None:
                slot.job = None
                job.sampler.free()
                job.emit(error)
        while self._waiting:
            job = self._waiting.popleft()
            job.sampler.free()
            job.emit(error)
        while self._calls:
            _function, future = self._calls.popleft()
            if future.set_running_or_notify_cancel():  # False: its caller has left already
                future.set_exception(error)
